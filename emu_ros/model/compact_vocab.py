"""Train only the embedding and lm_head rows a dataset uses (plus every visual id): a CPU speed option.

Why: a tiny Emu3.5-shaped model keeps the official vocabulary (151,854 text ids + the visual ids), so
its two vocabulary tables hold most of its parameters; on a CPU the AdamW update of those tables and
the full-vocabulary logits cost more than the rest of the forward. ``CompactVocab`` holds trainable
copies of the used rows (sorted by id, so text rows come first and the visual rows are the last
``codebook_size``), freezes the full tables, and ``merge_into`` writes the trained rows back before the
model is evaluated or saved. Both training objectives (AR and DiDA) take one.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class CompactVocab(nn.Module):
    """Trainable rows ``vocab`` of an LM's embedding and lm_head; lookups map full ids to those rows."""

    def __init__(self, lm: nn.Module, ids: Iterable[int], extra: Iterable[int] = ()) -> None:
        super().__init__()
        c = lm.config
        rows = sorted(set(int(i) for i in ids) | set(int(i) for i in extra)
                      | set(range(c.first_visual_token_id, c.vocab_size)))
        device = lm.lm_head.weight.device
        vocab = torch.tensor(rows, device=device)
        lookup = torch.full((c.vocab_size,), -1, dtype=torch.long, device=device)
        lookup[vocab] = torch.arange(len(rows), device=device)
        self.register_buffer("vocab", vocab, persistent=False)
        self.register_buffer("lookup", lookup, persistent=False)
        self.text_rows = int((vocab < c.first_visual_token_id).sum())
        self.codebook = c.codebook_size
        self.embed_rows = nn.Parameter(lm.model.embed_tokens.weight.detach()[vocab].clone())
        self.head_rows = nn.Parameter(lm.lm_head.weight.detach()[vocab].clone())
        lm.model.embed_tokens.weight.requires_grad_(False)
        lm.lm_head.weight.requires_grad_(False)

    def index(self, ids: Tensor) -> Tensor:
        """Row of each full id; an id outside the compact vocabulary is an error, never a silent wrong row."""
        rows = self.lookup[ids]
        if bool((rows < 0).any()):
            bad = sorted(set(ids[rows < 0].tolist()))[:5]
            raise ValueError(f"token ids {bad} are outside the compact training vocabulary (built from the "
                             "training data); train without the compact vocabulary or include them")
        return rows

    def embed(self, ids: Tensor) -> Tensor:
        """Input embeddings [.., hidden] of full ids."""
        return F.embedding(self.index(ids), self.embed_rows)

    def logits(self, hidden: Tensor) -> Tensor:
        """Logits over the compact rows."""
        return F.linear(hidden, self.head_rows)

    def visual_logits(self, hidden: Tensor) -> Tensor:
        """Logits over the visual codes (the last ``codebook`` rows, in code order)."""
        return F.linear(hidden, self.head_rows[-self.codebook:])

    def text_argmax(self, logits: Tensor) -> Tensor:
        """Full ids of the text-mode argmax (visual rows excluded, as the runtime's text mode does)."""
        return self.vocab[logits[:, :self.text_rows].argmax(-1)]

    @torch.no_grad()
    def merge_into(self, lm: nn.Module) -> None:
        """Write the trained rows into the LM's full embedding and lm_head tables."""
        lm.model.embed_tokens.weight[self.vocab] = self.embed_rows.to(lm.model.embed_tokens.weight.dtype)
        lm.lm_head.weight[self.vocab] = self.head_rows.to(lm.lm_head.weight.dtype)

    def merge_state(self, state: dict[str, Tensor], embed_rows: Tensor, head_rows: Tensor) -> dict[str, Tensor]:
        """The same merge on a plain LM state dict, with the rows given (e.g. gathered from all ranks)."""
        out = dict(state)
        vocab = self.vocab.cpu()
        for key, rows in (("model.embed_tokens.weight", embed_rows), ("lm_head.weight", head_rows)):
            table = out[key].detach().clone().cpu()
            table[vocab] = rows.detach().cpu().to(table.dtype)
            out[key] = table
        return out
