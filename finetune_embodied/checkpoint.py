"""Training checkpoints: a sharded resume state every rank writes its part of, and the official export.

Layout (``output_dir/checkpoints/``)::

    step_000050/
      state/                    torch.distributed.checkpoint (DCP): the trainable weights (all of them for a
                                full fine-tune, the adapters for LoRA; frozen base weights come from model_dir)
                                and the optimizer state, each rank writing its own shards; DCP re-shards on
                                load, so a run resumes on a different number of ranks
      trainer_state.pt          step, micro-batches consumed, scheduler, metrics, every rank's RNG states
      trainer_state.json        the same, human-readable (no RNG)
      train_config.yaml         the resolved config of the run (checked on resume)
      Emu3.5/                   official layout (config.json, shards + index, tokenizer files, dida_config.json
                                for DiDA): at the last step, or at every save with export_every_save;
                                LoRA adapters merged in -> loads with emu_ros.model.load_lm
    latest                      name of the newest complete checkpoint

Everything is written into a hidden temporary folder that is renamed when complete, and ``latest`` is
replaced atomically, so a crash mid-save leaves the previous checkpoint as the resume point.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .distributed import Ranks, barrier, gather_objects

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
LM_DIR = "Emu3.5"
STATE_DIR = "state"
TRAINER_STATE = "trainer_state.pt"
CONFIG_FILE = "train_config.yaml"
LATEST_FILE = "latest"
COPIED_FILES = ("generation_config.json", "emu3.tiktoken", "emu3_vision_tokens.txt")


class ResumeError(RuntimeError):
    """A checkpoint cannot continue this run (another model, objective, dataset or batch)."""


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


@contextmanager
def _single_process_quiet(ranks: Ranks):
    """DCP warns that it assumes one process when there is no process group: that is the intent here."""
    with warnings.catch_warnings():
        if not ranks.distributed:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _state_options(loading: bool = False):
    """Only trainable tensors (frozen base weights come from model_dir). On load, DCP itself fails on a key the
    checkpoint lacks, so the module load may skip the frozen keys (strict=False) without hiding a gap."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=not loading)


def save_checkpoint(output_dir: Path, step: int, objective: nn.Module, optimizer: torch.optim.Optimizer,
                    trainer_state: dict[str, Any], config_yaml: str, ranks: Ranks, keep: int,
                    export: Callable[[Path], None] | None = None) -> Path:
    """Write checkpoint ``step`` (collective: every rank calls it), point ``latest`` at it, prune old ones.

    ``export(lm_dir)`` (also collective) writes the official model directory into the checkpoint.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(output_dir) / CHECKPOINTS_DIR
    name = f"step_{step:06d}"
    tmp = root / f".tmp_{name}"
    if ranks.rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / STATE_DIR).mkdir(parents=True)
    barrier(ranks)
    model_state, optim_state = get_state_dict(objective, optimizer, options=_state_options())
    with _single_process_quiet(ranks):
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / STATE_DIR))
    rngs = gather_objects(ranks, rng_state())
    if export is not None:
        export(tmp / LM_DIR)
    if ranks.rank == 0:
        torch.save({**trainer_state, "rng": rngs, "world": ranks.world}, tmp / TRAINER_STATE)
        readable = {k: v for k, v in trainer_state.items() if k not in ("scheduler",)}
        (tmp / "trainer_state.json").write_text(json.dumps({**readable, "world": ranks.world}, indent=1,
                                                           default=str), encoding="utf-8")
        (tmp / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        pointer = root / f".{LATEST_FILE}.tmp"
        pointer.write_text(name, encoding="utf-8")
        os.replace(pointer, root / LATEST_FILE)
        _prune(root, keep)
        log.info("saved checkpoint %s", final)
    barrier(ranks)
    return root / name


def load_checkpoint(checkpoint: Path, objective: nn.Module, optimizer: torch.optim.Optimizer, ranks: Ranks,
                    trainer_state: dict[str, Any]) -> None:
    """Load the sharded state into the (possibly differently sharded) objective and optimizer, and restore
    this rank's RNG from ``trainer_state`` (the checkpoint's ``load_trainer_state``; rank 0's RNG when the
    checkpoint had fewer ranks)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(objective, optimizer, options=_state_options())
    state = {"model": model_state, "optim": optim_state}
    with _single_process_quiet(ranks):
        dcp.load(state, checkpoint_id=str(checkpoint / STATE_DIR))
    set_state_dict(objective, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_state_options(loading=True))
    rngs = trainer_state["rng"]
    set_rng_state(rngs[ranks.rank] if ranks.rank < len(rngs) else rngs[0])


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """The small, replicated part of a checkpoint (trusted local file written by save_checkpoint)."""
    return torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=False)


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
    if not (path / TRAINER_STATE).is_file() or not (path / STATE_DIR).is_dir():
        raise ResumeError(f"{pointer} points at {path}, which has no {TRAINER_STATE} or {STATE_DIR}/; delete "
                          f"{pointer} to start over or restore the checkpoint")
    return path


def write_model_dir(lm_dir: Path, weights: dict[str, torch.Tensor], lm_config, source_lm_dir: Path,
                    num_shards: int, extra: Callable[[Path], None] | None = None) -> Path:
    """The official Emu3.5 layout: config.json, safetensors shards + index, the tokenizer files."""
    from emu_ros.model.random_checkpoint import write_sharded_safetensors

    lm_dir.mkdir(parents=True, exist_ok=True)
    lm_config.save(lm_dir / "config.json")
    write_sharded_safetensors({k: v.detach().contiguous().cpu() for k, v in weights.items()}, lm_dir, num_shards)
    for file in COPIED_FILES:
        if (Path(source_lm_dir) / file).is_file():
            shutil.copy2(Path(source_lm_dir) / file, lm_dir / file)
    if extra is not None:
        extra(lm_dir)
    return lm_dir
