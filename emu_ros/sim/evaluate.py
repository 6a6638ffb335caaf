"""`emu-ros eval`: headless seeded episodes on the simulated ALOHA, with and without re-planning.

    emu-ros eval --task transfer_cube --episodes 50 --fault missed_grasp [--no-replan | --compare]
                 [--planner world-model|scripted] [--instruction "hand the cube over"]
                 [--perception oracle|camera|both] [--seed 1000] [--fault-step N|random] [--json FILE]
    emu-ros eval --task clear_table --fault none missed_napkin napkin_slip knocked_cup --compare

Every episode runs the shipped loop (TaskRunner + StepMonitor, see emu_ros.sim.episode) with the planner
`--planner` names: the shipped simulator world model (default) or the labelled scripted reference. Prints the
success rate (simulator state, ground truth) with a 95% Wilson interval, the share of
episodes whose every step the bridge judged finished, mean re-plans, mean step executions, mean
wall time per episode and the planner backend; with `--compare` both modes run on the same seeds,
and with several faults every fault is a row of the same table. `--perception` says
where skills get object poses: the labelled ground-truth oracle, camera perception on rendered
RGB-D frames (with its position error against the simulator's truth, per object), or both on the
same seeds in one table.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Optional, Sequence

from emu_ros.sim.faults import FAULT_KINDS, FaultSpec
from emu_ros.sim.tasks import TASKS

log = logging.getLogger(__name__)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple:
    """95% Wilson score interval for a binomial proportion (sensible at 0% and 100%, unlike Wald)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends (no 0.9999999 from rounding)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


@dataclass
class ModeSummary:
    task: str
    fault: str
    episodes: int
    replan: bool
    successes: int
    success_rate: float
    ci95: tuple
    mean_replans: float
    mean_retries: float  # same-step retries (the TaskRunner retries a FAILED step before re-planning)
    mean_steps: float
    mean_episode_s: float
    backend: str
    perception: str
    fault_fired: int
    fault_detected: int
    #: episodes whose every step the bridge judged finished in the end (its own verdict, beside the simulator's)
    all_steps_finished: int
    #: successful episodes in which every step was correct on its first run (no retry, no re-plan needed)
    all_steps_first_try: int
    stopped: dict
    seeds: tuple
    #: camera perception only: per object position/yaw error against the truth, and refusals by code
    position_error: dict = field(default_factory=dict)
    perception_failures: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["ci95"] = list(self.ci95)
        d["seeds"] = list(self.seeds)
        return d


def evaluate(task: str, episodes: int, fault: str, replan: bool, seed: int = 0, fault_step=None,
             progress: bool = True, perception: str = "oracle", planner: str = "world-model",
             instruction: str = "", model_root: Optional[str] = None, world_model=None) -> ModeSummary:
    """Run `episodes` seeded episodes (seeds seed..seed+episodes-1) and summarise them. `world_model`: a loaded
    planner to reuse across rows (else the one `planner` names is loaded here)."""
    from emu_ros.sim.episode import EpisodeConfig, SimWorld, make_planner, run_episode
    from emu_ros.sim.perception import PerceptionAudit, error_table

    world = SimWorld(task, perception=perception)
    if planner == "world-model" and world_model is None:
        world_model = make_planner(EpisodeConfig(task=task, planner=planner, model_root=model_root))
    results = []
    seeds = list(range(seed, seed + episodes))
    it = seeds
    if progress:
        try:
            from tqdm import tqdm

            it = tqdm(seeds, desc=f"{task} {fault} {'replan' if replan else 'no-replan'} {perception}", file=sys.stderr,
                      leave=False)
        except ImportError:  # progress is optional
            pass
    for s in it:
        cfg = EpisodeConfig(task=task, seed=s, fault=FaultSpec(fault, step=fault_step, seed=s), replan=replan,
                            planner=planner, model_root=model_root, instruction=instruction)
        results.append(run_episode(cfg, world, planner=world_model))
    n = len(results)
    k = sum(r.success for r in results)
    stopped: dict = {}
    for r in results:
        stopped[r.stopped] = stopped.get(r.stopped, 0) + 1
    errors, failures = {}, {}
    if isinstance(world.perception, PerceptionAudit):
        errors = error_table(world.perception.errors)
        for _, code in world.perception.failures:
            failures[code] = failures.get(code, 0) + 1
    return ModeSummary(task=task, fault=fault, episodes=n, replan=replan, successes=k, success_rate=k / n if n else 0.0,
                       ci95=wilson_interval(k, n), mean_replans=sum(r.replans for r in results) / max(n, 1),
                       mean_retries=sum(r.retries for r in results) / max(n, 1),
                       mean_steps=sum(r.step_runs for r in results) / max(n, 1),
                       mean_episode_s=sum(r.wall_s for r in results) / max(n, 1),
                       backend=results[0].backend if results else "", perception=results[0].perception if results else "",
                       fault_fired=sum(r.fault_fired for r in results),
                       fault_detected=sum(r.fault_detected for r in results),
                       all_steps_finished=sum(r.stopped == "done" for r in results),
                       all_steps_first_try=sum(r.success and all(st.status == "finished" for st in r.steps)
                                               for r in results),
                       stopped=stopped, seeds=tuple(seeds),
                       position_error=errors, perception_failures=failures)


