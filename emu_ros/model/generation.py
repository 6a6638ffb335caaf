"""Autoregressive interleaved text/image generation for Emu3.5 (the official NTP procedure).

A chain of small pieces, each reusable by other image decoders (DiDA):

* ``filter_logits``, ``sample`` -- temperature -> top-k -> top-p -> draw (exponential race, no host sync)
* ``cfg_logprobs``    -- classifier-free guidance on log-probabilities, visual tokens only
* ``ModeState``       -- the official mode state machine: text mode (visual ids masked), image
                         header (forced "H*W" or the 2-digit mask), visual body with forced EOL/EOI
* ``DecodeSession``   -- the model, its static KV cache and per-row positions; row 0 is the
                         conditional stream, row 1 the unconditional stream of CFG (one batch)
* ``ARImageDecoder``  -- fills one image body token by token (the default ``ImageDecoder``)
* ``generate``        -- the driver: prefill, text mode, hand each image body to the decoder

Fidelity notes (baaivision/Emu3.5 src/utils/logits_processor.py): the unconditional stream sees
its prompt plus only image spans (BOI .. EOI, header and EOLs included), never generated text;
CFG is ``u + s * (c - u)`` on full-vocabulary log-softmax, applied to visual tokens only; header
tokens are sampled with the image parameters and no CFG; text tokens with the text parameters.

Host syncs: one per text token (the state machine must see BOI/EOS) and one per header digit in
auto-size mode; none inside an image body (its structure is known in advance), where sampled
codes stay on the device until the image is complete.
"""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .modeling_emu3 import Emu3ForCausalLM
from .sequence import Segment, parse_interleaved
from .tokenizer import Emu3Tokenizer


# --------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SamplingParams:
    """One mode's sampling settings; temperature 0 means greedy."""

    top_k: int
    top_p: float
    temperature: float


@dataclass
class GenerationConfig:
    """Settings of one generation; defaults are the official Emu3.5 interleaved (story/default) ones."""

    text: SamplingParams = SamplingParams(1024, 0.9, 1.0)
    image: SamplingParams = SamplingParams(10240, 1.0, 1.0)
    cfg_scale: float = 3.0                    # 1.0 disables CFG (no unconditional stream at all)
    max_new_tokens: int = 32768
    image_size: tuple[int, int] | None = None  # (H, W) in tokens to force; None = reference image / auto
    force_same_image_size: bool = True        # later images repeat the first image's header
    max_images: int | None = None             # stop after this many complete images (t2i: 1)
    force_image_after: int | None = None      # force BOI after this many text tokens in a row (None: model decides)
    compile: bool = False                     # torch.compile the 1-2 token decode step (CUDA graphs on GPU)
    seed: int | None = None

    @property
    def use_cfg(self) -> bool:
        return self.cfg_scale != 1.0


TASK_CONFIGS: dict[str, GenerationConfig] = {
    # configs/config.py (story / default), configs/example_config_visual_guidance.py (howto),
    # configs/example_config_t2i.py and _x2i.py (Emu3.5-Image). vla/explore ship no config: default.
    "story": GenerationConfig(),
    "explore": GenerationConfig(),
    "vla": GenerationConfig(),
    "howto": GenerationConfig(text=SamplingParams(200, 0.8, 0.7)),
    "t2i": GenerationConfig(image=SamplingParams(5120, 1.0, 1.0), cfg_scale=5.0, max_new_tokens=5120, max_images=1),
    "x2i": GenerationConfig(image=SamplingParams(5120, 1.0, 1.0), cfg_scale=3.0, max_new_tokens=5120, max_images=1),
}
IMAGE_AREA = {"t2i": 1048576, "x2i": 1048576}     # other tasks: 518400 (configs/*.py image_area)
DEFAULT_IMAGE_AREA = 518400


def task_config(task: str, **overrides) -> GenerationConfig:
    """The official settings of a task, with field overrides."""
    if task not in TASK_CONFIGS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_CONFIGS)}")
    return replace(TASK_CONFIGS[task], **overrides)


@dataclass(frozen=True)
class SpecialIds:
    """The token ids the state machine needs (taken from the tokenizer, not hard-coded)."""

    eos: int
    boi: int
    eoi: int
    img: int
    eol: int
    first_visual: int
    codebook_size: int
    digits: dict[str, int] = field(hash=False)

    @classmethod
    def from_tokenizer(cls, tok: Emu3Tokenizer) -> "SpecialIds":
        ids = tok.ids
        return cls(ids["EOS"], ids["BOI"], ids["EOI"], ids["IMG"], ids["EOL"], tok.first_visual_id,
                   tok.codebook_size, dict(tok.digit_ids))

    def header_ids(self, h: int, w: int) -> list[int]:
        """Ids of "H*W" (digits are single tokens in the Qwen BPE)."""
        return [self.digits[c] for c in f"{h}*{w}"]


