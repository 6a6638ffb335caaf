"""Training checkpoints: the official Emu3.5 model directory plus everything needed to resume exactly.

Layout (``output_dir/checkpoints/``)::

    step_000050/
      Emu3.5/                   config.json, generation_config.json, model-0000i-of-0000n.safetensors,
                                model.safetensors.index.json, emu3.tiktoken, emu3_vision_tokens.txt
                                -> loads with emu_ros.model.load_lm(step_000050/Emu3.5); LoRA adapters merged in
      training_state.pt         optimizer, scheduler, RNG states (python, numpy, torch, cuda), step, micro-batches
                                consumed, and the unmerged LoRA adapters (a LoRA resume must not re-merge)
      trainer_state.json        step, metrics so far (human-readable)
      train_config.yaml         the resolved config of the run
    latest                      name of the newest complete checkpoint

A checkpoint is written to a hidden temporary folder and renamed when complete, and ``latest`` is replaced
atomically, so a crash mid-save leaves the previous checkpoint as the resume point.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LM_DIR = "Emu3.5"
STATE_FILE = "training_state.pt"
LATEST_FILE = "latest"
COPIED_FILES = ("generation_config.json", "emu3.tiktoken", "emu3_vision_tokens.txt")


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop touches."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: Path, step: int, weights: dict[str, torch.Tensor], lm_config, source_lm_dir: Path,
                    training_state: dict[str, Any], trainer_state: dict[str, Any], config_yaml: str,
                    keep: int, num_shards: int = 1, lm_dir_hook: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint ``step`` (official LM dir + resume state), point ``latest`` at it, prune old ones.

    ``lm_dir_hook(lm_dir)`` may add files to the model directory before the checkpoint becomes visible.
    """
    from emu_ros.model.random_checkpoint import write_sharded_safetensors

    root = Path(output_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    tmp = root / f".tmp_{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    lm_dir = tmp / LM_DIR
    lm_dir.mkdir(parents=True)
    lm_config.save(lm_dir / "config.json")
    write_sharded_safetensors({k: v.detach().contiguous().cpu() for k, v in weights.items()}, lm_dir, num_shards)
    for file in COPIED_FILES:
        if (Path(source_lm_dir) / file).is_file():
            shutil.copy2(Path(source_lm_dir) / file, lm_dir / file)
    if lm_dir_hook is not None:
        lm_dir_hook(lm_dir)
    torch.save(training_state, tmp / STATE_FILE)
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
    (tmp / "train_config.yaml").write_text(config_yaml, encoding="utf-8")
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    pointer = root / f".{LATEST_FILE}.tmp"
    pointer.write_text(name, encoding="utf-8")
    os.replace(pointer, root / LATEST_FILE)
    _prune(root, keep)
    log.info("saved checkpoint %s", final)
    return final


def _prune(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        return None
    path = root / pointer.read_text(encoding="utf-8").strip()
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} points at {path}, which has no {STATE_FILE}; delete {pointer} to "
                                "start over or restore the checkpoint")
    return path


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    """The resume state of a checkpoint (trusted local file written by save_checkpoint)."""
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)
