"""The shipped simulator world model (models/sim-aloha): it loads, passes check-model, plans, and bad copies of it
fail with a message naming the file or field (the benchmarks, not these tests, measure how well it plans)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from emu_ros.guidance.backends.sim_world_model import ShippedModelMissing, shipped_model_dir

ROOT = shipped_model_dir()


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    dst = tmp_path / "sim-aloha"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns("*.md"))
    return dst


def _view(h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def _request(image: np.ndarray, task: str = "transfer the cube"):
    from emu_ros.core.types import CameraFrame, Observation, PlanRequest

    frame = CameraFrame(camera="cam_high", image=image, stamp=0.0)
    return PlanRequest(task=task, observation=Observation(frames={"cam_high": frame}))


def test_the_shipped_model_passes_check_model() -> None:
    from emu_ros.model.check import check_model_dir

    result = check_model_dir(ROOT / "Emu3.5", ROOT / "Emu3.5-VisionTokenizer")
    assert result.ok, result.problems
    assert (ROOT / "Emu3.5" / "dida_config.json").is_file() and (ROOT / "README.md").is_file()


def test_it_loads_as_the_dida_backend_and_answers_a_plan_request() -> None:
    from emu_ros.guidance.backends import make_world_model
    from emu_ros.guidance.parser import OutputEnd

    wm = make_world_model("sim-world-model")
    assert wm.name == "emu35-dida" and wm.view_grid == (6, 8)
    items = list(wm.plan(_request(_view())))
    assert isinstance(items[-1], OutputEnd) and not items[-1].truncated


def test_a_truncated_shard_is_named(copy: Path) -> None:
    from emu_ros.guidance.backends import make_world_model

    shard = copy / "Emu3.5" / "model-00001-of-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(Exception, match="model-00001-of-00001.safetensors"):
        make_world_model("sim-world-model", model_root=str(copy))


def test_a_corrupt_vision_tokenizer_is_named(copy: Path) -> None:
    from emu_ros.guidance.backends import make_world_model

    (copy / "Emu3.5-VisionTokenizer" / "model.ckpt").write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(Exception, match="model.ckpt"):
        make_world_model("sim-world-model", model_root=str(copy))


def test_a_missing_dida_config_is_an_error_not_a_silent_ar_fallback(copy: Path) -> None:
    from emu_ros.guidance.backends import make_world_model

    (copy / "Emu3.5" / "dida_config.json").unlink()
    with pytest.raises(Exception, match="dida_config.json"):
        make_world_model("sim-world-model", model_root=str(copy))


def test_a_missing_model_says_how_to_get_it(tmp_path: Path) -> None:
    from emu_ros.guidance.backends.sim_world_model import sim_world_model_settings

    with pytest.raises(ShippedModelMissing, match="make world-model"):
        sim_world_model_settings(str(tmp_path / "nowhere"))


def test_a_view_of_another_shape_is_refused_naming_the_field() -> None:
    from emu_ros.core.types import PlanningError
    from emu_ros.guidance.backends import make_world_model

    wm = make_world_model("sim-world-model")
    with pytest.raises(PlanningError, match="view_grid"):
        list(wm.plan(_request(_view(128, 96))))    # portrait: an 8x6 grid the model never saw
    assert list(wm.plan(_request(_view(480, 640))))  # the profile's 640x480 camera resizes to its grid
