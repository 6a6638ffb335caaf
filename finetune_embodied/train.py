"""The one fine-tuning trainer for Emu3.5: AR (``--objective ar``) or DiDA (``--objective dida``), one
process or many (torchrun: FSDP2 built on the meta device, each rank loading only its shards), sharded
resumable checkpoints, and a memory plan that refuses a run that cannot fit before anything is allocated.

    python -m finetune_embodied.train --data runs/sim_dataset --model_dir models/Emu3.5 \
        --vq_dir models/Emu3.5-VisionTokenizer --output_dir runs/ft --steps 200 --lora.enabled true
    python -m finetune_embodied.train --config my_run.yaml --optim.lr 5e-5      # YAML, then flags on top
    torchrun --nproc_per_node 8 -m finetune_embodied.train --config run.yaml --gradient_checkpointing true

``--data`` is required: a local LeRobot v3.0 dataset root, or ``synthetic:move-block`` (tests and
benchmarks). The run directory gets ``train_config.yaml``, ``metrics.csv``, ``segments.json`` (LeRobot
data) and ``checkpoints/step_NNNNNN/`` (see checkpoint.py); the last one holds ``Emu3.5/`` in the
official layout (``load_lm`` loads it; DiDA runs add ``dida_config.json``). Running the same command
again resumes from ``checkpoints/latest`` — on the same or a different number of ranks — with weights,
optimizer, scheduler, data position and RNG restored; the loss curve and weights continue as if
uninterrupted (fp32, tested to 1e-6). Multi-node: README.md, "Many GPUs".
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from .checkpoint import (CONFIG_FILE, ResumeError, latest_checkpoint, load_checkpoint, load_trainer_state,
                         save_checkpoint, write_model_dir)
from .config import parse_config, to_dict
from .data import DataBundle, SyntheticConfig, SYNTHETIC_PREFIX, check_data_source, pick_conditioning, \
    prepare_lerobot, prepare_synthetic, self_distilled
from .distributed import (DistributedConfig, barrier, full_state_dict, init_ranks, load_local_shards,
                          rank_device, require_agreement, shard_objective, shutdown)
from .lora import LoraConfig, adapter_init, apply_lora, merge_lora_state
from .objectives import OBJECTIVES, make_objective
from .samples import IGNORE_INDEX, INPUT_IDS, LABELS, SampleConfig, TokenSample, collate
from .segment import SegmentConfig

log = logging.getLogger(__name__)
#: With --compact_vocab: the full-vocabulary ids of the embedding/head rows the run trains, in output_dir.
COMPACT_VOCAB_FILE = "compact_vocab.json"


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
class TrainConfig:
    """Everything a fine-tuning run needs; saved as train_config.yaml next to the outputs."""

    data: str = ""
    """Required: a local LeRobot v3.0 dataset root, or synthetic:move-block (tests and benchmarks only)."""
    model_dir: str = ""
    """Official Emu3.5 LM directory (config.json + safetensors + index + tokenizer files)."""
    vq_dir: str = ""
    """Emu3.5-VisionTokenizer directory; empty = the sibling Emu3.5-VisionTokenizer of model_dir."""
    output_dir: str = "runs/finetune"
    """Run directory (metrics, checkpoints, token cache)."""
    objective: str = "ar"
    """ar = next-token prediction on the answer; dida = DiDA discrete diffusion (emu_ros.model.dida_objective)."""
    dida: dict[str, Any] | None = None
    """Options of the DiDA objective (DiDATrainConfig fields such as noise, visual_weight); dida only."""
    passes: int = 8
    """DiDA passes K written to dida_config.json as the sampler's default (dida only)."""
    dida_self_distill_cfg: float = 0.0
    """DiDA only: > 0 replaces every answer image by the starting (AR) model's own sample at this CFG scale before
    training (Emu3.5's DiDA data recipe); single process or DDP (the teacher needs the whole model per rank)."""
    steps: int = 200
    """Optimizer steps in total (a resumed run continues up to this)."""
    batch_size: int = 2
    """Samples per micro-batch (per rank)."""
    grad_accum: int = 1
    """Micro-batches per rank per optimizer step (global batch = batch_size x grad_accum x ranks; a resume on
    another number of ranks keeps the global batch and changes this)."""
    cond_dropout: float = 0.1
    """Probability of training a sample's unconditional twin instead (samples that have one: synthetic data)."""
    eval_every: int = 50
    """Evaluate on held-out data every N steps (and before the first and after the last)."""
    save_every: int = 50
    """Checkpoint every N steps (and at the end)."""
    export_every_save: bool = False
    """Also write the official Emu3.5/ directory at every checkpoint (always at the last step)."""
    keep_checkpoints: int = 2
    """How many checkpoints to keep (0 = all)."""
    stop_after: int = 0
    """Stop this process after N steps even if `steps` is not reached (for time-sliced jobs; 0 = off)."""
    eval_fraction: float = 0.2
    """Fraction of episodes held out (the last ones), at least one (LeRobot data)."""
    eval_episodes: list[int] | None = None
    """Explicit held-out episodes (overrides eval_fraction)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    seed: int = 0
    """Seed for data order, adapter initialisation and per-micro-batch noise."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto (under torchrun: cuda:LOCAL_RANK)."""
    param_dtype: str = "bfloat16"
    """Dtype of the stored weights, gradients and AdamW state; float32 = fp32 master weights (with --bf16,
    FSDP gathers them in bf16 for compute)."""
    bf16: bool = True
    """bf16 compute (autocast; under FSDP with fp32 weights, bf16 gathers) where the device supports it."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in the backward pass (saves activations, ~30% more compute)."""
    compact_vocab: bool = False
    """Train only the embedding/lm_head rows the data uses (+ visual ids): a speed option for tiny CPU models
    (single process or DDP)."""
    memory_check: bool = True
    """Print the memory plan and refuse a run that does not fit the device (false = print only)."""
    pack: bool = False
    """Pack several samples per row up to samples.max_length (see samples.pack_samples)."""
    num_shards: int = 1
    """safetensors shards per exported model (the release uses 15 for 34B)."""
    cache_dir: str = ""
    """Image-token cache; empty = output_dir/token_cache."""
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    samples: SampleConfig = field(default_factory=SampleConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.steps <= 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise ValueError(f"steps, batch_size, grad_accum must be positive, got {self.steps}, "
                             f"{self.batch_size}, {self.grad_accum}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.param_dtype not in ("bfloat16", "float32"):
            raise ValueError(f"param_dtype must be bfloat16 or float32, got {self.param_dtype!r}")
        if (self.dida or self.dida_self_distill_cfg) and self.objective != "dida":
            raise ValueError("dida options given but objective is not dida")


#: config fields a resumed run must share with the checkpoint (anything else may change between runs)
RESUME_FIELDS = ("data", "objective", "dida", "batch_size", "param_dtype", "compact_vocab", "pack", "seed",
                 "cond_dropout", "synthetic", "segment", "samples", "lora", "optim")


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr: linear warmup, then cosine to min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute every decoder layer in backward (instance-level forward wrapper keeps the state-dict keys)."""
    from torch.utils.checkpoint import checkpoint

    for layer in model.model.layers:
        inner = layer.forward

        def wrapped(*args, _inner=inner):
            """The layer's forward, recomputed in backward instead of storing its activations."""
            return checkpoint(_inner, *args, use_reentrant=False)

        layer.forward = wrapped


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms and 1-D tensors."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas))


def check_model_dir(model_dir: Path):
    """The LM config, after checking the directory's config, index and shard headers match (no weights read)."""
    from emu_ros.model.loading import checked_config

    if not model_dir.is_dir():
        raise FileNotFoundError(f"--model_dir {model_dir}: not a directory (the Emu3.5 model directory)")
    return checked_config(model_dir)[0]


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
    # samples without step texts (the synthetic task) have no text accuracy: NaN, not a measured 0
    return {"loss": float(np.average(losses, weights=weights)), "token_acc": tok_ok / tok_n if tok_n else math.nan,
            "step_acc": steps_ok / steps_n if steps_n else math.nan}


# ---------------------------------------------------------------------- the loop
class Trainer:
    """Owns model, optimizer, scheduler, data order and logging for one run; resumable on any rank count.

    Data order is global: optimizer step s consumes micro-batches s*M .. s*M+M-1 (M = micro-batches per step
    over all ranks), rank r taking every world-th one, and each micro-batch's randomness (DiDA noise, LoRA
    dropout, conditioning dropout) is seeded by its global index. So the same step sees the same samples
    and noise on 1 rank or 8, which is what makes a resume on another rank count exact.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        check_data_source(cfg.data)
        if not cfg.model_dir:
            raise ValueError("--model_dir is required (the Emu3.5 model directory)")
        self.model_dir = Path(cfg.model_dir)
        self.lm_config = check_model_dir(self.model_dir)        # before any process group or memory
        self.vq_dir = Path(cfg.vq_dir) if cfg.vq_dir else self.model_dir.parent / "Emu3.5-VisionTokenizer"
        self.ranks = init_ranks(cfg.distributed, cfg.device)
        self.device = rank_device(self.ranks, cfg.device)
        self.fsdp = self.ranks.distributed and cfg.distributed.fsdp
        self.autocast = cfg.bf16 and (self.device.type == "cpu" or torch.cuda.is_bf16_supported())
        if cfg.compact_vocab and self.fsdp:
            raise ValueError("compact_vocab is a single-process / DDP option for tiny CPU models; drop it with FSDP")
        if cfg.dida_self_distill_cfg > 0 and self.fsdp:
            raise ValueError("dida_self_distill_cfg needs the whole teacher on every rank: run it without FSDP")
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.config_yaml = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        self.resume_from = latest_checkpoint(self.out)
        resumed = load_trainer_state(self.resume_from) if self.resume_from else None
        self.micro_per_step = resumed["micro_per_step"] if resumed else self.ranks.world * cfg.grad_accum
        if self.resume_from:
            self._check_resume(resumed)
        if self.micro_per_step % self.ranks.world:
            raise ResumeError(f"{self.resume_from}: a step is {self.micro_per_step} micro-batches, which "
                              f"{self.ranks.world} ranks cannot split evenly; use a rank count that divides it")
        self.local_micro = self.micro_per_step // self.ranks.world
        if self.ranks.rank == 0:
            (self.out / "train_config.yaml").write_text(self.config_yaml, encoding="utf-8")
        self.data = self._prepare_data()                          # CPU only (the tokenizers run on the CPU)
        self.plan = self._memory_plan(max(len(s) for s in self.data.train))
        self.fingerprint = self.data.fingerprint()
        require_agreement(self.ranks, self.fingerprint, "the training data (sample fingerprint)")
        if resumed and resumed.get("data_fingerprint") not in (None, self.fingerprint):
            raise ResumeError(f"{self.resume_from}: trained on data with fingerprint {resumed['data_fingerprint']}, "
                              f"this run's data has {self.fingerprint}; the dataset changed — start a new output_dir")
        self.objective, self.lm = self._build()
        self.optimizer = make_optimizer(self.objective, cfg.optim)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_lambda(s, cfg.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio))
        self.step = 0
        self.history: list[dict[str, Any]] = []
        if self.resume_from:
            load_checkpoint(self.resume_from, self.objective, self.optimizer, self.ranks, resumed)
            self.scheduler.load_state_dict(resumed["scheduler"])
            self.step, self.history = resumed["step"], resumed["history"]
            log.info("resumed from %s at step %d (%d ranks then, %d now)", self.resume_from, self.step,
                     resumed["world"], self.ranks.world)

    # -------------------------------------------------------------- set-up
    def _check_resume(self, resumed: dict[str, Any]) -> None:
        """A checkpoint of another run (model, objective, data, batch, adapters) must not be continued."""
        saved = yaml.safe_load((self.resume_from / CONFIG_FILE).read_text(encoding="utf-8"))
        now = to_dict(self.cfg)
        differs = [k for k in RESUME_FIELDS if saved.get(k) != now.get(k)]
        if resumed.get("model_config") != self.lm_config.to_dict():
            differs.append("model_dir (config.json differs)")
        if differs:
            raise ResumeError(f"{self.resume_from} belongs to another run: {', '.join(differs)} differ from this "
                              f"config; use a new output_dir, or restore the settings of {self.out / 'train_config.yaml'}")

    def _memory_plan(self, longest: int):
        """Print the per-device memory plan for the longest sample; refuse, before any weight is loaded,
        when it does not fit the device."""
        from .memory_plan import available_device_bytes, check_fits, plan_training, shape_from_train_config

        cfg = self.cfg
        shape = dataclasses.replace(shape_from_train_config(cfg, self.ranks.world), seq_len=longest,
                                    bf16_autocast=self.autocast, dida_extra_tokens=None, labeled_tokens=None)
        plan = plan_training(self.lm_config, shape)
        if self.ranks.rank == 0:
            log.info("memory plan: %s", plan.summary())
        if cfg.memory_check:
            available = available_device_bytes(self.device)
            if available is not None:
                check_fits(plan, available)
        return plan

    def _prepare_data(self) -> DataBundle:
        """Rank 0 first (it fills the image-token cache), then the others read the cache."""
        cfg = self.cfg
        if self.ranks.rank != 0:
            barrier(self.ranks)           # wait for rank 0's cache
        if cfg.data.startswith(SYNTHETIC_PREFIX):
            data = prepare_synthetic(cfg.data, cfg.synthetic, cfg.seed, self.model_dir)
        else:
            data = prepare_lerobot(cfg.data, cfg.samples, cfg.segment, cfg.eval_fraction, cfg.eval_episodes,
                                   cfg.pack, Path(cfg.cache_dir or self.out / "token_cache"), self.lm_config,
                                   self.model_dir, self.vq_dir, self.out)
        if self.ranks.rank == 0:
            barrier(self.ranks)           # the cache is complete: release the others
        return data

    def _build(self) -> tuple[nn.Module, nn.Module]:
        """The objective around the LM: loaded whole (one process, DDP) or built on meta and sharded (FSDP2)."""
        from emu_ros.model import Emu3ForCausalLM, load_lm
        from emu_ros.model.compact_vocab import CompactVocab
        from emu_ros.model.dida_objective import DiDATrainConfig

        cfg, dtype = self.cfg, getattr(torch, self.cfg.param_dtype)
        torch.manual_seed(cfg.seed)
        if self.fsdp:
            with torch.device("meta"):
                lm = Emu3ForCausalLM(self.lm_config).to(dtype)
        else:
            lm = load_lm(self.model_dir, device=self.device, dtype=dtype)
            if cfg.dida_self_distill_cfg > 0:
                self.data.train = self_distilled(lm, self.data.train, cfg.dida_self_distill_cfg, cfg.seed)
        lm.train()
        if cfg.lora.enabled:
            replaced = apply_lora(lm, cfg.lora, cfg.seed, dtype=dtype if self.fsdp else torch.float32)
            log.info("LoRA r=%d on %d projections", cfg.lora.rank, len(replaced))
        else:
            lm.requires_grad_(True)
        compact = None
        if cfg.compact_vocab:
            # batches are padded with PAD; DiDA's noisy copies use the mask id: neither is in the samples
            extra = [self.data.pad_id]
            if cfg.objective == "dida":
                extra.append(DiDATrainConfig(**(cfg.dida or {})).mask_token_id)
            compact = CompactVocab(lm, self.data.token_ids(), extra)
            if self.ranks.rank == 0:  # the rows this run trains (the others keep their initial values)
                (self.out / COMPACT_VOCAB_FILE).write_text(json.dumps(compact.vocab.tolist()), encoding="utf-8")
        objective = make_objective(cfg.objective, lm, self.data.first_visual_id, cfg.dida, compact)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(lm)
        if self.fsdp:
            shard_objective(objective, lm, mixed_bf16=cfg.bf16 and dtype == torch.float32)
            objective.to_empty(device=self.device)
            lm.model.reset_buffers()
            read = load_local_shards(objective, "lm.", self.model_dir, self.ranks, fill=self._initial_value)
            log.info("rank %d loaded its shards: %.2f GB read", self.ranks.rank, read / 1e9)
        elif self.ranks.distributed:
            from torch.nn.parallel import DistributedDataParallel

            objective = DistributedDataParallel(
                objective, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        n_train = sum(p.numel() for p in objective.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in objective.parameters())
        log.info("trainable parameters: %d of %d (%.2f%%)", n_train, n_all, 100 * n_train / max(1, n_all))
        return objective, lm

    def _initial_value(self, name: str, template: torch.Tensor) -> torch.Tensor | None:
        """Full initial value of a parameter the checkpoint does not hold (LoRA adapters)."""
        if name.startswith("lm.") and ".lora_" in name:
            return adapter_init(name[len("lm."):], template.shape, self.cfg.seed).to(template.dtype)
        return None

    # -------------------------------------------------------------- data order
    def _micro_batch(self, index: int) -> list[TokenSample]:
        """Global micro-batch number `index`: a fixed permutation per epoch, then the conditioning draw."""
        bs, n = self.cfg.batch_size, len(self.data.train)
        per_epoch = max(1, n // bs)
        epoch, pos = divmod(index, per_epoch)
        order = np.random.default_rng(self.cfg.seed + epoch).permutation(n)
        picks = order[np.arange(pos * bs, pos * bs + bs) % n]
        samples = [self.data.train[i] for i in picks]
        return pick_conditioning(samples, self.cfg.cond_dropout, self.cfg.seed * 1_000_003 + index)

    # -------------------------------------------------------------- steps
    def train_step(self) -> dict[str, float]:
        """One optimizer step: this rank's share of the step's micro-batches, gradients averaged over all."""
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, tokens = 0.0, 0
        for j in range(self.local_micro):
            index = self.step * self.micro_per_step + j * self.ranks.world + self.ranks.rank
            torch.manual_seed(self.cfg.seed * 1_000_003 + index)      # noise/dropout of this micro-batch
            batch = collate(self._micro_batch(index), self.data.pad_id)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss, metrics = self.objective(batch[INPUT_IDS].to(self.device), batch[LABELS].to(self.device))
            (loss / self.local_micro).backward()
            loss_sum += metrics["loss"]
            tokens += metrics["tokens"]
        loss_sum, tokens = self._sum_over_ranks(loss_sum, tokens)
        grad_norm = 0.0
        if self.cfg.optim.grad_clip > 0:
            params = [p for p in self.objective.parameters() if p.requires_grad]
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": loss_sum / self.micro_per_step, "tokens": int(tokens), "lr": lr, "grad_norm": grad_norm}

    def _sum_over_ranks(self, *values: float) -> tuple[float, ...]:
        if not self.ranks.distributed:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return tuple(t.tolist())

    def run(self) -> dict[str, Any]:
        """Train to cfg.steps (or stop_after), evaluating and checkpointing on schedule; returns a summary."""
        from tqdm import tqdm

        cfg = self.cfg
        try:
            if self.step == 0:
                self._log_eval()
            end = cfg.steps if not cfg.stop_after else min(cfg.steps, self.step + cfg.stop_after)
            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"finetune {cfg.objective}",
                       disable=self.ranks.rank != 0, dynamic_ncols=True)
            t0 = time.time()
            while self.step < end:
                metrics = self.train_step()
                self._log({"step": self.step, "split": "train", **metrics, "elapsed_s": round(time.time() - t0, 3)})
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2e}")
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    self._log_eval()
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self.save()
            bar.close()
        finally:
            shutdown(self.ranks)
        evals = [h for h in self.history if h["split"] == "eval"]
        trains = [h for h in self.history if h["split"] == "train"]
        last = latest_checkpoint(self.out)
        return {"step": self.step, "first_eval": evals[0] if evals else None, "last_eval": evals[-1] if evals else None,
                "first_train_loss": trains[0]["loss"] if trains else None,
                "last_train_loss": trains[-1]["loss"] if trains else None,
                "checkpoint": str(last) if last else None, "memory_plan": self.plan.to_dict()}

    def _log_eval(self) -> None:
        torch.manual_seed(self.cfg.seed + 999_983)        # the same DiDA noise at every evaluation
        metrics = evaluate(self.objective, self.data.eval, self.data.pad_id, self.cfg.batch_size, self.device,
                           self.autocast)
        if metrics:
            self._log({"step": self.step, "split": "eval", **metrics})
            log.info("eval @%d: loss %.4f, step-text token acc %.3f, step exact %.3f", self.step, metrics["loss"],
                     metrics["token_acc"], metrics["step_acc"])

    def _log(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if self.ranks.rank != 0:
            return
        path = self.out / "metrics.csv"
        fields = ["step", "split", "loss", "tokens", "lr", "grad_norm", "token_acc", "step_acc", "elapsed_s"]
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    # -------------------------------------------------------------- checkpoints
    def save(self) -> Path:
        """Checkpoint now (every rank writes its shards); export the official model at the last step."""
        final = self.step == self.cfg.steps
        state = {"step": self.step, "micro_per_step": self.micro_per_step, "history": self.history,
                 "scheduler": self.scheduler.state_dict(), "data_fingerprint": self.fingerprint,
                 "data": self.data.source, "model_config": self.lm_config.to_dict()}
        export = self._export if final or self.cfg.export_every_save else None
        return save_checkpoint(self.out, self.step, self.objective, self.optimizer, state, self.config_yaml,
                               self.ranks, self.cfg.keep_checkpoints, export)

    def _export(self, lm_dir: Path) -> None:
        """The official model directory (collective: FSDP gathers the full weights on rank 0)."""
        state = full_state_dict(self.objective, self.ranks)
        if self.ranks.rank != 0:
            return
        weights = {k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")}
        inner = getattr(self.objective, "module", self.objective)
        if inner.compact is not None:
            weights = inner.compact.merge_state(weights, state["compact.embed_rows"], state["compact.head_rows"])
        if self.cfg.lora.enabled:
            weights = merge_lora_state(weights, self.cfg.lora.alpha / self.cfg.lora.rank)
        write_model_dir(lm_dir, weights, self.lm_config, self.model_dir, self.cfg.num_shards,
                        extra=self._write_dida_config if self.cfg.objective == "dida" else None)

    def _write_dida_config(self, lm_dir: Path) -> None:
        """DiDA weights need dida_config.json next to them; it records what they were adapted on."""
        from emu_ros.model.dida import DiDAConfig

        train_cfg = getattr(self.objective, "module", self.objective).train_config
        global_batch = self.micro_per_step * self.cfg.batch_size
        DiDAConfig(noise=train_cfg.noise, mask_token_id=train_cfg.mask_token_id, time_shift=train_cfg.time_shift,
                   passes=self.cfg.passes,
                   training={"source": str(self.model_dir), "data": self.data.source,
                             "data_fingerprint": self.fingerprint, "steps": self.step, "global_batch": global_batch,
                             "lr": self.cfg.optim.lr, "by": "finetune_embodied.train",
                             **dataclasses.asdict(train_cfg)}).save(lm_dir)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_config(TrainConfig, argv, __doc__ or "")
    summary = Trainer(cfg).run()
    print(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
