"""Guidance modes on the simulated loop: `plan` (whole plan, then execute) vs `stepwise` (one step per
request, from the current views) vs `pipelined` (execute step k while step k+1 is generated), in one
run, interleaved per seed.

    python -m emu_ros.bench.guidance_modes [--task transfer_cube] [--seeds 5] [--planner-step-s 1.0]
        [--fault none|missed_grasp|slip] [--json FILE]

The planner is the labelled scripted reference with a delay per step standing in for the world
model's generation time (the seed article's DiDA step is ~2 s; AR is minutes). The simulator runs
as fast as it can (`realtime_factor` 0), so motion is much quicker than generation here; on a robot
the arm's own step time hides more of the generation. Printed per mode: time to first motion, task
wall time, arm idle time (sum of the waits before each step, the first excluded), success by the
simulator's own score, re-plans. Numbers are this machine's; the JSON names it.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
from pathlib import Path
from typing import Optional, Sequence

from emu_ros.bench import write_json

MODES = ("plan", "stepwise", "pipelined")


def run(task: str, seeds: Sequence[int], delay_s: float, fault: str, out: Path) -> dict:
    from emu_ros.bridge.task_log import read_events
    from emu_ros.sim.episode import EpisodeConfig, SimWorld, run_episode
    from emu_ros.sim.faults import FaultSpec

    world = SimWorld(task)
    rows = {m: [] for m in MODES}
    for seed in seeds:
        for mode in MODES:
            log_dir = out / f"{mode}_seed{seed}"
            shutil.rmtree(log_dir, ignore_errors=True)  # a log dir is appended to: start each run clean
            cfg = EpisodeConfig(task=task, seed=seed, fault=FaultSpec(kind=fault, seed=seed), guidance_mode=mode,
                                planner_step_delay_s=delay_s)
            res = run_episode(cfg, world=world, log_dir=log_dir)
            starts = [e for e in read_events(log_dir) if e["event"] == "step_started"]
            idle = sum(e.get("idle_s", 0.0) for e in starts[1:])
            rows[mode].append({"seed": seed, "success": res.success, "runner_status": res.runner_status,
                               "first_motion_s": res.first_motion_s, "wall_s": res.wall_s, "arm_idle_s": idle,
                               "replans": res.replans, "step_runs": res.step_runs})
            r = rows[mode][-1]
            print(f"seed {seed} {mode:9s}: first motion {r['first_motion_s']:.2f} s, task {r['wall_s']:.2f} s, "
                  f"arm idle {idle:.2f} s, {'success' if res.success else 'FAIL'} ({res.runner_status}), "
                  f"re-plans {res.replans}", flush=True)
    world.sim.close()
    return rows


def summary(rows: dict) -> dict:
    def med(mode: str, key: str) -> Optional[float]:
        vals = [r[key] for r in rows[mode] if r[key] is not None]
        return statistics.median(vals) if vals else None

    return {m: {"first_motion_s_median": med(m, "first_motion_s"), "wall_s_median": med(m, "wall_s"),
                "arm_idle_s_median": med(m, "arm_idle_s"),
                "success": f"{sum(r['success'] for r in rows[m])}/{len(rows[m])}",
                "replans_total": sum(r["replans"] for r in rows[m])} for m in MODES}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emu_ros.bench.guidance_modes", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="transfer_cube", choices=["transfer_cube", "insertion", "clear_table"])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=100, help="held-out seeds (not the tests' 0..9)")
    p.add_argument("--planner-step-s", type=float, default=1.0, help="generation time per step of the stand-in planner")
    p.add_argument("--fault", default="none", choices=["none", "missed_grasp", "slip"])
    p.add_argument("--out", default="/tmp/emu_ros_guidance_modes", help="task logs")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows = run(args.task, seeds, args.planner_step_s, args.fault, Path(args.out))
    summ = summary(rows)
    print(f"\n{'mode':10s} {'first motion':>13s} {'task time':>10s} {'arm idle':>9s} {'success':>8s} {'re-plans':>9s}")
    for m in MODES:
        s = summ[m]
        print(f"{m:10s} {s['first_motion_s_median']:12.2f}s {s['wall_s_median']:9.2f}s {s['arm_idle_s_median']:8.2f}s "
              f"{s['success']:>8s} {s['replans_total']:9d}")
    result = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores", "task": args.task,
              "fault": args.fault, "seeds": seeds, "planner_step_s": args.planner_step_s,
              "planner": "scripted reference with a per-step delay (stand-in for generation time)",
              "medians": summ, "episodes": rows}
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
