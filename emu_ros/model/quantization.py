"""Weight-only quantized decoder Linears, applied while ``load_lm`` streams the checkpoint.

Why: the 34B LM is 68 GB in bf16. Its 64 decoder layers hold ~31B of the parameters in seven
Linears each (q/k/v/o, gate/up/down); the embedding and lm_head hold the other ~2.9B.

* ``int8``: our ``Int8Linear``, symmetric per-output-channel int8 (gpt-fast's weight-only int8):
  W ~= scales[:, None] * q, q in [-127, 127]. Decoder weights ~31 GB + bf16 embedding/head ~5.8 GB
  = ~37 GB: a 40-48 GB GPU, not a 24-32 GB one.
* ``nf4``: bitsandbytes ``Linear4bit`` (NF4, blocks of 64, double-quantized absmax), ~0.53 B per
  weight: ~16.5 GB + 5.8 GB = ~22 GB, which leaves room for the KV cache on a 24-32 GB GPU.
  bitsandbytes is optional (``pip install 'bitsandbytes>=0.46'``; 0.46 is the first release with
  the CPU backend, CUDA works with it too).

Embeddings and lm_head stay in the load dtype on purpose: the embedding is a row gather (no
matmul to speed up, and int8 rows would need their own module), lm_head produces the logits that
sampling, CFG and DiDA's confidences read directly (its error is the one that flips tokens), and
DiDA slices ``lm_head.weight`` to project only the visual codebook.

Quantized modules hold no float ``weight``: code that reads ``layer.mlp.up_proj.weight`` as a
float matrix (training, LoRA merges, DiDA adaptation) needs an unquantized load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

QUANTIZE_MODES = ("int8", "nf4")
BNB_MIN_VERSION = "0.46"
# CPU kernel: bf16/fp16/fp32 activations x int8 weight x per-channel scales in one call (torch >= 2.3)
_INT8PACK_MM = getattr(torch.ops.aten, "_weight_int8pack_mm", None)


class QuantizationError(ValueError):
    """Unsupported ``quantize`` value or missing backend; the message says what to install or pass."""


def check_quantize(quantize: str | None) -> None:
    """Fail before any weight is read when ``quantize`` is not None, "int8" or a usable "nf4"."""
    if quantize is None:
        return
    if quantize not in QUANTIZE_MODES:
        raise QuantizationError(f"quantize must be None or one of {QUANTIZE_MODES}, got {quantize!r}")
    if quantize == "nf4":
        _bitsandbytes()


def _bitsandbytes():
    try:
        import bitsandbytes as bnb
    except (ImportError, OSError, RuntimeError) as exc:   # a broken native library raises at import too
        raise QuantizationError(
            f"quantize='nf4' needs bitsandbytes: pip install 'bitsandbytes>={BNB_MIN_VERSION}' "
            f"({type(exc).__name__}: {exc}); or use quantize='int8' (no extra package)") from exc
    return bnb


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8: (q [out, in] int8, scales [out] fp32), W ~= scales[:, None] * q.

    Computed in fp32 on the weight's device, in place where possible (peak ~ one fp32 copy of this
    tensor, so a GPU load never holds more than one layer's matrix in full precision).
    """
    w = weight.to(torch.float32, copy=True)                         # never divide the caller's tensor in place
    scales = w.abs().amax(dim=1).clamp_(min=1e-12) / 127.0          # a zero row gets q = 0
    q = w.div_(scales[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """y = (x @ q^T) * scales: int8 weight, fp32 per-output-channel scales, no bias (none in Emu3.5).

    On CPU the product runs in ``aten._weight_int8pack_mm`` (no dequantized copy). Elsewhere the
    weight is dequantized per call, ``F.linear(x, q.to(x.dtype)) * scales``: exact, one transient
    layer-sized copy; with ``GenerationConfig.compile`` inductor fuses the cast into the matmul
    (gpt-fast's recipe), otherwise eager int8 decoding is slower than bf16 on a GPU.
    """

    def __init__(self, in_features: int, out_features: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=torch.float32, device=device))

    @classmethod
    def from_float(cls, weight: Tensor) -> "Int8Linear":
        """Quantize a float weight [out, in] (on its device)."""
        module = cls(weight.shape[1], weight.shape[0], device="meta")
        module.load_weight(weight)
        return module

    def load_weight(self, weight: Tensor) -> None:
        """Replace the buffers by the quantization of a float weight [out, in] (assign, no copy into meta)."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight {list(weight.shape)} does not fit Int8Linear({self.in_features}, "
                             f"{self.out_features})")
        self.weight, self.scales = quantize_int8(weight)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The float weight this module applies: scales[:, None] * q."""
        return (self.weight.float() * self.scales[:, None]).to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        scales = self.scales.to(x.dtype)
        if _INT8PACK_MM is not None and x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16,
                                                                              torch.float16):
            y = _INT8PACK_MM(x.reshape(-1, self.in_features), self.weight, scales)
            return y.view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight.to(x.dtype)) * scales

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def decoder_linear_names(model: nn.Module) -> list[str]:
    """Full names of the decoder-layer Linears (``model.layers.N.self_attn.q_proj``, ...): what gets quantized."""
    return [f"model.layers.{name}" for name, module in model.model.layers.named_modules()
            if isinstance(module, (nn.Linear, Int8Linear))]


