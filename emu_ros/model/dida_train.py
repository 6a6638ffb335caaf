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

Usage::

    python -m emu_ros.model.dida_train --model-dir models/tiny/Emu3.5 --out runs/dida/Emu3.5 \\
        --data synthetic --noise mask --steps 300
    torchrun --nproc_per_node 8 -m emu_ros.model.dida_train --model-dir models/Emu3.5 --out OUT \\
        --data sequences.jsonl --fsdp --dtype bfloat16 --gradient-checkpointing

``--data FILE.jsonl``: one JSON object per line, ``{"ids": [...], "prompt_len": n}`` (loss on
ids[n:]), optionally ``"uncond_ids"`` / ``"uncond_prompt_len"``: the same answer after the official
unconditional prompt, used with probability ``--cond-dropout`` (CFG needs the noisy branch to see it).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .configuration_emu3 import Emu3Config
from .dida import DiDAConfig, shifted_time
from .modeling_emu3 import Emu3ForCausalLM, rope_cos_sin, rope_inv_freq
from .training_data import TrainExample, read_jsonl

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
    seed: int = 0


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
               gen: torch.Generator) -> RowLayout:
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


class DiDAObjective(nn.Module):
    """The LM and the DiDA adaptation loss as one module (so DDP/FSDP hooks cover the whole forward).

    ``forward(input_ids, labels)`` (labels = ids with -100 on the prompt and padding, the shape
    finetune_embodied uses) returns ``(loss, dict of floats)``; the text-mode argmax at every labelled
    clean position is kept in ``self.predictions``. ``vocab`` optionally restricts the clean NTP
    training to a compact vocabulary (the given ids + all visual ids + the mask id; a CPU speed option for
    tiny models whose embedding and lm_head are 153k rows); call ``merge_vocab()`` before using the LM.
    """

    def __init__(self, lm: Emu3ForCausalLM, first_visual_id: int | None = None,
                 train: DiDATrainConfig | None = None, vocab: Tensor | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.train_config = train or DiDATrainConfig()
        self.first_visual = first_visual_id or lm.config.first_visual_token_id
        self.generator = torch.Generator().manual_seed(self.train_config.seed)
        self.predictions: Tensor | None = None
        self.lookup: Tensor | None = None
        if vocab is not None:
            # compact vocabulary: train copies of the used rows, the full tables stay frozen (on a CPU the
            # AdamW update and zeroing of two 153k-row tables cost more than the whole tiny forward)
            c = lm.config
            vocab = torch.tensor(sorted(set(vocab.tolist()) | {self.train_config.mask_token_id}
                                        | set(range(c.first_visual_token_id, c.vocab_size))))
            self.register_buffer("vocab", vocab.to(lm.lm_head.weight.device), persistent=False)
            self.lookup = torch.full((c.vocab_size,), -1, dtype=torch.long)
            self.lookup[vocab] = torch.arange(len(vocab))
            self.lookup = self.lookup.to(lm.lm_head.weight.device)
            self.embed_sub = nn.Parameter(lm.model.embed_tokens.weight.detach()[self.vocab].clone())
            self.head_sub = nn.Parameter(lm.lm_head.weight.detach()[self.vocab].clone())
            lm.model.embed_tokens.weight.requires_grad_(False)
            lm.lm_head.weight.requires_grad_(False)

    @torch.no_grad()
    def merge_vocab(self) -> None:
        """Write the trained compact rows back into the LM's embedding and lm_head (before eval or saving)."""
        if self.lookup is not None:
            self.lm.model.embed_tokens.weight[self.vocab] = self.embed_sub.to(self.lm.lm_head.weight.dtype)
            self.lm.lm_head.weight[self.vocab] = self.head_sub.to(self.lm.lm_head.weight.dtype)

    def batch(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, list[RowLayout]]:
        """Noisy copies appended per row, padded to one length: tokens, positions, mask [B, 1, S, S], rows."""
        ids_cpu, labels_cpu = input_ids.cpu().tolist(), labels.cpu().tolist()
        rows = [layout_row(i, lab, self.lm.config, self.train_config, self.generator)
                for i, lab in zip(ids_cpu, labels_cpu)]
        total = max(len(r.tokens) for r in rows)
        pad = self.lm.config.pad_token_id
        tokens = torch.tensor([r.tokens + [pad] * (total - len(r.tokens)) for r in rows])
        positions = torch.tensor([r.positions + [0] * (total - len(r.positions)) for r in rows])
        mask = torch.stack([build_dida_mask(input_ids.shape[1], r.blocks, total) for r in rows])[:, None]
        dev = input_ids.device
        return tokens.to(dev), positions.to(dev), mask.to(dev), rows

    def forward(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """DiDA loss of a batch (input_ids, labels [B, T])."""
        cfg, dev = self.train_config, input_ids.device
        tokens, positions, mask, rows = self.batch(input_ids, labels)
        if self.lookup is not None:
            embeds = F.embedding(self.lookup[tokens], self.embed_sub)                         # [B, S, H]
            if bool((self.lookup[tokens] < 0).any()):
                raise ValueError("a token is outside the compact training vocabulary")
        else:
            embeds = None
        hidden = masked_forward(self.lm, tokens, positions, mask, embeds)                    # [B, S, H]
        t = input_ids.shape[1]
        # clean next-token prediction: position q predicts labels[q + 1]
        target = labels[:, 1:]                                                               # [B, T-1]
        keep = target != IGNORE_INDEX
        clean_h = hidden[:, :t - 1][keep]                                                    # [Nc, H]
        clean_y = target[keep]
        weight = self.lm.lm_head.weight if self.lookup is None else self.head_sub
        if self.lookup is not None:
            logits = F.linear(clean_h, weight).float()
            y = self.lookup[clean_y]
        else:
            logits = F.linear(clean_h, weight).float()
            y = clean_y
            self.predictions = logits.detach()[:, :self.first_visual].argmax(-1)
        ce = F.cross_entropy(logits, y, reduction="none")
        is_vis = clean_y >= self.first_visual
        zero = hidden.sum() * 0.0
        text_loss = ce[~is_vis].mean() if bool((~is_vis).any()) else zero
        vis_loss = ce[is_vis].mean() if bool(is_vis.any()) else zero
        # noisy copy: visual-vocabulary CE at the trained slots
        b_idx = torch.tensor([b for b, r in enumerate(rows) for _ in r.noisy_index], dtype=torch.long, device=dev)
        s_idx = torch.tensor([s for r in rows for s in r.noisy_index], dtype=torch.long, device=dev)
        noisy_y = torch.tensor([y for r in rows for y in r.noisy_target], dtype=torch.long, device=dev)
        if len(noisy_y):
            n_vis = self.lm.config.codebook_size
            head = weight[-n_vis:] if self.lookup is not None else weight[self.first_visual:self.first_visual + n_vis]
            noisy_logits = F.linear(hidden[b_idx, s_idx], head).float()                      # [Nn, codebook]
            noisy_loss = F.cross_entropy(noisy_logits, noisy_y)
            noisy_acc = float((noisy_logits.detach().argmax(-1) == noisy_y).float().mean())
        else:
            noisy_loss, noisy_acc = zero, float("nan")
        loss = cfg.noisy_weight * noisy_loss + cfg.text_weight * text_loss + cfg.visual_weight * vis_loss
        return loss, {"loss": float(loss.detach()), "noisy_ce": float(noisy_loss.detach()),
                      "noisy_acc": noisy_acc, "text_ce": float(text_loss.detach()),
                      "visual_ce": float(vis_loss.detach()), "tokens": int(keep.sum()), "noisy": len(noisy_y)}


# --------------------------------------------------------------------------------------- data
def collate(examples: list[TrainExample], pad_id: int, rng: random.Random,
            cond_dropout: float) -> tuple[Tensor, Tensor]:
    """(input_ids, labels) [B, T], right-padded; the uncond twin is used with probability cond_dropout."""
    seqs = []
    for ex in examples:
        if ex.uncond_ids is not None and rng.random() < cond_dropout:
            seqs.append((ex.uncond_ids, ex.uncond_prompt_len))
        else:
            seqs.append((ex.ids, ex.prompt_len))
    t = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), t), IGNORE_INDEX, dtype=torch.long)
    for i, (s, p) in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        labels[i, p:len(s)] = torch.tensor(s[p:])
    return ids, labels


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


