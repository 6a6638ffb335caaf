"""Turn a world model's interleaved output (text chunks and images) into PlanSteps, robustly.

Emu3.5 answers a `vla`/`howto` prompt with, per step, a short instruction followed by the image
of the scene once it is done (emu35-facts §6.5, §7). Real outputs deviate: steps may be numbered
("Step 2:", "2.", "(2)") or not, an image can come without text or text without an image, the
generation can stop mid-step (token budget, cancel), and special tokens or chain-of-thought blocks
can leak through. The parser never raises: every deviation becomes a note on the step or on the
result, so the engine can decide (drop, keep, re-plan) and the log says why.

Two entry points: `StepParser` is incremental (feed text fragments and images as they are
generated; complete steps come out as soon as they are known to be complete) and
`parse_interleaved` parses a whole output at once. Both give the same steps for the same output,
however the text is split into fragments.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional

import numpy as np

from emu_ros.core.types import PlanStep

log = logging.getLogger(__name__)

#: A step header at the start of a line: "Step 3:", "step 3 -", "3.", "3)", "(3)", "#3", "**Step 3:**".
#: The number is captured for the notes; the text after the header is the step.
HEADER_RE = re.compile(
    r"^[ \t]*(?:[*_#]+[ \t]*)?"
    r"(?:(?:step|subtask|sub-task)[ \t]*#?(\d{1,3})[ \t]*[:.)\-–—]?|\(?(\d{1,3})[.)](?=[ \t]|$)|#(\d{1,3})[:.]?)"
    r"(?:[ \t]*[*_]+)?[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)
#: Chain-of-thought blocks of the official runtime: global CoT and image CoT (emu35-facts §6.5).
COT_BLOCKS = (("<|extra_60|>", "<|extra_61|>", "global_cot"), ("<|extra_50|>", "<|extra_51|>", "image_cot"))
#: Any other special token (`<|extra_101|>`, `<|extra_204|>`, `<|image start|>`...): removed from text.
SPECIAL_RE = re.compile(r"<\|[^|<>]{0,40}\|>")
#: An unfinished special token at the very end of the buffer: wait for the rest before parsing it.
PARTIAL_SPECIAL_RE = re.compile(r"<(\|[^|<>]{0,40})?$")


@dataclass
class ParseResult:
    """All steps of one output plus what was odd about it (notes) and whether it ended cleanly."""

    steps: List[PlanStep] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    #: The output stopped inside a step (text without its image while earlier steps had images,
    #: an open chain-of-thought block, or the caller said generation was cut).
    truncated: bool = False


def normalize_text(text: str) -> str:
    """Collapse whitespace and strip markdown emphasis so texts compare and display cleanly."""
    text = text.replace("**", "").replace("__", "")
    return " ".join(text.split()).strip(" -–—:*")


def as_rgb_image(obj: Any) -> Optional[np.ndarray]:
    """A uint8 [H, W, 3] copy of an image-like array (grey, RGBA, float 0..1 accepted), else None."""
    if not isinstance(obj, np.ndarray) or obj.size == 0 or obj.ndim not in (2, 3):
        return None
    img = obj
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        return None
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == bool or not np.issubdtype(img.dtype, np.number):
        return None
    with np.errstate(invalid="ignore"):
        f = np.nan_to_num(img.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if f.max(initial=0.0) <= 1.0:
        f = f * 255.0
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class OutputEnd:
    """A backend's last item: why generation stopped. `truncated` = cut by a budget, not finished."""

    reason: str = "eos"
    truncated: bool = False


@dataclass
class _Segment:
    text: str
    number: Optional[int]
    notes: list


