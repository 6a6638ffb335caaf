"""A small LoRA for the Emu3.5 decoder's attention/MLP projections (PEFT is not needed).

Why our own: PEFT is optional in this env, and ours keeps the official tensor names: ``q_proj.weight`` stays the
frozen base matrix, the adapter adds ``q_proj.lora_A`` / ``q_proj.lora_B``. ``merged_state_dict`` folds the adapters
in (W + scale * B @ A) and drops them, which gives exactly the official checkpoint keys for ``load_lm``.
Reference: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models" (B starts at zero, so training
starts from the base model's function; scale = alpha / rank).
"""

from __future__ import annotations

import math
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

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        if base.bias is not None:
            raise ValueError("Emu3.5 projections have no bias; LoraLinear does not handle one")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        dev, dtype = base.weight.device, torch.float32
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=dev, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=dev, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
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


def apply_lora(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Freeze the model and replace target Linear layers with LoraLinear; returns the replaced module names."""
    model.requires_grad_(False)
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in cfg.targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoraLinear(child, cfg.rank, cfg.alpha, cfg.dropout))
                replaced.append(f"{name}.{child_name}" if name else child_name)
    if not replaced:
        raise ValueError(f"no nn.Linear named {cfg.targets} found; check LoraConfig.targets")
    if cfg.train_embeddings:
        for name, p in model.named_parameters():
            if name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight"):
                p.requires_grad_(True)
    return replaced


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
