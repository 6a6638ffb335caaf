"""Record simulator episodes as a small LeRobot v3.0 dataset with step annotations (never downloads).

Each episode runs the shipped closed loop (``emu_ros.sim.episode.run_episode``: the bridge's TaskRunner + StepMonitor
with the labelled scripted reference planner, gym-aloha physics, the same skills as the demo), optionally with an
injected fault (``--fault_share``, ``--faults``) and the loop's recovery from it, and records the 14-d ALOHA joint
state, the commanded action and the camera views every ``record_every`` control ticks. Every step *attempt* is a
lerobot 0.6 ``language_persistent`` subtask row from its first frame; an attempt the monitor judged unfinished also
gets a ``step_outcome`` row ("unfinished: why"), so training samples can start from the failure state and answer
with the recovery. Each episode's instruction is one of the task's training phrasings
(``config/instructions/paraphrases.yaml``). Per-episode seeds, faults, verdicts and success go to ``meta/sim_rollouts.json``
(lerobot ignores extra files in meta/).

Rendering dominates the cost (~80-120 ms per camera frame with Mesa llvmpipe on a CPU), hence 10 fps by default.

    MUJOCO_GL=egl python -m finetune_embodied.make_sim_dataset --out runs/sim_dataset \
        --tasks transfer_cube insertion --episodes_per_task 6 --cameras cam_high cam_left_wrist --fault_share 0.3
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import parse_config, save_config
from .writer import ALOHA_JOINT_NAMES, LeRobotDatasetWriter

log = logging.getLogger(__name__)

CONTROL_HZ = 50


@dataclass
class SimDatasetConfig:
    """Options of the make_sim_dataset verb."""

    out: str = "runs/sim_dataset"
    """Dataset root to create (replaced when overwrite)."""
    tasks: list[str] = field(default_factory=lambda: ["transfer_cube"])
    """Sim tasks (emu_ros.sim.tasks.TASKS)."""
    episodes_per_task: int = 4
    """Episodes recorded per task."""
    seed: int = 0
    """First seed; episode k of a task uses seed + k (object poses are drawn from it)."""
    cameras: list[str] = field(default_factory=lambda: ["cam_high"])
    """Profile camera names (cam_high, cam_low, cam_left_wrist, cam_right_wrist)."""
    height: int = 96
    """Rendered image height (even)."""
    width: int = 128
    """Rendered image width (even)."""
    record_every: int = 5
    """Record every N control ticks (50 Hz / 5 = 10 fps)."""
    settle_ticks: int = 10
    """Ticks recorded after the last step so the final key frame shows the result at rest."""
    keep_failed: bool = True
    """Keep episodes whose task reward never reached the maximum (their steps are still meaningful)."""
    fault_share: float = 0.0
    """Share of episodes (seeded) with an injected fault of `faults`, recorded with the loop's recovery."""
    faults: dict[str, str] = field(default_factory=lambda: {"transfer_cube": "missed_grasp",
                                                            "insertion": "missed_grasp",
                                                            "clear_table": "missed_napkin"})
    """Fault kind injected per task (emu_ros.sim.faults.FAULT_KINDS)."""
    paraphrases: bool = True
    """Write each episode's instruction from config/instructions/paraphrases.yaml (train phrasings, in turn)."""
    overwrite: bool = False
    """Replace an existing dataset at out."""

    def __post_init__(self) -> None:
        if CONTROL_HZ % self.record_every:
            raise ValueError(f"record_every={self.record_every} must divide {CONTROL_HZ} (integer fps)")
        if self.height % 2 or self.width % 2:
            raise ValueError(f"height/width must be even for yuv420p video, got {self.height}x{self.width}")


@dataclass
class _Recorder:
    """Tick hook: keeps every Nth tick's state, action and camera views."""

    cameras: list[str]
    size: tuple[int, int]
    every: int
    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    images: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __call__(self, sim) -> None:
        if sim.ticks % self.every:
            return
        self.states.append(np.asarray(sim.qpos14(), np.float32))
        self.actions.append(np.asarray(sim.action, np.float32).copy())
        for cam in self.cameras:
            self.images.setdefault(cam, []).append(sim.render(cam, *self.size))


def episode_plan(cfg: SimDatasetConfig, task: str, k: int) -> tuple[int, str, str]:
    """(seed, fault kind, instruction) of episode k of a task: seeded, so a dataset is rebuilt identically."""
    from emu_ros.sim.tasks import paraphrases, task_def

    rng = np.random.default_rng([cfg.seed, k, len(task)])
    fault = cfg.faults.get(task, "none") if rng.random() < cfg.fault_share else "none"
    phrasings = paraphrases(task)["train"] if cfg.paraphrases else []
    instruction = phrasings[k % len(phrasings)] if phrasings else task_def(task).instruction
    return cfg.seed + k, fault, instruction


