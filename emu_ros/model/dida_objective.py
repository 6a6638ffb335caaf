"""DiDA adaptation: turn an autoregressive Emu3.5 checkpoint into one that decodes images in parallel.

Layout (Emu3.5 paper Fig. 9, §4.3.1; vectorised like BD3-LM): every generated image k of a training
sequence gets a noisy copy B_k appended after the clean sequence. B_k = [IMG] + the image body
without its EOI, its visual tokens corrupted and its row-end EOLs clean (they are forced at
inference), with the **same position ids** as the clean tokens it mirrors. Attention:

* clean query q -> clean keys k <= q (the original causal mask; clean tokens never see noisy ones);
* B_k query -> clean keys before IMG_k (the prefix that is cached at inference) and every key of B_k
  (bidirectional), nothing else (not its own clean image, not other copies).

This is exactly the attention of a ``DiDAImageDecoder`` pass over the KV cache. The AR shift is kept:
B_k at index j predicts body token j. Loss = CE on the noisy copy (mask noise: masked slots only,
uniform noise: every visual slot; over the visual vocabulary, as the sampler reads it) + NTP on the
clean answer text + ``visual_weight`` x NTP on clean answer image tokens (keeps text and the AR image
path "unchanged": NBDiff's auxiliary AR loss, Emu3.5 SFT's visual weight 0.5).

Noise: ``mask`` (MaskGIT: ratio cos(pi u / 2), u ~ U[0,1), at least one slot) or ``uniform`` (DFM
mixture path as in URSA's alpha=None fallback: each slot keeps its code with probability t, else a
uniformly random code; t from URSA's shifted sampler). Optional self-distillation replaces the
answer images by samples of the AR teacher (the starting checkpoint) with the deployment CFG.

Training runs through the one trainer, ``finetune_embodied.train --objective dida`` (its loop,
data, FSDP2 sharding and checkpoints); this module holds the model-side pieces it uses: the layout
and mask builder, the objective module and self-distillation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .compact_vocab import CompactVocab
from .configuration_emu3 import Emu3Config
from .dida import shifted_time
from .modeling_emu3 import Emu3ForCausalLM, rope_cos_sin, rope_inv_freq
from .training_data import TrainExample

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


# --------------------------------------------------------------------------------------- settings
@dataclass
class DiDATrainConfig:
    """Noise and loss settings of the adaptation objective."""

    noise: str = "mask"                 # mask | uniform
    mask_token_id: int = 151643         # PAD stands in for [MASK]
    noisy_weight: float = 1.0           # CE on the noisy copy
    text_weight: float = 1.0            # NTP on clean answer text (and specials: BOI, header, EOL, EOI, EOS)
    visual_weight: float = 0.5          # NTP on clean answer visual tokens (0 = drop the AR image path)
    time_shift: float = 1.0             # URSA lambda for the uniform path's t sampling


@dataclass
class ImageSpan:
    """One image in a token row: IMG index, EOI index, rows and columns (from the EOL count)."""

    img: int
    eoi: int
    height: int
    width: int


# --------------------------------------------------------------------------------------- layout
def find_images(ids: list[int], img_id: int, eoi_id: int, eol_id: int) -> list[ImageSpan]:
    """Complete image bodies (IMG .. EOI) in a token row; incomplete ones are skipped."""
    spans, i = [], 0
    while True:
        try:
            a = ids.index(img_id, i)
            e = ids.index(eoi_id, a)
        except ValueError:
            return spans
        body = ids[a + 1:e + 1]
        h = body.count(eol_id) + 1
        if len(body) % h == 0 and len(body) // h >= 2:
            spans.append(ImageSpan(a, e, h, len(body) // h - 1))
        i = e + 1


def build_dida_mask(clean_len: int, blocks: list[tuple[int, int]], total: int | None = None) -> Tensor:
    """Boolean attention mask [S, S] (True = may attend) of a clean row followed by noisy copies.

    blocks = [(anchor, length)]: copy k occupies the next ``length`` slots after the previous copies
    and mirrors clean positions anchor .. anchor + length - 1 (anchor = its IMG). Clean queries are
    causal over clean keys; a copy's queries see clean keys < anchor and their own copy. Slots past the
    last copy (batch padding up to ``total``) see only themselves.
    """
    total = total if total is not None else clean_len + sum(n for _, n in blocks)
    owner = torch.full((total,), -2, dtype=torch.long)            # -1 clean, k copy k, -2 padding
    limit = torch.full((total,), -1, dtype=torch.long)            # last clean key a query may see
    owner[:clean_len] = -1
    limit[:clean_len] = torch.arange(clean_len)
    start = clean_len
    for k, (anchor, length) in enumerate(blocks):
        owner[start:start + length] = k
        limit[start:start + length] = anchor - 1
        start += length
    keys = torch.arange(total)
    clean_key = (owner == -1)[None, :] & (keys[None, :] <= limit[:, None])                    # [S, S]
    same_copy = (owner[:, None] == owner[None, :]) & (owner[:, None] >= 0)                    # [S, S]
    return clean_key | same_copy | torch.eye(total, dtype=torch.bool)


@dataclass
class RowLayout:
    """One training row: tokens, positions, copies, and where the noisy targets are."""

    tokens: list[int]
    positions: list[int]
    blocks: list[tuple[int, int]]
    noisy_index: list[int] = field(default_factory=list)     # row slots whose logit is trained
    noisy_target: list[int] = field(default_factory=list)    # visual code each of them predicts


def layout_row(ids: list[int], labels: list[int], config: Emu3Config, train: DiDATrainConfig,
               gen: torch.Generator | None) -> RowLayout:
    """Append a noisy copy of every labelled (generated) image of a row and pick its noisy targets."""
    first, codebook = config.first_visual_token_id, config.codebook_size
    tokens, positions, blocks = list(ids), list(range(len(ids))), []
    out = RowLayout(tokens, positions, blocks)
    if train.noisy_weight == 0:
        return out                                               # plain AR training: no copies
    for span in find_images(ids, config.img_token_id, config.eoi_token_id, config.eol_token_id):
        if labels[span.img + 1] == IGNORE_INDEX:
            continue                                             # a prompt (context) image: no copy
        body = ids[span.img + 1:span.eoi + 1]                    # H (W+1) tokens, EOI last
        block = [config.img_token_id] + body[:-1]                # [IMG] + body[:-1], same length
        visual = [j for j, t in enumerate(body[:-1]) if t >= first]
        n = len(visual)
        u = float(torch.rand((), generator=gen))
        if train.noise == "mask":
            count = min(n, max(1, math.ceil(math.cos(math.pi / 2 * u) * n)))
            chosen = torch.randperm(n, generator=gen)[:count].tolist()
            for c in chosen:
                block[visual[c] + 1] = train.mask_token_id
            targets = sorted(visual[c] for c in chosen)
        else:
            t = shifted_time(1.0 - u, train.time_shift)          # URSA: sigma = 1 - u, t warped by lambda
            keep = torch.rand(n, generator=gen) < t
            noise = torch.randint(0, codebook, (n,), generator=gen)
            for c, j in enumerate(visual):
                if not keep[c]:
                    block[j + 1] = first + int(noise[c])
            targets = visual
        start = len(tokens)
        out.noisy_index.extend(start + j for j in targets)      # logit at block index j predicts body[j]
        out.noisy_target.extend(body[j] - first for j in targets)
        tokens.extend(block)
        positions.extend(range(span.img, span.img + len(block)))
        blocks.append((span.img, len(block)))
    return out


# --------------------------------------------------------------------------------------- objective
def masked_forward(lm: Emu3ForCausalLM, tokens: Tensor, positions: Tensor, mask: Tensor,
                   embeds: Tensor | None = None) -> Tensor:
    """Hidden states [B, S, hidden] under an explicit mask [B, 1, S, S] and explicit position ids [B, S]."""
    inner = lm.model
    x = inner.embed_tokens(tokens) if embeds is None else embeds
    inv_freq = inner.inv_freq if inner.inv_freq.dtype == torch.float32 else rope_inv_freq(lm.config, x.device)
    cos, sin = rope_cos_sin(inv_freq, positions, lm.config.rope_linear_factor, x.dtype)
    for layer in inner.layers:
        x = layer(x, cos, sin, mask, None, None)
    return inner.norm(x)


def head_logits(lm: Emu3ForCausalLM, hidden: Tensor, rows: slice | None = None) -> Tensor:
    """lm_head logits of ``hidden`` (optionally only vocabulary ``rows``), in fp32.

    An lm_head sharded by FSDP2 holds its weight only while its own forward runs, so it is called as a
    module and the rows are sliced from the output; a plain lm_head multiplies only the rows asked for.
    """
    if rows is None:
        return lm.lm_head(hidden).float()
    if is_fsdp_module(lm.lm_head):
        return lm.lm_head(hidden)[..., rows].float()
    return F.linear(hidden, lm.lm_head.weight[rows]).float()


def is_fsdp_module(module: nn.Module) -> bool:
    """True when FSDP2 ``fully_shard`` wrapped this module (its parameters are shards between forwards)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:      # torch built without distributed support
        return False
    return isinstance(module, FSDPModule)


