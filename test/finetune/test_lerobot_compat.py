"""Compatibility with the real lerobot 0.6.1 ``LeRobotDataset`` (run in its own venv through subprocess).

Both directions: a dataset written by lerobot is read by our reader (frames, episode boundaries, tasks), and a
dataset written by our writer is read by lerobot (frames, boundaries, tasks, subtask language rows).
Create the venv with ``scripts/setup_lerobot_env.sh``; run with ``pytest -m lerobot test/finetune``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finetune_embodied.dataset import LeRobotDatasetReader

REPO_ROOT = Path(__file__).resolve().parents[2]
LEROBOT_PYTHON = Path(os.environ.get("LEROBOT_VENV", REPO_ROOT / ".venv-lerobot")) / "bin" / "python"
SIDE = Path(__file__).with_name("lerobot_side.py")

pytestmark = [
    pytest.mark.lerobot,
    pytest.mark.skipif(not LEROBOT_PYTHON.exists(),
                       reason=f"lerobot 0.6.1 venv not found at {LEROBOT_PYTHON}; create it with "
                              "scripts/setup_lerobot_env.sh (or set LEROBOT_VENV)"),
]


def _run_lerobot(verb: str, root: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH="")
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run([str(LEROBOT_PYTHON), str(SIDE), verb, str(root)], capture_output=True, text=True,
                          env=env, timeout=240, check=False)
    assert proc.returncode == 0, f"lerobot side failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _side_module():
    sys.path.insert(0, str(SIDE.parent))
    try:
        import lerobot_side  # the same frame_value/LENGTHS the lerobot process used
    finally:
        sys.path.pop(0)
    return lerobot_side


def test_real_lerobot_dataset_reads_with_our_reader(tmp_path: Path) -> None:
    side = _side_module()
    root = tmp_path / "written_by_lerobot"
    _run_lerobot("write", root)
    ds = LeRobotDatasetReader(root)
    assert ds.info.codebase_version == "v3.0" and ds.fps == 50
    assert ds.camera_keys == ["observation.images.cam_high", "observation.images.cam_left_wrist",
                              "observation.images.cam_low"]
    assert [e.length for e in ds.episodes] == list(side.LENGTHS)
    starts = np.cumsum((0,) + side.LENGTHS)
    assert [(e.dataset_from_index, e.dataset_to_index) for e in ds.episodes] == list(zip(starts[:-1], starts[1:]))
    assert sorted(ds.tasks) == ["insert the peg", "transfer the cube"]
    for e, n in enumerate(side.LENGTHS):
        ep = ds.load_episode(e)
        assert set(ep.frame_tasks) == {"transfer the cube" if e != 1 else "insert the peg"}
        assert list(ds.episode_meta(e).tasks) == sorted(set(ep.frame_tasks))
        np.testing.assert_array_equal(ep["observation.state"][:, 0], e * 1000 + np.arange(n))
        idx = list(range(n))  # every frame: checks the av1 time stamps of all episodes in the shared mp4
        levels = ds.frames(e, "cam_high", idx).reshape(n, -1).mean(1)
        expected = np.array([side.frame_value(e, i) for i in idx], dtype=float)
        np.testing.assert_allclose(levels, expected, atol=4)
        wrist = ds.frames(e, "cam_left_wrist", [0, n - 1]).reshape(2, -1).mean(1)
        np.testing.assert_allclose(wrist, 255 - expected[[0, -1]], atol=4)
        low = ds.frames(e, "cam_low", [0, n // 2, n - 1])   # an `image` feature: PNG bytes in the data parquet
        np.testing.assert_array_equal(low[:, 0, 0, 0], [(e * 31 + i) % 256 for i in (0, n // 2, n - 1)])
        assert "observation.images.cam_low" not in ep.raw_columns   # images are not loaded with the table


def test_our_writer_reads_with_real_lerobot(tmp_path: Path, make_dataset, pixel_of) -> None:
    root = make_dataset(tmp_path / "written_by_us")
    out = _run_lerobot("read", root)
    lengths = (20, 23, 18)
    assert out["num_episodes"] == 3 and out["num_frames"] == sum(lengths) and out["fps"] == 50
    assert out["cameras"] == ["observation.images.top", "observation.images.left_wrist"]
    items = out["items"]
    expected_pairs = [(e, i) for e, n in enumerate(lengths) for i in range(n)]
    assert [(it["episode"], it["frame"]) for it in items] == expected_pairs
    for it in items:
        e, i = it["episode"], it["frame"]
        assert it["task"] == f"task {e % 2}"
        assert it["state0"] == e * 1000 + i
        assert abs(it["levels"]["observation.images.top"] - pixel_of(e, i)) < 4
        assert abs(it["levels"]["observation.images.left_wrist"] - (255 - pixel_of(e, i))) < 4
        n = lengths[e]
        assert it["subtasks"] == [[0.0, f"reach {e}"], [pytest.approx((n // 2) / 50), f"grasp {e}"]]
