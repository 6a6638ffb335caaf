"""Image-in-sequence codec and interleaved parsing (official Emu3.5 format, robust to truncation)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from emu_ros.model import build_prompt, build_unconditional_prompt, image_string, image_token_ids, \
    parse_image_block, parse_interleaved


def test_block_layout(tok):
    codes = np.arange(12).reshape(3, 4)
    ids = image_token_ids(codes, tok)
    assert ids[:5] == [151852, 18, 9, 19, 151851]                  # BOI "3*4" IMG
    body = ids[5:]
    assert len(body) == 3 * (4 + 1) and body[-1] == 151853         # H*(W+1) incl. EOI
    assert body.count(151846) == 2 and body[4] == 151846 and body[-2] != 151846   # no EOL after last row
    assert 151847 not in ids                                       # no EOF (unlike Emu3 v1)
    assert tok.encode(image_string(codes)) == ids


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**31 - 1))
def test_block_round_trip(tok, h, w, seed):
    codes = np.random.default_rng(seed).integers(0, 1024, (h, w))
    block = parse_image_block(image_token_ids(codes, tok), tok)
    assert (block.height, block.width) == (h, w) and np.array_equal(block.codes, codes)


def test_truncated_or_ragged_blocks_return_none(tok):
    ids = image_token_ids(np.zeros((2, 3), int), tok)
    for cut in range(len(ids) - 1):
        assert parse_image_block(ids[:cut], tok) is None
    ragged = ids[:6] + ids[7:]                                      # one code missing in row 0
    assert parse_image_block(ragged, tok) is None


def test_interleaved_parse(tok):
    img = image_token_ids(np.ones((2, 2), int), tok)
    ids = (tok.encode("<|extra_60|>plan<|extra_61|>Step 1: grasp.<|extra_50|>gripper closes<|extra_51|>")
           + img + tok.encode("Step 2: lift.<|extra_101|><|extra_204|>"))
    segs = parse_interleaved(ids, tok)
    assert [s.kind for s in segs] == ["global_cot", "text", "image_cot", "image", "text"]
    assert segs[0].text == "plan" and segs[1].text == "Step 1: grasp." and segs[2].text == "gripper closes"
    assert segs[3].codes.shape == (2, 2) and segs[4].text == "Step 2: lift."


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60))
def test_parse_never_raises_on_truncation(tok, cut):
    img = image_token_ids(np.ones((3, 3), int), tok)
    ids = tok.encode("Step one.") + img + tok.encode("Step two.") + img
    segs = parse_interleaved(ids[:cut], tok)
    for s in segs:
        assert s.kind in ("text", "image", "partial_image")
        if s.kind == "image":
            assert s.codes.shape == (3, 3)


def test_prompts_match_official_templates():
    assert build_prompt("vla", "fold the shirt") == (
        "<|extra_203|>You are a helpful assistant for vla task. USER: fold the shirt ASSISTANT: <|extra_100|>")
    assert build_prompt("howto", "q", ["<IMG>"]) == (
        "<|extra_203|>You are a helpful assistant for howto task. Please generate a response with interleaved "
        "text and images. USER: q<IMG> ASSISTANT: <|extra_100|>")
    assert build_prompt("x2i", "q", ["<IMG>"]).endswith("USER: <IMG>q ASSISTANT: <|extra_100|>")
    assert build_unconditional_prompt() == "<|extra_203|>You are a helpful assistant. USER:  ASSISTANT: <|extra_100|>"
    assert build_unconditional_prompt(["<A>", "<B>"]).endswith("USER: <A><B> ASSISTANT: <|extra_100|>")
