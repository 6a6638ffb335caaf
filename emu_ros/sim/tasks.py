"""Simulated ALOHA tasks: which scene, which scripted step list, which skill geometry.

The step lists live in `config/tasks/<task>.yaml` (the scripted reference planner's schema). The
per-task skill geometry (a cube may be gripped across either pair of faces, where the insertion
meets, ...) is here because it belongs to the simulated scene, not to the planner.

`write_reference_plan` renders the step images for one seed: it runs a fault-free reference
episode with the same skills at plan time, saves the camera view after each step, and writes a
task file pointing at those images. Those images are "scripted reference" pictures, not model
predictions, and are labelled so in the task file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from emu_ros.core.profile import RobotProfile, config_dir, load_profile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimTaskDef:
    name: str
    instruction: str
    skill_params: dict = field(default_factory=dict)


TASKS = {
    "transfer_cube": SimTaskDef(
        name="transfer_cube",
        instruction="transfer the cube",
        skill_params={
            "objects": {"box": {"grasp_symmetry": 4, "object_half_height": 0.02}},
            "meet_point": (0.0, 0.5, 0.25),
        },
    ),
    "insertion": SimTaskDef(
        name="insertion",
        instruction="insert the peg into the socket",
        skill_params={
            "objects": {
                # gripped at its centre: an off-centre grip makes the low-gain wrist sag and tilt the peg
                "peg": {"grasp_symmetry": 2, "object_half_height": 0.01, "object_half_length": 0.06},
                "socket": {"grasp_symmetry": 2, "object_half_height": 0.022, "insert_depth": 0.095,
                           "pre_insert": 0.05},
            },
            "meet_point": (-0.10, 0.5, 0.20),
            "lift_height": 0.10,
            "skills": {"lift": {"lift_orient": "keep"}},
        },
    ),
    "clear_table": SimTaskDef(
        name="clear_table",
        instruction="clear the table",
        skill_params={
            "objects": {
                # a strip folded from a paper napkin: pinched at the end nearest the arm (skills_pinch)
                "napkin": {"pinch": True, "grasp_symmetry": 2, "object_half_height": 0.003,
                           "object_half_length": 0.10, "place_offset": (0.01, -0.02, 0.0)},
                # 2-fold: upright any closing axis holds it; on its side only one across its axis does
                "cup": {"grasp_symmetry": 2, "object_half_height": 0.04, "grasp_offset_z": -0.008,  # pads across its widest line
                        "place_offset": (-0.045, -0.03, 0.02)},
                "spoon": {"grasp_symmetry": 2, "object_half_height": 0.006, "place_offset": (0.04, 0.035, 0.0)},
                "sponge": {"grasp_symmetry": 2, "object_half_height": 0.02, "place_offset": (-0.045, 0.035, 0.0)},
            },
            # released 10 cm up over the bin's middle (walls 6 cm): each object falls into its own quarter
            "locations": {"bin": (0.0, 0.70, 0.10)},
            "skills": {"place": {"retreat_toward_base": True}},  # leave the shared bin free for the other arm
        },
    ),
}


def task_def(task: str) -> SimTaskDef:
    if task not in TASKS:
        raise ValueError(f"unknown sim task {task!r} (known: {sorted(TASKS)})")
    return TASKS[task]


def paraphrases(task: str) -> dict:
    """{"train": [...], "held_out": [...]}: phrasings of a task's instruction (config/instructions/paraphrases.yaml).
    The world model's training data uses the first; the second never enters it (the held-out benchmark)."""
    data = yaml.safe_load((config_dir() / "instructions" / "paraphrases.yaml").read_text(encoding="utf-8")) or {}
    if task not in data:
        raise KeyError(f"config/instructions/paraphrases.yaml has no phrasings of {task!r}")
    return {"train": list(data[task].get("train") or []), "held_out": list(data[task].get("held_out") or [])}


def task_file(task: str) -> Path:
    """The scripted step list of a sim task."""
    task_def(task)
    return config_dir() / "tasks" / f"{task}.yaml"


def step_texts(task: str) -> list:
    data = yaml.safe_load(task_file(task).read_text())
    return [s["text"] if isinstance(s, dict) else str(s) for s in data["steps"]]


def write_reference_plan(task: str, seed: int, out_dir: Path, camera: str = "cam_high", size: tuple = (240, 320),
                         profile: Optional[RobotProfile] = None) -> Path:
    """Run a fault-free reference episode for `seed`, save the view after each step, write a task file.

    Returns the path of the written task file (same steps, `image:` set). The images show what the
    scripted skills achieve on this seed; they stand in for the world model's predicted images.
    """
    from emu_ros.bridge.skill_mapper import SkillMapper
    from emu_ros.bridge.skills import ProfileSkillExecutor
    from emu_ros.sim.adapter import SimRobotAdapter
    from emu_ros.sim.aloha_env import AlohaSim
    from emu_ros.sim.perception import GroundTruthPerception

    out_dir = Path(out_dir)
    img_dir = out_dir / "reference_images"
    img_dir.mkdir(parents=True, exist_ok=True)
    profile = profile or load_profile("sim_aloha")
    sim = AlohaSim(task, image_size=size)
    sim.reset(seed, settle_s=0.4)  # as in the closed-loop episodes
    adapter = SimRobotAdapter(sim, profile)
    executor = ProfileSkillExecutor(profile, adapter, GroundTruthPerception(sim), task_def(task).skill_params)
    mapper = SkillMapper.load()
    data = yaml.safe_load(task_file(task).read_text())
    try:
        _run_reference(sim, executor, mapper, data, img_dir, camera, size, seed)
    finally:
        sim.close()  # free this throw-away simulator's render thread and GL context now
    data["description"] = (f"{data.get('description', '')} [step images: scripted reference episode rendered "
                           f"from the simulator, seed {seed}, camera {camera}; max reward {sim.max_reward:g}]").strip()
    path = out_dir / f"{task}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    log.info("reference plan for %s seed %d written to %s (reference reward %g)", task, seed, path, sim.max_reward)
    return path


def _run_reference(sim, executor, mapper, data: dict, img_dir: Path, camera: str, size: tuple, seed: int) -> None:
    from PIL import Image

    for i, step in enumerate(data["steps"]):
        m = mapper.map(step["text"])
        if m.mapped:
            ex = executor.execute(m.call)
            if ex.error or not ex.motion_ok:
                log.warning("reference episode seed %d step %d (%s) did not finish: %s", seed, i + 1, step["text"],
                            ex.error or [r.message for _, r in ex.goals if not r.ok])
        img = sim.render(camera, *size)
        name = f"step{i + 1:02d}_{step.get('id', i + 1)}.png"
        Image.fromarray(img).save(img_dir / name)
        step["image"] = f"reference_images/{name}"


def reference_images(task_yaml: Path) -> list:
    """The step images of a written reference plan, as uint8 arrays (None where a step has none)."""
    from PIL import Image

    data = yaml.safe_load(Path(task_yaml).read_text())
    out = []
    for s in data["steps"]:
        p = s.get("image") if isinstance(s, dict) else None
        out.append(np.asarray(Image.open(Path(task_yaml).parent / p).convert("RGB")) if p else None)
    return out