class _StepMarks:
    """Runner listener: the frame where each step attempt starts and, for an attempt that did not finish, why."""

    def __init__(self, rec: _Recorder) -> None:
        self.rec = rec
        self.subtasks: list[tuple[int, str]] = []
        self.outcomes: dict[int, str] = {}

    def __call__(self, event) -> None:
        from emu_ros.bridge.runner import EventType

        if event.type is EventType.STEP_STARTED:
            self.subtasks.append((len(self.rec.states), event.step_text))
        elif event.type in (EventType.STEP_UNFINISHED, EventType.STEP_FAILED) and self.subtasks:
            status = event.outcome.status.value if event.outcome is not None else "unfinished"
            self.outcomes[self.subtasks[-1][0]] = f"{status}: {event.message}"


def record_episode(task: str, seed: int, cfg: SimDatasetConfig, fault: str = "none",
                   world=None) -> tuple[_Recorder, list[tuple[int, str]], dict[int, str], dict]:
    """Run one seeded episode through the shipped closed loop (TaskRunner + StepMonitor, scripted reference
    planner, an optional injected fault and its recovery) and record it. Returns the recording, the step
    attempts [(start_frame, text)], {start_frame: "unfinished: why"} for attempts that did not finish, and a
    rollout summary."""
    from emu_ros.sim.episode import EpisodeConfig, SimWorld, run_episode
    from emu_ros.sim.faults import FaultSpec

    world = world or SimWorld(task, camera_size=(cfg.height, cfg.width))
    rec = _Recorder(list(cfg.cameras), (cfg.height, cfg.width), cfg.record_every)
    marks = _StepMarks(rec)
    result = run_episode(EpisodeConfig(task=task, seed=seed, fault=FaultSpec(kind=fault, seed=seed)), world,
                         listeners=(marks,), tick_hooks=(rec,))
    world.adapter.hold(cfg.settle_ticks / CONTROL_HZ)
    world.sim.tick_hooks.remove(rec)
    summary = {"task": task, "seed": seed, "fault": fault, "fault_fired": result.fault_fired,
               "max_reward": result.max_reward, "success": result.success, "replans": result.replans,
               "frames": len(rec.states), "steps": [f"{r.text} [{r.status}]" for r in result.steps]}
    # an attempt that started on the very last frame has no frames of its own: drop it
    subtasks = [(s, t) for s, t in marks.subtasks if s < len(rec.states)]
    outcomes = {s: note for s, note in marks.outcomes.items() if s < len(rec.states)}
    return rec, subtasks, outcomes, summary


def build_dataset(cfg: SimDatasetConfig) -> Path:
    """Record all episodes and write the dataset; returns its root."""
    os.environ.setdefault("MUJOCO_GL", "egl")

    fps = CONTROL_HZ // cfg.record_every
    features = {f"observation.images.{cam}": {"dtype": "video", "shape": (cfg.height, cfg.width, 3),
                                              "names": ["height", "width", "channels"]} for cam in cfg.cameras}
    features["observation.state"] = {"dtype": "float32", "shape": (14,), "names": ALOHA_JOINT_NAMES}
    features["action"] = {"dtype": "float32", "shape": (14,), "names": ALOHA_JOINT_NAMES}
    writer = LeRobotDatasetWriter.create(cfg.out, fps=fps, features=features, robot_type="aloha",
                                         overwrite=cfg.overwrite)
    rollouts = []
    from emu_ros.sim.episode import SimWorld
    from tqdm import tqdm

    bar = tqdm(total=len(cfg.tasks) * cfg.episodes_per_task, desc="sim episodes", unit="ep")
    for task in cfg.tasks:
        world = SimWorld(task, camera_size=(cfg.height, cfg.width))
        for k in range(cfg.episodes_per_task):
            t0 = time.time()
            seed, fault, instruction = episode_plan(cfg, task, k)
            rec, subtasks, outcomes, summary = record_episode(task, seed, cfg, fault, world)
            bar.update(1)
            if not summary["success"] and not cfg.keep_failed:
                log.warning("%s seed %d failed (max reward %g); skipped", task, seed, summary["max_reward"])
                continue
            for i in range(len(rec.states)):
                frame = {f"observation.images.{cam}": rec.images[cam][i] for cam in cfg.cameras}
                frame.update({"observation.state": rec.states[i], "action": rec.actions[i], "task": instruction})
                writer.add_frame(frame)
            summary["instruction"] = instruction
            summary["episode_index"] = writer.save_episode(subtasks=subtasks, outcomes=outcomes)
            rollouts.append(summary)
            log.info("%s seed %d (%s, fault %s): %d frames, %d attempts, success %s (%.1fs)", task, seed,
                     instruction, fault, summary["frames"], len(subtasks), summary["success"], time.time() - t0)
    bar.close()
    root = writer.finalize()
    (root / "meta" / "sim_rollouts.json").write_text(json.dumps(rollouts, indent=2), encoding="utf-8")
    save_config(cfg, root / "meta" / "make_sim_dataset_config.yaml")
    return root


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = parse_config(SimDatasetConfig, argv, __doc__ or "")
    print(build_dataset(cfg))


if __name__ == "__main__":
    main()