class DiDAObjective(nn.Module):
    """The LM and the DiDA adaptation loss as one module (so DDP/FSDP hooks cover the whole forward).

    ``forward(input_ids, labels)`` (labels = ids with -100 on the prompt and padding) returns ``(loss,
    dict of floats)``; the text-mode argmax at every labelled clean position is kept in
    ``self.predictions`` (full ids). The noise is drawn from torch's global generator, which the trainer
    seeds per micro-batch, so a micro-batch gets the same noise on any number of ranks. ``vocab``
    (a ``CompactVocab``) restricts training to the data's rows (a CPU speed option for tiny models);
    call ``vocab.merge_into(lm)`` before using the LM.
    """

    def __init__(self, lm: Emu3ForCausalLM, first_visual_id: int | None = None,
                 train: DiDATrainConfig | None = None, vocab: CompactVocab | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.train_config = train or DiDATrainConfig()
        self.first_visual = first_visual_id or lm.config.first_visual_token_id
        self.compact = vocab
        self.predictions: Tensor | None = None

    def batch(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, list[RowLayout]]:
        """Noisy copies appended per row, padded to one length: tokens, positions, mask [B, 1, S, S], rows."""
        ids_cpu, labels_cpu = input_ids.cpu().tolist(), labels.cpu().tolist()
        rows = [layout_row(i, lab, self.lm.config, self.train_config, None) for i, lab in zip(ids_cpu, labels_cpu)]
        total = max(len(r.tokens) for r in rows)
        pad = self.lm.config.pad_token_id
        tokens = torch.tensor([r.tokens + [pad] * (total - len(r.tokens)) for r in rows])
        positions = torch.tensor([r.positions + [0] * (total - len(r.positions)) for r in rows])
        mask = torch.stack([build_dida_mask(input_ids.shape[1], r.blocks, total) for r in rows])[:, None]
        dev = input_ids.device
        return tokens.to(dev), positions.to(dev), mask.to(dev), rows

    def forward(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """DiDA loss of a batch (input_ids, labels [B, T])."""
        cfg, dev, compact = self.train_config, input_ids.device, self.compact
        tokens, positions, mask, rows = self.batch(input_ids, labels)
        embeds = compact.embed(tokens) if compact is not None else None                     # [B, S, H]
        hidden = masked_forward(self.lm, tokens, positions, mask, embeds)                    # [B, S, H]
        t = input_ids.shape[1]
        # clean next-token prediction: position q predicts labels[q + 1]
        target = labels[:, 1:]                                                               # [B, T-1]
        keep = target != IGNORE_INDEX
        clean_h = hidden[:, :t - 1][keep]                                                    # [Nc, H]
        clean_y = target[keep]
        b_idx = torch.tensor([b for b, r in enumerate(rows) for _ in r.noisy_index], dtype=torch.long, device=dev)
        s_idx = torch.tensor([s for r in rows for s in r.noisy_index], dtype=torch.long, device=dev)
        noisy_y = torch.tensor([y for r in rows for y in r.noisy_target], dtype=torch.long, device=dev)
        noisy_h = hidden[b_idx, s_idx]                                                       # [Nn, H]
        visual = slice(self.first_visual, self.first_visual + self.lm.config.codebook_size)
        if compact is not None:
            logits = compact.logits(clean_h).float()
            noisy_logits = compact.visual_logits(noisy_h).float()
            ce = F.cross_entropy(logits, compact.index(clean_y), reduction="none")
            self.predictions = compact.text_argmax(logits.detach())
        else:
            if is_fsdp_module(self.lm.lm_head):
                # one lm_head call: each call of a sharded module gathers its weight again and keeps that copy
                # for its backward (the lm_head is the largest unit)
                both = head_logits(self.lm, torch.cat([clean_h, noisy_h]))
                logits, noisy_logits = both[:len(clean_h)], both[len(clean_h):, visual]
            else:
                logits = head_logits(self.lm, clean_h)
                noisy_logits = head_logits(self.lm, noisy_h, visual)
            ce = F.cross_entropy(logits, clean_y, reduction="none")
            self.predictions = logits.detach()[:, :self.first_visual].argmax(-1)
        is_vis = clean_y >= self.first_visual
        zero = hidden.sum() * 0.0
        text_loss = ce[~is_vis].mean() if bool((~is_vis).any()) else zero
        vis_loss = ce[is_vis].mean() if bool(is_vis.any()) else zero
        # noisy copy: visual-vocabulary CE at the trained slots
        if len(noisy_y):
            noisy_loss = F.cross_entropy(noisy_logits, noisy_y)
            noisy_acc = float((noisy_logits.detach().argmax(-1) == noisy_y).float().mean())
        else:
            noisy_loss, noisy_acc = zero, float("nan")
        loss = cfg.noisy_weight * noisy_loss + cfg.text_weight * text_loss + cfg.visual_weight * vis_loss
        return loss, {"loss": float(loss.detach()), "noisy_ce": float(noisy_loss.detach()),
                      "noisy_acc": noisy_acc, "text_ce": float(text_loss.detach()),
                      "visual_ce": float(vis_loss.detach()), "tokens": int(keep.sum()), "noisy": len(noisy_y)}


# --------------------------------------------------------------------------------------- data
@torch.no_grad()
def self_distill(lm: Emu3ForCausalLM, examples: list[TrainExample], cfg_scale: float, seed: int,
                 image_top_k: int = 10240) -> list[TrainExample]:
    """Replace every answer image by the AR teacher's sample for the same context (Emu3.5's DiDA data recipe).

    The teacher sees the true context before each image (cond row) and the unconditional prompt plus
    the answer's earlier images (uncond row, the official "no_text" context), with the deployment CFG.
    """
    from .generation import ARImageDecoder, DecodeSession, GenerationConfig, SamplingParams, SpecialIds

    c = lm.config
    ids = SpecialIds(c.eos_token_id, c.boi_token_id, c.eoi_token_id, c.img_token_id, c.eol_token_id,
                     c.first_visual_token_id, c.codebook_size, {})
    out = []
    for n, ex in enumerate(tqdm(examples, desc="self-distill", leave=False)):
        seq = list(ex.ids)
        done_blocks: list[int] = []
        for span in find_images(seq, c.img_token_id, c.eoi_token_id, c.eol_token_id):
            if span.img < ex.prompt_len:
                continue
            boi = max(i for i in range(span.img) if seq[i] == c.boi_token_id)
            use_cfg = cfg_scale != 1.0 and ex.uncond_ids is not None
            uncond = ex.uncond_ids[:ex.uncond_prompt_len] + done_blocks if use_cfg else None
            gen_cfg = GenerationConfig(image=SamplingParams(image_top_k, 1.0, 1.0), seed=seed + n,
                                       cfg_scale=cfg_scale if use_cfg else 1.0,
                                       max_new_tokens=span.eoi - boi + 2)
            session = DecodeSession(lm, seq[:boi], uncond, gen_cfg, ids)
            header = torch.tensor(seq[boi:span.img + 1], device=session.device)
            codes = ARImageDecoder()(session, header, span.height, span.width).flatten().tolist()
            body = iter(codes)
            for j in range(span.img + 1, span.eoi):
                if seq[j] >= c.first_visual_token_id:
                    seq[j] = c.first_visual_token_id + next(body)
            done_blocks += seq[boi:span.eoi + 1]
        twin = None
        if ex.uncond_ids is not None:    # same answer after the unconditional prompt
            twin = ex.uncond_ids[:ex.uncond_prompt_len] + seq[ex.prompt_len:]
        out.append(TrainExample(seq, ex.prompt_len, twin, ex.uncond_prompt_len))
    lm.clear_caches()
    return out
