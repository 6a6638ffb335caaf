"""Generation on the tiny random checkpoint: well-formed interleaved output, CFG, determinism, seams."""

import numpy as np
import pytest
import torch

from emu_ros.model import (ARImageDecoder, DecodeSession, Emu35Runtime, GenerationConfig, ModeState, SamplingParams,
                           build_prompt, build_unconditional_prompt, cfg_logprobs, generate, image_token_ids,
                           parse_image_block, sample, task_config)


@pytest.fixture(scope="module")
def prompts(tok):
    return tok.encode(build_prompt("vla", "stack the red cube on the blue cube")), \
        tok.encode(build_unconditional_prompt())


def check_well_formed(tokens, tok, ids, size):
    """text first, then complete image blocks of the requested size; returns the number of images."""
    h, w = size
    assert tokens[0] != ids.boi                                      # text comes first
    n, i = 0, 0
    while ids.boi in tokens[i:]:
        start = tokens.index(ids.boi, i)
        img = tokens.index(ids.img, start)
        assert tok.decode(tokens[start + 1:img]) == f"{h}*{w}"
        end = img + h * (w + 1)
        assert tokens[end] == ids.eoi
        block = parse_image_block(tokens[start:end + 1], tok)
        assert block is not None and block.codes.shape == (h, w)
        n, i = n + 1, end + 1
    return n


@pytest.mark.parametrize("cfg_scale", [3.0, 1.0])
def test_well_formed_interleaved(lm32, tok, ids, prompts, cfg_scale):
    config = GenerationConfig(cfg_scale=cfg_scale, image_size=(3, 5), force_image_after=6, max_images=2,
                              max_new_tokens=200, seed=0)
    images = []
    result = generate(lm32, *prompts, config, ids, tok, on_image=images.append)
    assert result.stop_reason == "max_images"
    assert check_well_formed(result.tokens, tok, ids, (3, 5)) == 2
    assert len(images) == 2 and all(g.shape == (3, 5) for g in images)
    kinds = [s.kind for s in result.segments(tok)]
    assert kinds.count("image") == 2 and kinds[-1] == "image"
    assert all(g.min() >= 0 and g.max() < 1024 for g in images)


def test_seeded_determinism(lm32, tok, ids, prompts):
    config = GenerationConfig(image_size=(2, 2), force_image_after=4, max_images=1, max_new_tokens=50, seed=7)
    a = generate(lm32, *prompts, config, ids, tok).tokens
    b = generate(lm32, *prompts, config, ids, tok).tokens
    c = generate(lm32, *prompts, GenerationConfig(**{**config.__dict__, "seed": 8}), ids, tok).tokens
    assert a == b and a != c


def test_auto_size_header_is_two_digits(lm32, tok, ids, prompts):
    config = GenerationConfig(force_image_after=2, max_new_tokens=12, seed=3)   # too short for any image body
    result = generate(lm32, *prompts, config, ids, tok)
    assert result.stop_reason == "max_new_tokens"
    boi = result.tokens.index(ids.boi)
    header = tok.decode(result.tokens[boi + 1:boi + 6])
    h, w = header.split("*")
    assert len(h) == 2 and len(w) == 2 and 10 <= int(h) <= 99 and 10 <= int(w) <= 99
    assert result.tokens[boi + 6] == ids.img


def test_text_streaming_matches_tokens(lm32, tok, ids, prompts):
    chunks = []
    config = GenerationConfig(cfg_scale=1.0, max_new_tokens=25, seed=1)
    result = generate(lm32, *prompts, config, ids, tok, on_text=chunks.append)
    text_ids = [t for t in result.tokens if t < tok.num_text_tokens]
    assert "".join(chunks) == tok.decode(text_ids)
    assert len(result.tokens) == 25 and result.stop_reason in ("max_new_tokens", "eos")


def test_cancel(lm32, tok, ids, prompts):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 10
    config = GenerationConfig(image_size=(4, 4), force_image_after=3, max_new_tokens=500, seed=0)
    result = generate(lm32, *prompts, config, ids, tok, cancel=cancel)
    assert result.stop_reason == "cancelled" and len(result.tokens) < 20