def format_table(rows: Sequence[ModeSummary]) -> str:
    """One row per (fault, perception, mode). `success`: the simulator's verdict; `bridge done`: the bridge
    judged every step finished in the end; `first try`: successful with every step right at its first run."""
    head = (f"{'planner':<19} {'fault':<14} {'perception':<24} {'mode':<11} {'success':>9} {'95% CI':>15} {'bridge done':>11} "
            f"{'first try':>9} {'replans':>8} {'retries':>8} {'steps':>6} {'s/ep':>6} {'fault fired/detected':>21}  stopped")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.backend:<19} {r.fault:<14} {r.perception:<24} {'replan' if r.replan else 'no-replan':<11} "
                     f"{f'{r.successes}/{r.episodes}':>9} {f'[{r.ci95[0]:.1%}, {r.ci95[1]:.1%}]':>15} "
                     f"{r.all_steps_finished / max(r.episodes, 1):>11.0%} {r.all_steps_first_try / max(r.episodes, 1):>9.0%} "
                     f"{r.mean_replans:>8.2f} {r.mean_retries:>8.2f} "
                     f"{r.mean_steps:>6.2f} "
                     f"{r.mean_episode_s:>6.2f} {f'{r.fault_fired}/{r.fault_detected}':>21}  "
                     + ", ".join(f"{k}: {v}" for k, v in sorted(r.stopped.items())))
    return "\n".join(lines)


