"""Training sequences for the model-side objectives: one token row with where its loss starts.

Its own module so that data generators (the synthetic task) and the DiDA adaptation both use it
without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainExample:
    """A token sequence whose loss starts at prompt_len, optionally with its unconditional-prompt twin."""

    ids: list[int]
    prompt_len: int
    uncond_ids: list[int] | None = None
    uncond_prompt_len: int | None = None
