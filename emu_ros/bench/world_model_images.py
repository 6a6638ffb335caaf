"""Step-image quality of the shipped world model, and the visual check calibrated on its images.

For held-out seeds, every task runs through the shipped loop twice on the same seed: once planned by the world
model, once by the labelled scripted reference (whose step images are renders of a fault-free reference run).
Each step image a *first* plan predicted is compared with the camera frame after that step really finished
(the bridge judged it finished and the episode succeeded), as SSIM (grey, 7-px windows) and PSNR, beside a
"copy the current view" baseline (the view the plan was made from, against the same frames).

The same model runs give the calibration frames of the visual check: a predicted step image against the frame
after its step (success) and against the frame before it, the step not done (failure); `calibrate_threshold`
picks the threshold and reports precision / recall, with --write-profile it goes into
config/robots/sim_aloha.yaml. Prints a table and JSON.

    python -m emu_ros.bench.world_model_images --seeds 2000 2019 --json emu_ros/bench/results/world_model_images_cpu.json
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import time
from pathlib import Path

import numpy as np

from emu_ros.bridge.visual_check import grey_ssim, psnr

log = logging.getLogger(__name__)
def fit(image: np.ndarray, shape: tuple) -> np.ndarray:
    """Resize (area) to the camera frame's size when a prediction has another one."""
    if image.shape[:2] == tuple(shape[:2]):
        return image
    from emu_ros.bridge.visual_check import resize_area

    return resize_area(image, tuple(shape[:2]))


class StepFrames:
    """Runner listener: the view each first-plan step was planned from, its predicted image, the frame after it."""

    def __init__(self, world, camera: str = "cam_high"):
        self.world, self.camera = world, camera
        self.before = None
        self.first_plan = None
        self.after: dict[int, np.ndarray] = {}
        self.status: dict[int, str] = {}

    def _view(self) -> np.ndarray:
        return self.world.images.observe([self.camera]).frames[self.camera].image.copy()

    def __call__(self, e) -> None:
        from emu_ros.bridge.runner import EventType

        if e.type is EventType.PLANNING and self.first_plan is None and self.before is None:
            self.before = self._view()
        elif e.type is EventType.PLAN_READY and self.first_plan is None:
            self.first_plan = e.plan
        elif e.type in (EventType.STEP_FINISHED, EventType.STEP_UNFINISHED, EventType.STEP_FAILED) \
                and e.revision == 0 and e.step_index is not None and e.step_index not in self.after:
            self.after[e.step_index] = self._view()
            self.status[e.step_index] = e.outcome.status.value if e.outcome is not None else ""


def run_seed(task: str, seed: int, planner: str, world, model) -> tuple[StepFrames, object]:
    from emu_ros.sim.episode import EpisodeConfig, run_episode

    frames = StepFrames(world)
    cfg = EpisodeConfig(task=task, seed=seed, planner=planner, step_images=planner == "scripted",
                        out_dir=os.environ.get("TMPDIR", "/tmp") + "/emu_ros_bench_refs")
    result = run_episode(cfg, world, listeners=(frames,), planner=model)
    return frames, result


def compare(frames: StepFrames, result) -> list[dict]:
    """Per finished first-plan step: SSIM / PSNR of the prediction and of the copied view against the truth."""
    rows = []
    if frames.first_plan is None or frames.before is None or not result.success:
        return rows
    for i, step in enumerate(frames.first_plan.steps):
        if frames.status.get(i) != "finished" or step.image is None:
            continue
        truth = frames.after[i]
        pred = fit(step.image, truth.shape)
        rows.append({"step": i, "ssim": grey_ssim(pred, truth), "psnr": psnr(pred, truth),
                     "copy_ssim": grey_ssim(frames.before, truth), "copy_psnr": psnr(frames.before, truth)})
    return rows


