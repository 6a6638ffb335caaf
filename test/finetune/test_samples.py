"""Interleaved vla samples: official format round trip, image-token cache, length limits, packing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finetune_embodied.dataset import LeRobotDatasetReader
from finetune_embodied.samples import (IGNORE_INDEX, ImageTokenCache, SampleBuilder, SampleConfig, SampleError,
                                       collate, pack_samples, vision_tokenizer_id)
from finetune_embodied.segment import segment_dataset

AREA = 32 * 48  # 32x48 frames stay 32x48 -> 2x3 tokens


@pytest.fixture(scope="module")
def parts(demo_dataset: Path, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    from emu_ros.model import load_tokenizer, load_vision_tokenizer

    reader = LeRobotDatasetReader(demo_dataset)
    tok = load_tokenizer(tiny_checkpoint / "Emu3.5")
    vq_dir = tiny_checkpoint / "Emu3.5-VisionTokenizer"
    vq = load_vision_tokenizer(vq_dir)
    cache_dir = tmp_path_factory.mktemp("cache")
    return reader, tok, vq, vq_dir, cache_dir


def _builder(parts, **kw):
    reader, tok, vq, vq_dir, cache_dir = parts
    cache = ImageTokenCache(cache_dir, reader, vq, AREA, vision_tokenizer_id(vq_dir))
    return SampleBuilder(tok, cache, SampleConfig(image_area=AREA, **kw)), cache


def test_sample_round_trip_in_official_format(parts) -> None:
    from emu_ros.model import parse_interleaved

    reader, tok, vq, _, _ = parts
    episodes = segment_dataset(reader)
    builder, cache = _builder(parts)
    samples = builder.build(episodes)
    assert len(samples) == 6  # 3 episodes x (full + one mid-trajectory start)
    full, mid = samples[2], samples[3]
    assert (full.episode_index, full.first_step, mid.first_step) == (1, 0, 1)
    text = tok.decode(full.input_ids)
    prompt, answer = text.split(" ASSISTANT: <|extra_100|>")
    assert prompt.startswith("<|extra_203|>You are a helpful assistant for vla task. USER: Task 1.<|image start|>2*3")
    assert answer.startswith("Step 1: reach 1\n<|image start|>2*3<|image token|>")
    assert answer.endswith("<|image end|><|extra_101|><|extra_204|>")
    # labels: -100 exactly on the prompt, the answer is trained on as is
    n_prompt = len(tok.encode(prompt + " ASSISTANT: <|extra_100|>"))
    assert all(x == IGNORE_INDEX for x in full.labels[:n_prompt])
    assert full.labels[n_prompt:] == full.input_ids[n_prompt:]
    # the answer parses back into step texts and the key-frame codes of the steps
    segs = parse_interleaved(full.input_ids[n_prompt:], tok)
    assert [s.kind for s in segs] == ["text", "image", "text", "image"]
    assert [s.text.strip() for s in segs if s.kind == "text"] == ["Step 1: reach 1", "Step 2: grasp 1"]
    keyframes = [s.keyframe for s in episodes[1].steps]
    expected = vq.encode(np.stack([f for f in reader.frames(1, "top", keyframes)])).numpy()
    np.testing.assert_array_equal(segs[1].codes, expected[0])
    np.testing.assert_array_equal(segs[3].codes, expected[1])
    assert [tok.decode(full.input_ids[a:b]) for a, b in full.text_spans] == ["reach 1", "grasp 1"]
    # the mid-trajectory sample says what is done and shows the key frame after step 1
    mid_text = tok.decode(mid.input_ids)
    assert "Steps already done: reach 1. The images show the scene now." in mid_text
    assert mid_text.split(" ASSISTANT: <|extra_100|>")[1].startswith("Step 2: grasp 1\n")
    # second build: every image comes from the cache
    misses = cache.misses
    _builder(parts)[0].build(episodes)
    assert cache.misses == misses


def test_length_limit_drops_trailing_steps_then_errors(parts) -> None:
    reader = parts[0]
    episodes = segment_dataset(reader)
    full = _builder(parts)[0].build(episodes[:1])[0]
    one_step = full.text_spans[0][1] + 1 + 14 + 2  # "\n" + image block (2*3 image = 14 ids) + ESS/EOS
    builder, _ = _builder(parts, max_length=one_step + 3, mid_trajectory_starts=False)
    cut = builder.build(episodes[:1])[0]
    assert len(cut.text_spans) == 1 and len(cut) <= one_step + 3
    with pytest.raises(SampleError, match="no sample fits max_length=40"):
        _builder(parts, max_length=40)[0].build(episodes)


def test_packing_and_collate(parts) -> None:
    samples = _builder(parts)[0].build(segment_dataset(parts[0]))
    longest = max(len(s) for s in samples)
    packed = pack_samples(samples, 2 * longest)
    assert len(packed) < len(samples)
    assert sum(len(p) for p in packed) == sum(len(s) for s in samples)
    assert all(len(p) <= 2 * longest for p in packed)
    assert sum(len(p.text_spans) for p in packed) == sum(len(s.text_spans) for s in samples)
    batch = collate(samples[:2], pad_id=151643)
    assert batch["input_ids"].shape == (2, max(len(samples[0]), len(samples[1])))
    short = int(np.argmin([len(samples[0]), len(samples[1])]))
    assert int(batch["labels"][short, -1]) == IGNORE_INDEX
    with pytest.raises(SampleError, match="exceeds"):
        pack_samples(samples, longest - 1)


def test_two_cameras_in_the_prompt_one_in_the_steps(parts) -> None:
    reader, tok = parts[0], parts[1]
    builder, _ = _builder(parts, cameras=["top", "left_wrist"], mid_trajectory_starts=False)
    sample = builder.build(segment_dataset(reader)[:1])[0]
    prompt, answer = tok.decode(sample.input_ids).split(" ASSISTANT: <|extra_100|>")
    assert prompt.count("<|image start|>") == 2 and answer.count("<|image start|>") == 2  # 2 views, 2 steps


def test_failed_attempts_become_failure_state_starts(parts, make_dataset, tmp_path: Path) -> None:
    """An attempt annotated unfinished is never in an answer; the start after it names the failure and shows
    the scene then; history dropout and the finished-task start follow their options."""
    from finetune_embodied.writer import LeRobotDatasetWriter

    _, tok, vq, vq_dir, _ = parts
    w = LeRobotDatasetWriter.create(tmp_path / "ds", fps=50, features={
        "observation.images.top": {"dtype": "video", "shape": (32, 48, 3)},
        "observation.state": {"dtype": "float32", "shape": (14,)}})
    for i in range(30):
        w.add_frame({"observation.images.top": np.full((32, 48, 3), 20 + 7 * i, np.uint8),
                     "observation.state": np.zeros(14, np.float32), "task": "move the block"})
    w.save_episode(subtasks=[(0, "reach"), (10, "grasp"), (20, "grasp")],
                   outcomes={10: "unfinished: gripper closed on nothing"})
    root = w.finalize()
    reader = LeRobotDatasetReader(root)
    (episode,) = segment_dataset(reader)
    assert [(s.text, s.outcome) for s in episode.steps] == [
        ("reach", ""), ("grasp", "unfinished: gripper closed on nothing"), ("grasp", "")]
    cache = ImageTokenCache(tmp_path / "cache", reader, vq, AREA, vision_tokenizer_id(vq_dir))
    texts = [tok.decode(s.input_ids) for s in
             SampleBuilder(tok, cache, SampleConfig(image_area=AREA, done_samples=True)).build([episode])]
    answers = [t.split(" ASSISTANT: <|extra_100|>")[1] for t in texts]
    # from the start: reach, then the grasp that worked (the missed one is not a step to learn)
    assert answers[0].count("Step ") == 2 and "Step 1: reach\n" in answers[0] and "Step 2: grasp\n" in answers[0]
    # after the missed grasp: the failure is in the question, the answer is the retry
    assert 'Steps already done: reach. The step "grasp" was not finished (gripper closed on nothing).' in texts[2]
    assert answers[2].startswith("Step 2: grasp\n") and answers[2].count("Step ") == 1
    # the finished task: the answer is the end of the answer and nothing else
    assert answers[-1] == "<|extra_101|><|extra_204|>" and len(texts) == 4
    # history dropout 1.0: every later start is asked as a fresh task (progress read from the view alone)
    dropped = [tok.decode(s.input_ids) for s in
               SampleBuilder(tok, cache, SampleConfig(image_area=AREA, history_dropout=1.0)).build([episode])]
    assert all("already done" not in t and "not finished" not in t for t in dropped)
    assert dropped[2].split(" ASSISTANT: <|extra_100|>")[1].startswith("Step 1: grasp\n")
