"""LeRobot v3.0 reader/writer: frames, episode boundaries, tasks, step annotations and bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finetune_embodied.dataset import (CodebaseVersionError, EpisodeIndexError, LeRobotDatasetReader,
                                       LeRobotFormatError, MissingVideoError, UnknownCameraError)
from finetune_embodied.writer import DatasetWriterError, LeRobotDatasetWriter

LENGTHS = (20, 23, 18)


def _gray(frames: np.ndarray) -> np.ndarray:
    """Mean gray level per frame (flat test images survive lossy encoding to within a few levels)."""
    return frames.reshape(len(frames), -1).mean(axis=1)


def test_metadata_episodes_and_tasks(demo_dataset: Path) -> None:
    ds = LeRobotDatasetReader(demo_dataset)
    assert ds.fps == 50 and ds.info.robot_type == "aloha"
    assert ds.camera_keys == ["observation.images.top", "observation.images.left_wrist"]
    assert ds.episode_indices == [0, 1, 2]
    assert [e.length for e in ds.episodes] == list(LENGTHS)
    assert ds.tasks == ["task 0", "task 1"]
    # boundaries: contiguous global index ranges; episodes 0,1 share file 0, episode 2 is in file 1
    assert [(e.dataset_from_index, e.dataset_to_index) for e in ds.episodes] == [(0, 20), (20, 43), (43, 61)]
    assert [e.data_file_index for e in ds.episodes] == [0, 0, 1]
    span = ds.episodes[1].videos["observation.images.top"]
    assert span.from_timestamp == pytest.approx(20 / 50) and span.to_timestamp == pytest.approx(43 / 50)


def test_episode_columns(demo_dataset: Path) -> None:
    ds = LeRobotDatasetReader(demo_dataset)
    ep = ds.load_episode(1)
    assert ep.length == 23
    assert ep["observation.state"].shape == (23, 14)
    np.testing.assert_array_equal(ep["observation.state"][:, 3], 1000 + np.arange(23))
    np.testing.assert_array_equal(ep["index"], np.arange(20, 43))
    np.testing.assert_allclose(ep["timestamp"], np.arange(23) / 50, atol=1e-6)
    assert set(ep.frame_tasks) == {"task 1"}
    with pytest.raises(KeyError, match="no numeric column"):
        ep["observation.effort"]


@pytest.mark.parametrize("episode", [0, 1, 2])
def test_frames_decode_at_the_right_timestamps(demo_dataset: Path, pixel_of, episode: int) -> None:
    ds = LeRobotDatasetReader(demo_dataset)
    n = LENGTHS[episode]
    idx = [0, 1, n // 2, n - 1]
    top = ds.frames(episode, "top", idx)
    assert top.shape == (4, 32, 48, 3) and top.dtype == np.uint8
    expected = np.array([pixel_of(episode, i) for i in idx], dtype=float)
    np.testing.assert_allclose(_gray(top), expected, atol=4)  # neighbours differ by 9 levels
    wrist = ds.frames(episode, "observation.images.left_wrist", idx)
    np.testing.assert_allclose(_gray(wrist), 255 - expected, atol=4)


def test_camera_subset_and_unknown_camera(demo_dataset: Path) -> None:
    ds = LeRobotDatasetReader(demo_dataset, cameras=["top"])
    assert ds.camera_keys == ["observation.images.top"]
    with pytest.raises(UnknownCameraError, match="left_wrist"):
        ds.frames(0, "left_wrist", [0])
    with pytest.raises(UnknownCameraError, match=r"'cam_high' is not in .*available cameras"):
        LeRobotDatasetReader(demo_dataset, cameras=["cam_high"])


def test_language_persistent_subtasks(demo_dataset: Path) -> None:
    ds = LeRobotDatasetReader(demo_dataset)
    steps = ds.step_annotations(1)
    assert [(s.start, s.end, s.text) for s in steps] == [(0, 11, "reach 1"), (11, 23, "grasp 1")]
    assert {s.source for s in steps} == {"language_persistent"}


def _rewrite_data(root: Path, fn) -> None:
    for path in sorted((root / "data").glob("chunk-*/file-*.parquet")):
        pq.write_table(fn(pq.read_table(path)), path)


def test_legacy_subtask_index_annotations(tmp_path: Path, make_dataset) -> None:
    """lerobot 0.4/0.5: per-frame subtask_index + meta/subtasks.parquet (subtask string as pandas index)."""
    import pandas as pd

    root = make_dataset(tmp_path / "ds", subtasks=False)
    pd.DataFrame({"subtask_index": [0, 1, 2]}, index=pd.Index(["approach", "grasp", "lift"], name="subtask")
                 ).to_parquet(root / "meta/subtasks.parquet")

    def add(table: pa.Table) -> pa.Table:
        frame = table.column("frame_index").to_numpy()
        return table.append_column("subtask_index", pa.array(np.minimum(frame // 7, 2), type=pa.int64()))

    _rewrite_data(root, add)
    steps = LeRobotDatasetReader(root).step_annotations(0)
    assert [(s.start, s.end, s.text, s.source) for s in steps] == [
        (0, 7, "approach", "subtask_index"), (7, 14, "grasp", "subtask_index"), (14, 20, "lift", "subtask_index")]


def test_agibot_action_text_annotations(tmp_path: Path, make_dataset) -> None:
    """AgiBot World: frame-level action_text with unlabeled gaps (empty strings) between skills."""
    root = make_dataset(tmp_path / "ds", subtasks=False)

    def add(table: pa.Table) -> pa.Table:
        frame = table.column("frame_index").to_pylist()
        text = ["" if f < 3 else "Pick up the cup" if f < 10 else "" if f < 12 else "Place the cup" for f in frame]
        return table.append_column("action_text", pa.array(text, type=pa.string()))

    _rewrite_data(root, add)
    ds = LeRobotDatasetReader(root)
    steps = ds.step_annotations(0)
    assert [(s.start, s.end, s.text, s.source) for s in steps] == [
        (3, 10, "Pick up the cup", "action_text"), (12, 20, "Place the cup", "action_text")]
    assert LeRobotDatasetReader(make_dataset(tmp_path / "plain", subtasks=False)).step_annotations(0) == []


# ---------------------------------------------------------------------- bad input
def test_missing_video_is_reported_at_open(tmp_path: Path, make_dataset) -> None:
    root = make_dataset(tmp_path / "ds")
    (root / "videos/observation.images.left_wrist/chunk-000/file-001.mp4").unlink()
    with pytest.raises(MissingVideoError, match=r"1 video file\(s\).*file-001.mp4"):
        LeRobotDatasetReader(root)
    # a reader limited to the cameras that are present still works
    assert LeRobotDatasetReader(root, cameras=["top"]).frames(2, "top", [0]).shape == (1, 32, 48, 3)


def test_mismatched_episode_indices(tmp_path: Path, make_dataset) -> None:
    root = make_dataset(tmp_path / "ds")

    def shift(table: pa.Table) -> pa.Table:
        ep = table.column("episode_index").to_numpy()
        i = table.column_names.index("episode_index")
        return table.set_column(i, "episode_index", pa.array(np.where(ep == 2, 7, ep), type=pa.int64()))

    _rewrite_data(root, shift)
    with pytest.raises(EpisodeIndexError, match=r"only in data \[7\], only in meta/episodes \[2\]"):
        LeRobotDatasetReader(root)


def test_episode_length_mismatch(tmp_path: Path, make_dataset) -> None:
    root = make_dataset(tmp_path / "ds")
    _rewrite_data(root, lambda t: t.slice(0, t.num_rows - 1) if t.num_rows == 43 else t)  # drop ep 1's last row
    with pytest.raises(EpisodeIndexError, match=r"\(1, 23, 22\)"):
        LeRobotDatasetReader(root)


def test_wrong_codebase_version(tmp_path: Path, make_dataset) -> None:
    root = make_dataset(tmp_path / "ds")
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(CodebaseVersionError, match=r"'v2.1'.*convert_dataset_v21_to_v30"):
        LeRobotDatasetReader(root)


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(LeRobotFormatError, match="meta/info.json"):
        LeRobotDatasetReader(tmp_path)


def test_truncated_video_fails_on_decode(tmp_path: Path, make_dataset) -> None:
    """A video shorter than its episode table: the reader refuses instead of returning a wrong frame."""
    root = make_dataset(tmp_path / "ds", episodes_per_file=None)
    src = LeRobotDatasetReader(root)
    short = tmp_path / "short"
    w = LeRobotDatasetWriter.create(short, fps=50, features={"observation.images.top":
                                                              {"dtype": "video", "shape": (32, 48, 3)}})
    for i in range(10):
        w.add_frame({"observation.images.top": np.zeros((32, 48, 3), np.uint8), "task": "t"})
    w.save_episode()
    w.finalize()
    shutil.copy(short / "videos/observation.images.top/chunk-000/file-000.mp4",
                root / "videos/observation.images.top/chunk-000/file-000.mp4")
    with pytest.raises(LeRobotFormatError, match="no frame within"):
        src.frames(1, "top", [5])


def test_writer_guards(tmp_path: Path) -> None:
    with pytest.raises(DatasetWriterError, match="create"):
        LeRobotDatasetWriter(tmp_path, 50, {}, None, "libx264", 2, 23, None)
    w = LeRobotDatasetWriter.create(tmp_path / "w", fps=10, features={
        "observation.images.top": {"dtype": "video", "shape": (16, 16, 3)},
        "observation.state": {"dtype": "float32", "shape": (2,)}})
    with pytest.raises(DatasetWriterError, match="'task'"):
        w.add_frame({"observation.images.top": np.zeros((16, 16, 3), np.uint8), "observation.state": np.zeros(2)})
    with pytest.raises(DatasetWriterError, match=r"expected uint8 \(16, 16, 3\)"):
        w.add_frame({"observation.images.top": np.zeros((8, 16, 3), np.uint8), "observation.state": np.zeros(2),
                     "task": "t"})
    with pytest.raises(DatasetWriterError, match="no frames"):
        w.save_episode()
    with pytest.raises(DatasetWriterError, match="no episodes"):
        w.finalize()
    with pytest.raises(DatasetWriterError, match="even H and W"):
        LeRobotDatasetWriter.create(tmp_path / "odd", fps=10, features={
            "observation.images.top": {"dtype": "video", "shape": (15, 16, 3)}})
    with pytest.raises(DatasetWriterError, match="not empty"):
        LeRobotDatasetWriter.create(tmp_path, fps=10, features={})