# --------------------------------------------------------------------------------------- sampling
def filter_logits(logits: Tensor, params: SamplingParams) -> tuple[Tensor, Tensor | None]:
    """Temperature, top-k, top-p (official order) on logits [N]; returns (scores, index).

    scores are the surviving candidates' scaled logits (-inf where top-p removed one); index maps
    them back to positions in logits (None when no top-k/top-p reordering happened).
    """
    x = logits / params.temperature if params.temperature != 1.0 else logits
    n = x.shape[-1]
    k = params.top_k if 0 < params.top_k < n else n
    index = None
    if k < n:
        x, index = torch.topk(x, k)                     # sorted, descending
    elif params.top_p < 1.0:
        x, index = torch.sort(x, descending=True)
    if params.top_p < 1.0:
        probs = torch.softmax(x, dim=-1)
        # drop a token when the mass before it already exceeds top_p (keeps at least the first)
        x = x.masked_fill(torch.cumsum(probs, -1) - probs > params.top_p, float("-inf"))
    return x, index


def sample(logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> Tensor:
    """Draw one index from logits [N] (fp32) after ``filter_logits``, by an exponential race.

    Returns a 0-d long tensor on the logits' device; nothing here waits for the device.
    """
    if params.temperature <= 0:
        return logits.argmax()
    x, index = filter_logits(logits, params)
    probs = torch.softmax(x, dim=-1)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    choice = torch.argmax(probs / noise)
    return index[choice] if index is not None else choice


def cfg_logprobs(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Official "no_text" CFG: u + scale * (c - u) on full-vocabulary log-softmax."""
    c = F.log_softmax(cond, dim=-1)
    u = F.log_softmax(uncond, dim=-1)
    return u + scale * (c - u)


# --------------------------------------------------------------------------------------- mode state
@dataclass(frozen=True)
class Constraint:
    """What the next token may be: kind text | forced | choice | image_body."""

    kind: str
    token: int | None = None
    choices: tuple[int, ...] = ()


class ModeState:
    """The official mode state machine, fed one token at a time on the host.

    Text mode allows every id below the first visual id. BOI starts the header: forced "H*W" then
    IMG when the size is known, otherwise digits under the official mask (H and W always two
    digits, 10..99). After IMG the whole body (rows, EOLs, EOI) is one ``image_body`` constraint
    for an image decoder.
    """

    def __init__(self, ids: SpecialIds, image_size: tuple[int, int] | None = None,
                 force_same_image_size: bool = True) -> None:
        self.ids = ids
        self.target = image_size
        self.user_size = image_size is not None
        self.force_same = force_same_image_size
        self.in_image = False
        self.header: list[int] = []
        self.body_pending = False
        self.images_done = 0

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the image being generated (valid once IMG has been emitted)."""
        text = "".join(next(c for c, i in self.ids.digits.items() if i == t) for t in self.header)
        h, w = text.split("*")
        return int(h), int(w)

    def next(self) -> Constraint:
        if not self.in_image:
            return Constraint("text")
        if self.body_pending:
            return Constraint("image_body")
        j = len(self.header) + 1                              # 1-based position after BOI
        if self.target is not None:
            forced = self.ids.header_ids(*self.target)
            return Constraint("forced", forced[j - 1] if j <= len(forced) else self.ids.img)
        d = self.ids.digits
        if j in (1, 4):
            return Constraint("choice", choices=tuple(d[c] for c in "123456789"))
        if j in (2, 5):
            return Constraint("choice", choices=tuple(d[c] for c in "0123456789"))
        if j == 3:
            return Constraint("forced", d["*"])
        return Constraint("forced", self.ids.img)

    def advance(self, token: int) -> None:
        """Record a text or header token."""
        if not self.in_image:
            if token == self.ids.boi:
                self.in_image, self.header = True, []
            return
        if token == self.ids.img:
            self.body_pending = True
        else:
            self.header.append(token)

    def finish_image(self) -> None:
        """Leave image mode after EOI; later images reuse this size when force_same_image_size."""
        hw = self.image_hw
        self.in_image = self.body_pending = False
        self.images_done += 1
        if not self.user_size:
            self.target = hw if self.force_same else None


# --------------------------------------------------------------------------------------- session
class DecodeSession:
    """The model plus its static KV cache; row 0 = conditional stream, row 1 = unconditional (CFG)."""

    def __init__(self, model: Emu3ForCausalLM, prompt_ids: list[int], uncond_ids: list[int] | None,
                 config: GenerationConfig, ids: SpecialIds) -> None:
        self.model, self.config, self.ids = model, config, ids
        self.device = model.lm_head.weight.device
        self.rows = 2 if uncond_ids is not None else 1
        self.generator = torch.Generator(self.device)
        seed = config.seed if config.seed is not None else int.from_bytes(os.urandom(7), "little")
        self.generator.manual_seed(seed)
        lengths = [len(prompt_ids)] + ([len(uncond_ids)] if uncond_ids is not None else [])
        max_seq = min(max(lengths) + config.max_new_tokens + 1, model.config.max_position_embeddings)
        if max(lengths) >= max_seq:
            raise ValueError(f"prompt of {max(lengths)} tokens leaves no room under max_position_embeddings="
                             f"{model.config.max_position_embeddings}")
        model.setup_caches(self.rows, max_seq)
        self.max_seq = max_seq
        self.pos = lengths[:]                                        # host copy: next position per row
        self.pos_dev = torch.tensor(lengths, device=self.device)     # device copy: no H2D per step
        self.logits = self._prefill(prompt_ids, uncond_ids)          # [rows, vocab] next-token logits
        self._step = None
        if config.compile:
            # static shapes (attention spans the whole cache, masked) so each (rows, T) variant compiles
            # once; on CUDA "reduce-overhead" replays the step as a CUDA graph (no per-layer launches)
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._step = torch.compile(model, mode=mode, dynamic=False, fullgraph=True)

    @torch.no_grad()
    def _prefill(self, prompt_ids: list[int], uncond_ids: list[int] | None) -> Tensor:
        rows = [prompt_ids] + ([uncond_ids] if uncond_ids is not None else [])
        t = max(len(r) for r in rows)
        # right-pad the shorter row: its padding lands beyond its position and is overwritten later
        batch = torch.tensor([r + [r[-1]] * (t - len(r)) for r in rows], device=self.device)
        pos = torch.arange(t, device=self.device).expand(len(rows), t)
        logits = self.model(batch, pos, kv_len=t, keep=len(prompt_ids) - 1, uniform_len=t)
        return logits[:, 0]

    def uniform_len(self, rows: int, t: int) -> int | None:
        """Keys every row attends once t tokens follow its position, when the first ``rows`` rows stand
        at one position (else None): the model's promise that attention needs no mask."""
        pos = self.pos[:rows]
        return pos[0] + t if min(pos) == max(pos) else None

    def room(self) -> int:
        """Tokens that still fit in the cache for every active row."""
        return self.max_seq - max(self.pos)

    @torch.no_grad()
    def feed(self, tokens: Tensor, rows: int) -> Tensor:
        """Append tokens [T] (device, long) to the first ``rows`` streams; return next logits [rows, vocab]."""
        t = tokens.shape[0]
        if max(self.pos[:rows]) + t > self.max_seq:
            raise RuntimeError(f"KV cache of {self.max_seq} positions is full")
        steps = torch.arange(t, device=self.device)
        input_pos = self.pos_dev[:rows, None] + steps                       # [rows, T]
        batch = tokens.view(1, t).expand(rows, t)
        if self._step is not None and t <= 2:
            # clone: a CUDA-graph output buffer is overwritten by the next replay; no uniform_len (a
            # per-step int would recompile)
            logits = self._step(batch, input_pos, kv_len=self.max_seq, keep=-1).clone()
        else:
            logits = self.model(batch, input_pos, kv_len=max(self.pos[:rows]) + t, keep=-1,
                                uniform_len=self.uniform_len(rows, t))
        self.pos_dev[:rows] += t
        for r in range(rows):
            self.pos[r] += t
        self.logits = logits[:, 0]
        return self.logits

    @torch.no_grad()
    def score_block(self, tokens: Tensor, rows: int | None = None) -> Tensor:
        """Logits [rows, T, vocab] of a block of T tokens placed after the current positions, the
        tokens seeing the prefix causally and each other bidirectionally (a DiDA denoising pass).

        Positions do not advance: the block's cache entries are scratch, overwritten by the next
        pass or by ``commit_image``.
        """
        rows = rows or self.rows
        t = tokens.shape[-1]
        if max(self.pos[:rows]) + t > self.max_seq:
            raise RuntimeError(f"KV cache of {self.max_seq} positions is full")
        input_pos = self.pos_dev[:rows, None] + torch.arange(t, device=self.device)
        return self.model(tokens.view(1, t).expand(rows, t), input_pos, kv_len=max(self.pos[:rows]) + t,
                          block=True, uniform_len=self.uniform_len(rows, t))

    def tensor(self, ids: list[int]) -> Tensor:
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def visual_logits(self, logits: Tensor) -> Tensor:
        """Guided (with CFG) or plain visual-token scores [codebook] from next-token logits [rows, vocab]."""
        lo, hi = self.ids.first_visual, self.ids.first_visual + self.ids.codebook_size
        if self.rows == 2:
            return cfg_logprobs(logits[0], logits[1], self.config.cfg_scale)[lo:hi]
        return logits[0, lo:hi]

    def commit_image(self, header_and_img: Tensor, codes: Tensor) -> Tensor:
        """Feed a whole image block (pending header ids + codes [H, W] + EOLs + EOI) in one forward.

        For parallel image decoders (DiDA) that produce all codes at once: afterwards the cache holds
        the block exactly as if it had been generated token by token.
        """
        h, w = codes.shape
        body = torch.cat([codes + self.ids.first_visual,
                          torch.full((h, 1), self.ids.eol, dtype=torch.long, device=self.device)], dim=1)
        body = body.flatten()
        body[-1] = self.ids.eoi
        return self.feed(torch.cat([header_and_img, body]), self.rows)


class ImageDecoder(Protocol):
    """Fills one image body. Called with the pending header ids (BOI .. IMG, not yet fed) and the size.

    It must return the codes [H, W] (device tensor) and leave ``session`` with the block through EOI
    fed to every active row and ``session.logits`` = the logits after EOI (``commit_image`` does both).
    """

    def __call__(self, session: DecodeSession, header: Tensor, height: int, width: int,
                 cancel: Callable[[], bool] | None) -> Tensor | None: ...


class ARImageDecoder:
    """The official autoregressive image body: W sampled codes, then EOL (EOI after the last row)."""

    def __call__(self, session: DecodeSession, header: Tensor, height: int, width: int,
                 cancel: Callable[[], bool] | None = None) -> Tensor | None:
        ids, params = session.ids, session.config.image
        eol, eoi = session.tensor([ids.eol]), session.tensor([ids.eoi])
        codes = torch.empty(height * width, dtype=torch.long, device=session.device)
        logits = session.feed(header, session.rows)
        for r in range(height):
            for c in range(width):
                if cancel is not None and cancel():
                    return None
                code = sample(session.visual_logits(logits), params, session.generator)
                codes[r * width + c] = code
                token = (code + ids.first_visual).view(1)
                if c == width - 1:          # the forced row end rides along in the same forward
                    token = torch.cat([token, eoi if r == height - 1 else eol])
                logits = session.feed(token, session.rows)
        return codes.view(height, width)


# --------------------------------------------------------------------------------------- driver
@dataclass
class GenerationResult:
    """Generated ids (prompt excluded), the images' code grids in order, and why generation stopped."""

    tokens: list[int]
    images: list[np.ndarray]
    stop_reason: str            # eos | max_new_tokens | max_images | cancelled | cache_full

    def segments(self, tok: Emu3Tokenizer) -> list[Segment]:
        return parse_interleaved(self.tokens, tok)


class _TextStreamer:
    """Turns text token ids into complete UTF-8 chunks for on_text (specials are not emitted)."""

    def __init__(self, tok: Emu3Tokenizer | None, on_text: Callable[[str], None] | None) -> None:
        self.tok, self.on_text = tok, on_text
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> None:
        if self.on_text is None or self.tok is None or token >= self.tok.num_text_tokens:
            return
        chunk = self.decoder.decode(self.tok.decode_bytes([token]))
        if chunk:
            self.on_text(chunk)

    def flush(self) -> None:
        if self.on_text is not None:
            chunk = self.decoder.decode(b"", final=True)
            if chunk:
                self.on_text(chunk)


@torch.no_grad()
def generate(model: Emu3ForCausalLM, prompt_ids: list[int], uncond_ids: list[int] | None,
             config: GenerationConfig, ids: SpecialIds, tokenizer: Emu3Tokenizer | None = None,
             image_decoder: ImageDecoder | None = None, on_text: Callable[[str], None] | None = None,
             on_image: Callable[[np.ndarray], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> GenerationResult:
    """Generate an interleaved continuation of prompt_ids.

    uncond_ids is the unconditional prompt for CFG (ignored when config.cfg_scale == 1). on_text
    receives decoded text chunks (needs tokenizer); on_image receives each finished code grid [H, W].
    """
    if config.use_cfg and uncond_ids is None:
        raise ValueError("cfg_scale != 1 needs uncond_ids (build it with prompts.build_unconditional_prompt)")
    session = DecodeSession(model, prompt_ids, uncond_ids if config.use_cfg else None, config, ids)
    driver = _Driver(session, image_decoder or ARImageDecoder(), _TextStreamer(tokenizer, on_text), on_image, cancel)
    reason = driver.run()
    driver.streamer.flush()
    return GenerationResult(driver.out, driver.images, reason)


class _Driver:
    """One generation's loop state: decided tokens, tokens not yet fed, images, the mode machine."""

    def __init__(self, session: DecodeSession, decoder: ImageDecoder, streamer: _TextStreamer,
                 on_image: Callable[[np.ndarray], None] | None, cancel: Callable[[], bool] | None) -> None:
        self.session, self.decoder, self.streamer = session, decoder, streamer
        self.on_image, self.cancel = on_image, cancel
        self.config, self.ids = session.config, session.ids
        self.state = ModeState(self.ids, self.config.image_size, self.config.force_same_image_size)
        self.out: list[int] = []
        self.images: list[np.ndarray] = []
        self.pending: list[int] = []     # decided but not fed: forced tokens ride along with the next feed
        self.run_of_text = 0             # text tokens since the start or the last image

    def run(self) -> str:
        """Loop until a stop condition; return the stop reason."""
        while len(self.out) < self.config.max_new_tokens:
            if self.cancel is not None and self.cancel():
                return "cancelled"
            constraint = self.state.next()
            if constraint.kind == "image_body":
                reason = self.image()
                if reason:
                    return reason
                continue
            token = self.decide(constraint)
            if token is None:
                return "cache_full"
            self.out.append(token)
            if token == self.ids.eos and not self.state.in_image:
                return "eos"
            self.accept(token)
        return "max_new_tokens"

    def decide(self, constraint: Constraint) -> int | None:
        """The next text/header token: forced, or sampled after feeding what is pending."""
        if constraint.kind == "text" and self.config.force_image_after is not None \
                and self.run_of_text >= self.config.force_image_after:
            return self.ids.boi
        if constraint.kind == "forced":
            return constraint.token
        if self.pending and not self.flush(self.session.rows if self.state.in_image else 1):
            return None
        logits = self.session.logits[0]
        if constraint.kind == "text":
            return int(sample(logits[:self.ids.first_visual], self.config.text, self.session.generator))
        choices = self.session.tensor(list(constraint.choices))
        return constraint.choices[int(sample(logits[choices], self.config.image, self.session.generator))]

    def accept(self, token: int) -> None:
        """Record a decided token in the mode machine, the pending feed and the text stream."""
        if token == self.ids.boi and not self.state.in_image and self.pending:
            self.flush(1)    # unfed text before a (forced) BOI belongs to the conditional stream only
        self.state.advance(token)
        self.pending.append(token)
        if not self.state.in_image:
            self.run_of_text += 1
            self.streamer.push(token)

    def flush(self, rows: int) -> bool:
        """Feed the pending tokens to the first ``rows`` streams; False when the cache is full."""
        if self.session.room() < len(self.pending) + 1:
            return False
        self.session.feed(self.session.tensor(self.pending), rows)
        self.pending = []
        return True

    def image(self) -> str | None:
        """Hand the image body to the decoder; return a stop reason or None to go on."""
        h, w = self.state.image_hw
        need = h * (w + 1)
        if len(self.out) + need > self.config.max_new_tokens or self.session.room() < len(self.pending) + need + 1:
            return "max_new_tokens"          # never start an image that cannot be finished
        codes = self.decoder(self.session, self.session.tensor(self.pending), h, w, self.cancel)
        self.pending = []
        if codes is None:
            return "cancelled"
        grid = codes.cpu().numpy()           # the one host sync of an image body
        self.out.extend(_body_ids(grid, self.ids))
        self.images.append(grid)
        self.state.finish_image()
        self.run_of_text = 0
        if self.on_image is not None:
            self.on_image(grid)
        if self.config.max_images is not None and len(self.images) >= self.config.max_images:
            return "max_images"
        return None


def _body_ids(grid: np.ndarray, ids: SpecialIds) -> list[int]:
    """Ids of an image body (after IMG): rows joined by EOL, then EOI."""
    h, w = grid.shape
    body: list[int] = []
    for r in range(h):
        body.extend(int(c) + ids.first_visual for c in grid[r])
        body.append(ids.eol if r < h - 1 else ids.eoi)
    return body
