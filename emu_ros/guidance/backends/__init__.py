"""World-model backends and their factory: `make_world_model("scripted" | "emu35" | "sim-world-model", **settings)`.

`sim-world-model` is the Emu3.5 backend with the shipped simulator model's settings (`model_root` = another
trained copy; other settings override its backend.yaml)."""
from __future__ import annotations

from typing import Any

from emu_ros.core.types import WorldModel

BACKENDS = ("scripted", "emu35", "sim-world-model")


def make_world_model(kind: str, **settings: Any) -> WorldModel:
    """Build a backend by name. scripted: task_dir, task_files, step_delay_s. emu35: see Emu35WorldModel."""
    kind = (kind or "").strip().lower()
    if kind in ("scripted", "scripted-reference"):
        from emu_ros.guidance.backends.scripted import ScriptedWorldModel

        return ScriptedWorldModel(**settings)
    if kind in ("emu35", "emu3.5", "emu35-ar", "emu35-dida"):
        from emu_ros.guidance.backends.emu35 import Emu35WorldModel

        if kind.endswith("-dida"):
            settings.setdefault("mode", "dida")
        return Emu35WorldModel(**settings)
    if kind in ("sim-world-model", "world-model"):
        from emu_ros.guidance.backends.emu35 import Emu35WorldModel
        from emu_ros.guidance.backends.sim_world_model import sim_world_model_settings

        root = settings.pop("model_root", None)
        return Emu35WorldModel(**sim_world_model_settings(root, **settings))
    raise ValueError(f"unknown world-model backend {kind!r}; choose one of {BACKENDS}")
