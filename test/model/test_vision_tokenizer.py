"""IBQ vision tokenizer: shapes, determinism, batching, input validation, the official resize rule."""

import numpy as np
import pytest
import torch
from PIL import Image

from emu_ros.model import VisionTokenizerError, load_vision_tokenizer, resize_to_area


def images(n=2, h=64, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_encode_decode_shapes(vq):
    codes = vq.encode(images())
    assert codes.shape == (2, 4, 3) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 1024
    pixels = vq.decode(codes)
    assert pixels.shape == (2, 64, 48, 3) and pixels.dtype == np.uint8
    assert vq.decode(codes[0]).shape == (1, 64, 48, 3)          # a single [h, w] grid


def test_deterministic_and_batch_independent(vq):
    x = images(3)
    a, b = vq.encode(x), vq.encode(x)
    assert torch.equal(a, b)
    assert torch.equal(vq.encode(x[1:2])[0], a[1])
    assert np.array_equal(vq.decode(a), vq.decode(a))
    # batch size may change conv kernels' summation order: allow one level of uint8 truncation
    diff = np.abs(vq.decode(a[2:3])[0].astype(int) - vq.decode(a)[2].astype(int))
    assert diff.max() <= 1


def test_codes_are_argmax_of_codebook_dot_product(vq):
    x = torch.as_tensor(images(1)).double() / 127.5 - 1
    z = vq.quant_conv(vq.encoder(x.float().permute(0, 3, 1, 2)))
    scores = torch.einsum("bdhw,nd->bnhw", z, vq.quantize.embedding.weight)
    assert torch.equal(scores.argmax(1), vq.encode(images(1)))


def test_encoding_a_decoded_image_is_stable_in_shape(vq):
    codes = vq.encode(images(1))
    again = vq.encode(vq.decode(codes))
    assert again.shape == codes.shape


@pytest.mark.parametrize("bad,needle", [
    (np.zeros((1, 64, 64, 3), np.float32), "uint8"),
    (np.zeros((64, 64, 3), np.uint8), r"\[N, H, W, 3\]"),
    (np.zeros((1, 64, 64, 4), np.uint8), r"\[N, H, W, 3\]"),
    (np.zeros((1, 60, 64, 3), np.uint8), "multiples of 16"),
])
def test_bad_images_rejected(vq, bad, needle):
    with pytest.raises(VisionTokenizerError, match=needle):
        vq.encode(bad)


def test_bad_codes_rejected(vq):
    with pytest.raises(VisionTokenizerError, match="codes must lie"):
        vq.decode(np.full((1, 2, 2), 5000))
    with pytest.raises(VisionTokenizerError, match="integer"):
        vq.decode(np.zeros((1, 2, 2), np.float32))


def test_official_area_rule():
    assert resize_to_area(np.zeros((1024, 1024, 3), np.uint8), 518400).shape == (720, 720, 3)
    assert resize_to_area(np.zeros((1080, 1920, 3), np.uint8), 518400).shape == (544, 960, 3)
    assert resize_to_area(np.zeros((480, 640, 3), np.uint8), 64 * 64).shape == (48, 80, 3)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    assert np.array_equal(resize_to_area(img, 64 * 64), np.asarray(img.resize((80, 48), Image.BICUBIC)))


def test_bad_directory(tmp_path, vq_dir):
    with pytest.raises(VisionTokenizerError, match="config.yaml not found"):
        load_vision_tokenizer(tmp_path)
    (tmp_path / "config.yaml").write_text((vq_dir / "config.yaml").read_text())
    with pytest.raises(VisionTokenizerError, match="model.ckpt not found"):
        load_vision_tokenizer(tmp_path)
    (tmp_path / "model.ckpt").write_bytes((vq_dir / "model.ckpt").read_bytes()[:1000])
    with pytest.raises(VisionTokenizerError, match="model.ckpt"):
        load_vision_tokenizer(tmp_path)


def test_checkpoint_mismatch_listed(tmp_path, vq_dir):
    state = torch.load(vq_dir / "model.ckpt", weights_only=True)
    del state["encoder.conv_in.weight"]
    state["quantize.embedding.weight"] = state["quantize.embedding.weight"][:10]
    torch.save({"state_dict": state}, tmp_path / "model.ckpt")
    (tmp_path / "config.yaml").write_text((vq_dir / "config.yaml").read_text())
    with pytest.raises(VisionTokenizerError) as info:
        load_vision_tokenizer(tmp_path)
    assert "encoder.conv_in.weight" in str(info.value) and "quantize.embedding.weight" in str(info.value)


def test_pickled_code_is_never_run(tmp_path, vq_dir, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"x": Evil()}, tmp_path / "model.ckpt")
    (tmp_path / "config.yaml").write_text((vq_dir / "config.yaml").read_text())
    with pytest.raises(VisionTokenizerError, match="missing"):
        load_vision_tokenizer(tmp_path)
    assert "pwned" not in capsys.readouterr().out


class HyperParams:
    def __init__(self):
        self.lr = 1e-4


def test_training_checkpoint_with_extra_objects_loads(tmp_path, vq_dir, vq):
    """A trainer-style checkpoint (state_dict + pickled hyper-parameter objects) loads its weights."""
    state = torch.load(vq_dir / "model.ckpt", weights_only=True)
    torch.save({"state_dict": state, "hyper_parameters": HyperParams(), "epoch": 3}, tmp_path / "model.ckpt")
    (tmp_path / "config.yaml").write_text((vq_dir / "config.yaml").read_text())
    other = load_vision_tokenizer(tmp_path)
    x = images(1)
    assert torch.equal(other.encode(x), vq.encode(x))


def test_bad_config_field(tmp_path, vq_dir):
    text = (vq_dir / "config.yaml").read_text().replace("- 4\n", "- 4\n  - 8\n", 1)
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(VisionTokenizerError, match="ch_mult"):
        load_vision_tokenizer(tmp_path)
