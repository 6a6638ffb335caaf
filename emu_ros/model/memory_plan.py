"""How much GPU memory one guidance step of Emu3.5 needs, computed from the config (no weights).

Counts what a step holds at its peak: the weights (bf16, or int8 / 4-bit weight-only for the decoder
layers), the KV cache of every CFG row over the step's sequence (prompt with the camera views, the
step text, the step image), the activations of the widest forward (the prefill chunk or a DiDA
block pass over the whole step image, all CFG rows at once), and the fp32 logits that pass produces
(visual slice only, in chunks of slots). Fused attention (flash / memory-efficient SDPA) keeps no
[T, S] score matrix; the math fallback would, and the plan names that cost separately.

Printed by `python -m emu_ros.bench.memory_plan`; `scripts/gpu_check.sh` compares it with the peak
measured on a device.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .configuration_emu3 import Emu3Config
from emu_ros.core.image_grid import image_token_count, token_grid

GIB = 1024 ** 3
#: bytes per decoder weight by quantization (scales included: int8 one fp32 per output channel is
#: negligible; 4-bit NF4 with bitsandbytes' double-quantized absmax, one 8-bit scale per 64 weights
#: plus an fp32 per 256 of those: 0.5 + 1/64 + 4/(64*256) bytes)
WEIGHT_BYTES = {None: 2.0, "int8": 1.0, "nf4": 0.5 + 1 / 64 + 4 / (64 * 256)}
CODEBOOK = 131072  # visual tokens of the IBQ tokenizer (Emu3.5's vocab = 151,854 text + 131,072 visual)


def image_tokens(height: int, width: int, area: int) -> int:
    """Tokens of one image at `area` pixels: rows x (cols + end-of-line) + begin/size/end markers."""
    return image_token_count(*token_grid(height, width, area))


@dataclass(frozen=True)
class StepShape:
    """One guidance step as the node runs it (defaults: 4 RealSense views, a 512x512 step image, CFG)."""

    views: int = 4
    view_hw: tuple = (480, 640)
    view_area: int = 518400
    step_area: int = 512 * 512
    text_tokens: int = 400  # system prompt, task, history, step header and text
    cfg_rows: int = 2  # conditional + unconditional
    logits_chunk: int = 256  # visual slots per fp32 logits chunk (dida.DiDAImageDecoder's default with CFG)

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + self.views * image_tokens(*self.view_hw, self.view_area)

    @property
    def step_image_tokens(self) -> int:
        return image_tokens(*self.view_hw, self.step_area)

    @property
    def seq_len(self) -> int:
        return self.prompt_tokens + self.step_image_tokens + 64


@dataclass(frozen=True)
class MemoryPlan:
    params: int
    weights_gib: float
    kv_cache_gib: float
    activations_gib: float
    logits_gib: float
    total_gib: float
    math_attention_extra_gib: float  # only if SDPA falls back to the unfused kernel
    seq_len: int
    widest_forward_tokens: int
    quantize: str
    devices: int
    per_device_gib: float
    layer_counts: tuple = ()  # decoder layers per device of the balanced split
    shape: dict = field(default_factory=dict)

    def fits(self, gib_per_device: float, reserve_gib: float = 2.0) -> bool:
        """True when the peak per device leaves `reserve_gib` of the card for the CUDA context and the
        allocator's fragmentation (a guess to check against the measured peak: scripts/gpu_check.sh)."""
        return self.per_device_gib <= gib_per_device - reserve_gib

    def lines(self) -> list:
        return [f"parameters          {self.params / 1e9:.1f} B",
                f"weights             {self.weights_gib:7.1f} GiB ({self.quantize or 'bf16'})",
                f"KV cache            {self.kv_cache_gib:7.1f} GiB ({self.shape.get('cfg_rows')} rows x {self.seq_len} tokens)",
                f"activations         {self.activations_gib:7.1f} GiB (widest forward: {self.widest_forward_tokens} tokens x rows)",
                f"logits (fp32)       {self.logits_gib:7.1f} GiB (visual slice, {self.shape.get('logits_chunk')} slots per chunk)",
                f"total               {self.total_gib:7.1f} GiB; fullest of {self.devices} device(s): "
                f"{self.per_device_gib:.1f} GiB (layers per device {list(self.layer_counts)})",
                f"(unfused attention would add {self.math_attention_extra_gib:.1f} GiB of scores)"]


