"""OWLv2 detector: a missing/incomplete weights directory fails at construction with a message that
says what to do; box -> mask geometry; and the load -> infer -> post-process path on a tiny,
randomly initialised OWLv2 built and saved locally (no downloads), including box scaling on a
non-square image."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from emu_ros.core.perception_spec import ObjectSpec, PerceptionSpec
from emu_ros.perception.detection import Detection
from emu_ros.perception.detectors import make_detector
from emu_ros.perception.open_vocab import DetectorUnavailable, Owlv2Detector, box_mask

CUP = ObjectSpec(name="cup", prompt="a cup")


# --- unavailable weights ---------------------------------------------------------------------------------

def test_missing_directory_names_it(tmp_path):
    missing = tmp_path / "no_such_owlv2"
    with pytest.raises(DetectorUnavailable) as e:
        Owlv2Detector(str(missing))
    assert str(missing) in str(e.value)
    assert "huggingface-cli download" in str(e.value) and "detector_dir" in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_incomplete_directory_names_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(DetectorUnavailable) as e:
        Owlv2Detector(str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg
    assert "weights" in msg and "tokenizer" in msg and "image processor" in msg
    assert "model config" not in msg  # config.json is there


def test_make_detector_raises_for_missing_dir(tmp_path):
    missing = str(tmp_path / "absent")
    spec = PerceptionSpec(detector="owlv2", detector_dir=missing, objects=(CUP,))
    with pytest.raises(DetectorUnavailable, match="absent"):
        make_detector(spec)


# --- box -> mask -----------------------------------------------------------------------------------------

def test_box_mask_central_part():
    m = box_mask((10, 20, 30, 60), height=100, width=100, keep=0.6)  # 20 x 40 box -> 12 x 24 centre
    assert m.shape == (100, 100) and m.dtype == bool
    rows, cols = np.nonzero(m)
    assert m.sum() == 12 * 24
    assert (cols.min(), cols.max()) == (14, 25)  # x in [14, 26)
    assert (rows.min(), rows.max()) == (28, 51)  # y in [28, 52)


def test_box_mask_full_box_and_clipping():
    assert box_mask((0, 0, 8, 4), 10, 10, keep=1.0).sum() == 32
    m = box_mask((-50, -50, 150, 30), height=40, width=60, keep=0.6)  # centre part x -10..110, y -34..14
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 13, 0, 59)
    assert m.sum() == 14 * 60


def test_box_mask_tiny_and_outside():
    m = box_mask((20.1, 10.1, 20.3, 10.3), 32, 32)  # sub-pixel box: the pixel under its centre
    assert m.sum() == 1 and m[10, 20]
    assert not box_mask((100, 100, 120, 120), 32, 32).any()  # wholly off the image
    assert not box_mask((np.nan, 0, 4, 4), 32, 32).any()
    with pytest.raises(ValueError):
        box_mask((0, 0, 4, 4), 8, 8, keep=0.0)


# --- a tiny real OWLv2 -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_owlv2_dir(tmp_path_factory):
    """A randomly initialised OWLv2 (hidden 32, 2 layers, 64x64 input, 16 px patches) and a processor
    whose CLIP tokenizer has a letters-only vocabulary, saved the way a downloaded checkpoint is."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("PIL")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    # CLIP conventions the model relies on: pad id 0 (a query whose first id is 0 is masked out) and
    # end-of-text the largest id (the pooled text token is found by argmax over the ids)
    tokens = ["!"] + letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    d = tmp_path_factory.mktemp("tiny_owlv2")
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(vocab=str(d / "vocab.json"), merges=str(d / "merges.txt"),
                                           pad_token="!", model_max_length=16)
    image_processor = transformers.Owlv2ImageProcessor(size={"height": 64, "width": 64})
    config = transformers.Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=0,
                         bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32)
    torch.manual_seed(0)
    transformers.Owlv2ForObjectDetection(config).save_pretrained(str(d))
    transformers.Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(d))
    return str(d)


