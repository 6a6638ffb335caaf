"""Small Emu3 models with random weights that make attention non-trivial (norms near 1, not exactly)."""
from __future__ import annotations

import torch

from emu_ros.model.configuration_emu3 import Emu3Config
from emu_ros.model.modeling_emu3 import Emu3ForCausalLM


def random_model(cfg: Emu3Config, seed: int = 0) -> Emu3ForCausalLM:
    torch.manual_seed(seed)
    model = Emu3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0, 0.05)
    return model
