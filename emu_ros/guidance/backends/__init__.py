"""World-model backends and their factory: `make_world_model("scripted" | "emu35", **settings)`."""
from __future__ import annotations

from typing import Any

from emu_ros.core.types import WorldModel

BACKENDS = ("scripted", "emu35")


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
    raise ValueError(f"unknown world-model backend {kind!r}; choose one of {BACKENDS}")
