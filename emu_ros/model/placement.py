"""Layers split across the GPUs of one machine (`device_map`-style): 34B in bf16 on 2x48 GB or 4x24 GB.

Pipeline placement, not tensor parallelism: the embedding and the first layers on the first device,
contiguous groups of decoder layers on the next ones, the final norm and lm_head on the last. A
forward moves the hidden state (one [rows, T, hidden] tensor) across a device boundary once per
group; each layer's KV cache lives beside it (`Emu3ForCausalLM.setup_caches`). Only one device works
at a time, so this buys memory, not speed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def layer_groups(n_layers: int, devices: Sequence[str | torch.device],
                 shares: Sequence[float] | None = None) -> list[torch.device]:
    """The device of each decoder layer: contiguous groups sized by `shares` (default equal).

    The first and last devices also hold the embedding and lm_head (~1.45 B parameters each for
    Emu3.5), so give them a smaller share when the cards are equal and the split is tight.
    """
    devs = [torch.device(d) for d in devices]
    if not devs:
        raise ValueError("devices must name at least one device")
    if len(devs) > n_layers:
        raise ValueError(f"{len(devs)} devices for {n_layers} layers: at most one device per layer")
    shares = [1.0] * len(devs) if shares is None else [float(s) for s in shares]
    if len(shares) != len(devs) or min(shares) <= 0:
        raise ValueError(f"shares must be {len(devs)} positive numbers, got {shares}")
    total = sum(shares)
    bounds, acc = [], 0.0
    for s in shares[:-1]:
        acc += s
        bounds.append(round(n_layers * acc / total))
    out, g = [], 0
    for i in range(n_layers):
        while g < len(bounds) and i >= bounds[g]:
            g += 1
        out.append(devs[g])
    return out


def tensor_device(name: str, layer_devices: Sequence[torch.device]) -> torch.device:
    """Target device of a checkpoint tensor (`model.layers.<i>.` to its layer's; the embedding to the
    first device; the final norm and lm_head to the last)."""
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "model" and parts[1] == "layers":
        return layer_devices[int(parts[2])]
    if name.startswith("model.embed_tokens"):
        return layer_devices[0]
    return layer_devices[-1]


def place_layers(model: torch.nn.Module, devices: Sequence[str | torch.device],
                 shares: Sequence[float] | None = None) -> list[torch.device]:
    """Move a built Emu3ForCausalLM onto `devices` (see `layer_groups`); frees its KV cache."""
    layers = model.model.layers
    where = layer_groups(len(layers), devices, shares)
    model.clear_caches()
    model.model.embed_tokens.to(where[0])
    model.model.inv_freq = model.model.inv_freq.to(where[0])
    for layer, dev in zip(layers, where):
        layer.to(dev)
    model.model.norm.to(where[-1])
    model.lm_head.to(where[-1])
    return where
