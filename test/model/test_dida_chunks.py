"""DiDA's visual logits in chunks of slots: same codes and confidences as the all-at-once computation."""

import numpy as np
import pytest
import torch

from emu_ros.model import DecodeSession, GenerationConfig, SamplingParams, build_prompt, generate
from emu_ros.model import build_unconditional_prompt
from emu_ros.model.dida import (CHUNK_BYTES, DiDAConfig, DiDAError, DiDAImageDecoder, guided_scores, image_block,
                                sample_slots, sample_visual, slot_chunk, visual_scores)

PARAMS = [SamplingParams(0, 1.0, 0.0),          # greedy
          SamplingParams(10240, 1.0, 1.0),      # official image settings (top-k >= codebook: plain softmax)
          SamplingParams(50, 0.8, 0.7),         # top-k, top-p, temperature
          SamplingParams(0, 0.9, 1.0)]          # top-p alone (full sort)


@pytest.fixture(scope="module")
def prompts(tok):
    return tok.encode(build_prompt("vla", "stack the blocks")), tok.encode(build_unconditional_prompt())


def pass_session(lm32, ids, prompts, cfg_scale, h=3, w=5):
    session = DecodeSession(lm32, *prompts, GenerationConfig(seed=0, max_new_tokens=40, cfg_scale=cfg_scale), ids)
    session.feed(session.tensor([ids.boi] + ids.header_ids(h, w)), session.rows)
    block, index = image_block(session, h, w)
    block[index + 1] = 151643
    block[index[::4] + 1] = ids.first_visual + torch.arange(0, index.numel(), 4)   # a few slots known
    return session, block, index


@pytest.mark.parametrize("cfg_scale", [3.0, 1.0])
@pytest.mark.parametrize("params", PARAMS)
def test_chunked_pass_equals_unchunked(lm32, ids, prompts, params, cfg_scale):
    session, block, index = pass_session(lm32, ids, prompts, cfg_scale)
    n = index.numel()
    # the reference: the whole [rows, N, codebook] tensor, CFG, one sample_slots call, same uniforms
    scores = guided_scores(session, visual_scores(session, block, index))
    uniform = torch.rand(n, generator=torch.Generator().manual_seed(7))
    ref_codes, ref_conf = sample_slots(scores, params, None if params.temperature <= 0 else uniform)
    for chunk in (1, 4, n - 1, n, None):
        codes, conf = sample_visual(session, block, index, params, torch.Generator().manual_seed(7), chunk=chunk)
        assert torch.equal(codes, ref_codes), chunk
        torch.testing.assert_close(conf, ref_conf, atol=1e-5, rtol=0)
    if params.temperature <= 0:
        torch.testing.assert_close(ref_conf, torch.log_softmax(scores, -1).max(-1).values, atol=1e-6, rtol=0)


@pytest.mark.parametrize("noise", ["mask", "uniform"])
def test_decoder_chunk_never_changes_the_image(lm32, tok, ids, prompts, noise):
    def image(chunk):
        config = GenerationConfig(image_size=(3, 4), force_image_after=1, max_images=1, max_new_tokens=30, seed=3)
        dec = DiDAImageDecoder(DiDAConfig(noise=noise), passes=3, chunk=chunk)
        return generate(lm32, *prompts, config, ids, tok, image_decoder=dec).images[0]
    ref = image(None)
    assert np.array_equal(image(1), ref) and np.array_equal(image(5), ref)
    with pytest.raises(DiDAError, match="chunk"):
        DiDAImageDecoder(DiDAConfig(), chunk=0)


def test_default_chunk_budget():
    assert CHUNK_BYTES == 256 * 2**20
    assert slot_chunk(2, 131072) == 256 and slot_chunk(1, 131072) == 512     # full codebook, CFG / no CFG
    assert slot_chunk(2, 1024) == 32768 and slot_chunk(2, 10**12) == 1


def test_inverse_cdf_draw_follows_the_filtered_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    scores = probs.log().expand(40000, 4)
    u = torch.rand(40000, generator=torch.Generator().manual_seed(0))
    codes, conf = sample_slots(scores, SamplingParams(0, 1.0, 1.0), u)
    freq = torch.bincount(codes, minlength=4).float() / 40000
    torch.testing.assert_close(freq, probs, atol=0.01, rtol=0)
    torch.testing.assert_close(conf, probs.log()[codes])
    # top-p 0.75 keeps {0.5, 0.3}; even a uniform at the very top stays inside the nucleus
    edge = torch.tensor([0.0, 0.7, 1.0 - 2**-24])                       # renormalised: 0.625, 0.375
    codes, conf = sample_slots(probs.log().expand(3, 4), SamplingParams(0, 0.75, 1.0), edge)
    assert codes.tolist() == [0, 1, 1] and torch.isfinite(conf).all()


def test_in_place_cfg_is_cfg_logprobs_bit_for_bit(lm32, ids, prompts):
    from emu_ros.model import cfg_logprobs

    session, _, _ = pass_session(lm32, ids, prompts, 3.0)
    scores = torch.randn(2, 6, 1024, generator=torch.Generator().manual_seed(0))
    assert torch.equal(guided_scores(session, scores.clone()), cfg_logprobs(scores[0], scores[1], 3.0))
