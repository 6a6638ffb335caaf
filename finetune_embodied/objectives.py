"""The training objectives by name: ``ar`` (next-token prediction on the answer) and ``dida`` (DiDA).

Both wrap the LM in one module with ``forward(input_ids, labels) -> (loss, dict of floats)``, so DDP
and FSDP2 hooks cover the whole forward, and both keep the text-mode argmax of every labelled position
in ``predictions`` (full ids) for the step-text accuracy. The DiDA layout, mask and loss are model-side
pieces (``emu_ros.model.dida_objective``); the trainer is the same for both.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from emu_ros.model.compact_vocab import CompactVocab
from emu_ros.model.dida_objective import DiDAObjective, DiDATrainConfig, head_logits, masked_forward

from .samples import IGNORE_INDEX

OBJECTIVES = ("ar", "dida")


class AutoregressiveObjective(nn.Module):
    """The LM and its next-token loss; the vocabulary projection runs only where a label exists."""

    def __init__(self, lm: nn.Module, first_visual_id: int, vocab: CompactVocab | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.first_visual_id = first_visual_id
        self.compact = vocab
        self.predictions: Tensor | None = None

    def forward(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the labelled next tokens (labels -100 are ignored)."""
        target = labels[:, 1:]                                                   # [B, T-1]
        keep = target != IGNORE_INDEX
        if self.compact is None:
            hidden = self.lm.model(input_ids)                                    # [B, T, H]
            logits = head_logits(self.lm, hidden[:, :-1][keep])                  # [N, V], N = labelled positions
            loss = F.cross_entropy(logits, target[keep])
            self.predictions = logits.detach()[:, :self.first_visual_id].argmax(-1)
        else:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
            hidden = masked_forward(self.lm, input_ids, positions, None, self.compact.embed(input_ids))
            logits = self.compact.logits(hidden[:, :-1][keep]).float()
            loss = F.cross_entropy(logits, self.compact.index(target[keep]))
            self.predictions = self.compact.text_argmax(logits.detach())
        return loss, {"loss": float(loss.detach()), "tokens": int(keep.sum())}


def make_objective(name: str, lm: nn.Module, first_visual_id: int, options: dict[str, Any] | None = None,
                   vocab: CompactVocab | None = None) -> nn.Module:
    """The objective ``name`` wrapping ``lm``; ``options`` are ``DiDATrainConfig`` fields (dida only)."""
    if name == "ar":
        if options:
            raise ValueError(f"dida options {sorted(options)} given for objective 'ar'")
        return AutoregressiveObjective(lm, first_visual_id, vocab)
    if name == "dida":
        return DiDAObjective(lm, first_visual_id, train=DiDATrainConfig(**(options or {})), vocab=vocab)
    raise ValueError(f"objective must be one of {OBJECTIVES}, got {name!r}")
