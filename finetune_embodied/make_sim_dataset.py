"""Record scripted simulator episodes as a small LeRobot v3.0 dataset with step annotations (never downloads).

Each episode runs the sim task's scripted step list (``config/tasks/<task>.yaml``) through the same skills the
closed-loop demo uses (``emu_ros.sim``: gym-aloha physics, ``ProfileSkillExecutor``), and records the 14-d ALOHA
joint state, the commanded action and the camera views every ``record_every`` control ticks. The start frame of
each scripted step is stored as a lerobot 0.6 ``language_persistent`` subtask row, so the dataset carries the
same step texts the planner uses. Per-episode seeds, rewards and success go to ``meta/sim_rollouts.json``
(lerobot ignores extra files in meta/).

Rendering dominates the cost (~80-120 ms per camera frame with Mesa llvmpipe on a CPU), hence 10 fps by default.

    MUJOCO_GL=egl python -m finetune_embodied.make_sim_dataset --out runs/sim_dataset \
        --tasks transfer_cube insertion --episodes_per_task 6 --cameras cam_high cam_left_wrist
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

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


def _step_list(task: str) -> list[str]:
    from emu_ros.sim.tasks import task_file

    data = yaml.safe_load(task_file(task).read_text(encoding="utf-8"))
    return [s["text"] if isinstance(s, dict) else str(s) for s in data["steps"]]


def record_episode(task: str, seed: int, cfg: SimDatasetConfig) -> tuple[_Recorder, list[tuple[int, str]], dict]:
    """Run one scripted episode; returns the recording, [(start_frame, step text)] and a rollout summary."""
    from emu_ros.core.profile import load_profile
    from emu_ros.bridge.skill_mapper import SkillMapper
    from emu_ros.bridge.skills import ProfileSkillExecutor
    from emu_ros.sim.adapter import SimRobotAdapter
    from emu_ros.sim.aloha_env import AlohaSim
    from emu_ros.sim.perception import GroundTruthPerception
    from emu_ros.sim.tasks import task_def

    profile = load_profile("sim_aloha")
    sim = AlohaSim(task, image_size=(cfg.height, cfg.width))
    sim.reset(seed)
    adapter = SimRobotAdapter(sim, profile)
    executor = ProfileSkillExecutor(profile, adapter, GroundTruthPerception(sim), task_def(task).skill_params)
    mapper = SkillMapper.load()
    rec = _Recorder(list(cfg.cameras), (cfg.height, cfg.width), cfg.record_every)
    rec(sim)  # the initial view is frame 0
    sim.tick_hooks.append(rec)
    subtasks, failed = [], []
    for text in _step_list(task):
        subtasks.append((len(rec.states), text))
        mapped = mapper.map(text)
        if not mapped.mapped:
            failed.append(f"{text}: not mapped to a skill")
            continue
        ex = executor.execute(mapped.call)
        if ex.error or not ex.motion_ok:
            failed.append(f"{text}: {ex.error or 'motion not ok'}")
    adapter.hold(cfg.settle_ticks / CONTROL_HZ)
    sim.tick_hooks.remove(rec)
    from emu_ros.sim.scoring import score

    summary = {"task": task, "seed": seed, "max_reward": sim.max_reward, "success": score(sim).success,
               "frames": len(rec.states), "failed_steps": failed}
    # a step that started on the very last frame has no frames of its own: drop it
    subtasks = [(s, t) for s, t in subtasks if s < len(rec.states)]
    return rec, subtasks, summary


def build_dataset(cfg: SimDatasetConfig) -> Path:
    """Record all episodes and write the dataset; returns its root."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from emu_ros.sim.tasks import task_def

    fps = CONTROL_HZ // cfg.record_every
    features = {f"observation.images.{cam}": {"dtype": "video", "shape": (cfg.height, cfg.width, 3),
                                              "names": ["height", "width", "channels"]} for cam in cfg.cameras}
    features["observation.state"] = {"dtype": "float32", "shape": (14,), "names": ALOHA_JOINT_NAMES}
    features["action"] = {"dtype": "float32", "shape": (14,), "names": ALOHA_JOINT_NAMES}
    writer = LeRobotDatasetWriter.create(cfg.out, fps=fps, features=features, robot_type="aloha",
                                         overwrite=cfg.overwrite)
    rollouts = []
    for task in cfg.tasks:
        instruction = task_def(task).instruction
        for k in range(cfg.episodes_per_task):
            t0 = time.time()
            rec, subtasks, summary = record_episode(task, cfg.seed + k, cfg)
            if not summary["success"] and not cfg.keep_failed:
                log.warning("%s seed %d failed (max reward %g); skipped", task, cfg.seed + k, summary["max_reward"])
                continue
            for i in range(len(rec.states)):
                frame = {f"observation.images.{cam}": rec.images[cam][i] for cam in cfg.cameras}
                frame.update({"observation.state": rec.states[i], "action": rec.actions[i], "task": instruction})
                writer.add_frame(frame)
            summary["episode_index"] = writer.save_episode(subtasks=subtasks)
            rollouts.append(summary)
            log.info("%s seed %d: %d frames, %d steps, max reward %g (%.1fs)", task, cfg.seed + k, summary["frames"],
                     len(subtasks), summary["max_reward"], time.time() - t0)
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
