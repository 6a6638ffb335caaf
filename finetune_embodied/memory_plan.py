"""Per-GPU memory of one training step of the Emu3.5 decoder, from the config alone (no weights).

Why: a 34B full fine-tune that does not fit fails after minutes of loading and sharding 68 GB of weights;
the plan says so before anything is loaded, names the part that does not fit and the flags that help.

What a rank holds at the peak of a step (FSDP full shard over ``ranks`` GPUs, one unit per decoder layer,
``embed_tokens`` and ``lm_head`` as units of their own):

* **weights, grads, optimizer**: the sharded training state. Full fine-tune: every parameter has a gradient
  and two AdamW moments in the stored dtype (torch's AdamW keeps its state in the parameter's dtype).
  LoRA: the base is frozen (weights only); adapters are fp32 with fp32 gradients and moments, sharded too.
* **gathered**: FSDP's unsharded copies in the compute dtype -- two decoder layers (the one computing and
  the prefetched next), the largest root unit (embed_tokens or lm_head), and in backward the unsharded
  gradient of the largest trainable unit before its reduce-scatter (plus its fp32 copy when grads reduce
  in fp32). FSDP1 with both tables in one root unit would gather twice the root figure.
* **activations** in bf16 under autocast (the residual stream in the compute dtype). Attention is fused
  SDPA (flash / memory-efficient): no [T, T] score matrix, only q, k, v, the output and a per-head
  logsumexp. What each layer keeps for backward is counted tensor by tensor in ``layer_activation_bytes``
  (the RMSNorm upcasts, q/k/v, SDPA's output, the MLP's gate, SiLU(gate), up and product); it equals what
  autograd saves for the tiny model. With gradient checkpointing only each layer's input is kept and one
  layer's working set exists during its recompute; the backward adds one layer's transient gradients
  (three intermediate-wide tensors and two of the residual). DiDA runs on ``seq_len + dida_extra_tokens``
  tokens under an explicit boolean mask [B, 1, T, T]; SDPA turns it into an additive mask of the compute
  dtype on every layer call and keeps it for backward (one per layer without checkpointing).
* **logits**: fp32 over the full vocabulary at the labeled positions (DiDA adds the noisy copy's positions
  over the visual codebook). cross_entropy keeps the log-softmax for backward, whose peak also holds the
  incoming gradient and the logits' gradient: three fp32 tensors of that size.

Not counted: the CUDA context and allocator fragmentation (``check_fits`` keeps ``1 - headroom`` of the card
for them), AdamW's foreach temporaries during the step (activations are freed by then and are larger), NCCL
buffers. Printed by ``python -m finetune_embodied.memory_plan``; the inference counterpart is
``emu_ros.model.memory_plan``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from emu_ros.model.configuration_emu3 import PRESETS, Emu3Config, preset_config
from emu_ros.model.memory_plan import GIB, parameter_count

from .lora import DEFAULT_TARGETS, LoraConfig

GB = 1e9  # decimal, as GPU cards and the summary are quoted ("80 GB")
DTYPE_BYTES = {"bfloat16": 2, "float32": 4}
ADAPTER_BYTES = 4  # LoraLinear keeps lora_A / lora_B in fp32


def projection_shapes(c: Emu3Config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of every Linear of a decoder layer, keyed by its module name."""
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    h, i = c.hidden_size, c.intermediate_size
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


