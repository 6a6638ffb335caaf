"""Fine-tune Emu3.5 on a LeRobot dataset: segmented steps -> interleaved vla samples -> AR (or DiDA) training.

    python -m finetune_embodied.train --dataset runs/sim_dataset --model_dir models/Emu3.5 \
        --vq_dir models/Emu3.5-VisionTokenizer --output_dir runs/ft --steps 200 --lora.enabled true

    python -m finetune_embodied.train --config my_run.yaml --optim.lr 5e-5      # YAML, then flags on top

The run directory gets ``train_config.yaml`` (resolved config), ``metrics.csv`` (train/eval rows),
``segments.json`` and ``checkpoints/step_NNNNNN/Emu3.5`` (official layout, loads with ``load_lm``). Running the same
command again resumes from ``checkpoints/latest`` with the optimizer, scheduler, RNG and data position restored, so
an interrupted run ends at the same step count (and, on CPU, the same weights) as an uninterrupted one.
Multi-GPU: ``torchrun --nproc_per_node 8 -m finetune_embodied.train ... --distributed.fsdp true`` (see
finetune_embodied/README.md for the memory math of the 34B model on 8x80 GB).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.nn import functional as F

from .checkpoint import latest_checkpoint, load_training_state, rng_state, save_checkpoint, set_rng_state
from .config import parse_config, to_dict
from .dataset import LeRobotDatasetReader
from .lora import LoraConfig, adapter_state_dict, apply_lora, merge_lora_state, merged_state_dict
from .samples import (IGNORE_INDEX, INPUT_IDS, LABELS, ImageTokenCache, SampleBuilder, SampleConfig, TokenSample,
                      collate, pack_samples, vision_tokenizer_id)
from .segment import SegmentConfig, segment_dataset

log = logging.getLogger(__name__)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay."""

    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (not applied to norms)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """Adam betas."""
    warmup_steps: int = 10
    """Linear warmup from 0 to lr."""
    min_lr_ratio: float = 0.1
    """Cosine decays to lr * min_lr_ratio at the last step."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 = off)."""


@dataclass
class DistributedConfig:
    """torchrun settings (read only when WORLD_SIZE > 1)."""

    fsdp: bool = True
    """Shard parameters, gradients and optimizer state (FSDP, one unit per decoder layer); False = DDP."""
    backend: str = "nccl"
    """Process-group backend (nccl on GPUs, gloo for a CPU smoke test)."""


