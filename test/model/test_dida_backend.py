"""DiDA through the runtime and the guidance backend: decoder="dida" / mode="dida" load dida_config.json."""

import shutil

import numpy as np
import pytest
import torch

from emu_ros.guidance.backends import make_world_model
from emu_ros.guidance.backends.emu35 import Emu35Unavailable
from emu_ros.model import Emu35Runtime, task_config
from emu_ros.model.dida import DiDAConfig, DiDAImageDecoder


@pytest.fixture(scope="module")
def adapted_root(ckpt_root, tmp_path_factory):
    """The tiny checkpoint with a dida_config.json (random weights: well-formedness only, not quality)."""
    root = tmp_path_factory.mktemp("adapted")
    shutil.copytree(ckpt_root / "Emu3.5", root / "Emu3.5")
    shutil.copytree(ckpt_root / "Emu3.5-VisionTokenizer", root / "Emu3.5-VisionTokenizer")
    DiDAConfig(noise="mask", passes=3).save(root / "Emu3.5")
    return root


def test_runtime_decoder_dida(adapted_root):
    rt = Emu35Runtime(adapted_root / "Emu3.5", device="cpu", dtype=torch.float32, decoder="dida", dida_passes=2)
    assert isinstance(rt.image_decoder, DiDAImageDecoder) and rt.image_decoder.passes == 2
    camera = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cfg = task_config("vla", force_image_after=3, max_images=1, max_new_tokens=60, seed=0)
    out = rt.generate_interleaved("open the drawer", [camera], config=cfg, image_area=64 * 64)
    assert out.stop_reason == "max_images" and rt.image_decoder.stats.passes == 2
    images = [s for s in out.segments if s.kind == "image"]
    assert len(images) == 1 and images[0].codes.shape == (4, 4) and images[0].image.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="decoder must be"):
        Emu35Runtime(adapted_root / "Emu3.5", decoder="maskgit")


def test_backend_mode_dida(ckpt_root, adapted_root):
    with pytest.raises(Emu35Unavailable, match="need DiDA adaptation.*finetune_embodied.train --objective dida"):
        make_world_model("emu35-dida", model_dir=str(ckpt_root / "Emu3.5"), dtype="float32")
    wm = make_world_model("emu35-dida", model_dir=str(ckpt_root / "Emu3.5"), dida_dir=str(adapted_root / "Emu3.5"),
                          dtype="float32")
    assert wm.name == "emu35-dida" and isinstance(wm.runtime.image_decoder, DiDAImageDecoder)
    assert wm.runtime.image_decoder.passes == 3
    ar = make_world_model("emu35", model_dir=str(adapted_root / "Emu3.5"), dtype="float32", mode="ar")
    assert ar.name == "emu35-ar" and ar.runtime.image_decoder is None


def test_backend_decoder_auto_follows_the_weights(ckpt_root, adapted_root):
    """The default decoder: DiDA where dida_config.json is, AR on the plain official layout."""
    plain = make_world_model("emu35", model_dir=str(ckpt_root / "Emu3.5"), dtype="float32")
    assert plain.name == "emu35-ar" and plain.runtime.image_decoder is None
    adapted = make_world_model("emu35", model_dir=str(adapted_root / "Emu3.5"), dtype="float32")
    assert adapted.name == "emu35-dida" and isinstance(adapted.runtime.image_decoder, DiDAImageDecoder)
    beside = make_world_model("emu35", model_dir=str(ckpt_root / "Emu3.5"), dida_dir=str(adapted_root / "Emu3.5"),
                              dtype="float32")
    assert beside.name == "emu35-dida"
