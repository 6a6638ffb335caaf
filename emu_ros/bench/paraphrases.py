"""Held-out phrasings: does the shipped world model plan the right task when asked in words it never saw?

Each held-out phrasing of config/instructions/paraphrases.yaml (none is in the training data) is given to the
world model on a few held-out seeds of its task's scene, from the scene's first camera view. A try plans the right
task when every planned step maps (SkillMapper) to the same skill call as the task's reference plan, in order;
the stricter column asks for the reference plan's exact step texts. Prints a table and JSON.

    python -m emu_ros.bench.paraphrases --seeds 4000 4002 --json emu_ros/bench/results/paraphrases_cpu.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path


def reference_calls(task: str, mapper) -> list:
    from emu_ros.guidance.backends.scripted import ScriptedWorldModel
    from emu_ros.sim.tasks import task_def, task_file

    steps = ScriptedWorldModel(task_files=[task_file(task)]).find(task_def(task).instruction).steps
    return [s.text for s in steps], [_call_key(mapper.map(s.text)) for s in steps]


def _call_key(mapped) -> tuple:
    if not mapped.mapped:
        return ("unmapped",)
    c = mapped.call
    return (c.skill, c.arm, c.obj, c.location, tuple(sorted((k, str(v)) for k, v in c.params.items())))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["transfer_cube", "insertion"])
    ap.add_argument("--seeds", nargs=2, type=int, default=[4000, 4002], metavar=("FIRST", "LAST"))
    ap.add_argument("--model-root", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from tqdm import tqdm

    from emu_ros.core.types import PlanningError
    from emu_ros.guidance.engine import EngineConfig, GuidanceEngine
    from emu_ros.sim.episode import EpisodeConfig, SimWorld, make_planner
    from emu_ros.sim.tasks import paraphrases

    model = make_planner(EpisodeConfig(planner="world-model", model_root=args.model_root))
    seeds = list(range(args.seeds[0], args.seeds[1] + 1))
    rows, t0 = [], time.time()
    for task in args.tasks:
        world = SimWorld(task)
        ref_texts, ref_calls = reference_calls(task, world.mapper)
        engine = GuidanceEngine(model, world.images, EngineConfig(cameras=("cam_high",)))
        for phrase in tqdm(paraphrases(task)["held_out"], desc=task):
            for seed in seeds:
                world.reset(seed)
                try:
                    plan = engine.plan(phrase)
                    texts = [s.text for s in plan.steps]
                    error = ""
                except PlanningError as e:
                    texts, error = [], str(e)
                calls = [_call_key(world.mapper.map(t)) for t in texts]
                rows.append({"task": task, "phrase": phrase, "seed": seed, "right_task": calls == ref_calls,
                             "exact_plan": texts == ref_texts, "steps": texts, "error": error})
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "model": model.name, "seeds": args.seeds,
           "wall_s": round(time.time() - t0, 1), "tries": len(rows),
           "right_task": sum(r["right_task"] for r in rows), "exact_plan": sum(r["exact_plan"] for r in rows),
           "per_task": {t: {"tries": sum(r["task"] == t for r in rows),
                            "right_task": sum(r["right_task"] for r in rows if r["task"] == t)} for t in args.tasks},
           "rows": rows}
    print(f"{'task':<14} {'phrasing':<58} {'right task':>10} {'exact plan':>10}")
    for task in args.tasks:
        for phrase in paraphrases(task)["held_out"]:
            rs = [r for r in rows if r["task"] == task and r["phrase"] == phrase]
            print(f"{task:<14} {phrase[:58]:<58} {sum(r['right_task'] for r in rs):>5}/{len(rs):<4} "
                  f"{sum(r['exact_plan'] for r in rs):>5}/{len(rs):<4}")
    print(f"held-out phrasings: right task in {out['right_task']}/{out['tries']} tries "
          f"({out['right_task'] / max(out['tries'], 1):.0%}), exact reference plan in {out['exact_plan']}/{out['tries']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
