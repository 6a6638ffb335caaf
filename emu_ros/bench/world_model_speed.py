"""Speed of one guidance step of the shipped world model on this machine: AR vs DiDA, measured in one run.

A guidance step = the first step of a plan from a held-out scene's camera view: its text, then its step image,
with the shipped settings (backend.yaml: CFG as configured, greedy). The same prompt is generated with the
official token-by-token image decoder (AR) and with DiDA at the shipped number of passes, alternating, N times
each. `image s` runs from the step's last text token to the decoded picture (image tokens + vision-tokenizer
decode); `step s` is the whole request. Prints a table and JSON.

    python -m emu_ros.bench.world_model_speed --reps 10 --json emu_ros/bench/results/world_model_speed_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path


def one_step(runtime, question: str, view, config, area: int) -> dict:
    marks = {"text": None, "image": None}

    def on_text(_chunk):
        if marks["image"] is None:
            marks["text"] = time.perf_counter()

    def on_image(_img):
        if marks["image"] is None:
            marks["image"] = time.perf_counter()

    t0 = time.perf_counter()
    out = runtime.generate_interleaved(question, [view], task="vla", config=config, image_area=area,
                                       on_text=on_text, on_image=on_image)
    t1 = time.perf_counter()
    if marks["image"] is None:
        raise RuntimeError(f"no step image was generated (stop: {out.stop_reason}; text: {out.text[:80]!r})")
    return {"step_s": t1 - t0, "image_s": marks["image"] - (marks["text"] or t0), "text": out.text.strip()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=5000, help="held-out scene whose first view is the prompt")
    ap.add_argument("--model-root", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch

    from emu_ros.core.types import PlanRequest
    from emu_ros.guidance.backends.emu35 import step_image_grid
    from emu_ros.guidance.backends.sim_world_model import sim_world_model_settings
    from emu_ros.guidance.prompting import build_question
    from emu_ros.model import Emu35Runtime, task_config
    from emu_ros.model.dida import load_dida_config
    from emu_ros.sim.episode import SimWorld

    s = sim_world_model_settings(args.model_root)
    dtype = getattr(torch, s.get("dtype", "float32"))
    passes = load_dida_config(s["model_dir"]).passes
    runtimes = {"ar": Emu35Runtime(s["model_dir"], s["vq_dir"], device=s.get("device", "cpu"), dtype=dtype),
                "dida": Emu35Runtime(s["model_dir"], s["vq_dir"], device=s.get("device", "cpu"), dtype=dtype,
                                     decoder="dida")}
    world = SimWorld("transfer_cube")
    world.reset(args.seed)
    view = world.images.observe(["cam_high"]).frames["cam_high"].image
    grid = step_image_grid(view.shape, s["step_image_area"])
    config = replace(task_config("vla", **s["generation"]), image_size=grid, max_images=1, max_new_tokens=512)
    question = build_question(PlanRequest(task="transfer the cube"))
    for rt in runtimes.values():   # warm-up (allocator, first-call costs)
        one_step(rt, question, view, config, s["image_area"])
    runs = {k: [] for k in runtimes}
    for _ in range(args.reps):
        for k, rt in runtimes.items():
            runs[k].append(one_step(rt, question, view, config, s["image_area"]))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("step_s", "image_s")} for k, v in runs.items()}
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} threads", "device": s.get("device", "cpu"), "dtype": str(dtype),
           "image_tokens": grid[0] * grid[1], "grid": list(grid), "dida_passes": passes, "reps": args.reps,
           "cfg_scale": config.cfg_scale, "median": med,
           "dida_speedup_image": med["ar"]["image_s"] / med["dida"]["image_s"],
           "dida_speedup_step": med["ar"]["step_s"] / med["dida"]["step_s"],
           "step_text": {k: v[0]["text"] for k, v in runs.items()}}
    print(f"one guidance step ({grid[0]}x{grid[1]} image tokens, K={passes}, CFG {config.cfg_scale}, {args.reps} reps, "
          f"median):")
    for k, m in med.items():
        print(f"  {k:<5} step {m['step_s'] * 1000:8.1f} ms   image {m['image_s'] * 1000:8.1f} ms")
    print(f"  DiDA vs AR: image {out['dida_speedup_image']:.1f}x faster, whole step {out['dida_speedup_step']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