def format_accuracy(rows: Sequence[ModeSummary]) -> str:
    """Camera perception's position error per object (every estimate a skill received), and refusals."""
    head = (f"{'perception':<24} {'mode':<11} {'object':<8} {'n':>5} {'mean mm':>8} {'p95 mm':>7} {'max mm':>7} "
            f"{'xy mm':>6} {'|z| mm':>7} {'yaw deg':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        for obj, e in r.position_error.items():
            lines.append(f"{r.perception:<24} {'replan' if r.replan else 'no-replan':<11} {obj:<8} {e['n']:>5} "
                         f"{e['mean_mm']:>8.1f} {e['p95_mm']:>7.1f} {e['max_mm']:>7.1f} {e['mean_xy_mm']:>6.1f} "
                         f"{e['mean_abs_z_mm']:>7.1f} {e['mean_yaw_deg']:>8.1f}")
        if r.perception_failures:
            lines.append(f"{r.perception:<24} refused estimates: "
                         + ", ".join(f"{k}: {v}" for k, v in sorted(r.perception_failures.items())))
    return "\n".join(lines)


#: how each task's success is read from the simulator (printed with the table)
SUCCESS_RULE = {"transfer_cube": "simulator reward 4 at any time", "insertion": "simulator reward 4 at any time",
                "clear_table": "all 4 objects inside the bin at the end"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emu-ros eval", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="transfer_cube", choices=sorted(TASKS))
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--fault", default=["none"], nargs="+", choices=FAULT_KINDS,
                   help="one or more faults; each is a row of the table (same seeds)")
    p.add_argument("--fault-step", default=None,
                   help="0-based step index the fault hits, or 'random' (seeded); default: first eligible step")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-replan", action="store_true", help="stop at the first failed step")
    mode.add_argument("--compare", action="store_true", help="run with and without re-planning on the same seeds")
    p.add_argument("--perception", default="oracle", choices=["oracle", "camera", "both"],
                   help="object poses from the labelled ground-truth oracle, from camera perception on rendered "
                        "RGB-D frames, or both on the same seeds (default: oracle)")
    p.add_argument("--planner", default=["auto"], nargs="+", choices=["auto", "world-model", "scripted"],
                   help="world-model: the shipped simulator world model (models/sim-aloha) plans text + step images "
                        "from the camera view; scripted: the labelled scripted reference; several: rows of one table "
                        "on the same seeds (default auto: the world model for the tasks it was trained on)")
    p.add_argument("--instruction", default="", help="the instruction given to the planner, in any phrasing "
                   "(default: the task's own; the scripted reference only knows its task names and aliases)")
    p.add_argument("--model-root", default=None, help="another trained copy of the simulator world model "
                   "(a folder with Emu3.5/, Emu3.5-VisionTokenizer/, backend.yaml)")
    p.add_argument("--seed", type=int, default=1000, help="first seed (episodes use seed..seed+N-1; the shipped "
                   "world model was trained on seeds 0..63)")
    p.add_argument("--json", metavar="FILE", help="write the summary (one object, or a list with --compare)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="log every step failure (the runner warns per step)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # step failures are the point of the evaluation: count them, do not print each
        for name in ("emu_ros.bridge.runner", "emu_ros.bridge.skills", "emu_ros.sim.adapter"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if args.episodes < 1:
        print("--episodes must be >= 1", file=sys.stderr)
        return 2
    step = args.fault_step
    if step is not None and step != "random":
        try:
            step = int(step)
        except ValueError:
            print(f"--fault-step must be an integer or 'random', got {step!r}", file=sys.stderr)
            return 2
    modes = [True, False] if args.compare else [not args.no_replan]
    kinds = ["oracle", "camera"] if args.perception == "both" else [args.perception]
    from emu_ros.guidance.backends.sim_world_model import resolve_planner

    planners = []
    for name in args.planner:
        name, why = resolve_planner(name, args.task, args.model_root)
        if why:
            print(f"planner: {why}")
        planners.append(name)
    args.planner = list(dict.fromkeys(planners))
    try:
        from emu_ros.sim.episode import EpisodeConfig, make_planner

        model = make_planner(EpisodeConfig(task=args.task, planner="world-model", model_root=args.model_root)) \
            if "world-model" in args.planner else None
        rows = [evaluate(args.task, args.episodes, f, m, args.seed, step, progress=not args.quiet,
                         perception=k, planner=pl, instruction=args.instruction,
                         model_root=args.model_root, world_model=model if pl == "world-model" else None)
                for f in args.fault for k in kinds for m in modes for pl in args.planner]
    except (ValueError, FileNotFoundError) as e:  # a fault no step is eligible for; the model missing
        print(f"emu-ros eval: {e}", file=sys.stderr)
        return 2
    r0 = rows[0]
    print(f"task {r0.task} | {r0.episodes} episodes per row (seeds {r0.seeds[0]}..{r0.seeds[-1]}) | "
          f"planner: {' / '.join(sorted({r.backend for r in rows}))} | loop: bridge TaskRunner + StepMonitor | "
          "object poses: " + " / ".join(
              f"{k} ({'sim-ground-truth-oracle: ground truth' if k == 'oracle' else 'camera perception, RGB-D'})"
              for k in kinds) + f" | success = {SUCCESS_RULE.get(r0.task, 'simulator reward 4')} (scoring only)")
    print(f"instruction: {args.instruction or 'the task name'!r}")
    print(format_table(rows))
    if any(r.position_error for r in rows):
        print("\ncamera perception, position error against the simulator's truth (every camera estimate a skill used;"
              "\nan object in a gripper is tracked by the arm's kinematics from its grasp, not measured here):")
        print(format_accuracy(rows))
    if args.json:
        payload = [r.to_json() for r in rows] if len(rows) > 1 else rows[0].to_json()
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"summary written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
