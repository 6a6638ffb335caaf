"""Training sequences for the model-side objectives: one token row with where its loss starts.

Its own module so that data generators (the synthetic task) and the DiDA adaptation both use it
without importing each other.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class TrainExample:
    """A token sequence whose loss starts at prompt_len, optionally with its unconditional-prompt twin."""

    ids: list[int]
    prompt_len: int
    uncond_ids: list[int] | None = None
    uncond_prompt_len: int | None = None


def read_jsonl(path: Path) -> list[TrainExample]:
    """Training sequences from a JSON-lines file (one JSON object a line: ids, prompt_len, optional uncond_ids and uncond_prompt_len)."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            d = json.loads(line)
            if "ids" not in d or "prompt_len" not in d:
                raise ValueError(f"{path}:{n}: each line needs 'ids' and 'prompt_len'")
            out.append(TrainExample(d["ids"], d["prompt_len"], d.get("uncond_ids"), d.get("uncond_prompt_len")))
    return out