def calibration_samples(frames: StepFrames, result) -> list:
    """(predicted, after) = success, (predicted, the view before the step) = failure, for finished steps."""
    from emu_ros.bridge.visual_check import CalibrationSample

    out = []
    if frames.first_plan is None or frames.before is None or not result.success:
        return out
    views = [frames.before] + [frames.after.get(i) for i in range(len(frames.first_plan.steps))]
    for i, step in enumerate(frames.first_plan.steps):
        if frames.status.get(i) != "finished" or step.image is None or views[i] is None:
            continue
        pred = fit(step.image, views[i + 1].shape)
        out.append(CalibrationSample(pred, views[i + 1], True, views[i]))
        out.append(CalibrationSample(pred, views[i], False, views[i]))
    return out


def summarise(rows: list[dict]) -> dict:
    if not rows:
        return {"steps": 0}
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("ssim", "psnr", "copy_ssim", "copy_psnr")}
    return {"steps": len(rows), **{k: round(v, 4) for k, v in mean.items()}}


def write_threshold(threshold: float, profile: Path) -> None:
    """Replace visual_check.threshold in the profile YAML, keeping its comments and layout."""
    text = profile.read_text(encoding="utf-8")
    new, n = re.subn(r"(visual_check:\n(?:  .*\n)*?  threshold: )[0-9.]+.*\n",
                     lambda m: f"{m.group(1)}{threshold:.3f}   # calibrated on world-model step images "
                               "(python -m emu_ros.bench.world_model_images)\n", text)
    if n != 1:
        raise ValueError(f"{profile}: no visual_check.threshold line to replace")
    profile.write_text(new, encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["transfer_cube", "insertion"])
    ap.add_argument("--seeds", nargs=2, type=int, default=[2000, 2019], metavar=("FIRST", "LAST"))
    ap.add_argument("--model-root", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--write-profile", action="store_true",
                    help="store the calibrated threshold in config/robots/sim_aloha.yaml")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from tqdm import tqdm

    from emu_ros.bridge.visual_check import calibrate_threshold, judge_from_profile
    from emu_ros.core.profile import config_dir, load_profile
    from emu_ros.sim.episode import EpisodeConfig, SimWorld, make_planner

    model = make_planner(EpisodeConfig(planner="world-model", model_root=args.model_root))
    seeds = list(range(args.seeds[0], args.seeds[1] + 1))
    table, samples, t0 = {}, [], time.time()
    for task in args.tasks:
        world = SimWorld(task)
        per = {"world-model": [], "scripted": []}
        for seed in tqdm(seeds, desc=task):
            for planner in per:
                frames, result = run_seed(task, seed, planner, world, model if planner == "world-model" else None)
                per[planner] += compare(frames, result)
                if planner == "world-model":
                    samples += calibration_samples(frames, result)
        table[task] = {k: summarise(v) for k, v in per.items()}
    judge = judge_from_profile(load_profile("sim_aloha").visual_check)
    report = calibrate_threshold(judge, samples)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "model": model.name, "seeds": args.seeds,
           "quality": table, "calibration": {k: v for k, v in report.__dict__.items() if k != "scores"},
           "wall_s": round(time.time() - t0, 1)}
    print(f"{'task':<14} {'planner':<12} {'steps':>5} {'SSIM':>6} {'PSNR dB':>8} {'copy SSIM':>10} {'copy PSNR':>10}")
    for task, per in table.items():
        for planner, s in per.items():
            if s["steps"]:
                print(f"{task:<14} {planner:<12} {s['steps']:>5} {s['ssim']:>6.3f} {s['psnr']:>8.2f} "
                      f"{s['copy_ssim']:>10.3f} {s['copy_psnr']:>10.2f}")
    print("visual check on world-model images:", report.summary())
    if args.write_profile:
        write_threshold(report.threshold, config_dir() / "robots" / "sim_aloha.yaml")
        print("threshold written to config/robots/sim_aloha.yaml")
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
