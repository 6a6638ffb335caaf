"""torchrun plumbing for the trainer: process group, FSDP2 sharding built on the meta device, and each
rank loading only its own shard of every weight straight from the safetensors files.

Why this way: the 34B model is 68 GB in bf16. Loading it whole on every rank before wrapping (what
FSDP1 with a full model does) needs 68 GB per rank *before* sharding; here the model is built on the
meta device, ``fully_shard`` is applied per decoder layer (and to the embedding and lm_head, the two
largest tensors), ``to_empty`` allocates only the local shards, and every local shard is read from the
memory-mapped checkpoint by slicing rows (FSDP2 shards dim 0 in ``torch.chunk`` order), so a rank never
holds more than its share plus one tensor's slice. Nothing here assumes one node: ranks, local ranks
and the rendezvous come from torchrun's environment (``--nnodes``/``--rdzv-endpoint``, see README).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass
class DistributedConfig:
    """torchrun settings (read only when WORLD_SIZE > 1)."""

    fsdp: bool = True
    """Shard parameters, gradients and optimizer state (FSDP2, one unit per decoder layer); False = DDP."""
    backend: str = "auto"
    """Process-group backend: auto = nccl on GPUs, gloo on CPUs."""


class RankMismatch(RuntimeError):
    """Ranks disagree on something that must be identical (the dataset, the config)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_ranks(cfg: DistributedConfig, device: str) -> Ranks:
    """Join the process group torchrun set up (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Ranks(dist.get_rank(), world, local)


def rank_device(ranks: Ranks, device: str) -> torch.device:
    """auto -> cuda:LOCAL_RANK when CUDA is there, else cpu; an explicit device is taken as given."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", ranks.local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def barrier(ranks: Ranks) -> None:
    """Wait for every rank (no-op for one process)."""
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier()


def gather_objects(ranks: Ranks, value: Any) -> list[Any]:
    """Every rank's ``value`` (in rank order)."""
    if not ranks.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out


def require_agreement(ranks: Ranks, value: str, what: str) -> None:
    """Raise on every rank when the ranks hold different ``value``s (e.g. the dataset fingerprint)."""
    values = gather_objects(ranks, value)
    if len(set(values)) > 1:
        per_rank = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
        raise RankMismatch(f"ranks disagree on {what} ({per_rank}); every rank must see the same files "
                           "(a shared filesystem or identical copies) and the same config")


def shutdown(ranks: Ranks) -> None:
    """Leave the process group."""
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ FSDP2
def shard_objective(objective: nn.Module, lm: nn.Module, mixed_bf16: bool) -> nn.Module:
    """``fully_shard`` every decoder layer, the embedding, the lm_head, then the objective as the root.

    ``mixed_bf16``: the shards stay in their (fp32) dtype and FSDP gathers them in bf16 for compute,
    reducing gradients in fp32 (master weights in fp32 only when asked for, see TrainConfig).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_bf16 else \
        MixedPrecisionPolicy()
    for layer in lm.model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(lm.model.embed_tokens, mp_policy=policy)
    fully_shard(lm.lm_head, mp_policy=policy)
    fully_shard(objective, mp_policy=policy)
    return objective


def shard_rows(rows: int, world: int, rank: int) -> tuple[int, int]:
    """[start, end) of dim 0 that ``rank`` holds: FSDP2 splits like ``torch.chunk`` (ceil-sized, the last
    ranks may hold fewer rows or none)."""
    size = math.ceil(rows / world)
    start = min(rows, rank * size)
    return start, min(rows, start + size)


def load_local_shards(module: nn.Module, prefix: str, model_dir: Path, ranks: Ranks,
                      fill: Callable[[str, Tensor], Tensor | None] | None = None) -> int:
    """Copy each parameter's local shard from the checkpoint into the materialised sharded ``module``.

    Parameter ``prefix + key`` reads checkpoint tensor ``key`` (rows of this rank only, cast to the
    parameter's dtype). A parameter the checkpoint lacks goes to ``fill(name, full_shape_tensor)``, which
    returns its full initial value (e.g. LoRA adapters) or None for an error. Returns the bytes read.
    """
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor

    from emu_ros.model.loading import checkpoint_files

    files = checkpoint_files(model_dir)
    read = 0
    with torch.no_grad():
        for name, param in module.named_parameters():
            key = name[len(prefix):] if name.startswith(prefix) else None
            local = param.to_local() if isinstance(param, DTensor) else param
            start, end = shard_rows(param.shape[0], ranks.world, ranks.rank) if isinstance(param, DTensor) \
                else (0, param.shape[0])
            if local.shape[0] != end - start:
                raise RuntimeError(f"{name}: local shard has {local.shape[0]} rows, expected {end - start} "
                                   f"(rows {start}:{end} of {param.shape[0]}); FSDP's sharding changed")
            if key is not None and key in files:
                # one memory map per tensor: the mapped pages of a slice count as resident memory until the
                # map is closed, so a map kept open for the whole load would hold this rank's share twice
                with safe_open(str(model_dir / files[key]), framework="pt", device="cpu") as shard:
                    piece = shard.get_slice(key)[start:end]
                    local.copy_(piece.to(local.dtype))
                    read += piece.numel() * piece.element_size()
                    del piece
                continue
            full = fill(name, torch.empty(param.shape, dtype=local.dtype)) if fill is not None else None
            if full is None:
                raise KeyError(f"{name}: not in {model_dir} and no initial value for it")
            local.copy_(full[start:end])
    return read


def full_state_dict(objective: nn.Module, ranks: Ranks) -> dict[str, Tensor]:
    """The objective's full (unsharded) state dict on rank 0, on the CPU; other ranks get {}.

    A collective under FSDP/DDP (every rank must call it). Rank 0 holds the whole model in CPU memory
    for the export (68 GB for 34B in bf16), one tensor gathered at a time.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not ranks.distributed:
        return {k: v.detach().cpu() for k, v in getattr(objective, "module", objective).state_dict().items()}
    state = get_model_state_dict(objective, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if ranks.rank == 0 else {}