@pytest.fixture(scope="module")
def tiny_detector(tiny_owlv2_dir):
    return Owlv2Detector(tiny_owlv2_dir, threshold=0.0)


def test_tiny_model_detects_well_formed(tiny_detector):
    """Random weights give meaningless boxes: this asserts only that the real load -> infer ->
    post-process path runs and yields well-formed Detections on a non-square image."""
    rgb = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    dets = tiny_detector.detect(rgb, CUP, np.eye(3))
    assert 1 <= len(dets) <= 4
    for d in dets:
        assert isinstance(d, Detection) and d.obj == "cup" and d.source == "owlv2"
        assert d.mask.shape == (48, 80) and d.mask.dtype == bool and d.pixels > 0
        assert 0.0 <= d.score <= 1.0
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    boxes, scores = tiny_detector.boxes(rgb, CUP.prompt)
    assert boxes.shape == (16, 4) and scores.shape == (16,)  # one box per 16 px patch of the 64 px square
    assert scores.max() > 0.0  # the query was not masked out (a masked query scores exactly 0)
    ids = tiny_detector.processor(text=[["a cup"]], return_tensors="np")["input_ids"][0]
    assert ids[0] > 0 and ids.argmax() == 5  # start, "a</w>", "c", "u", "p</w>", then end-of-text at 5


def _fake_model(cxcywh, logits):
    """Stands in for the network: fixed normalised boxes and logits, through the real post-processing."""
    import torch

    out = SimpleNamespace(pred_boxes=torch.tensor([cxcywh], dtype=torch.float32),
                          logits=torch.tensor([logits], dtype=torch.float32)[..., None])
    return lambda **inputs: out


def test_boxes_scaled_by_padded_square(tiny_owlv2_dir):
    """OWLv2 pads H x W to a max(H, W) square (bottom/right) before resizing: normalised box
    coordinates are fractions of that square on both axes, not of W and H separately."""
    det = Owlv2Detector(tiny_owlv2_dir, threshold=0.5)
    # 48 x 80 image -> 80 x 80 square. Box centred at (0.25, 0.25) of the square, 0.2 wide/high
    # -> pixels x, y in [12, 28]; a second box lies wholly in the padding (y > 48)
    det.model = _fake_model([[0.25, 0.25, 0.2, 0.2], [0.5, 0.9, 0.1, 0.1]], [3.0, 4.0])
    boxes, _ = det.boxes(np.zeros((48, 80, 3), np.uint8), "a cup")
    np.testing.assert_allclose(boxes[0], [12.0, 12.0, 28.0, 28.0], atol=1e-4)
    dets = det.detect(np.zeros((48, 80, 3), np.uint8), CUP, np.eye(3))
    assert len(dets) == 1  # the box in the padding is dropped, its mask would be empty
    rows, cols = np.nonzero(dets[0].mask)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (15, 24, 15, 24)  # middle 60 %: [15.2, 24.8]


def test_threshold_order_suppression_and_cap(tiny_owlv2_dir):
    det = Owlv2Detector(tiny_owlv2_dir, threshold=0.5)
    sig_inv = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    boxes = [[0.1, 0.1, 0.1, 0.1], [0.3, 0.3, 0.1, 0.1], [0.302, 0.3, 0.1, 0.1],  # 2 overlaps 1
             [0.5, 0.2, 0.1, 0.1], [0.7, 0.2, 0.1, 0.1], [0.9, 0.2, 0.1, 0.1], [0.5, 0.1, 0.1, 0.1]]
    scores = [0.6, 0.9, 0.85, 0.7, 0.8, 0.55, 0.4]
    det.model = _fake_model(boxes, [sig_inv(p) for p in scores])
    dets = det.detect(np.zeros((60, 60, 3), np.uint8), CUP, np.eye(3))
    assert [round(d.score, 3) for d in dets] == [0.9, 0.8, 0.7, 0.6]  # 0.85 suppressed, 0.4 below, cap 4
    det.threshold = 0.95
    assert det.detect(np.zeros((60, 60, 3), np.uint8), CUP, np.eye(3)) == []
