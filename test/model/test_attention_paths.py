"""Attention dispatch: every mask-free path equals the dense-mask path, and the tally names what ran."""

import pytest
import torch
from torch import Tensor

from emu_ros.model import (DecodeSession, Emu3Config, Emu3ForCausalLM, GenerationConfig, SamplingParams, build_prompt,
                           build_unconditional_prompt, generate)
from emu_ros.model import modeling_emu3 as m
from small_models import random_model  # test/helpers

TOL = 1e-4
DIFFS: dict[str, float] = {}     # case -> max |dispatch - masked|, printed by the last test (pytest -s)


def small_model(n_heads: int = 4, n_kv_heads: int = 2) -> Emu3ForCausalLM:
    cfg = Emu3Config(vocab_size=151854 + 64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, head_dim=32,
                     max_position_embeddings=256)
    return random_model(cfg, seed=0)


def prefill(model: Emu3ForCausalLM, lengths: list[int], seed: int = 1) -> Tensor:
    """Fill cache row b with lengths[b] random tokens (one causal prefill from 0, as DecodeSession does);
    returns the tokens [B, max(lengths)] (row b's tail beyond lengths[b] is padding, overwritten later)."""
    torch.manual_seed(seed)
    t = max(lengths)
    tokens = torch.randint(0, 150000, (len(lengths), t))
    model.setup_caches(len(lengths), 64)
    with torch.no_grad():
        model(tokens, torch.arange(t).expand(len(lengths), t), kv_len=t, uniform_len=t)
    return tokens


def run(model: Emu3ForCausalLM, ids: Tensor, pos: Tensor, **kw) -> tuple[Tensor, dict[str, int]]:
    """Logits and the paths of one forward; the cache rows it writes are rewritten identically by a rerun."""
    m.reset_attention_paths()
    with torch.no_grad():
        out = model(ids, pos, **kw)
    return out, m.attention_paths()


def check(case: str, model: Emu3ForCausalLM, ids: Tensor, pos: Tensor, path: str, **kw) -> None:
    fast, paths = run(model, ids, pos, **kw)
    assert paths == {path: 1}
    with m.force_masked_attention():
        ref, ref_paths = run(model, ids, pos, **kw)
    assert ref_paths == {"sdpa_masked": 1}
    DIFFS[case] = (fast - ref).abs().max().item()
    assert DIFFS[case] <= TOL, (case, DIFFS[case])


@pytest.fixture(scope="module")
def model():
    return small_model()


def test_prefill_from_zero_is_causal(model):
    model.setup_caches(2, 64)
    torch.manual_seed(2)
    ids = torch.randint(0, 150000, (2, 9))
    check("prefill from 0", model, ids, torch.arange(9).expand(2, 9), "sdpa_causal", kv_len=9, uniform_len=9)
    full = model(ids)                                                  # and equals the uncached causal forward
    with torch.no_grad():
        torch.testing.assert_close(model(ids, torch.arange(9).expand(2, 9), kv_len=9, uniform_len=9), full,
                                   atol=TOL, rtol=TOL)


def test_decode_equal_rows_needs_no_mask(model):
    prefill(model, [7, 7])
    ids = torch.tensor([[11], [12]])
    check("decode, equal rows", model, ids, torch.tensor([[7], [7]]), "sdpa_nomask", kv_len=8, uniform_len=8)


def test_decode_unequal_rows_uses_a_key_mask(model):
    prefill(model, [9, 5])                                               # CFG: cond and uncond prompts differ
    ids = torch.tensor([[11], [11]])
    check("decode, unequal rows", model, ids, torch.tensor([[9], [5]]), "sdpa_keymask", kv_len=10)


@pytest.mark.parametrize("lengths", [[6, 6], [8, 5]], ids=["equal", "unequal"])
def test_dida_block(model, lengths):
    prefill(model, lengths)
    torch.manual_seed(3)
    t = 7
    ids = torch.randint(0, 150000, (1, t)).expand(2, t)
    pos = torch.tensor(lengths)[:, None] + torch.arange(t)
    equal = lengths[0] == lengths[1]
    check(f"DiDA block, {'equal' if equal else 'unequal'} rows", model, ids, pos,
          "sdpa_nomask" if equal else "sdpa_keymask", kv_len=max(lengths) + t, block=True,
          uniform_len=lengths[0] + t if equal else None)


@pytest.mark.parametrize("lengths", [[6, 6], [8, 5]], ids=["equal", "unequal"])
def test_chunk_after_prefix_stays_masked(model, lengths):
    """No mask-free path is exact here (is_causal is top-left aligned): the dense mask runs, and its
    logits equal the uncached forward of prefix + chunk in every row."""
    prefix = prefill(model, lengths)
    chunk = torch.tensor([21, 22, 23])
    pos = torch.tensor(lengths)[:, None] + torch.arange(3)
    equal = lengths[0] == lengths[1]
    fast, paths = run(model, chunk.expand(2, 3), pos, kv_len=max(lengths) + 3,
                      uniform_len=lengths[0] + 3 if equal else None)
    assert paths == {"sdpa_masked": 1}
    for r, n in enumerate(lengths):
        with torch.no_grad():
            full = model(torch.cat([prefix[r, :n], chunk])[None])[0, n:]
        DIFFS[f"chunk after prefix vs uncached, row {r} ({'equal' if equal else 'unequal'})"] = \
            (fast[r] - full).abs().max().item()
        torch.testing.assert_close(fast[r], full, atol=TOL, rtol=TOL)


