"""DiDA parallel image decoding: fill a whole Emu3.5 image body in a few bidirectional passes.

Emu3.5's Discrete Diffusion Adaptation (paper arXiv 2510.26583 §4.3) keeps text autoregressive and
generates each image "initialised at once and progressively refined through a series of discrete
denoising steps". BAAI published neither code nor weights, so this file is our implementation of
the sampler for weights adapted by ``finetune_embodied.train --objective dida`` (see ../../reference notes in
``shared/reference/dida-facts.md``). The paper does not say whether the noise is masking or uniform
token replacement, so both are supported, selected by the ``dida_config.json`` stored with the
weights:

* ``mask`` (MaskGIT, arXiv 2202.04200): every visual slot starts as the mask id; each pass samples
  every masked slot, keeps the most confident ones (cosine schedule, Gumbel "choice temperature"
  annealed to 0), re-masks the rest. K passes always give a complete image; K=1 fills it in one pass.
* ``uniform`` (the DFM mixture path of URSA, arXiv 2510.24717, its ``alpha=None`` fallback): slots
  start as random codes; each pass samples x1 per slot and jumps to it with probability
  1 - exp(-dt / (1 - t)); the last pass samples every slot. Every token stays refinable.

One pass = one forward of the image block ``[IMG] + body[:-1]`` (the body's row-end EOLs fixed,
EOI excluded) placed right after the committed ``BOI "H*W"`` prefix: the block sees the prefix
causally through the KV cache and itself bidirectionally. The AR shift is kept: the logit read at
block index j predicts body token j (that is what ``dida_objective`` trains). CFG runs every pass on
the batched cond/uncond rows (same block tokens in both rows, ``cfg_logprobs`` as in the AR path).
Only visual-token logits of visual slots are computed (N x codebook, not N x 282,926), and only
a chunk of slots at a time (``sample_visual``): [2, 4,000, 131,072] fp32 would be ~4 GB. After the
last pass the finished block is committed to the cache with one causal forward
(``DecodeSession.commit_image``), so the following text sees exactly the AR-path context.

Forward passes per image: 1 (header) + K (passes) + 1 (commit). The default K is 8 (MaskGIT's
sweet spot for 256-1024 tokens); see ``DiDAConfig.passes``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .generation import DecodeSession, SamplingParams, filter_logits

log = logging.getLogger(__name__)

DIDA_CONFIG_FILE = "dida_config.json"
NOISE_TYPES = ("mask", "uniform")
SCHEDULES = ("cosine", "linear")
CHUNK_BYTES = 256 * 2**20
"""fp32 visual logits one sampling chunk may hold: 256 slots x 2 CFG rows x 131,072 codes x 4 B."""


class DiDAError(RuntimeError):
    """DiDA cannot run with these weights or settings; the message says why and what to do."""


class DiDAAdaptationRequired(DiDAError):
    """The weights have no dida_config.json: they were never DiDA-adapted."""


# --------------------------------------------------------------------------------------- config
@dataclass
class DiDAConfig:
    """How an adapted checkpoint decodes images in parallel (stored as dida_config.json beside config.json)."""

    noise: str = "mask"
    """Corruption the weights were adapted with: mask (absorbing, MaskGIT) or uniform (DFM mixture path)."""
    mask_token_id: int = 151643
    """Id standing for [MASK]; the vocabulary has none, so PAD (151643, as FlashAR's Emu3.5 port) is reused."""
    passes: int = 8
    """Denoising passes K per image. 8 is MaskGIT's sweet spot at 256-1024 tokens; 4 trades a little
    quality for 2x speed; 1 works (one shot, mode-mixing on multi-answer prompts). Tune with
    ``python -m emu_ros.bench.dida_quality``."""
    schedule: str = "cosine"
    """Mask schedule gamma(r): fraction still masked after a fraction r of the passes (cosine = cos(pi r / 2))."""
    choice_temperature: float = 4.5
    """Gumbel noise scale on the confidences, annealed linearly to 0 (MaskGIT ports use 4.5; 0 = greedy order)."""
    cfg_until: float = 1.0
    """CFG on the passes before this fraction of K, cond row only after (URSA's guidance_trunc, 0.9 there):
    the late passes cost half. 1.0 = CFG every pass (the default, like AR decoding)."""
    time_shift: float = 1.0
    """URSA's timestep shift lambda for the uniform path (t' = t / (t + lambda (1 - t))); 1 = none."""
    training: dict[str, Any] = field(default_factory=dict)
    """Provenance written by the trainer (data, steps, loss weights); not used by the sampler."""

    def __post_init__(self) -> None:
        if self.noise not in NOISE_TYPES:
            raise DiDAError(f"dida_config noise must be one of {NOISE_TYPES}, got {self.noise!r}")
        if self.schedule not in SCHEDULES:
            raise DiDAError(f"dida_config schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not isinstance(self.passes, int) or self.passes < 1:
            raise DiDAError(f"dida_config passes must be a positive integer, got {self.passes!r}")
        if not 0.0 <= self.cfg_until <= 1.0:
            raise DiDAError(f"dida_config cfg_until must be in [0, 1], got {self.cfg_until}")
        if self.time_shift <= 0 or self.choice_temperature < 0:
            raise DiDAError(f"dida_config time_shift must be > 0 and choice_temperature >= 0, got "
                            f"{self.time_shift}, {self.choice_temperature}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "dida_config") -> "DiDAConfig":
        """Build from a dict; unknown keys are an error (a typo must not silently change decoding)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise DiDAError(f"{source}: unknown keys {unknown} (known: {sorted(known)})")
        return cls(**data)

    def save(self, model_dir: str | Path) -> Path:
        """Write dida_config.json into a model directory."""
        path = Path(model_dir) / DIDA_CONFIG_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


def load_dida_config(model_dir: str | Path) -> DiDAConfig:
    """Read ``dida_config.json`` from a model directory; a clear error when the weights were never adapted."""
    model_dir = Path(model_dir)
    path = model_dir / DIDA_CONFIG_FILE
    if not path.is_file():
        raise DiDAAdaptationRequired(
            f"{model_dir} has no {DIDA_CONFIG_FILE}: these weights are autoregressive only and need DiDA "
            f"adaptation before parallel image decoding (decoding them with DiDA would give garbage). Run "
            f"python -m finetune_embodied.train --objective dida --model_dir {model_dir} --data DATASET "
            f"--output_dir RUN and load RUN/checkpoints/<last step>/Emu3.5, or use decoder='ar'.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DiDAError(f"{path}: not valid JSON ({exc})") from None
    return DiDAConfig.from_dict(data, source=str(path))


# --------------------------------------------------------------------------------------- schedules
def mask_ratio(r: float, schedule: str = "cosine") -> float:
    """Fraction of visual slots still masked after a fraction r in [0, 1] of the passes."""
    if schedule == "cosine":
        return math.cos(math.pi / 2 * r)
    return 1.0 - r


def masked_after_pass(k: int, passes: int, n: int, unknown: int, schedule: str = "cosine") -> int:
    """Slots left masked after pass k (1-based) of ``passes``; at least one slot is committed per pass
    and one kept back until the last pass (MaskGIT's clamp), none left after the last."""
    if k >= passes:
        return 0
    target = math.floor(n * mask_ratio(k / passes, schedule))
    return max(0, min(max(target, 1), unknown - 1))


def shifted_time(t: float, shift: float) -> float:
    """URSA's resolution shift t / (t + lambda (1 - t)) (identity at lambda = 1)."""
    return t / (t + shift * (1.0 - t)) if t < 1.0 else 1.0


# --------------------------------------------------------------------------------------- pieces
def image_block(session: DecodeSession, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The pass block ``[IMG] + body[:-1]`` with EOLs in place, and the body index of every visual slot.

    Visual slot (r, c) has body index i = r (W + 1) + c: its token sits at block index i + 1 and its
    prediction is read at block index i (the AR shift). Returns (block [H (W+1)], index [H W]).
    """
    ids = session.ids
    block = torch.full((height, width + 1), ids.eol, dtype=torch.long, device=session.device)   # [H, W+1]
    block = torch.cat([torch.tensor([ids.img], device=session.device), block.flatten()[:-1]])    # [H (W+1)]
    index = torch.arange(height * (width + 1), device=session.device).view(height, width + 1)[:, :width]
    return block, index.flatten()                                                                # [H W]


@torch.no_grad()
def block_hidden(session: DecodeSession, block: Tensor, rows: int | None = None) -> Tensor:
    """One pass's forward: final hidden states [rows, T, hidden] of the block.

    The block is placed after every row's current position, causal to the prefix and bidirectional
    inside (``block=True``); positions do not move, its cache entries are scratch.
    """
    rows, t = rows or session.rows, block.shape[0]
    if max(session.pos[:rows]) + t > session.max_seq:
        raise RuntimeError(f"KV cache of {session.max_seq} positions is full")
    input_pos = session.pos_dev[:rows, None] + torch.arange(t, device=session.device)           # [rows, T]
    return session.model.model(block.view(1, t).expand(rows, t), input_pos=input_pos,
                               kv_len=max(session.pos[:rows]) + t, attention_mask=None,
                               block=True, uniform_len=session.uniform_len(rows, t))           # [rows, T, hidden]


def visual_head(session: DecodeSession) -> Tensor:
    """The lm_head rows of the visual codebook [codebook, hidden] (a view, no copy)."""
    lo = session.ids.first_visual
    return session.model.lm_head.weight[lo:lo + session.ids.codebook_size]


def slot_chunk(rows: int, codebook: int, budget: int = CHUNK_BYTES) -> int:
    """Slots per chunk so one chunk's fp32 logits [rows, n, codebook] stay within ``budget`` bytes."""
    return max(1, budget // (rows * codebook * 4))


@torch.no_grad()
def visual_scores(session: DecodeSession, block: Tensor, read: Tensor, rows: int | None = None) -> Tensor:
    """One pass: visual-token logits [rows, N, codebook] at block indices ``read`` (fp32), all at once.

    The reference for ``sample_visual`` (tests, diagnostics): at full size this is the ~4 GB tensor
    (2 x 4,000 x 131,072 fp32) that the decoder never builds.
    """
    hidden = block_hidden(session, block, rows)
    return F.linear(hidden[:, read], visual_head(session)).float()                             # [rows, N, codebook]


def guided_scores(session: DecodeSession, scores: Tensor) -> Tensor:
    """CFG exactly as the AR path (``cfg_logprobs``, u + s (c - u)) when the session has an uncond row.

    Log-softmax over the visual slice instead of the full vocabulary shifts each position's scores
    by a constant, which changes no sampled token, ranking or renormalised probability. Computed in
    place (the same floats as ``cfg_logprobs``, two fewer [N, codebook] temporaries per chunk).
    """
    if scores.shape[0] == 2:
        c, u = F.log_softmax(scores[0], dim=-1), F.log_softmax(scores[1], dim=-1)
        return c.sub_(u).mul_(session.config.cfg_scale).add_(u)                                # u + s (c - u)
    return scores[0]


def sample_slots(scores: Tensor, params: SamplingParams, uniform: Tensor | None) -> tuple[Tensor, Tensor]:
    """Draw one code per slot from scores [N, V] (official filter order); return (codes [N], log p [N]).

    log p is the chosen code's log-probability under the filtered distribution (the confidence).
    Temperature 0 is argmax. Otherwise slot i takes the first code whose cumulative probability
    exceeds uniform[i] (uniform [N] in [0, 1)): one number per slot, so a slot's draw depends on
    nothing but its own scores and its own uniform, whatever chunk it is computed in. No host sync.
    """
    if params.temperature <= 0:
        logp = torch.log_softmax(scores, dim=-1)
        conf, codes = logp.max(dim=-1)
        return codes, conf
    x, index = filter_logits(scores, params)                                                   # [N, k]
    logp = torch.log_softmax(x, dim=-1)
    cdf = logp.exp().cumsum(dim=-1)                                                            # [N, k]
    choice = torch.searchsorted(cdf, (uniform * cdf[:, -1])[:, None], right=True)[:, 0]
    # fp32 rounding can put the target at the very top: stay on a code that survived top-p
    choice = torch.minimum(choice, torch.isfinite(x).sum(dim=-1) - 1)
    conf = logp.gather(-1, choice[:, None])[:, 0]
    codes = index.gather(-1, choice[:, None])[:, 0] if index is not None else choice
    return codes, conf


@torch.no_grad()
def sample_visual(session: DecodeSession, block: Tensor, read: Tensor, params: SamplingParams,
                  generator: torch.Generator | None, rows: int | None = None,
                  chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """One pass -> (codes [N], confidences [N]), the visual logits built ``chunk`` slots at a time.

    Each chunk goes logits [rows, n, codebook] -> CFG -> filter -> draw and is then dropped, so the
    peak is one chunk's working set (default: ``CHUNK_BYTES`` of fp32 logits, 256 slots at the full
    codebook with CFG; ~2.7x that with CFG's log-softmaxes, measured on CPU at N = 1,024: 0.7 GB vs
    3.1 GB unchunked) instead of growing with N. The N uniforms are drawn up front in slot order,
    so codes and confidences do not depend on the chunk size.
    """
    hidden = block_hidden(session, block, rows)                                                # [rows, T, hidden]
    head = visual_head(session)
    n = read.numel()
    chunk = chunk or slot_chunk(hidden.shape[0], head.shape[0])
    uniform = None if params.temperature <= 0 else torch.rand(n, generator=generator, device=session.device)
    codes = torch.empty(n, dtype=torch.long, device=session.device)
    conf = torch.empty(n, dtype=torch.float32, device=session.device)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        scores = guided_scores(session, F.linear(hidden[:, read[s:e]], head).float())          # [n, codebook]
        codes[s:e], conf[s:e] = sample_slots(scores, params, None if uniform is None else uniform[s:e])
    return codes, conf


def gumbel(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard Gumbel noise."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


# --------------------------------------------------------------------------------------- decoder
@dataclass
class DiDAStats:
    """What the last image cost: passes, model forwards (header + passes + commit), slots committed per pass."""

    passes: int = 0
    forwards: int = 0
    committed: list[int] = field(default_factory=list)


class DiDAImageDecoder:
    """Parallel image body decoder for ``generate(..., image_decoder=...)`` (the ``ImageDecoder`` seam).

    Sampling settings (top-k/top-p/temperature), the seeded generator and the CFG scale come from the
    session, i.e. the same ``GenerationConfig`` as AR decoding; ``passes`` overrides the config's K.
    ``chunk`` caps the slots whose visual logits exist at once (None: ``CHUNK_BYTES`` worth); it
    changes memory only, never the codes.
    """

    def __init__(self, config: DiDAConfig, passes: int | None = None, chunk: int | None = None) -> None:
        self.config = config
        self.passes = passes if passes is not None else config.passes
        if self.passes < 1:
            raise DiDAError(f"passes must be >= 1, got {self.passes}")
        if chunk is not None and chunk < 1:
            raise DiDAError(f"chunk must be >= 1 slot, got {chunk}")
        self.chunk = chunk
        self.stats = DiDAStats()

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, passes: int | None = None,
                       chunk: int | None = None) -> "DiDAImageDecoder":
        """The decoder an adapted model directory asks for (raises DiDAAdaptationRequired if none)."""
        return cls(load_dida_config(model_dir), passes, chunk)

    def __call__(self, session: DecodeSession, header: Tensor, height: int, width: int,
                 cancel: Callable[[], bool] | None = None) -> Tensor | None:
        ids = session.ids
        if int(header[-1]) != ids.img:
            raise DiDAError(f"image header must end with IMG ({ids.img}), got {header.tolist()}")
        if self.config.mask_token_id >= session.model.config.vocab_size:
            raise DiDAError(f"mask_token_id {self.config.mask_token_id} is outside the vocabulary")
        self.stats = DiDAStats()
        session.feed(header[:-1], session.rows)          # BOI "H*W" causally; IMG opens the pass block
        self.stats.forwards += 1
        block, index = image_block(session, height, width)
        run = self._mask_passes if self.config.noise == "mask" else self._uniform_passes
        codes = run(session, block, index, cancel)
        if codes is None:
            return None
        session.commit_image(header[-1:], codes.view(height, width))
        self.stats.forwards += 1
        return codes.view(height, width)

    def _sample(self, session: DecodeSession, block: Tensor, index: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """Pass i (0-based): (codes [N], confidences [N]) from guided scores, CFG rows while i / K < cfg_until."""
        rows = session.rows if i < self.config.cfg_until * self.passes else 1
        self.stats.passes += 1
        self.stats.forwards += 1
        return sample_visual(session, block, index, session.config.image, session.generator, rows, self.chunk)

    def _mask_passes(self, session: DecodeSession, block: Tensor, index: Tensor,
                     cancel: Callable[[], bool] | None) -> Tensor | None:
        """MaskGIT: commit the most confident predictions each pass; committed codes are final."""
        n, first = index.numel(), session.ids.first_visual
        slots = index + 1
        block[slots] = self.config.mask_token_id
        codes = torch.zeros(n, dtype=torch.long, device=session.device)
        known = torch.zeros(n, dtype=torch.bool, device=session.device)
        unknown = n
        for k in range(1, self.passes + 1):
            if unknown == 0:
                break
            if cancel is not None and cancel():
                return None
            sampled, conf = self._sample(session, block, index, k - 1)                        # [N], [N]
            r = k / self.passes
            if self.config.choice_temperature > 0 and k < self.passes:
                conf = conf + self.config.choice_temperature * (1.0 - r) * gumbel(conf.shape, session.generator,
                                                                                   session.device)
            conf = conf.masked_fill(known, float("inf"))
            keep_masked = masked_after_pass(k, self.passes, n, unknown, self.config.schedule)
            newly = ~known
            if keep_masked > 0:
                lowest = torch.topk(conf, keep_masked, largest=False).indices
                newly[lowest] = False
            codes = torch.where(newly, sampled, codes)
            known |= newly
            block[slots] = torch.where(known, codes + first, self.config.mask_token_id)
            self.stats.committed.append(unknown - keep_masked)
            unknown = keep_masked
        return codes

    def _uniform_passes(self, session: DecodeSession, block: Tensor, index: Tensor,
                        cancel: Callable[[], bool] | None) -> Tensor | None:
        """URSA mixture path: start from random codes, Euler jumps toward sampled x1, sample all at the end."""
        n, first, gen = index.numel(), session.ids.first_visual, session.generator
        slots = index + 1
        codes = torch.randint(0, session.ids.codebook_size, (n,), generator=gen, device=session.device)
        times = [shifted_time(i / self.passes, self.config.time_shift) for i in range(self.passes + 1)]
        for i in range(self.passes):
            if cancel is not None and cancel():
                return None
            block[slots] = codes + first
            x1, _ = self._sample(session, block, index, i)
            if i == self.passes - 1:
                codes = x1
                self.stats.committed.append(n)
                break
            t, dt = times[i], times[i + 1] - times[i]
            jump = torch.rand(n, generator=gen, device=session.device) < 1.0 - math.exp(-dt / (1.0 - t))
            codes = torch.where(jump, x1, codes)
            self.stats.committed.append(0)
        return codes
