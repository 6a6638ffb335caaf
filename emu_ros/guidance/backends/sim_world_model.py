"""The shipped simulator world model (``models/sim-aloha``): where it is and how it is run.

It is an Emu3.5-architecture model in the official layout (``Emu3.5/`` + ``Emu3.5-VisionTokenizer/``), trained by
``make world-model`` (``finetune_embodied.world_model_recipe``) on simulated ALOHA episodes, so it runs through
the same ``Emu35WorldModel`` backend as the 34B release; only its settings differ, and they live next to the
weights in ``backend.yaml`` (image areas it was trained at, dtype, sampling), so a retrained model brings its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from emu_ros.core.profile import config_dir

SIM_MODEL = "sim-aloha"
SETTINGS_FILE = "backend.yaml"


class ShippedModelMissing(FileNotFoundError):
    """The shipped world model is not where it should be; the message says how to get it."""


def shipped_model_dir(name: str = SIM_MODEL) -> Path:
    """models/<name> of the source tree, or share/emu_ros/models/<name> when installed by colcon."""
    return config_dir().parent / "models" / name


def trained_tasks(model_root: Optional[str] = None) -> list:
    """The simulated tasks the model was trained on (backend.yaml `tasks`); [] when there is no model."""
    path = (Path(model_root) if model_root else shipped_model_dir()) / SETTINGS_FILE
    if not path.is_file():
        return []
    return list((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("tasks") or [])


def resolve_planner(planner: str, task: str, model_root: Optional[str] = None) -> tuple:
    """(planner, why) for a simulated task: "auto" is the world model where it was trained on the task, else the
    labelled scripted reference; an explicit choice is kept."""
    if planner != "auto":
        return planner, ""
    tasks = trained_tasks(model_root)
    if task in tasks:
        return "world-model", ""
    return "scripted", (f"the simulator world model was trained on {', '.join(tasks) or 'no task (none found)'}, not "
                        f"{task}: the labelled scripted reference plans it")


def sim_world_model_settings(model_root: Optional[str] = None, **overrides: Any) -> dict:
    """Keyword arguments of Emu35WorldModel for the shipped (or a retrained) simulator model."""
    root = Path(model_root) if model_root else shipped_model_dir()
    lm, vq = root / "Emu3.5", root / "Emu3.5-VisionTokenizer"
    missing = [str(p) for p in (lm / "config.json", vq / "config.yaml", root / SETTINGS_FILE) if not p.is_file()]
    if missing:
        raise ShippedModelMissing(f"the simulator world model is incomplete at {root} (missing: {', '.join(missing)}); "
                                  "restore it from git (git checkout -- models/sim-aloha) or rebuild it with "
                                  "`make world-model`; `--planner scripted` runs the labelled reference instead")
    settings = yaml.safe_load((root / SETTINGS_FILE).read_text(encoding="utf-8")) or {}
    settings.pop("tasks", None)
    generation = dict(settings.pop("generation", {}) or {})
    try:
        from emu_ros.model.generation import SamplingParams
    except ImportError as e:
        raise ShippedModelMissing(f"the simulator world model needs the model runtime, which cannot be imported "
                                  f"here ({e}): install torch (scripts/setup_env.sh does) or plan with "
                                  "`--planner scripted` (the labelled reference)") from e
    for mode in ("text", "image"):
        if mode in generation:
            generation[mode] = SamplingParams(**generation[mode])
    out = {"model_dir": str(lm), "vq_dir": str(vq), "generation": generation, **settings}
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out
