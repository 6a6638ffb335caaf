"""Model invariants: causal masking, KV-cache decode == full forward, GQA and RoPE properties."""

import pytest
import torch

from emu_ros.model import Emu3Config, Emu3ForCausalLM, preset_config
from emu_ros.model.modeling_emu3 import apply_rope, rope_cos_sin, rope_inv_freq
from small_models import random_model  # test/helpers


def small_config(**kw) -> Emu3Config:
    base = dict(vocab_size=151854 + 64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256)
    base.update(kw)
    return Emu3Config(**base)


def build(cfg: Emu3Config, seed: int = 0) -> Emu3ForCausalLM:
    return random_model(cfg, seed)


@torch.no_grad()
def test_logits_shape_and_dtype():
    model = build(small_config())
    ids = torch.randint(0, 1000, (2, 7))
    out = model(ids)
    assert out.shape == (2, 7, 151854 + 64) and out.dtype == torch.float32


@torch.no_grad()
def test_causal_masking():
    model = build(small_config())
    ids = torch.randint(0, 1000, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = torch.randint(1000, 2000, (4,))
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 1e-3


@torch.no_grad()
def test_kv_cache_decode_equals_full_forward():
    model = build(small_config())
    ids = torch.randint(0, 150000, (2, 20))
    full = model(ids)
    model.setup_caches(2, 64)
    logits = [model(ids[:, :5], torch.arange(5))]                    # prefill 5
    for t in range(5, 20):                                           # then one token at a time
        logits.append(model(ids[:, t:t + 1], torch.tensor([t]), kv_len=t + 1))
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-5, rtol=1e-4)
    model.clear_caches()


@torch.no_grad()
def test_per_row_positions_match_separate_runs():
    """CFG rows of different lengths in one batch give the same logits as each row alone."""
    model = build(small_config())
    a, b = torch.randint(0, 150000, (1, 9)), torch.randint(0, 150000, (1, 6))
    ref_a, ref_b = model(a)[0, -1], model(b)[0, -1]
    model.setup_caches(2, 32)
    padded = torch.cat([a, torch.cat([b, b[:, -1:].expand(1, 3)], 1)])
    model(padded, torch.arange(9).expand(2, 9))
    nxt = torch.randint(0, 150000, (1, 1))
    both = model(nxt.expand(2, 1), torch.tensor([[9], [6]]), kv_len=10)
    torch.testing.assert_close(both[0, 0], model(torch.cat([a, nxt], 1))[0, -1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(both[1, 0], model(torch.cat([b, nxt], 1))[0, -1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ref_a, ref_b)
    model.clear_caches()


def test_setup_caches_is_idempotent():
    model = build(small_config())
    model.setup_caches(2, 32)
    cache = model.model.layers[0].self_attn.kv_cache
    model.setup_caches(1, 16)                    # fits: no reallocation
    assert model.model.layers[0].self_attn.kv_cache is cache
    model.setup_caches(2, 64)                    # larger: reallocates
    assert model.model.layers[0].self_attn.kv_cache is not cache
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.setup_caches(1, 10_000)


def test_forward_with_positions_needs_cache():
    model = build(small_config())
    with pytest.raises(RuntimeError, match="setup_caches"):
        model(torch.zeros(1, 1, dtype=torch.long), torch.tensor([0]))


@torch.no_grad()
def test_gqa_equals_mha_with_repeated_kv_heads():
    """GQA with 2 kv heads == MHA whose 4 kv heads repeat each kv head twice."""
    gqa = build(small_config())
    mha = Emu3ForCausalLM(small_config(num_key_value_heads=4)).eval()
    state = gqa.state_dict()
    for name in list(state):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            w = state[name].view(2, 32, 64)
            state[name] = w.repeat_interleave(2, dim=0).reshape(128, 64)
    mha.load_state_dict(state)
    ids = torch.randint(0, 150000, (1, 10))
    torch.testing.assert_close(gqa(ids), mha(ids), atol=1e-5, rtol=1e-4)


def test_rope_is_relative_and_norm_preserving():
    cfg = small_config()
    inv = rope_inv_freq(cfg)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def dot(pq: int, pk: int) -> float:
        cq, sq = rope_cos_sin(inv, torch.tensor([[pq]]), 1.0, torch.float32)
        ck, sk = rope_cos_sin(inv, torch.tensor([[pk]]), 1.0, torch.float32)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    assert dot(3, 1) == pytest.approx(dot(13, 11), rel=1e-4, abs=1e-5)
    cos, sin = rope_cos_sin(inv, torch.tensor([[7]]), 1.0, torch.float32)
    assert float(apply_rope(q, cos, sin).norm()) == pytest.approx(float(q.norm()), rel=1e-5)
    cos0, sin0 = rope_cos_sin(inv, torch.tensor([[0]]), 1.0, torch.float32)
    torch.testing.assert_close(apply_rope(q, cos0, sin0), q)
    # rotate-half layout: dims i and i + D/2 form a pair at frequency inv[i]
    assert torch.allclose(cos[..., :16], cos[..., 16:])


def test_rope_linear_scaling_divides_positions():
    cfg = small_config(rope_scaling={"type": "linear", "factor": 2.0})
    inv = rope_inv_freq(cfg)
    a = rope_cos_sin(inv, torch.tensor([[8]]), cfg.rope_linear_factor, torch.float32)[0]
    b = rope_cos_sin(inv, torch.tensor([[4]]), 1.0, torch.float32)[0]
    torch.testing.assert_close(a, b)


def test_full_model_on_meta_has_published_size():
    cfg = preset_config("full")
    with torch.device("meta"):
        model = Emu3ForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == cfg.num_parameters()
    assert abs(n - 34.1e9) / 34.1e9 < 0.005
    names = dict(model.named_parameters())
    assert tuple(names["model.layers.63.self_attn.q_proj.weight"].shape) == (8192, 5120)
    assert tuple(names["model.layers.0.self_attn.k_norm.weight"].shape) == (128,)
    assert tuple(names["lm_head.weight"].shape) == (282926, 5120)
