"""Step parser: fixed cases for each deviation, and hypothesis properties on arbitrary output."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu_ros.guidance.parser import HEADER_RE, StepParser, parse_interleaved

IMG = np.full((8, 8, 3), 7, np.uint8)


def texts(result):
    return [s.text for s in result.steps]


def test_numbered_text_only_styles():
    out = parse_interleaved("Here is the plan:\nStep 1: Reach the cube\n2. Grasp it\n(3) Lift it\n4) Place it")
    assert texts(out) == ["Reach the cube", "Grasp it", "Lift it", "Place it"]
    assert any("preamble" in n for n in out.notes)
    assert not out.truncated
    assert all(s.image is None for s in out.steps)


def test_unnumbered_text_lines_become_steps():
    out = parse_interleaved("reach the cube\n\ngrasp the cube\nlift the cube\n")
    assert texts(out) == ["reach the cube", "grasp the cube", "lift the cube"]
    assert "no step numbering: one step per line" in out.notes


def test_interleaved_steps_get_their_images():
    a, b = IMG.copy(), IMG.copy() + 1
    out = parse_interleaved(["Step 1: reach the cube.", a, "Step 2: grasp the cube.", b])
    assert texts(out) == ["reach the cube.", "grasp the cube."]
    assert out.steps[0].image is not None and np.array_equal(out.steps[0].image, a)
    assert np.array_equal(out.steps[1].image, b)
    assert [s.index for s in out.steps] == [0, 1]


def test_unnumbered_interleaved_multiline_text_is_one_step():
    out = parse_interleaved(["Reach the cube\nwith the right arm", IMG, "Grasp it", IMG])
    assert texts(out) == ["Reach the cube with the right arm", "Grasp it"]


def test_image_without_text_is_kept_with_a_note():
    out = parse_interleaved([IMG, "Step 1: grasp", IMG])
    assert texts(out) == ["", "grasp"]
    assert "image without text" in out.steps[0].notes


def test_text_without_image_between_images():
    out = parse_interleaved(["Step 1: reach", IMG, "Step 2: grasp\nStep 3: lift", IMG])
    assert texts(out) == ["reach", "grasp", "lift"]
    assert out.steps[1].image is None and "text without image" in out.steps[1].notes
    assert out.steps[2].image is not None


def test_truncated_after_images_flags_last_step():
    out = parse_interleaved(["Step 1: reach", IMG, "Step 2: gra"])
    assert out.truncated
    assert out.steps[-1].text == "gra"
    assert any("truncated" in n for n in out.steps[-1].notes)


def test_truncated_flag_from_caller():
    out = parse_interleaved("1. reach\n2. gras", truncated=True)
    assert out.truncated and any("truncated" in n for n in out.steps[-1].notes)


def test_special_tokens_and_cot_blocks_are_removed():
    out = parse_interleaved(["<|extra_60|>I will plan this.<|extra_61|>Step 1: reach the cube<|extra_50|>a cube under the "
                             "gripper<|extra_51|>", IMG, "<|extra_204|>"])
    assert texts(out) == ["reach the cube"]
    assert any(n.startswith("global_cot") for n in out.steps[0].notes)
    assert any(n.startswith("image_cot") for n in out.steps[0].notes)


def test_unterminated_cot_is_truncation():
    out = parse_interleaved(["Step 1: reach", IMG, "<|extra_60|>thinking about"])
    assert out.truncated
    assert any("unterminated" in n for n in out.notes)


def test_invalid_items_are_noted_not_raised():
    out = parse_interleaved([3, None, object(), np.zeros((2,)), np.zeros((4, 4, 5)), "Step 1: reach", b"\n2. grasp\xff"])
    assert texts(out) == ["reach", "grasp\ufffd"]
    assert any("ignored output item of type int" in n for n in out.notes)
    assert any("invalid image" in n for n in out.notes)


def test_image_coercion_grey_rgba_float():
    out = parse_interleaved(["a", np.zeros((4, 4)), "b", np.zeros((4, 4, 4), np.uint8), "c", np.ones((4, 4, 3))])
    assert [s.image.shape for s in out.steps] == [(4, 4, 3)] * 3
    assert out.steps[2].image.dtype == np.uint8 and out.steps[2].image.max() == 255


def test_streaming_emits_step_once_next_header_is_complete():
    p = StepParser()
    assert p.feed_text("Step 1: reach the cube\nStep") == []
    assert p.feed_text(" 1") == []  # "Step 1" may still become "Step 12"
    got = p.feed_text("2: grasp")
    assert [s.text for s in got] == ["reach the cube"]
    got = p.feed_image(IMG)
    assert [(s.text, s.image is not None) for s in got] == [("grasp", True)]
    assert p.finish() == []
    assert [s.index for s in p.steps] == [0, 1]


def test_generator_that_raises_is_recorded():
    def gen():
        yield "Step 1: reach"
        yield IMG
        raise RuntimeError("decoder exploded")

    out = parse_interleaved(gen())
    assert texts(out) == ["reach"]
    assert out.truncated and any("decoder exploded" in n for n in out.notes)


# ---- properties --------------------------------------------------------------------------------
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)


@st.composite
def step_text(draw):
    """A well-formed instruction: words with optional commas/digits inside, no header look-alike."""
    words = draw(st.lists(WORD, min_size=1, max_size=6))
    extra = draw(st.sampled_from(["", " 8 cm", ", then stop", " to the left"]))
    text = " ".join(words) + extra
    if HEADER_RE.match(text):  # e.g. "Step" + digits would read as a header
        text = "do " + text
    return text


def chunked(text: str, cuts: list) -> list:
    cuts = sorted({c % (len(text) + 1) for c in cuts})
    parts, prev = [], 0
    for c in cuts + [len(text)]:
        parts.append(text[prev:c])
        prev = c
    return [p for p in parts if p]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(step_text(), st.booleans()), min_size=1, max_size=8),
       style=st.sampled_from(["Step {n}: ", "{n}. ", "{n}) ", "({n}) ", "**Step {n}:** ", "step {n} - "]),
       cuts=st.lists(st.integers(0, 10_000), max_size=12),
       newline_after=st.booleans())
def test_every_well_formed_numbered_step_survives(steps, style, cuts, newline_after):
    """Numbered output, any images present or missing, text split anywhere: every step survives."""
    items = []
    images = []
    for n, (text, with_image) in enumerate(steps, start=1):
        chunk = style.format(n=n) + text + ("\n" if newline_after or not with_image else "")
        items.extend(chunked(chunk, cuts))
        img = np.full((4, 4, 3), n, np.uint8) if with_image else None
        images.append(img)
        if img is not None:
            items.append(img)
    if not steps[-1][1]:
        # a trailing image-less step after images would count as truncated: terminate it properly
        pass
    out = parse_interleaved(items)
    assert texts(out) == [" ".join(t.split()) for t, _ in steps]
    for s, img in zip(out.steps, images):
        if img is None:
            assert s.image is None
        else:
            assert s.image is not None and np.array_equal(s.image, img)


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(step_text(), min_size=1, max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_every_unnumbered_interleaved_step_survives(steps, cuts):
    items = []
    for n, text in enumerate(steps, start=1):
        items.extend(chunked(text, cuts))
        items.append(np.full((4, 4, 3), n, np.uint8))
    out = parse_interleaved(items)
    assert texts(out) == [" ".join(t.split()) for t in steps]
    assert all(s.image is not None and s.image[0, 0, 0] == n for n, s in enumerate(out.steps, start=1))


def _item():
    return st.one_of(
        st.text(max_size=60),
        st.sampled_from(["Step 1:", "2.", "\n", "<|extra_60|>", "<|extra_61|>", "<|extra_50|>", "<|extra_51|>",
                         "<|", "|>", "(3)", "**", "<|extra_204|>", "step 12 -"]),
        st.builds(lambda h, w, c: np.zeros((h, w, c), np.uint8), st.integers(0, 5), st.integers(0, 5),
                  st.sampled_from([1, 3, 4, 5])),
        st.builds(lambda n: np.full((3, 3, 3), n, dtype=np.float64), st.floats(allow_nan=True, allow_infinity=True)),
        st.none(), st.integers(), st.binary(max_size=20),
    )


@settings(max_examples=300, deadline=None)
@given(items=st.lists(_item(), max_size=25), truncated=st.booleans())
def test_never_raises_on_arbitrary_output(items, truncated):
    out = parse_interleaved(items, truncated=truncated)
    assert [s.index for s in out.steps] == list(range(len(out.steps)))
    for s in out.steps:
        assert isinstance(s.text, str)
        assert s.image is None or (s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(st.one_of(st.text(max_size=40), st.just(IMG)), max_size=15),
       cuts=st.lists(st.integers(0, 1000), max_size=8))
def test_streaming_equals_batch_for_any_split(items, cuts):
    """Feeding text in arbitrary fragments gives the same steps as feeding it whole."""
    fragmented = []
    for it in items:
        fragmented.extend(chunked(it, cuts) if isinstance(it, str) else [it])
    a, b = parse_interleaved(items), parse_interleaved(fragmented)
    assert texts(a) == texts(b)
    assert [s.image is None for s in a.steps] == [s.image is None for s in b.steps]


@pytest.mark.parametrize("raw", ["", "   \n\n", "<|extra_204|>", "Step 1:"])
def test_empty_outputs_give_no_steps(raw):
    assert [s for s in parse_interleaved(raw).steps if s.text] == []