@dataclass
class TrainConfig:
    """Everything a fine-tuning run needs; saved as train_config.yaml next to the outputs."""

    dataset: str = ""
    """Local LeRobot v3.0 dataset root."""
    model_dir: str = ""
    """Official Emu3.5 LM directory (config.json + safetensors + tokenizer files)."""
    vq_dir: str = ""
    """Emu3.5-VisionTokenizer directory; empty = the sibling Emu3.5-VisionTokenizer of model_dir."""
    output_dir: str = "runs/finetune"
    """Run directory (metrics, checkpoints, token cache)."""
    objective: str = "ar"
    """ar = next-token prediction on the answer; dida = DiDA discrete diffusion (emu_ros.model.dida_train)."""
    dida: dict[str, Any] | None = None
    """Options of the DiDA objective (DiDATrainConfig fields such as noise, visual_weight); dida only."""
    steps: int = 200
    """Optimizer steps in total (a resumed run continues up to this)."""
    batch_size: int = 2
    """Samples per micro-batch (per process)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    eval_every: int = 50
    """Evaluate on held-out episodes every N steps (and before the first and after the last)."""
    save_every: int = 50
    """Checkpoint every N steps (and at the end)."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep (0 = all)."""
    stop_after: int = 0
    """Stop this process after N steps even if `steps` is not reached (for time-sliced jobs; 0 = off)."""
    eval_fraction: float = 0.2
    """Fraction of episodes held out (the last ones), at least one."""
    eval_episodes: list[int] | None = None
    """Explicit held-out episodes (overrides eval_fraction)."""
    seed: int = 0
    """Seed for data order and initialisation of adapters."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto."""
    param_dtype: str = "float32"
    """Dtype of the trained weights (fp32 master weights; use bfloat16 only for a memory-bound full fine-tune)."""
    bf16: bool = True
    """bf16 autocast for the forward pass where the device supports it."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in the backward pass (saves activations, ~30% more compute)."""
    pack: bool = False
    """Pack several samples per row up to samples.max_length (see samples.pack_samples)."""
    num_shards: int = 1
    """safetensors shards per saved checkpoint (the release uses 15 for 34B)."""
    cache_dir: str = ""
    """Image-token cache; empty = output_dir/token_cache."""
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    samples: SampleConfig = field(default_factory=SampleConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        if self.objective not in ("ar", "dida"):
            raise ValueError(f"objective must be 'ar' or 'dida', got {self.objective!r}")
        if self.steps <= 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise ValueError(f"steps, batch_size, grad_accum must be positive, got {self.steps}, "
                             f"{self.batch_size}, {self.grad_accum}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")


# ---------------------------------------------------------------------- objectives
class AutoregressiveObjective(nn.Module):
    """The LM and its next-token loss as one module, so DDP/FSDP hooks cover the whole forward.

    ``forward`` returns ``(loss, dict of floats)``; the text-mode argmax prediction at every labeled position
    (visual ids masked, as in the runtime's text mode) is kept in ``self.predictions`` for step accuracy.
    The vocabulary projection runs only where a label exists (most of the cost of a small model).
    """

    def __init__(self, lm: nn.Module, first_visual_id: int) -> None:
        super().__init__()
        self.lm = lm
        self.first_visual_id = first_visual_id
        self.predictions: Tensor | None = None

    def forward(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the labeled next tokens (labels -100 are ignored)."""
        hidden = self.lm.model(input_ids)                            # [B, T, H]
        target = labels[:, 1:]                                       # [B, T-1]
        keep = target != IGNORE_INDEX
        logits = self.lm.lm_head(hidden[:, :-1][keep]).float()      # [N, V], N = labeled positions
        loss = F.cross_entropy(logits, target[keep])
        self.predictions = logits.detach()[:, :self.first_visual_id].argmax(-1)
        return loss, {"loss": float(loss.detach()), "tokens": int(keep.sum())}


def make_objective(name: str, lm: nn.Module, first_visual_id: int, options: dict[str, Any] | None = None) -> nn.Module:
    """The training objective by name, wrapping the LM.

    ``dida`` is ``emu_ros.model.dida_train.DiDAObjective``: same ``forward(input_ids, labels) ->
    (loss, dict of floats)`` interface as ``AutoregressiveObjective`` (and it sets ``predictions`` for
    step accuracy). ``options`` are keyword arguments of ``DiDATrainConfig`` (noise, visual_weight, ...).
    """
    if name == "ar":
        return AutoregressiveObjective(lm, first_visual_id)
    # Imported here, not at the top: the DiDA training layout is only needed for this objective.
    from emu_ros.model.dida_train import DiDAObjective, DiDATrainConfig

    if options:
        return DiDAObjective(lm, first_visual_id, train=DiDATrainConfig(**options))
    return DiDAObjective(lm, first_visual_id)


# ---------------------------------------------------------------------- data
@dataclass
class DataBundle:
    """Token samples for training and held-out evaluation."""

    train: list[TokenSample]
    eval: list[TokenSample]
    train_episodes: list[int]
    eval_episodes: list[int]
    pad_id: int
    first_visual_id: int


def split_episodes(indices: list[int], fraction: float, explicit: list[int] | None) -> tuple[list[int], list[int]]:
    """(train, held-out) episodes: explicit list, else the last ceil(fraction * N) episodes (at least one)."""
    if explicit is not None:
        unknown = sorted(set(explicit) - set(indices))
        if unknown:
            raise ValueError(f"eval_episodes {unknown} not in the dataset (episodes {indices[:10]}...)")
        held = [i for i in indices if i in set(explicit)]
    elif fraction > 0 and len(indices) > 1:
        held = indices[-max(1, math.ceil(fraction * len(indices))):]
    else:
        held = []
    train = [i for i in indices if i not in set(held)]
    if not train:
        raise ValueError(f"no training episodes left after holding out {held}")
    return train, held


def prepare_data(cfg: TrainConfig, lm_config, model_dir: Path, vq_dir: Path, out: Path) -> DataBundle:
    """Read, segment, split by episode and tokenize (images through the on-disk cache)."""
    from emu_ros.model import load_tokenizer, load_vision_tokenizer

    reader = LeRobotDatasetReader(cfg.dataset, cameras=cfg.samples.cameras)
    episodes = segment_dataset(reader, cfg.segment)
    (out / "segments.json").write_text(json.dumps([e.to_dict() for e in episodes], indent=1), encoding="utf-8")
    train_ids, eval_ids = split_episodes(reader.episode_indices, cfg.eval_fraction, cfg.eval_episodes)
    tok = load_tokenizer(model_dir)
    vq = load_vision_tokenizer(vq_dir)
    area = cfg.samples.image_area or lm_config.image_area
    cache = ImageTokenCache(Path(cfg.cache_dir or out / "token_cache"), reader, vq, area, vision_tokenizer_id(vq_dir))
    builder = SampleBuilder(tok, cache, cfg.samples)
    by_id = {e.episode_index: e for e in episodes}
    train = builder.build([by_id[i] for i in train_ids])
    held = builder.build([by_id[i] for i in eval_ids]) if eval_ids else []
    log.info("samples: %d train (%d episodes), %d eval (%d episodes); image tokens cached %d, computed %d",
             len(train), len(train_ids), len(held), len(eval_ids), cache.hits, cache.misses)
    pad = tok.token_id("PAD")
    if cfg.pack:
        train = pack_samples(train, cfg.samples.max_length)
    return DataBundle(train, held, train_ids, eval_ids, pad, tok.first_visual_id)


# ---------------------------------------------------------------------- model / optimizer
def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute every decoder layer in backward (instance-level forward wrapper keeps the state-dict keys)."""
    from torch.utils.checkpoint import checkpoint

    for layer in model.model.layers:
        inner = layer.forward

        def wrapped(*args, _inner=inner):
            """The layer's forward, recomputed in backward instead of storing its activations."""
            return checkpoint(_inner, *args, use_reentrant=False)

        layer.forward = wrapped


def build_model(cfg: TrainConfig, model_dir: Path, device: torch.device) -> nn.Module:
    """Load the LM in the training dtype, make it trainable (all weights or LoRA adapters)."""
    from emu_ros.model import load_lm

    model = load_lm(model_dir, device=device, dtype=getattr(torch, cfg.param_dtype))
    model.train()
    if cfg.lora.enabled:
        torch.manual_seed(cfg.seed)
        replaced = apply_lora(model, cfg.lora)
        log.info("LoRA r=%d on %d projections", cfg.lora.rank, len(replaced))
    else:
        model.requires_grad_(True)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %d of %d (%.2f%%)", n_train, n_all, 100 * n_train / max(1, n_all))
    return model


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms and 1-D tensors."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas))


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr: linear warmup, then cosine to min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(objective: nn.Module, samples: list[TokenSample], pad_id: int, batch_size: int,
             device: torch.device, autocast: bool) -> dict[str, float]:
    """Held-out loss, step-text token accuracy and step exact match (teacher forcing, text-mode argmax)."""
    if not samples:
        return {}
    inner = getattr(objective, "module", objective)
    was_training = objective.training
    objective.eval()
    losses, weights, tok_ok, tok_n, steps_ok, steps_n = [], [], 0, 0, 0, 0
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        batch = collate(chunk, pad_id)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            _, metrics = objective(batch[INPUT_IDS].to(device), batch[LABELS].to(device))
        keep = batch[LABELS][:, 1:] != IGNORE_INDEX
        flat = (torch.cumsum(keep.flatten(), 0) - 1).view(keep.shape)   # (row, position) -> prediction index
        pred = inner.predictions.cpu()
        for row, s in enumerate(chunk):
            for a, b in s.text_spans:   # tokens a..b-1 are predicted at positions a-1..b-2
                got = pred[flat[row, a - 1:b - 1]]
                gold = torch.tensor(s.input_ids[a:b])
                tok_ok += int((got == gold).sum())
                tok_n += len(gold)
                steps_ok += int(torch.equal(got, gold))
                steps_n += 1
        losses.append(metrics["loss"])
        weights.append(metrics["tokens"])
    objective.train(was_training)
    return {"loss": float(np.average(losses, weights=weights)), "token_acc": tok_ok / max(1, tok_n),
            "step_acc": steps_ok / max(1, steps_n)}


# ---------------------------------------------------------------------- the loop
class Trainer:
    """Owns model, optimizer, scheduler, data order and logging for one run; resumable."""

    def __init__(self, cfg: TrainConfig) -> None:
        from emu_ros.model import Emu3Config

        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rank, self.world = _init_distributed(cfg)
        self.device = resolve_device(cfg.device) if self.world == 1 else _local_device(cfg)
        self.model_dir = Path(cfg.model_dir)
        self.vq_dir = Path(cfg.vq_dir) if cfg.vq_dir else self.model_dir.parent / "Emu3.5-VisionTokenizer"
        self.lm_config = Emu3Config.from_json(self.model_dir)
        self.config_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        if self.rank == 0:
            (self.out / "train_config.yaml").write_text(self.config_yaml, encoding="utf-8")
        _barrier_if(self.world > 1 and self.rank != 0)  # rank 0 fills the token cache first, the others read it
        self.data = prepare_data(cfg, self.lm_config, self.model_dir, self.vq_dir, self.out)
        _barrier_if(self.world > 1 and self.rank == 0)
        self.autocast = cfg.bf16 and (self.device.type == "cuda" and torch.cuda.is_bf16_supported()
                                      or self.device.type == "cpu")
        self.resume_from = latest_checkpoint(self.out)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.model_dir, self.device)
        state = load_training_state(self.resume_from) if self.resume_from else None
        if state is not None:
            self._restore_weights(state)
        objective = make_objective(cfg.objective, self.model, self.data.first_visual_id, cfg.dida)
        self.objective = _wrap_distributed(objective, cfg, self.world, self.device)
        self.optimizer = make_optimizer(self.objective, cfg.optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_lambda(s, cfg.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio))
        self.step, self.micro = 0, 0
        self.history: list[dict[str, Any]] = []
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            self.step, self.micro, self.history = state["step"], state["micro"], state["history"]
            log.info("resumed from %s at step %d", self.resume_from, self.step)

    # -------------------------------------------------------------- resume helpers
    def _restore_weights(self, state: dict[str, Any]) -> None:
        """Full FT: weights from the checkpoint's official dir; LoRA: base from model_dir + saved adapters."""
        if self.cfg.lora.enabled:
            missing = self.model.load_state_dict(state["adapters"], strict=False)
            if missing.unexpected_keys:
                raise RuntimeError(f"checkpoint adapters do not match the model: {missing.unexpected_keys[:5]}")
            return
        from emu_ros.model import load_lm

        trained = load_lm(self.resume_from / "Emu3.5", device=self.device, dtype=getattr(torch, self.cfg.param_dtype))
        self.model.load_state_dict(trained.state_dict())

    def _unwrapped(self) -> nn.Module:
        """The plain LM (inside the objective, inside DDP/FSDP)."""
        return getattr(self.objective, "module", self.objective).lm

    # -------------------------------------------------------------- data order
    def _micro_batch(self, index: int) -> list[TokenSample]:
        """Micro-batch number `index` of the run: a fixed permutation per epoch, sharded by rank."""
        per_epoch = max(1, len(self.data.train) // (self.cfg.batch_size * self.world))
        epoch, pos = divmod(index, per_epoch)
        order = np.random.default_rng(self.cfg.seed + epoch).permutation(len(self.data.train))
        start = (pos * self.world + self.rank) * self.cfg.batch_size
        picks = order[start:start + self.cfg.batch_size]
        if len(picks) == 0:  # fewer samples than one global batch: wrap around
            picks = order[np.arange(start, start + self.cfg.batch_size) % len(order)]
        return [self.data.train[i] for i in picks]

    # -------------------------------------------------------------- steps
    def train_step(self) -> dict[str, float]:
        """One optimizer step over grad_accum micro-batches."""
        self.optimizer.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        for _ in range(self.cfg.grad_accum):
            batch = collate(self._micro_batch(self.micro), self.data.pad_id)
            self.micro += 1
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss, metrics = self.objective(batch[INPUT_IDS].to(self.device), batch[LABELS].to(self.device))
            (loss / self.cfg.grad_accum).backward()
            total += metrics["loss"] / self.cfg.grad_accum
            tokens += metrics["tokens"]
        grad_norm = 0.0
        if self.cfg.optim.grad_clip > 0:
            params = [p for p in self.objective.parameters() if p.requires_grad]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": total, "tokens": tokens, "lr": lr, "grad_norm": grad_norm}

    def run(self) -> dict[str, Any]:
        """Train to cfg.steps (or stop_after), evaluating and checkpointing on schedule; returns a summary."""
        from tqdm import tqdm

        cfg = self.cfg
        if self.step == 0:
            self._log_eval()
        end = cfg.steps if not cfg.stop_after else min(cfg.steps, self.step + cfg.stop_after)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="finetune", disable=self.rank != 0, dynamic_ncols=True)
        t0 = time.time()
        while self.step < end:
            metrics = self.train_step()
            row = {"step": self.step, "split": "train", **metrics, "elapsed_s": round(time.time() - t0, 3)}
            self._log(row)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2e}")
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                self._log_eval()
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
        bar.close()
        evals = [h for h in self.history if h["split"] == "eval"]
        trains = [h for h in self.history if h["split"] == "train"]
        return {"step": self.step, "first_eval": evals[0] if evals else None, "last_eval": evals[-1] if evals else None,
                "first_train_loss": trains[0]["loss"] if trains else None,
                "last_train_loss": trains[-1]["loss"] if trains else None,
                "checkpoint": str(latest_checkpoint(self.out)) if latest_checkpoint(self.out) else None}

    def _log_eval(self) -> None:
        metrics = evaluate(self.objective, self.data.eval, self.data.pad_id, self.cfg.batch_size, self.device,
                           self.autocast)
        if metrics:
            self._log({"step": self.step, "split": "eval", **metrics})
            log.info("eval @%d: loss %.4f, step-text token acc %.3f, step exact %.3f", self.step, metrics["loss"],
                     metrics["token_acc"], metrics["step_acc"])

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.rank != 0:
            return
        path = self.out / "metrics.csv"
        fields = ["step", "split", "loss", "tokens", "lr", "grad_norm", "token_acc", "step_acc", "elapsed_s"]
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def save(self) -> Path | None:
        """Checkpoint now (rank 0 writes; FSDP gathers the full state dict first)."""
        model = self._unwrapped()
        weights = _full_state_dict(self.objective, self.cfg) if self.world > 1 else (
            merged_state_dict(model) if self.cfg.lora.enabled else model.state_dict())
        if self.rank != 0:
            return None
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng": rng_state(), "step": self.step, "micro": self.micro, "history": self.history,
                 "adapters": adapter_state_dict(model) if self.cfg.lora.enabled else None}
        trainer_state = {"step": self.step, "micro_batches": self.micro, "train_episodes": self.data.train_episodes,
                         "eval_episodes": self.data.eval_episodes, "history_tail": self.history[-5:]}
        return save_checkpoint(self.out, self.step, weights, self.lm_config, self.model_dir, state, trainer_state,
                               self.config_yaml, self.cfg.keep_checkpoints, self.cfg.num_shards,
                               lm_dir_hook=self._write_dida_config if self.cfg.objective == "dida" else None)

    def _write_dida_config(self, lm_dir: Path) -> None:
        """DiDA weights need dida_config.json next to them (the sampler reads noise type and mask id there)."""
        from emu_ros.model.dida import DiDAConfig

        train_cfg = getattr(self.objective, "module", self.objective).train_config
        DiDAConfig(noise=train_cfg.noise, mask_token_id=train_cfg.mask_token_id, time_shift=train_cfg.time_shift,
                   training={"source": str(self.model_dir), "dataset": self.cfg.dataset, "steps": self.step,
                             "by": "finetune_embodied.train", **dataclasses.asdict(train_cfg)}).save(lm_dir)