class CommitDecoder:
    """A parallel-style decoder (like DiDA): all codes at once via commit_image; checks both streams."""

    def __init__(self, model, cond, uncond, ids, tok):
        self.model, self.cond, self.uncond, self.ids, self.tok = model, cond, uncond, ids, tok
        self.images = []

    def __call__(self, session, header, height, width, cancel=None):
        codes = torch.arange(height * width, device=session.device).view(height, width) % 1024
        logits = session.commit_image(header, codes)
        self.images.append(codes.numpy())
        # the unconditional stream = its prompt + image blocks only (official "no_text" context)
        unc = self.uncond + [t for g in self.images for t in image_token_ids(g, self.tok)]
        ref = self.model(torch.tensor([unc]))[0, -1]
        torch.testing.assert_close(logits[1], ref, atol=1e-4, rtol=1e-4)
        return codes


def test_image_decoder_seam_and_uncond_context(lm32, tok, ids, prompts):
    cond, uncond = prompts
    decoder = CommitDecoder(lm32, cond, uncond, ids, tok)
    config = GenerationConfig(image_size=(2, 3), force_image_after=3, max_images=2, max_new_tokens=100, seed=0)
    result = generate(lm32, cond, uncond, config, ids, tok, image_decoder=decoder)
    assert check_well_formed(result.tokens, tok, ids, (2, 3)) == 2
    assert [g.tolist() for g in result.images] == [g.tolist() for g in decoder.images]


def test_ar_decoder_cond_logits_match_full_forward(lm32, tok, ids, prompts):
    """After generation, the cached decode of row 0 equals a plain forward of prompt + output."""
    seen = {}

    class Spy(ARImageDecoder):
        def __call__(self, session, header, height, width, cancel=None):
            codes = super().__call__(session, header, height, width, cancel)
            seen["logits"] = session.logits[0].clone()
            return codes
    config = GenerationConfig(image_size=(2, 2), force_image_after=3, max_images=1, max_new_tokens=40, seed=2)
    result = generate(lm32, *prompts, config, ids, tok, image_decoder=Spy())
    ref = lm32(torch.tensor([prompts[0] + result.tokens]))[0, -1]
    torch.testing.assert_close(seen["logits"], ref, atol=1e-4, rtol=1e-4)


def test_mode_state_machine(ids):
    state = ModeState(ids, image_size=(12, 34))
    assert state.next().kind == "text"
    state.advance(ids.boi)
    forced = []
    while (c := state.next()).kind == "forced":
        forced.append(c.token)
        state.advance(c.token)
    assert forced == ids.header_ids(12, 34) + [ids.img] and state.next().kind == "image_body"
    assert state.image_hw == (12, 34)
    state.finish_image()
    assert state.next().kind == "text" and state.images_done == 1

    auto = ModeState(ids)
    auto.advance(ids.boi)
    c1 = auto.next()
    assert c1.kind == "choice" and set(c1.choices) == {ids.digits[d] for d in "123456789"}
    for t in (ids.digits["4"], ids.digits["0"]):
        auto.advance(t)
    assert auto.next().token == ids.digits["*"]
    for t in (ids.digits["*"], ids.digits["2"]):
        auto.advance(t)
    assert set(auto.next().choices) == {ids.digits[d] for d in "0123456789"}
    auto.advance(ids.digits["5"])
    assert auto.next().token == ids.img
    auto.advance(ids.img)
    auto.finish_image()
    auto.advance(ids.boi)                      # force_same_image_size: the next header replays 40*25
    assert auto.next() .token == ids.digits["4"]


def test_sample_properties():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1000, generator=g)
    top = int(logits.argmax())
    assert int(sample(logits, SamplingParams(1, 1.0, 1.0), g)) == top
    assert int(sample(logits, SamplingParams(0, 1e-6, 1.0), g)) == top
    assert int(sample(logits, SamplingParams(50, 1.0, 0.0), g)) == top
    top5 = set(torch.topk(logits, 5).indices.tolist())
    draws = {int(sample(logits, SamplingParams(5, 1.0, 1.0), g)) for _ in range(200)}
    assert draws <= top5 and len(draws) > 1
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [int(sample(logits, SamplingParams(100, 0.9, 1.0), g1)) for _ in range(20)] == \
        [int(sample(logits, SamplingParams(100, 0.9, 1.0), g2)) for _ in range(20)]


def test_sample_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    draws = {int(sample(logits, SamplingParams(0, 0.7, 1.0), g)) for _ in range(300)}
    assert draws == {0, 1}                  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: token 2 dropped


