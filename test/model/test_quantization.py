"""Weight-only quantized loading: Int8Linear numerics, load_lm(quantize=...) on the tiny checkpoint, errors.

Tolerances on the tiny random checkpoint (fp32 logit std ~0.16; ``python -m emu_ros.bench.quantization``
measures max |dlogit| 1.0e-2, mean 1.1e-3, teacher-forced top-1 agreement 0.97 for int8@fp32, about
what bf16 costs): the tests allow 3x that error and 0.9 agreement.
"""

import sys

import pytest
import torch
from torch import nn

from emu_ros.model import Emu35Runtime, load_lm
from emu_ros.model import quantization as qmod
from emu_ros.model.quantization import (Int8Linear, QuantizationError, decoder_linear_names, quantize_int8,
                                        weight_bytes)

MAX_LOGIT_DIFF, MEAN_LOGIT_DIFF, MIN_TOP1_AGREEMENT = 0.03, 3e-3, 0.9


@pytest.fixture(scope="module")
def lm_int8(lm_dir):
    return load_lm(lm_dir, dtype=torch.float32, quantize="int8")


@pytest.fixture(scope="module")
def sequence():
    return torch.randint(0, 150000, (1, 64), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shape", [(160, 64), (64, 160), (7, 33)])
def test_int8_linear_matches_its_dequantized_weight(shape, monkeypatch):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 0.02
    w[0] = 0.0                                                     # an all-zero channel must not divide by 0
    layer = Int8Linear.from_float(w)
    assert layer.weight.dtype == torch.int8 and layer.weight.abs().max() <= 127 and layer.scales.dtype == torch.float32
    deq = layer.dequantize()
    assert torch.all((deq - w).abs() <= layer.scales[:, None] / 2 + 1e-9)   # round-to-nearest per channel
    assert torch.equal(deq[0], torch.zeros(shape[1]))
    x = torch.randn(3, 5, shape[1], generator=torch.Generator().manual_seed(2))
    ref = x @ deq.T
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)         # CPU int8pack kernel (if present)
    monkeypatch.setattr(qmod, "_INT8PACK_MM", None)                           # the dequantize-per-call path
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)
    assert layer(x.bfloat16()).dtype == torch.bfloat16
    torch.testing.assert_close(layer(x.bfloat16()).float(), ref, atol=2e-2 * ref.abs().max().item(), rtol=0)


def test_quantize_int8_is_symmetric_per_channel():
    w = torch.tensor([[1.0, -0.4, 0.25], [-3.0, 3.0, 1.2]])
    q, scales = quantize_int8(w)
    torch.testing.assert_close(scales, torch.tensor([1 / 127, 3 / 127]))
    assert q.tolist() == [[127, -51, 32], [-127, 127, 51]]      # round(50.8), round(31.75)


def test_load_lm_int8_replaces_decoder_linears_only(lm_int8, lm32):
    names = decoder_linear_names(lm_int8)
    assert len(names) == 7 * lm32.config.num_hidden_layers
    assert all(isinstance(lm_int8.get_submodule(n), Int8Linear) for n in names)
    assert type(lm_int8.lm_head) is nn.Linear and lm_int8.lm_head.weight.dtype == torch.float32
    assert lm_int8.model.embed_tokens.weight.dtype == torch.float32
    linear_params = sum(lm32.get_submodule(n).weight.numel() for n in names)
    out_channels = sum(lm32.get_submodule(n).weight.shape[0] for n in names)
    assert weight_bytes(lm32) - weight_bytes(lm_int8) == 4 * linear_params - (linear_params + 4 * out_channels)


def test_load_lm_int8_is_exactly_the_dequantized_model(lm_int8, lm32, sequence):
    """Loading quantizes the checkpoint tensors themselves: the fp32 model with every decoder weight
    replaced by the int8 layer's dequantized weight gives the same logits."""
    import copy

    ref = copy.deepcopy(lm32)
    for name in decoder_linear_names(lm_int8):
        ref.get_submodule(name).weight.copy_(lm_int8.get_submodule(name).dequantize())
    with torch.no_grad():
        torch.testing.assert_close(lm_int8(sequence), ref(sequence), atol=1e-5, rtol=1e-5)


def test_load_lm_int8_logits_and_greedy_agreement(lm_int8, lm32, sequence):
    with torch.no_grad():
        a, b = lm32(sequence)[0], lm_int8(sequence)[0]
    diff = (a - b).abs()
    assert diff.max() < MAX_LOGIT_DIFF and diff.mean() < MEAN_LOGIT_DIFF, (diff.max(), diff.mean())
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= MIN_TOP1_AGREEMENT


def test_int8_cached_decoding_matches_its_full_forward(lm_int8, sequence):
    """The KV-cache path runs through Int8Linear too (1-token steps hit the int8 kernel with M=1)."""
    t = sequence.shape[1]
    lm_int8.setup_caches(1, t)
    with torch.no_grad():
        lm_int8(sequence[:, :t - 4], torch.arange(t - 4)[None], kv_len=t - 4)
        steps = [lm_int8(sequence[:, i:i + 1], torch.tensor([[i]]), kv_len=i + 1, keep=-1)[0, 0]
                 for i in range(t - 4, t)]
        full = lm_int8(sequence)[0, t - 4:]
    lm_int8.clear_caches()
    torch.testing.assert_close(torch.stack(steps), full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad", ["int4", "INT8", "fp8", ""])
def test_bad_quantize_value_is_a_clear_error(lm_dir, bad):
    with pytest.raises(QuantizationError, match=r"quantize must be None or one of \('int8', 'nf4'\)"):
        load_lm(lm_dir, quantize=bad)
    with pytest.raises(ValueError, match="quantize must be"):    # QuantizationError is a ValueError
        Emu35Runtime(lm_dir, quantize=bad)


def test_nf4_without_bitsandbytes_names_the_install(lm_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)       # import bitsandbytes -> ImportError
    with pytest.raises(QuantizationError, match=r"pip install 'bitsandbytes>=0\.46'.*quantize='int8'"):
        load_lm(lm_dir, quantize="nf4")


def test_nf4_with_bitsandbytes(lm_dir, lm32, sequence):
    """Runs where bitsandbytes is installed (optional dependency; its CPU backend suffices)."""
    bnb = pytest.importorskip("bitsandbytes")
    lm = load_lm(lm_dir, dtype=torch.float32, quantize="nf4")
    names = decoder_linear_names(lm)
    assert len(names) == 7 * lm32.config.num_hidden_layers
    assert all(isinstance(lm.get_submodule(n), bnb.nn.Linear4bit) for n in names)
    with torch.no_grad():
        diff = (lm(sequence) - lm32(sequence)).abs()
    # 16 levels per 64-weight block: ~15x int8's error on this random model (bench: max 0.17, mean 0.017)
    assert torch.isfinite(diff).all() and diff.mean() < 0.05
    assert weight_bytes(lm) < weight_bytes(load_lm(lm_dir, dtype=torch.float32, quantize="int8"))