# ---------------------------------------------------------------------- distributed (torchrun)
def _init_distributed(cfg: TrainConfig) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=cfg.distributed.backend)
    return dist.get_rank(), world


def _barrier_if(condition: bool) -> None:
    if condition:
        import torch.distributed as dist

        dist.barrier()


def _local_device(cfg: TrainConfig) -> torch.device:
    if cfg.distributed.backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _wrap_distributed(model: nn.Module, cfg: TrainConfig, world: int, device: torch.device) -> nn.Module:
    """DDP, or FSDP with one unit per decoder layer (what makes 34B fit, see docs/finetune.md)."""
    if world == 1:
        return model
    if cfg.distributed.fsdp and device.type != "cuda":
        raise ValueError("FSDP needs GPUs (torch FSDP refuses CPU-only ranks); use --distributed.fsdp false "
                         "--distributed.backend gloo for a CPU smoke test with DDP")
    if not cfg.distributed.fsdp:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    import functools

    from torch.distributed.fsdp import FullyShardedDataParallel, MixedPrecision
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    layer_cls = type(model.lm.model.layers[0])
    return FullyShardedDataParallel(
        model, auto_wrap_policy=functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={layer_cls}),
        mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if cfg.bf16 else None,
        device_id=device if device.type == "cuda" else None, use_orig_params=True)


def _full_state_dict(model: nn.Module, cfg: TrainConfig) -> dict[str, Tensor]:
    """Gather weights on rank 0 (FSDP full state dict, offloaded to CPU); LoRA adapters merged."""
    from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

    if isinstance(model, FullyShardedDataParallel):
        with FullyShardedDataParallel.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                                                      FullStateDictConfig(offload_to_cpu=True, rank0_only=True)):
            state = model.state_dict()
        state = {k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")}
    else:
        state = getattr(model, "module", model).lm.state_dict()
    return merge_lora_state(state, cfg.lora.alpha / cfg.lora.rank) if cfg.lora.enabled else state


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_config(TrainConfig, argv, __doc__ or "")
    missing = [k for k in ("dataset", "model_dir") if not getattr(cfg, k)]
    if missing:
        raise SystemExit(f"--{' --'.join(missing)} required (see --help)")
    summary = Trainer(cfg).run()
    print(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