def test_uncached_paths(model):
    ids = torch.randint(0, 150000, (2, 6))
    _, paths = run(model, ids, None)
    assert paths == {"sdpa_causal": 1}
    m.reset_attention_paths()
    with torch.no_grad():
        model(ids, attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2]))
    assert m.attention_paths() == {"sdpa_masked": 1}


def test_uniform_len_is_checked(model):
    model.setup_caches(2, 64)
    with pytest.raises(ValueError, match="uniform_len"):
        model(torch.tensor([[1, 2], [1, 2]]), torch.tensor([[0, 1], [0, 1]]), uniform_len=1)


def reference_flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=None, causal=False):
    """flash_attn_with_kvcache's documented contract in plain torch, checking the layout we hand it:
    q [B, T, H, D], caches [B, S, Hkv, D] with a contiguous last dim, int32 per-row lengths."""
    assert q.dim() == 4 and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1 and not causal
    assert cache_seqlens.dtype == torch.int32 and cache_seqlens.shape == (q.shape[0],)
    b, t, h, d = q.shape
    g = h // k_cache.shape[2]
    out = torch.empty_like(q)
    for r in range(b):
        n = int(cache_seqlens[r])
        k = k_cache[r, :n].repeat_interleave(g, dim=1).transpose(0, 1)       # [H, n, D]
        v = v_cache[r, :n].repeat_interleave(g, dim=1).transpose(0, 1)
        w = torch.softmax(q[r].transpose(0, 1) @ k.transpose(1, 2) / d ** 0.5, dim=-1)
        out[r] = (w @ v).transpose(0, 1)
    return out


@pytest.mark.parametrize("block", [False, True], ids=["decode", "block"])
def test_flash_kvcache_branch_with_a_reference_kernel(model, monkeypatch, block):
    """On CPU the flash branch runs against a torch stand-in: our layout, lengths and causal flag are right."""
    monkeypatch.setattr(m, "flash_attn_with_kvcache", reference_flash_attn_with_kvcache)
    monkeypatch.setattr(m, "flash_kvcache_usable", lambda k_cache, dtype: True)
    prefill(model, [9, 4])
    t = 5 if block else 1
    ids = torch.arange(100, 100 + t).expand(2, t)
    pos = torch.tensor([9, 4])[:, None] + torch.arange(t)
    check(f"flash branch (torch stand-in), {'block' if block else 'decode'}", model, ids, pos,
          "flash_attn_kvcache", kv_len=9 + t, block=block)


def test_flash_is_not_used_on_cpu_fp32(model):
    assert not m.flash_kvcache_usable(torch.zeros(1, 1, 1, 32), torch.float32)


def test_greedy_generation_matches_masked_path(lm32, tok, ids):
    """End to end with CFG (cond/uncond prompts of different lengths): identical greedy tokens."""
    prompt = tok.encode(build_prompt("vla", "stack the red cube on the blue cube"))
    uncond = tok.encode(build_unconditional_prompt())
    assert len(prompt) != len(uncond)
    greedy = SamplingParams(0, 1.0, 0.0)
    config = GenerationConfig(text=greedy, image=greedy, cfg_scale=3.0, max_new_tokens=40, image_size=(2, 3),
                              force_image_after=3, max_images=2, seed=0)
    m.reset_attention_paths()
    fast = generate(lm32, prompt, uncond, config, ids)
    paths = m.attention_paths()
    with m.force_masked_attention():
        m.reset_attention_paths()
        ref = generate(lm32, prompt, uncond, config, ids)
        assert set(m.attention_paths()) == {"sdpa_masked"}
    assert fast.tokens == ref.tokens and len(fast.images) >= 1
    assert {"sdpa_causal", "sdpa_nomask", "sdpa_keymask", "sdpa_masked"} <= set(paths)    # prefill, text, CFG image


def test_decode_session_score_block_equal_and_unequal(lm32, tok, ids):
    """DecodeSession.score_block passes uniform_len only when the rows agree."""
    prompt = tok.encode(build_prompt("vla", "pick"))
    config = GenerationConfig(cfg_scale=3.0, max_new_tokens=32, seed=0)
    for uncond in (prompt, tok.encode(build_unconditional_prompt())):
        session = DecodeSession(lm32, prompt, uncond, config, ids)
        block = session.tensor([ids.img] + [ids.first_visual + 5] * 6)
        m.reset_attention_paths()
        fast = session.score_block(block)
        paths = m.attention_paths()
        with m.force_masked_attention():
            ref = session.score_block(block)
        assert paths == {"sdpa_nomask" if len(uncond) == len(prompt) else "sdpa_keymask": 1}
        key = f"score_block, {'equal' if len(uncond) == len(prompt) else 'unequal'} rows"
        DIFFS[key] = (fast - ref).abs().max().item()
        assert DIFFS[key] <= TOL


def test_report_diffs():
    for case, diff in DIFFS.items():
        print(f"{case:45s} max|diff| = {diff:.2e}")