def replace_decoder_linears(model: nn.Module, quantize: str, compute_dtype: torch.dtype) -> set[str]:
    """Swap the decoder Linears of a meta-device model for empty quantized modules; return their names.

    The weights arrive later, one checkpoint tensor at a time, through ``load_quantized_weight``.
    """
    check_quantize(quantize)
    names = decoder_linear_names(model)
    for name in names:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, _empty_quantized(model.get_submodule(name), quantize, compute_dtype))
    return set(names)


def quantize_model_(model: nn.Module, quantize: str, compute_dtype: torch.dtype) -> None:
    """Quantize a built model's decoder Linears in place, one at a time (each full-precision weight is
    freed as soon as its quantized module exists): for benchmarks on random weights."""
    check_quantize(quantize)
    for name in decoder_linear_names(model):
        parent, _, attr = name.rpartition(".")
        old = model.get_submodule(name)
        new = _empty_quantized(old, quantize, compute_dtype)
        load_quantized_weight(new, old.weight.detach(), old.weight.device)
        setattr(model.get_submodule(parent), attr, new)
        del old


def _empty_quantized(old: nn.Module, quantize: str, compute_dtype: torch.dtype) -> nn.Module:
    """A weightless (meta) quantized stand-in for the Linear `old`."""
    if quantize == "int8":
        return Int8Linear(old.in_features, old.out_features, device="meta")
    bnb = _bitsandbytes()
    new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=False, compute_dtype=compute_dtype,
                            compress_statistics=True, quant_type="nf4", device="meta")
    if old.in_features % 64 or old.out_features % 32:
        # bnb's AVX512-BF16 CPU repack needs in % 64 == 0 and out % 32 == 0 (it fails on tiny test
        # shapes such as 160; every full-size Emu3.5 Linear fits): use its generic CPU path there
        new.support_avx512bf16_for_cpu = False
    return new


def load_quantized_weight(module: nn.Module, weight: Tensor, device: torch.device) -> None:
    """Quantize one checkpoint weight into its (Int8Linear or Linear4bit) module on ``device``."""
    if isinstance(module, Int8Linear):
        module.load_weight(weight.to(device))
        return
    bnb = _bitsandbytes()
    # Params4bit quantizes when moved to a real device: the float tensor goes there once, then is freed
    module.weight = bnb.nn.Params4bit(weight.to(module.compute_dtype or weight.dtype), requires_grad=False,
                                      quant_type="nf4", compress_statistics=True, module=module).to(device)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of everything the model would save (parameters, int8 buffers, bnb's packed quant states).

    Non-persistent buffers (KV cache, RoPE table) are excluded: they are not weights.
    """
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, Tensor))
