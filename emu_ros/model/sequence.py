"""The Emu3.5 image-in-sequence format and interleaved-output parsing.

An image in the token stream (prompt or generated) is::

    BOI "H*W" IMG row_0 EOL row_1 EOL ... row_{H-1} EOI

with H, W in tokens (pixels = 16H x 16W), each row W visual tokens, no EOL after the last row and
no EOF (unlike Emu3 v1). The span after IMG up to and including EOI is exactly H*(W+1) tokens.
Generated outputs interleave text, optional global CoT (``<|extra_60|>..<|extra_61|>``), image CoT
(``<|extra_50|>..<|extra_51|>``) and images; ESS (``<|extra_101|>``) and EOS are dropped, as in the
official ``multimodal_decode``. Parsing works on token ids and never raises on truncated or
malformed input: an unterminated or ragged image is reported as ``kind="partial_image"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tokenizer import VISUAL_TOKEN_FORMAT, Emu3Tokenizer


@dataclass
class ImageBlock:
    """A parsed image: its header size and its code grid [H, W] (codebook indices)."""

    height: int
    width: int
    codes: np.ndarray


@dataclass
class Segment:
    """One piece of an interleaved output: kind is text, global_cot, image_cot, image or partial_image."""

    kind: str
    text: str = ""
    codes: np.ndarray | None = None       # [H, W] codebook indices for images
    image: np.ndarray | None = None       # uint8 [16H, 16W, 3] once decoded by the vision tokenizer


def image_token_ids(codes: np.ndarray, tok: Emu3Tokenizer) -> list[int]:
    """Token ids of one image block for a code grid [H, W]."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.size == 0:
        raise ValueError(f"codes must be a non-empty [H, W] grid, got shape {list(codes.shape)}")
    h, w = codes.shape
    ids = [tok.token_id("BOI")] + tok.encode(f"{h}*{w}") + [tok.token_id("IMG")]
    eol = tok.token_id("EOL")
    for r in range(h):
        ids.extend(tok.visual_id(int(c)) for c in codes[r])
        if r < h - 1:
            ids.append(eol)
    ids.append(tok.token_id("EOI"))
    return ids


def image_string(codes: np.ndarray) -> str:
    """The official image string (what ``format_image_string`` builds) for a code grid [H, W]."""
    codes = np.asarray(codes)
    h, w = codes.shape
    rows = ["".join(VISUAL_TOKEN_FORMAT.format(int(c)) for c in codes[r]) for r in range(h)]
    return f"<|image start|>{h}*{w}<|image token|>" + "<|extra_200|>".join(rows) + "<|image end|>"


def parse_image_block(ids: list[int], tok: Emu3Tokenizer) -> ImageBlock | None:
    """Parse ids of one block (BOI .. EOI, or without BOI); None when truncated or inconsistent."""
    ids = [int(i) for i in ids]
    boi, img, eol, eoi = (tok.token_id(n) for n in ("BOI", "IMG", "EOL", "EOI"))
    if ids and ids[0] == boi:
        ids = ids[1:]
    if img not in ids or not ids or ids[-1] != eoi:
        return None
    k = ids.index(img)
    try:
        h, w = (int(x) for x in tok.decode(ids[:k]).split("*"))
    except ValueError:
        return None
    rows, row = [], []
    for t in ids[k + 1:-1]:
        if t == eol:
            rows.append(row)
            row = []
        elif tok.is_visual(t):
            row.append(tok.visual_code(t))
        else:
            return None
    rows.append(row)
    if len(rows) != h or any(len(r) != w for r in rows):
        return None
    return ImageBlock(h, w, np.array(rows, dtype=np.int64))


def parse_interleaved(ids: list[int], tok: Emu3Tokenizer) -> list[Segment]:
    """Split generated ids into text / CoT / image segments (robust to truncation)."""
    ids = [int(i) for i in ids]
    special = tok.ids
    drop = {special["ESS"], special["EOS"]}
    spans = {special["BOG"]: (special["EOG"], "global_cot"), special["BOC"]: (special["EOC"], "image_cot"),
             special["BOI"]: (special["EOI"], "image")}
    segments: list[Segment] = []
    text: list[int] = []

    def flush_text() -> None:
        s = tok.decode(text, skip_special_tokens=True)
        if s.strip():
            segments.append(Segment("text", text=s))
        text.clear()

    i = 0
    while i < len(ids):
        t = ids[i]
        if t in spans:
            end_id, kind = spans[t]
            j = ids.index(end_id, i + 1) if end_id in ids[i + 1:] else None
            flush_text()
            body = ids[i: (j + 1 if j is not None else len(ids))]
            if kind == "image":
                block = parse_image_block(body, tok) if j is not None else None
                if block is None:
                    segments.append(Segment("partial_image"))
                else:
                    segments.append(Segment("image", codes=block.codes))
            elif j is not None:
                segments.append(Segment(kind, text=tok.decode(body[1:-1], skip_special_tokens=True)))
            else:   # an unterminated CoT is still text the model wrote
                segments.append(Segment(kind, text=tok.decode(body[1:], skip_special_tokens=True)))
            i = len(ids) if j is None else j + 1
            continue
        if t not in drop:
            text.append(t)
        i += 1
    flush_text()
    return segments