def test_cfg_logprobs():
    c, u = torch.randn(10), torch.randn(10)
    torch.testing.assert_close(cfg_logprobs(c, u, 1.0), torch.log_softmax(c, -1))
    torch.testing.assert_close(cfg_logprobs(c, u, 0.0), torch.log_softmax(u, -1))
    guided = cfg_logprobs(c, u, 3.0)
    torch.testing.assert_close(guided, 3 * torch.log_softmax(c, -1) - 2 * torch.log_softmax(u, -1))


def test_task_configs_official_defaults():
    assert task_config("howto").text == SamplingParams(200, 0.8, 0.7)
    assert task_config("vla").text == SamplingParams(1024, 0.9, 1.0)
    assert task_config("vla").image == SamplingParams(10240, 1.0, 1.0) and task_config("vla").cfg_scale == 3.0
    assert task_config("t2i").image.top_k == 5120 and task_config("t2i").cfg_scale == 5.0
    with pytest.raises(ValueError):
        task_config("dance")


def test_cfg_without_uncond_is_an_error(lm32, tok, ids, prompts):
    with pytest.raises(ValueError, match="uncond_ids"):
        generate(lm32, prompts[0], None, GenerationConfig(), ids, tok)


def test_runtime_end_to_end(ckpt_root):
    rt = Emu35Runtime(ckpt_root / "Emu3.5", device="cpu", dtype=torch.float32)
    camera = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    got = []
    cfg = task_config("vla", force_image_after=5, max_images=1, max_new_tokens=300, seed=0)
    out = rt.generate_interleaved("put the cube in the bowl", [camera], task="vla", config=cfg,
                                  image_area=64 * 64, on_image=got.append)
    assert out.stop_reason == "max_images"
    # output size follows the reference image: 96x128 at area 4096 -> 48x80 px -> 3x5 tokens
    images = [s for s in out.segments if s.kind == "image"]
    assert len(images) == 1 and images[0].codes.shape == (3, 5)
    assert images[0].image.shape == (48, 80, 3) and images[0].image.dtype == np.uint8
    assert len(got) == 1 and np.array_equal(got[0], images[0].image)
    assert out.prompt_tokens > 15 * 1


def test_score_block_is_bidirectional_and_scratch(lm32, tok, ids, prompts):
    """A DiDA-style pass: block tokens see each other both ways; commit_image then overwrites the scratch."""
    cond, uncond = prompts
    config = GenerationConfig(seed=0, max_new_tokens=64)
    session = DecodeSession(lm32, cond, uncond, config, ids)
    header = [ids.boi] + ids.header_ids(2, 2) + [ids.img]
    noisy = torch.tensor([ids.first_visual + 1] * 4)
    a = session.score_block(torch.cat([session.tensor(header), noisy]))
    changed = noisy.clone()
    changed[-1] = ids.first_visual + 7
    b = session.score_block(torch.cat([session.tensor(header), changed]))
    assert a.shape[:2] == (2, len(header) + 4)
    assert (a[:, len(header)] - b[:, len(header)]).abs().max() > 1e-6       # earlier token sees a later one
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-6                          # ...the whole block, header too
    before = lm32(torch.tensor([cond]))[0, -1]
    torch.testing.assert_close(session.logits[0], before, atol=1e-4, rtol=1e-4)   # positions did not move
    codes = torch.tensor([[3, 4], [5, 6]])
    logits = session.commit_image(session.tensor(header), codes)
    block = image_token_ids(codes.numpy(), tok)
    torch.testing.assert_close(logits[0], lm32(torch.tensor([cond + block]))[0, -1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[1], lm32(torch.tensor([uncond + block]))[0, -1], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_compiled_decode_step_matches_eager(lm32, tok, ids, prompts):
    """The opt-in compiled step (static full-cache attention) gives the eager step's logits."""
    eager = DecodeSession(lm32, *prompts, GenerationConfig(seed=0, max_new_tokens=32), ids)
    fast = DecodeSession(lm32, *prompts, GenerationConfig(seed=0, max_new_tokens=32, compile=True), ids)
    for token in ([ids.boi], [ids.first_visual + 3], [ids.first_visual + 9, ids.eol]):
        a = eager.feed(eager.tensor(token), 2)
        b = fast.feed(fast.tensor(token), 2)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_runtime_close(ckpt_root):
    rt = Emu35Runtime(ckpt_root / "Emu3.5", device="cpu", dtype=torch.float32)
    rt.close()
    with pytest.raises(RuntimeError, match="closed"):
        rt.generate_interleaved("x", task="vla")
