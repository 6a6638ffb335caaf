"""Our own text tokenizer files for a small Emu3.5-layout model: a byte-level BPE learned from the training text.

The official ``emu3.tiktoken`` (Qwen's vocabulary) cannot be shipped, so a model trained here gets a tokenizer
written by this module, in the official file format and with the official ids:

* ranks 0..255 are the single bytes in GPT-2/Qwen order (as in the real file);
* then the merges learned from the given texts (classic BPE over the same pre-tokenizer the runtime uses,
  most frequent pair first), so the words of prompts and step texts are one or a few tokens;
* then filler pieces (``random_checkpoint.synthetic_bpe_pieces``, skipping duplicates) up to exactly 151,643
  ranks, so every special and visual token gets its official id (BOS 151849, BOI 151852, visual 151854 + k).

Filler ranks come after the learned merges, so text the merges cover is split by them; any other text still
encodes (byte pairs are always reachable), into pieces the model may never have seen in training.
"""

from __future__ import annotations

import base64
import collections
from pathlib import Path
from typing import Iterable

import regex

from emu_ros.model.random_checkpoint import NUM_BPE_RANKS, gpt2_byte_order, synthetic_bpe_pieces
from emu_ros.model.tokenizer import PAT_STR, TIKTOKEN_FILE, VISION_TOKENS_FILE, VISUAL_TOKEN_FORMAT


def learn_merges(texts: Iterable[str], max_merges: int = 2000, min_count: int = 2) -> list[bytes]:
    """BPE merges (as the merged byte strings, in rank order) learned from texts split like the runtime does."""
    words = collections.Counter(m.group(0).encode("utf-8") for t in texts for m in regex.finditer(PAT_STR, t))
    seqs = {w: [bytes([b]) for b in w] for w in words}
    merges: list[bytes] = []
    while len(merges) < max_merges:
        pairs: collections.Counter = collections.Counter()
        for w, seq in seqs.items():
            for a, b in zip(seq, seq[1:]):
                pairs[a, b] += words[w]
        if not pairs:
            break
        (a, b), count = max(pairs.items(), key=lambda kv: (kv[1], -len(kv[0][0] + kv[0][1]), kv[0]))
        if count < min_count:
            break
        merges.append(a + b)
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and seq[i] == a and seq[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    return merges


def bpe_pieces(texts: Iterable[str], max_merges: int = 2000) -> tuple[list[bytes], int]:
    """All 151,643 pieces in rank order (bytes, learned merges, filler) and how many merges were learned."""
    pieces = [bytes([b]) for b in gpt2_byte_order()]
    seen = set(pieces)
    for p in learn_merges(texts, max_merges):
        if p not in seen:
            seen.add(p)
            pieces.append(p)
    learned = len(pieces) - 256
    for p in synthetic_bpe_pieces():
        if len(pieces) >= NUM_BPE_RANKS:
            break
        if p not in seen:
            seen.add(p)
            pieces.append(p)
    if len(pieces) != NUM_BPE_RANKS:
        raise ValueError(f"built {len(pieces)} BPE pieces, need exactly {NUM_BPE_RANKS}")
    return pieces, learned


def write_text_tokenizer(model_dir: str | Path, texts: Iterable[str], codebook_size: int,
                         max_merges: int = 2000) -> int:
    """Write emu3.tiktoken (learned BPE) and emu3_vision_tokens.txt into model_dir; returns the merges learned."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    pieces, learned = bpe_pieces(texts, max_merges)
    lines = (base64.b64encode(p) + b" " + str(i).encode() for i, p in enumerate(pieces))
    (model_dir / TIKTOKEN_FILE).write_bytes(b"\n".join(lines) + b"\n")
    vision = ["<|image token|>", "<|image start|>", "<|image end|>"]
    vision += [VISUAL_TOKEN_FORMAT.format(k) for k in range(codebook_size)]
    (model_dir / VISION_TOKENS_FILE).write_text("\n".join(vision) + "\n", encoding="utf-8")
    return learned