class StepParser:
    """Incremental parser: `feed_text` / `feed_image` as output arrives, `finish` at the end.

    Each call returns the steps that became complete. A step is complete when its image arrives,
    or when the next numbered header shows that it ended without one. Text with no numbering
    between two images is one step; a text-only output without numbering is one step per line.
    """

    def __init__(self, source: str = "", start_index: int = 0):
        self.source = source
        self._next_index = start_index
        self._buf = ""  # raw text not yet cut into segments
        self._segments: list = []  # closed text segments waiting for an image or the end
        self._carry_notes: list = []  # notes (e.g. CoT) that belong to the next step
        self._saw_image = False
        self._saw_header = False
        self._finished = False
        self._end_truncated = False
        self._end_reason = ""
        self.notes: list = []
        self.steps: list = []
        self.truncated = False
        #: Set by `finish`: the generation itself stopped before the model ended its output (a token
        #: budget, a full cache, an early stop), with the reason — the plan may be missing steps.
        self.cut = False
        self.cut_reason = ""

    # ---- input ---------------------------------------------------------------------------
    def feed(self, item: Any) -> List[PlanStep]:
        """Feed one output item of any type: str = text, array = image, OutputEnd = stop reason; else noted."""
        try:
            if isinstance(item, str):
                return self.feed_text(item)
            if isinstance(item, (bytes, bytearray)):
                return self.feed_text(bytes(item).decode("utf-8", errors="replace"))
            if isinstance(item, np.ndarray):
                return self.feed_image(item)
            if item is None:
                return []
            if isinstance(item, OutputEnd):
                if item.truncated:
                    self._end_truncated = True
                    self._end_reason = item.reason
                    self.notes.append(f"generation stopped early: {item.reason}")
                return []
            self.notes.append(f"ignored output item of type {type(item).__name__}")
            return []
        except Exception as e:  # noqa: BLE001 - the parser must never raise on model output
            log.exception("step parser: internal error on %s", type(item).__name__)
            self.notes.append(f"parser error on {type(item).__name__}: {e}")
            return []

    def feed_text(self, text: str) -> List[PlanStep]:
        """Append generated text; returns steps closed by a new numbered header."""
        if self._finished or not text:
            return []
        self._buf += text
        return self._consume(final=False)

    def feed_image(self, image: Any) -> List[PlanStep]:
        """An image closes the current step (the official layout is text, then its image)."""
        if self._finished:
            return []
        out = self._consume(final=True)  # everything before the image is complete text
        img = as_rgb_image(image)
        if img is None:
            shape = getattr(image, "shape", None)
            self.notes.append(f"dropped an invalid image (shape {shape}, dtype {getattr(image, 'dtype', None)})")
            return out
        self._saw_image = True
        segs, self._segments = self._segments, []
        if not segs:
            out.append(self._emit("", img, ["image without text"]))
            return out
        for seg in segs[:-1]:
            out.append(self._emit(seg.text, None, seg.notes + ["text without image"]))
        last = segs[-1]
        out.append(self._emit(last.text, img, last.notes + (["image without text"] if not last.text else [])))
        return out

    def finish(self, truncated: bool = False) -> List[PlanStep]:
        """End of output. `truncated` = the generator stopped early (budget, cancel, error)."""
        if self._finished:
            return []
        self._finished = True
        self.cut = truncated or self._end_truncated
        self.cut_reason = (self._end_reason or "stopped early") if self._end_truncated else \
            ("generation stopped early" if truncated else "")
        truncated = self.cut
        try:
            out = self._consume(final=True)
            segs, self._segments = self._segments, []
            if segs and self._saw_image:
                # Interleaved output whose last text has no image: the model stopped mid-step.
                self.truncated = True
                for i, seg in enumerate(segs):
                    notes = seg.notes + ["text without image"]
                    if i == len(segs) - 1:
                        notes.append("truncated: output ended before this step's image")
                    out.append(self._emit(seg.text, None, notes))
            elif segs:
                segs = self._split_unnumbered(segs)
                for i, seg in enumerate(segs):
                    notes = list(seg.notes)
                    if self._saw_header:
                        notes.append("text without image")
                    if truncated and i == len(segs) - 1:
                        notes.append("truncated: output was cut, this step may be incomplete")
                    out.append(self._emit(seg.text, None, notes))
            self.truncated = self.truncated or truncated
            if self._carry_notes:
                self.notes.extend(self._carry_notes)
                self._carry_notes = []
            return out
        except Exception as e:  # noqa: BLE001 - the parser must never raise on model output
            log.exception("step parser: internal error at finish")
            self.notes.append(f"parser error at finish: {e}")
            return []

    def result(self) -> ParseResult:
        """Everything parsed so far (call after `finish`)."""
        return ParseResult(steps=list(self.steps), notes=list(self.notes), truncated=self.truncated)

    # ---- internals -----------------------------------------------------------------------
    def _emit(self, text: str, image: Optional[np.ndarray], notes: list) -> PlanStep:
        notes = list(self._carry_notes) + list(notes)
        self._carry_notes = []
        step = PlanStep(index=self._next_index, text=normalize_text(text), image=image, source=self.source,
                        notes=tuple(notes))
        self._next_index += 1
        self.steps.append(step)
        return step

    def _strip_blocks(self) -> None:
        """Remove CoT blocks (kept as notes for the next step) and special tokens from the buffer."""
        buf = self._buf
        for start, end, kind in COT_BLOCKS:
            while True:
                i = buf.find(start)
                if i < 0:
                    break
                j = buf.find(end, i + len(start))
                if j < 0:  # only reached at a final cut: the block never closed
                    inner = normalize_text(SPECIAL_RE.sub(" ", buf[i + len(start):]))
                    self._carry_notes.append(f"{kind} (unterminated): {inner[:200]}")
                    self.truncated = True
                    buf = buf[:i]
                    break
                inner = normalize_text(SPECIAL_RE.sub(" ", buf[i + len(start):j]))
                if inner:
                    self._carry_notes.append(f"{kind}: {inner[:200]}")
                buf = buf[:i] + "\n" + buf[j + len(end):]
        self._buf = SPECIAL_RE.sub(" ", buf)

    def _has_open_block(self) -> bool:
        for start, end, _ in COT_BLOCKS:
            i = self._buf.rfind(start)
            if i >= 0 and self._buf.find(end, i) < 0:
                return True
        return False

    def _consume(self, final: bool) -> List[PlanStep]:
        """Cut the buffer at numbered headers.

        Not final (more text may follow): pieces closed by a later header are complete steps
        without an image and are emitted now; the newest piece stays in the buffer, header
        included, so it is re-read whole next time. Headers touching the buffer's end are not
        trusted yet ("Step 1" may become "Step 12"). Final (an image or the end): every piece
        becomes a segment waiting for that image.
        """
        hold = ""
        if not final:
            m = PARTIAL_SPECIAL_RE.search(self._buf)
            if m:  # a special token may be split across fragments
                hold, self._buf = self._buf[m.start():], self._buf[:m.start()]
            if self._has_open_block():
                self._buf += hold
                return []
        self._strip_blocks()
        buf = self._buf
        pieces, pos, number, last_start = [], 0, None, None
        for m in HEADER_RE.finditer(buf):
            if not final and m.end() >= len(buf):
                break
            pieces.append((number, buf[pos:m.start()]))
            number = next((int(g) for g in m.groups() if g), None)
            pos, last_start = m.end(), m.start()
            self._saw_header = True
        if final:
            pieces.append((number, buf[pos:]))
            self._buf = ""
            for i, (num, text) in enumerate(pieces):
                seg = self._segment(num, text, followed=i < len(pieces) - 1)
                if seg is not None:
                    self._segments.append(seg)
            return []
        if last_start is None:
            self._buf = buf + hold
            return []
        self._buf = buf[last_start:] + hold
        out = []
        for num, text in pieces:
            seg = self._segment(num, text, followed=True)
            if seg is None:
                continue
            self._segments.append(seg)
        # Segments closed by a header can no longer receive an image: they are complete.
        segs, self._segments = self._segments, []
        for seg in segs:
            out.append(self._emit(seg.text, None, seg.notes + ["text without image"]))
        return out

    def _segment(self, number: Optional[int], text: str, followed: bool) -> Optional[_Segment]:
        """One piece of text between headers → a segment, or None (empty, or an intro line)."""
        text_n = normalize_text(text)
        if not text_n:
            if number is not None:
                if followed:
                    self.notes.append(f"step {number}: header without text, skipped")
                    return None
                return _Segment("", number, [f"step {number}: header without text"])
            return None
        if number is None and followed and text.strip().rstrip("*_ ").endswith(":"):
            self.notes.append(f"ignored preamble: {text_n[:120]}")
            return None
        return _Segment(text.strip(), number, [])

    def _split_unnumbered(self, segs: list) -> list:
        """Text-only output without any numbering: one step per non-empty line."""
        if self._saw_header or self._saw_image:
            return segs
        out = []
        for seg in segs:
            lines = [ln for ln in seg.text.splitlines() if normalize_text(ln)]
            out.extend(_Segment(ln, None, list(seg.notes)) for ln in lines)
        if len(out) > 1:
            self.notes.append("no step numbering: one step per line")
        return out


def parse_interleaved(items: Any, source: str = "", truncated: bool = False) -> ParseResult:
    """Parse a whole output: a string, one image, or an iterable of text chunks and images."""
    parser = StepParser(source=source)
    try:
        if isinstance(items, (str, bytes, np.ndarray)) or items is None:
            parser.feed(items)
        elif isinstance(items, Iterable):
            for item in items:
                parser.feed(item)
        else:
            parser.notes.append(f"ignored output of type {type(items).__name__}")
    except Exception as e:  # noqa: BLE001 - a broken iterable (generator raising) is recorded, not raised
        parser.notes.append(f"output iteration failed: {type(e).__name__}: {e}")
        truncated = True
    parser.finish(truncated=truncated)
    return parser.result()