@dataclass(frozen=True)
class TrainShape:
    """How a training run is laid out: what decides its memory besides the architecture.

    Defaults follow ``finetune_embodied.train.TrainConfig`` (fp32 weights, micro-batch 2, 4096-token rows,
    no checkpointing) except ``ranks``; ``shape_from_train_config`` builds one from a TrainConfig.
    """

    ranks: int = 1
    """GPUs in the run = FSDP shards of the training state."""
    param_dtype: str = "float32"
    """Dtype of the stored sharded weights; gradients and AdamW moments use the same dtype."""
    master_fp32: bool = False
    """bf16 compute over fp32 sharded master weights, fp32 grads and moments (FSDP mixed precision):
    the stored weights are fp32 whatever param_dtype says, the gathered copies bf16."""
    lora_rank: int = 0
    """Adapter rank; 0 = full fine-tune."""
    lora_targets: tuple = DEFAULT_TARGETS
    """Decoder Linears that get adapters (LoRA only)."""
    train_embeddings: bool = False
    """LoRA only: embed_tokens and lm_head are trained too (2 x vocab x hidden parameters)."""
    seq_len: int = 4096
    """Tokens per sample (the trainer's --samples.max_length)."""
    micro_batch: int = 2
    """Samples per rank per micro-batch (the trainer's --batch_size)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in backward, keeping only its input."""
    objective: str = "ar"
    """ar = next-token loss; dida = the forward also runs on a noisy copy of every answer image."""
    dida_extra_tokens: int | None = None
    """DiDA only: length of the appended noisy copies per sample (None = seq_len // 2)."""
    labeled_tokens: int | None = None
    """Positions per sample whose logits are computed (None = seq_len // 2)."""
    bf16_autocast: bool = True
    """Activations in bf16 even when the compute dtype is fp32 (the trainer's --bf16)."""

    def __post_init__(self) -> None:
        if self.dida_extra_tokens is None:
            object.__setattr__(self, "dida_extra_tokens", self.seq_len // 2 if self.objective == "dida" else 0)
        if self.labeled_tokens is None:
            object.__setattr__(self, "labeled_tokens", self.seq_len // 2)
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        for name in ("ranks", "seq_len", "micro_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.param_dtype not in DTYPE_BYTES:
            raise ValueError(f"param_dtype must be one of {sorted(DTYPE_BYTES)}, got {self.param_dtype!r}")
        if self.objective not in ("ar", "dida"):
            raise ValueError(f"objective must be 'ar' or 'dida', got {self.objective!r}")
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0 (0 = full fine-tune), got {self.lora_rank}")
        unknown = sorted(set(self.lora_targets) - set(DEFAULT_TARGETS))
        if unknown:
            raise ValueError(f"lora_targets {unknown} are not decoder Linears; choose from {list(DEFAULT_TARGETS)}")
        if self.lora_rank and not self.lora_targets:
            raise ValueError("LoRA needs at least one target in lora_targets")
        if self.train_embeddings and not self.lora_rank:
            raise ValueError("train_embeddings applies to LoRA only (a full fine-tune trains the embeddings)")
        if not 0 <= self.labeled_tokens <= self.seq_len:
            raise ValueError(f"labeled_tokens must lie in [0, seq_len={self.seq_len}], got {self.labeled_tokens}")
        if self.dida_extra_tokens < 0 or (self.objective == "ar" and self.dida_extra_tokens):
            raise ValueError(f"dida_extra_tokens must be >= 0 and only set with objective 'dida', "
                             f"got {self.dida_extra_tokens} ({self.objective})")

    @property
    def lora(self) -> bool:
        return self.lora_rank > 0

    @property
    def weight_bytes(self) -> int:
        """Bytes of a stored (sharded) base weight."""
        return 4 if self.master_fp32 else DTYPE_BYTES[self.param_dtype]

    @property
    def compute_bytes(self) -> int:
        """Bytes of a gathered weight and of the residual stream."""
        return 2 if self.master_fp32 else DTYPE_BYTES[self.param_dtype]

    @property
    def activation_bytes(self) -> int:
        """Bytes of a layer intermediate (autocast makes matmul outputs bf16)."""
        return 2 if self.bf16_autocast else self.compute_bytes

    @property
    def forward_tokens(self) -> int:
        """Tokens per sample the forward runs on (DiDA appends its noisy copies)."""
        return self.seq_len + self.dida_extra_tokens

    @property
    def fsdp(self) -> bool:
        """Whether weights are all-gathered unit by unit (any sharding, or a bf16 compute copy of fp32 masters)."""
        return self.ranks > 1 or self.master_fp32

    def describe(self) -> str:
        """'in bf16' / 'in fp32' / 'in fp32 master + bf16 compute'."""
        if self.master_fp32:
            return "in fp32 master + bf16 compute"
        return "in bf16" if self.param_dtype == "bfloat16" else "in fp32"


@dataclass(frozen=True)
class TrainMemoryPlan:
    """Bytes per GPU at the peak of a training step (see the module docstring for what each term holds)."""

    weights: int
    gathered: int
    grads: int
    optimizer: int
    activations: int
    logits: int
    total: int
    params_total: int
    """Parameters the training model holds (the base, plus the adapters under LoRA)."""
    params_trainable: int
    bytes_per_param: float
    """(weights + grads + optimizer) x ranks / params_total: the training state per parameter, comparable with
    what a single-process run measures."""
    params_adapters: int = 0
    shape: TrainShape = field(default_factory=TrainShape)

    def headline(self) -> str:
        """'full fine-tune of 34.1B in bf16 on 8 ranks': the subject of summary() and of a refusal."""
        s = self.shape
        if s.lora:
            what = (f"LoRA r={s.lora_rank} ({self.params_trainable / 1e9:.2f}B trainable"
                    f"{' with the embeddings' if s.train_embeddings else ''})")
        else:
            what = "full fine-tune"
        if s.objective == "dida":
            what += " (DiDA)"
        base = (self.params_total - self.params_adapters) / 1e9
        return f"{what} of {base:.1f}B {s.describe()} on {s.ranks} rank{'s' if s.ranks > 1 else ''}"

    def parts(self) -> str:
        """'weights 8.5, gathered 7.7, ...': the terms of the total, in GB."""
        return ", ".join(f"{name} {getattr(self, name) / GB:.1f}" for name in
                         ("weights", "gathered", "grads", "optimizer", "activations", "logits"))

    def summary(self) -> str:
        """One line: the per-GPU total and its parts, in GB."""
        return f"{self.headline()} needs ~{self.total / GB:.1f} GB per GPU ({self.parts()})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the byte figures, the shape they were computed for, GiB copies and the summary line."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "shape"}
        out["shape"] = dataclasses.asdict(self.shape)
        out["shape"]["lora_targets"] = list(self.shape.lora_targets)
        out["gib"] = {k: round(getattr(self, k) / GIB, 3) for k in
                      ("weights", "gathered", "grads", "optimizer", "activations", "logits", "total")}
        out["summary"] = self.summary()
        return out


def _per_rank(n: float, ranks: int) -> int:
    """A sharded tensor's bytes on one rank (FSDP pads shards up to equal sizes)."""
    return int(math.ceil(n / ranks))


def layer_activation_bytes(c: Emu3Config, shape: TrainShape) -> int:
    """Bytes per token one decoder layer keeps for its backward (no checkpointing); equal to what
    torch.autograd saves for the tiny model on CPU (test_memory_plan), and what the fused kernels keep on GPU.

    RMSNorm keeps its fp32 upcast (for an fp32 input, the input itself) and its rsqrt, plus, when its weight
    trains, the normalized tensor. A layer norm's output is kept by the projections it feeds: once, or under
    autocast over fp32 weights as one bf16 cast per projection that trains. q_norm/k_norm outputs go through
    RoPE, which keeps nothing; SDPA keeps the rotated q, k, the v, its output (laid out so the reshape for
    o_proj is a view) and an fp32 logsumexp per head. The MLP keeps gate, SiLU(gate), up and their product;
    each LoRA adapter its rank-wide lora_A output. The residual stream itself is not kept.
    """
    cb, ab = shape.compute_bytes, shape.activation_bytes
    h, i = c.hidden_size, c.intermediate_size
    heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
    q, kv = heads * c.head_dim, kv_heads * c.head_dim
    trained = set(shape.lora_targets) if shape.lora else set(DEFAULT_TARGETS)
    norms_train = not shape.lora

    def norm_output(consumers: tuple) -> int:
        n = len(trained & set(consumers))
        return ab * (n if cb != ab else min(n, 1))

    adapters = ab * shape.lora_rank * len(trained) if shape.lora else 0
    return ((2 * (4 + (cb if norms_train else 0))                        # layer norms: upcast, normalized
             + norm_output(("q_proj", "k_proj", "v_proj")) + norm_output(("gate_proj", "up_proj"))) * h
            + (4 + (ab if norms_train else 0)) * (q + kv)                # q_norm, k_norm
            + ab * (q + 2 * kv) + ab * q + 4 * heads                     # SDPA: q, k, v, output, logsumexp
            + 4 * (2 + heads + kv_heads)                                 # the norms' rsqrt
            + 4 * ab * i                                                 # gate, SiLU(gate), up, product
            + adapters)


def plan_training(config: Emu3Config, shape: TrainShape) -> TrainMemoryPlan:
    """The per-GPU memory of one training step of `config` laid out as `shape` (see the module docstring)."""
    c, s = config, shape
    linear, other = parameter_count(c)
    base = linear + other
    h, big_l, table = c.hidden_size, c.num_hidden_layers, c.vocab_size * c.hidden_size
    proj = projection_shapes(c)
    layer_params = sum(i * o for i, o in proj.values()) + 2 * h + 2 * c.head_dim  # + its four RMSNorms
    layer_adapters = s.lora_rank * sum(i + o for name, (i, o) in proj.items() if name in s.lora_targets)
    adapters = big_l * layer_adapters
    embeddings = 2 * table if s.train_embeddings else 0
    trainable = adapters + embeddings if s.lora else base
    wb, cb, ab, ranks = s.weight_bytes, s.compute_bytes, s.activation_bytes, s.ranks

    weights = _per_rank(base * wb + adapters * ADAPTER_BYTES, ranks)
    state = adapters * ADAPTER_BYTES + embeddings * wb if s.lora else base * wb  # one gradient per trained param
    grads = _per_rank(state, ranks)
    optimizer = _per_rank(2 * state, ranks)  # AdamW exp_avg + exp_avg_sq in the parameter's dtype

    reduce_extra = 4 if s.master_fp32 else 0  # grads reduce-scatter in fp32 from a bf16 unsharded gradient
    if s.fsdp:
        unit = layer_params * cb + layer_adapters * ADAPTER_BYTES
        gathered = 2 * unit + table * cb  # computing layer + prefetched layer + the larger root unit
        if s.lora:
            grad_unit = max(layer_adapters * ADAPTER_BYTES, table * (cb + reduce_extra) if embeddings else 0)
        else:
            grad_unit = max(layer_params, table) * (cb + reduce_extra)
        gathered += grad_unit  # unsharded gradient of the largest trainable unit before its reduce-scatter
    elif wb == 4 and s.bf16_autocast:
        # one process, whole fp32 weights: autocast caches a bf16 copy of every trainable leaf weight a matmul
        # reads for the whole forward; frozen ones are cast op by op (lm_head's copy is the largest)
        gathered = (linear + table) * 2 if not s.lora else table * 2
    else:
        gathered = 0

    b, t = s.micro_batch, s.forward_tokens
    per_layer = b * t * layer_activation_bytes(c, s)
    backward = b * t * (3 * ab * c.intermediate_size + 2 * cb * h)  # one layer's transient gradients
    head = b * t * (4 + cb + ab) * h + 2 * b * t * c.head_dim * ab  # final norm, cos/sin
    head += b * s.labeled_tokens * h * ab  # the labeled hidden states gathered for lm_head
    if s.objective == "dida":
        mask_bool = b * t * t  # the explicit [B, 1, T, T] boolean mask
        mask_float = b * t * t * ab  # SDPA's additive copy of it, one per layer call kept for backward
    else:
        mask_bool = mask_float = 0
    if s.gradient_checkpointing:
        activations = big_l * b * t * cb * h + per_layer + backward + head + mask_bool + mask_float
    else:
        activations = big_l * (per_layer + mask_float) + backward + head + mask_bool

    clean = b * s.labeled_tokens * c.vocab_size
    noisy = b * s.dida_extra_tokens * c.codebook_size  # DiDA: noisy-copy logits over the visual codebook
    logits = 4 * (clean + noisy) + 2 * 4 * max(clean, noisy)  # saved log-softmax + backward's two fp32 grads

    total = weights + gathered + grads + optimizer + activations + logits
    params_total = base + adapters
    return TrainMemoryPlan(weights=weights, gathered=int(gathered), grads=grads, optimizer=optimizer,
                           activations=int(activations), logits=int(logits), total=int(total),
                           params_total=params_total, params_trainable=trainable,
                           bytes_per_param=(weights + grads + optimizer) * ranks / params_total,
                           params_adapters=adapters, shape=s)


class MemoryPlanRefused(RuntimeError):
    """The planned step does not fit the device; the message names the figures and the flags that help."""


def _options(plan: TrainMemoryPlan, usable: float) -> list[str]:
    """The trainer flags that lower this plan's peak, most effective first."""
    s = plan.shape
    out = []
    sharded = (plan.weights + plan.grads + plan.optimizer) * s.ranks
    fixed = plan.total - plan.weights - plan.grads - plan.optimizer
    if usable > fixed:
        need = max(s.ranks + 1, math.ceil(sharded / (usable - fixed)))
        out.append(f"more ranks (~{need} GPUs)")
    if not s.lora:
        out.append("--lora.enabled true")
    if not s.gradient_checkpointing:
        out.append("--gradient_checkpointing true")
    if s.weight_bytes == 4:
        out.append("--param_dtype bfloat16")
    if s.micro_batch > 1:
        out.append("--batch_size 1")
    out.append(f"shorter --samples.max_length (now {s.seq_len})")
    return out


def check_fits(plan: TrainMemoryPlan, available_bytes: int, headroom: float = 0.9) -> None:
    """Raise MemoryPlanRefused unless the plan's total fits `headroom` of `available_bytes` (the rest is for
    the CUDA context, NCCL and the allocator's fragmentation)."""
    usable = available_bytes * headroom
    if plan.total <= usable:
        return
    raise MemoryPlanRefused(
        f"{plan.headline()} needs ~{plan.total / GB:.1f} GB per GPU; you have {available_bytes / GB:.1f} GB "
        f"({headroom:.0%} usable = {usable / GB:.1f} GB); the plan in GB: {plan.parts()}. "
        f"Options: {', '.join(_options(plan, usable))}")


def available_device_bytes(device: Any) -> int | None:
    """Memory a training process may use on `device`: CUDA free memory, or for CPU the kernel's MemAvailable
    split among the LOCAL_WORLD_SIZE processes of this node; None when unknown."""
    import torch

    device = torch.device(device)
    try:
        if device.type == "cuda":
            if not torch.cuda.is_available():
                return None
            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        if device.type == "cpu":
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    kib = int(line.split()[1])
                    return kib * 1024 // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except (OSError, RuntimeError, ValueError):
        return None
    return None


def shape_from_train_config(cfg: Any, ranks: int) -> TrainShape:
    """The TrainShape of a ``finetune_embodied.train.TrainConfig`` on `ranks` processes (read by attribute, so
    this module does not import the trainer). FSDP with --bf16 over fp32 weights is the master_fp32 case; DDP
    replicates the whole state, so it is planned as one rank."""
    fsdp = ranks > 1 and cfg.distributed.fsdp
    lora = cfg.lora
    return TrainShape(ranks=ranks if fsdp else 1, param_dtype=cfg.param_dtype,
                      master_fp32=fsdp and cfg.bf16 and cfg.param_dtype == "float32",
                      lora_rank=lora.rank if lora.enabled else 0,
                      lora_targets=tuple(lora.targets) if lora.enabled else DEFAULT_TARGETS,
                      train_embeddings=bool(lora.enabled and lora.train_embeddings),
                      seq_len=cfg.samples.max_length, micro_batch=cfg.batch_size,
                      gradient_checkpointing=cfg.gradient_checkpointing, objective=cfg.objective,
                      bf16_autocast=cfg.bf16)


# ---------------------------------------------------------------------- CLI
def load_config(name: str) -> Emu3Config:
    """A preset name ('full', 'tiny') or a config.json path (file or model directory)."""
    return preset_config(name) if name in PRESETS else Emu3Config.from_json(name)


def table(plans: Sequence[TrainMemoryPlan], card_bytes: float = 0, headroom: float = 0.9) -> str:
    """One row per plan: the parts and the total in GiB per GPU, bytes per parameter, and whether it fits."""
    cols = ("weights", "gathered", "grads", "optimizer", "activations", "logits", "total")
    head = f"{'mode':<6} {'ranks':>5} " + " ".join(f"{c[:8]:>8}" for c in cols) + f" {'B/param':>8}"
    if card_bytes:
        head += f"  fits {headroom:.0%} of {card_bytes / GB:.0f} GB"
    lines = [head]
    for p in plans:
        row = f"{'lora' if p.shape.lora else 'full':<6} {p.shape.ranks:>5} "
        row += " ".join(f"{getattr(p, c) / GIB:8.1f}" for c in cols) + f" {p.bytes_per_param:8.2f}"
        if card_bytes:
            row += "  " + ("yes" if p.total <= card_bytes * headroom else "no")
        lines.append(row)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the training memory plan for each mode x ranks (and write it as JSON with --json)."""
    p = argparse.ArgumentParser(prog="python -m finetune_embodied.memory_plan", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="full", help="preset (full, tiny) or a config.json / model directory")
    p.add_argument("--ranks", type=int, nargs="+", default=[8], help="GPUs (FSDP shards); several for a table")
    p.add_argument("--mode", choices=["full", "lora", "both"], default="both")
    p.add_argument("--seq-len", type=int, default=4096, help="tokens per sample (--samples.max_length)")
    p.add_argument("--micro-batch", type=int, default=1, help="samples per rank per micro-batch (--batch_size)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--param-dtype", choices=sorted(DTYPE_BYTES), default="bfloat16")
    p.add_argument("--master-fp32", action="store_true", help="fp32 master weights/grads/moments, bf16 compute")
    p.add_argument("--lora-rank", type=int, default=LoraConfig().rank)
    p.add_argument("--lora-targets", nargs="+", default=list(DEFAULT_TARGETS))
    p.add_argument("--train-embeddings", action="store_true", help="LoRA: train embed_tokens and lm_head too")
    p.add_argument("--objective", choices=["ar", "dida"], default="ar")
    p.add_argument("--labeled-tokens", type=int, default=None, help="default seq-len // 2")
    p.add_argument("--dida-extra-tokens", type=int, default=None, help="dida only; default seq-len // 2")
    p.add_argument("--gpu-gb", type=float, default=80.0, help="card size for the 'fits' column (0 = none)")
    p.add_argument("--headroom", type=float, default=0.9)
    p.add_argument("--json", type=Path, default=None, help="write the plans here")
    args = p.parse_args(argv)

    config = load_config(args.config)
    modes = ["full", "lora"] if args.mode == "both" else [args.mode]
    plans = []
    for mode in modes:
        for ranks in args.ranks:
            lora = mode == "lora"
            try:
                shape = TrainShape(ranks=ranks, param_dtype=args.param_dtype, master_fp32=args.master_fp32,
                                   lora_rank=args.lora_rank if lora else 0, lora_targets=tuple(args.lora_targets),
                                   train_embeddings=args.train_embeddings and lora, seq_len=args.seq_len,
                                   micro_batch=args.micro_batch, gradient_checkpointing=args.gradient_checkpointing,
                                   objective=args.objective, dida_extra_tokens=args.dida_extra_tokens,
                                   labeled_tokens=args.labeled_tokens)
            except ValueError as exc:
                p.error(str(exc))
            plans.append(plan_training(config, shape))
    linear, other = parameter_count(config)
    first = plans[0].shape
    print(f"Emu3.5 ({args.config}): {(linear + other) / 1e9:.2f}B parameters ({linear / 1e9:.2f}B in "
          f"{config.num_hidden_layers} layers, {other / 1e9:.2f}B embeddings/norms); {first.objective} training "
          f"{first.describe()}, {first.seq_len} tokens x {first.micro_batch} per rank"
          f"{' + ' + str(first.dida_extra_tokens) + ' noisy' if first.objective == 'dida' else ''}, "
          f"{first.labeled_tokens} labeled, gradient checkpointing {'on' if first.gradient_checkpointing else 'off'}"
          f"{f', LoRA r={args.lora_rank}' if 'lora' in modes else ''}")
    print("GiB per GPU:")
    print(table(plans, args.gpu_gb * GB, args.headroom))
    for plan in plans:
        print(plan.summary())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": args.config, "plans": [q.to_dict() for q in plans]}, indent=1)
                             + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