def parameter_count(c: Emu3Config) -> tuple:
    """(decoder-layer linear params, other params): only the first are quantized."""
    q = c.hidden_size * c.num_attention_heads * c.head_dim
    kv = 2 * c.hidden_size * c.num_key_value_heads * c.head_dim
    o = c.num_attention_heads * c.head_dim * c.hidden_size
    mlp = 3 * c.hidden_size * c.intermediate_size
    linear = c.num_hidden_layers * (q + kv + o + mlp)
    norms = c.num_hidden_layers * (2 * c.hidden_size + 2 * c.head_dim) + c.hidden_size
    other = 2 * c.vocab_size * c.hidden_size + norms  # embedding + lm_head (untied)
    return linear, other


def plan_step(c: Emu3Config, shape: StepShape = StepShape(), quantize: str | None = None, devices: int = 1,
              act_bytes: int = 2) -> MemoryPlan:
    """The memory of one guidance step (see the module docstring)."""
    if quantize not in WEIGHT_BYTES:
        raise ValueError(f"quantize must be one of {list(WEIGHT_BYTES)}, got {quantize!r}")
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    linear, other = parameter_count(c)
    weights = linear * WEIGHT_BYTES[quantize] + other * 2.0
    rows, seq = shape.cfg_rows, shape.seq_len
    kv = 2 * c.num_hidden_layers * rows * c.num_key_value_heads * c.head_dim * seq * act_bytes
    widest = max(shape.prompt_tokens, shape.step_image_tokens)  # the runtime prefills the prompt in one forward
    # per token of the widest forward, alive at once inside one layer: the residual stream and its
    # norm, q/k/v, the attention output, the MLP's gate/up/product; plus the final hidden states
    per_token = (3 * c.hidden_size + (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim
                 + c.num_attention_heads * c.head_dim + 3 * c.intermediate_size)
    activations = rows * widest * per_token * act_bytes
    logits = rows * min(shape.logits_chunk or shape.step_image_tokens, shape.step_image_tokens) * CODEBOOK * 4 * 2
    # (x2: the chunk's scores and its log-softmax / CFG combination exist together)
    math_scores = rows * c.num_attention_heads * widest * seq * 4
    total = weights + kv + activations + logits
    counts = balanced_layer_counts(c, devices, quantize)
    per_layer = (linear / c.num_hidden_layers) * WEIGHT_BYTES[quantize] + kv / c.num_hidden_layers
    ends = [0.0] * devices
    ends[0] += c.vocab_size * c.hidden_size * 2.0  # the embedding
    ends[-1] += c.vocab_size * c.hidden_size * 2.0  # lm_head
    # the fullest device: its layers (weights + their KV) and the end tables; activations and logits
    # exist on one device at a time (the one working)
    per_device = max(n * per_layer + e for n, e in zip(counts, ends)) + activations + logits
    return MemoryPlan(params=linear + other, weights_gib=weights / GIB, kv_cache_gib=kv / GIB,
                      activations_gib=activations / GIB, logits_gib=logits / GIB, total_gib=total / GIB,
                      math_attention_extra_gib=math_scores / GIB, seq_len=seq, widest_forward_tokens=widest,
                      quantize=quantize or "", devices=devices, per_device_gib=per_device / GIB,
                      layer_counts=tuple(counts), shape=asdict(shape))


def balanced_layer_counts(c: Emu3Config, devices: int, quantize: str | None = None) -> list:
    """Decoder layers per device for the most even memory when the first and last devices also hold
    the embedding and lm_head (pass them as `shares` to placement.place_layers / load_lm order)."""
    if devices == 1:
        return [c.num_hidden_layers]
    linear, _ = parameter_count(c)
    layer = (linear / c.num_hidden_layers) * WEIGHT_BYTES[quantize]
    table = c.vocab_size * c.hidden_size * 2.0
    extra = [table] + [0.0] * (devices - 2) + [table]
    lo, hi = 0.0, table * 2 + layer * c.num_hidden_layers
    for _ in range(60):  # bisect the smallest per-device load that holds every layer
        mid = (lo + hi) / 2
        if sum(max(0, int((mid - e) // layer)) for e in extra) >= c.num_hidden_layers:
            hi = mid
        else:
            lo = mid
    counts = [max(0, int((hi - e) // layer)) for e in extra]
    while sum(counts) > c.num_hidden_layers:  # trim the surplus from the middle devices first
        i = max(range(devices), key=lambda k: (counts[k] + (extra[k] == 0), -k))
        counts[i] -= 1
    return counts
