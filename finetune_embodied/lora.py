"""The project's one LoRA, for the Emu3.5 decoder's attention/MLP projections (PEFT is not used).

Why our own rather than PEFT: it keeps the official tensor names (``q_proj.weight`` stays the frozen base
matrix, the adapter adds ``q_proj.lora_A`` / ``q_proj.lora_B``), it is built on the meta device and
sharded by FSDP2 like every other weight, and its initial values are seeded per tensor name
(``adapter_init``), so 1 rank and 8 ranks start from the same adapters. ``merged_state_dict`` folds the adapters
in (W + scale * B @ A) and drops them, which gives exactly the official checkpoint keys for ``load_lm``.
Reference: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (B starts at zero, so training
starts from the base model's function; scale = alpha / rank).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraConfig:
    """LoRA settings (disabled = full fine-tune)."""

    enabled: bool = False
    """Train low-rank adapters instead of all weights."""
    rank: int = 8
    """Adapter rank r."""
    alpha: float = 16.0
    """Scale numerator: the update is (alpha / rank) * B @ A."""
    dropout: float = 0.0
    """Dropout on the adapter input."""
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    """Linear layer names (attention and MLP projections) that get adapters."""
    train_embeddings: bool = False
    """Also train embed_tokens and lm_head (useful when new special tokens matter; costs 2.9B params at 34B)."""


class LoraLinear(nn.Module):
    """``y = x W^T + scale * dropout(x) A^T B^T``; ``weight`` is the (frozen) base nn.Linear weight."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if base.bias is not None:
            raise ValueError("Emu3.5 projections have no bias; LoraLinear does not handle one")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        dev = base.weight.device
        # values come from init_adapters (seeded per module name, the same on any number of ranks)
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=dev, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=dev, dtype=dtype))
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Base projection plus the low-rank update (adapter math in the input dtype under autocast)."""
        base = F.linear(x, self.weight)
        update = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return base + self.scale * update

    def merged_weight(self) -> Tensor:
        """W + scale * B @ A in the base weight's dtype."""
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale
        return (self.weight.float() + delta).to(self.weight.dtype)


def apply_lora(model: nn.Module, cfg: LoraConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> list[str]:
    """Freeze the model and replace target Linear layers with LoraLinear; returns the replaced module names.

    On a meta-device model the adapters stay unallocated; materialise, then fill them with ``adapter_init``.
    ``dtype``: the adapters' dtype (FSDP2 needs one dtype per sharded unit, so sharded runs pass the
    weights' dtype; a single process keeps fp32 adapters).
    """
    model.requires_grad_(False)
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in cfg.targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoraLinear(child, cfg.rank, cfg.alpha, cfg.dropout, dtype))
                replaced.append(f"{name}.{child_name}" if name else child_name)
    if not replaced:
        raise ValueError(f"no nn.Linear named {cfg.targets} found; check LoraConfig.targets")
    if cfg.train_embeddings:
        for name, p in model.named_parameters():
            if name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"):
                p.requires_grad_(True)
    if not any(p.is_meta for p in model.parameters()):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".lora_" in name:
                    p.copy_(adapter_init(name, p.shape, seed))
    return replaced


def adapter_init(name: str, shape: tuple[int, ...] | torch.Size, seed: int) -> Tensor:
    """Initial value of adapter tensor ``name`` (LM-relative, e.g. ``model.layers.0.self_attn.q_proj.lora_A``).

    A: Kaiming-uniform with a = sqrt(5) (bound 1 / sqrt(in_features), as nn.Linear), from a generator seeded
    by the seed and the name, so every rank count and shard layout starts from the same adapters; B: zeros,
    so training starts from the base model's function.
    """
    if name.endswith("lora_B"):
        return torch.zeros(shape)
    if not name.endswith("lora_A"):
        raise KeyError(f"{name} is not a LoRA adapter tensor")
    gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 63))
    bound = 1.0 / math.sqrt(shape[1])
    return (torch.rand(tuple(shape), generator=gen) * 2 - 1) * bound


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Only the trainable tensors (adapters, and embeddings when trained): what a LoRA resume needs."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def merge_lora_state(state: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """Fold ``x.lora_A``/``x.lora_B`` of a plain state dict into ``x.weight`` (same scale for every adapter)."""
    merged = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        prefix = key[:-len("weight")]
        if key.endswith(".weight") and prefix + "lora_A" in state:
            delta = (state[prefix + "lora_B"].float() @ state[prefix + "lora_A"].float()) * scale
            value = (value.float() + delta).to(value.dtype)
        merged[key] = value
    return merged


def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """State dict with adapters folded into ``weight`` and no ``lora_*`` keys: the official checkpoint keys."""
    scales = {m.scale for m in model.modules() if isinstance(m, LoraLinear)}
    if len(scales) > 1:
        raise ValueError(f"adapters with different scales {scales}; merge them per module")
    return merge_lora_state(model.state_dict(), scales.pop() if scales else 1.0)