# --------------------------------------------------------------------------------------- training
@dataclass
class TrainArgs:
    """Optimisation settings of one adaptation run."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-4
    warmup: int = 20
    weight_decay: float = 0.0
    cond_dropout: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 25
    seed: int = 0


def train_objective(objective: nn.Module, examples: list[TrainExample], args: TrainArgs, device: torch.device,
                    rank: int = 0, world: int = 1, desc: str = "dida") -> list[dict[str, float]]:
    """AdamW (betas 0.9/0.95 as Emu3.5 SFT), linear warmup then cosine; examples sharded by rank."""
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / (args.warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(1, args.steps - args.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = random.Random(args.seed + rank)
    inner = getattr(objective, "module", objective)
    pad = inner.lm.config.pad_token_id
    history: list[dict[str, float]] = []
    objective.train()
    bar = tqdm(range(args.steps), desc=desc, disable=rank != 0, leave=False)
    for step in bar:
        batch = [examples[rng.randrange(len(examples))] for _ in range(args.batch_size)]
        ids, labels = collate(batch, pad, rng, args.cond_dropout)
        loss, metrics = objective(ids.to(device), labels.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
        sched.step()
        history.append(metrics)
        if step % args.log_every == 0 or step == args.steps - 1:
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", noisy=f"{metrics.get('noisy_ce', 0):.3f}")
            log.info("%s step %d: %s", desc, step, {k: round(v, 4) for k, v in metrics.items()})
    return history


def save_adapted(lm: Emu3ForCausalLM, state: dict[str, Tensor], src_dir: Path, out_dir: Path, dida: DiDAConfig,
                 dtype: torch.dtype, num_shards: int = 1) -> Path:
    """Official layout (config.json, generation_config.json, shards + index, tokenizer files) + dida_config.json."""
    from .random_checkpoint import write_sharded_safetensors
    from .tokenizer import TIKTOKEN_FILE, VISION_TOKENS_FILE

    out_dir.mkdir(parents=True, exist_ok=True)
    lm.config.save(out_dir / "config.json")
    for name in ("generation_config.json", TIKTOKEN_FILE, VISION_TOKENS_FILE):
        if (src_dir / name).is_file() and src_dir.resolve() != out_dir.resolve():
            shutil.copyfile(src_dir / name, out_dir / name)
    state = {k: v.detach().to("cpu", dtype) for k, v in state.items()}
    write_sharded_safetensors(state, out_dir, num_shards)
    dida.save(out_dir)
    return out_dir


def task_vocab(examples: Iterable[TrainExample], config: Emu3Config) -> Tensor:
    """Every id the data uses plus all visual ids (for ``--loss-vocab data``)."""
    used = set()
    for ex in examples:
        used.update(ex.ids)
        used.update(ex.uncond_ids or [])
    used.update(range(config.first_visual_token_id, config.vocab_size))
    return torch.tensor(sorted(used))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emu_ros.model.dida_train", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, required=True, help="AR checkpoint (official layout)")
    p.add_argument("--out", type=Path, required=True, help="directory for the adapted weights + dida_config.json")
    p.add_argument("--data", required=True,
                   help="a .jsonl of token sequences, or 'synthetic' for the move-the-block test task "
                        "(emu_ros.model.synthetic_task; for tests and benchmarks only, never a default)")
    p.add_argument("--synthetic-examples", type=int, default=2000)
    p.add_argument("--noise", choices=["mask", "uniform"], default="mask")
    p.add_argument("--passes", type=int, default=8, help="default K written to dida_config.json")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16, help="per process")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--cond-dropout", type=float, default=0.1)
    p.add_argument("--visual-weight", type=float, default=0.5)
    p.add_argument("--text-weight", type=float, default=1.0)
    p.add_argument("--time-shift", type=float, default=1.0)
    p.add_argument("--mask-token-id", type=int, default=151643)
    p.add_argument("--self-distill", action="store_true", help="answer images sampled from the AR teacher")
    p.add_argument("--distill-cfg", type=float, default=3.0)
    p.add_argument("--loss-vocab", choices=["full", "data"], default="full",
                   help="data: train only the embedding/lm_head rows the data uses + visual ids (tiny CPU runs)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="training weights")
    p.add_argument("--save-dtype", default=None, help="dtype of the saved shards (default: config torch_dtype)")
    p.add_argument("--num-shards", type=int, default=1)
    p.add_argument("--fsdp", action="store_true", help="under torchrun: FSDP2 full shard per decoder layer")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def load_examples(args: argparse.Namespace, tok_dir: Path) -> list[TrainExample]:
    """The training sequences the CLI asks for."""
    if args.data == "synthetic":
        from .synthetic_task import MoveTask
        from .tokenizer import load_tokenizer

        task = MoveTask(load_tokenizer(tok_dir))
        return task.examples(args.synthetic_examples, args.seed)
    return read_jsonl(Path(args.data))


def main(argv: list[str] | None = None) -> int:
    """Adapt a checkpoint and write it (rank 0) with dida_config.json."""
    from .loading import load_lm

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(args.device)
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(args.seed)
    lm = load_lm(args.model_dir, device=device, dtype=getattr(torch, args.dtype))
    lm.requires_grad_(True)
    examples = load_examples(args, args.model_dir)
    if args.self_distill:
        lm.eval()
        examples = self_distill(lm, examples, args.distill_cfg, args.seed)
    if args.gradient_checkpointing:
        from torch.utils.checkpoint import checkpoint

        for layer in lm.model.layers:
            layer.forward = (lambda *a, _f=layer.forward: checkpoint(_f, *a, use_reentrant=False))
    train_cfg = DiDATrainConfig(noise=args.noise, mask_token_id=args.mask_token_id, visual_weight=args.visual_weight,
                                text_weight=args.text_weight, time_shift=args.time_shift, seed=args.seed + rank)
    vocab = task_vocab(examples, lm.config) if args.loss_vocab == "data" else None
    objective: nn.Module = DiDAObjective(lm, train=train_cfg, vocab=vocab)
    if world > 1:
        if args.fsdp:
            from torch.distributed.fsdp import fully_shard

            for layer in lm.model.layers:
                fully_shard(layer)
            fully_shard(objective)
        else:
            device_ids = [device] if device.type == "cuda" else None
            objective = nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
    targs = TrainArgs(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                      cond_dropout=args.cond_dropout, seed=args.seed)
    start = time.perf_counter()
    history = train_objective(objective, examples, targs, device, rank, world)
    inner = getattr(objective, "module", objective)
    if world > 1 and args.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(objective, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        state = inner.state_dict()
    if "embed_sub" in state:       # compact-vocabulary training: write the trained rows into the full tables
        vocab = inner.vocab.cpu()
        state["lm.model.embed_tokens.weight"] = state["lm.model.embed_tokens.weight"].clone().cpu()
        state["lm.lm_head.weight"] = state["lm.lm_head.weight"].clone().cpu()
        state["lm.model.embed_tokens.weight"][vocab] = state["embed_sub"].cpu()
        state["lm.lm_head.weight"][vocab] = state["head_sub"].cpu()
    state = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
    if rank == 0:
        save_dtype = getattr(torch, args.save_dtype or lm.config.torch_dtype or "bfloat16")
        last = history[-1] if history else {}
        dida = DiDAConfig(noise=args.noise, mask_token_id=args.mask_token_id, passes=args.passes,
                          time_shift=args.time_shift,
                          training={"source": str(args.model_dir), "data": args.data, "steps": args.steps,
                                    "batch_size": args.batch_size * world, "lr": args.lr,
                                    "self_distill": args.self_distill, "visual_weight": args.visual_weight,
                                    "final_loss": last.get("loss"), "final_noisy_ce": last.get("noisy_ce"),
                                    "seconds": round(time.perf_counter() - start, 1), **asdict(train_cfg)})
        save_adapted(lm, state, args.model_dir, args.out, dida, save_dtype, args.num_shards)
        log.info("wrote %s (noise %s, %d steps, final loss %.4f)", args.out, args.noise, args.steps,
                 last.get("loss", float("nan")))
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
