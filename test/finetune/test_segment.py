"""Step segmentation on synthetic robot signals: gripper events, velocity-pause fallback, annotations, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finetune_embodied.dataset import LeRobotDatasetReader
from finetune_embodied.segment import (SegmentationError, SegmentConfig, Segmenter, gripper_events, joint_speed,
                                       segment_dataset)
from finetune_embodied.writer import ALOHA_JOINT_NAMES, LeRobotDatasetWriter

FPS = 50


def _ramp(a: float, b: float, n: int) -> np.ndarray:
    return a + (b - a) * (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n)))  # smooth start/stop


def aloha_transfer_states(seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """A bimanual transfer: left reaches/grasps/lifts, right reaches/grasps, left releases, right retreats.

    Returns (T, 14) joint states (grippers at 6 and 13, 1=open 0=closed) and the frames where each gripper
    transition settles (the expected step ends).
    """
    rng = np.random.default_rng(seed)
    q = np.zeros(14)
    q[6] = q[13] = 1.0
    rows, ends = [], []

    def move(cols: list[int], delta: float, n: int) -> None:
        start = q.copy()
        for k, x in enumerate(_ramp(0.0, 1.0, n)):
            q[cols] = start[cols] + delta * x
            rows.append(q.copy())

    def hold(n: int) -> None:
        rows.extend([q.copy()] * n)

    def grip(col: int, value: float, n: int = 12) -> None:
        start = q[col]
        for x in _ramp(start, value, n):
            q[col] = x
            rows.append(q.copy())
        ends.append(len(rows) - 1)

    move([0, 1, 2], 0.6 + 0.1 * rng.random(), 40)
    hold(5)
    grip(6, 0.0)
    move([1, 2], -0.4, 30)
    move([7, 8, 9], 0.5, 40)
    grip(13, 0.0)
    hold(5)
    grip(6, 1.0)
    move([0, 1], -0.3, 30)
    move([7, 8], -0.5, 35)
    grip(13, 1.0)
    hold(10)
    return np.asarray(rows, dtype=np.float32) + rng.normal(0, 1e-4, (len(rows), 14)).astype(np.float32), ends


def write_signals(root: Path, states: list[np.ndarray], names=ALOHA_JOINT_NAMES, robot_type="aloha",
                  subtasks=None) -> LeRobotDatasetReader:
    """A camera-less dataset holding only observation.state/action (enough for segmentation)."""
    dim = states[0].shape[1]
    w = LeRobotDatasetWriter.create(root, fps=FPS, robot_type=robot_type, features={
        "observation.state": {"dtype": "float32", "shape": (dim,), "names": names},
        "action": {"dtype": "float32", "shape": (dim,), "names": names}})
    for e, s in enumerate(states):
        for row in s:
            w.add_frame({"observation.state": row, "action": row, "task": "transfer the cube"})
        w.save_episode(subtasks=subtasks[e] if subtasks else None)
    w.finalize()
    return LeRobotDatasetReader(root)


def test_gripper_events_ignore_chatter_and_partial_closes() -> None:
    noise = 0.05 * np.sin(np.arange(12))  # chatter: well under min_fraction of the range
    x = np.concatenate([np.ones(10), _ramp(1, 0.35, 8), np.full(10, 0.35) + noise[:10], _ramp(0.35, 1, 8),
                        np.ones(5), _ramp(1, 0, 6), np.zeros(5)])
    events = gripper_events(x, min_fraction=0.25, min_range=1e-3)
    # closing on an object stops at 0.35 (never "closed") and still counts
    assert [k for _, _, k in events] == ["close", "open", "close"]
    start, settle, _ = events[0]
    assert 10 <= start <= settle <= 18
    assert gripper_events(np.full(30, 0.7), 0.25, 1e-3) == []
    assert [k for _, _, k in gripper_events(1 - x, 0.25, 1e-3, closed_is_low=False)] == ["close", "open", "close"]


def test_gripper_segmentation_aloha(tmp_path: Path) -> None:
    states, ends = aloha_transfer_states()
    ds = write_signals(tmp_path / "ds", [states])
    result = Segmenter(ds).segment(0)
    assert result.method == "gripper"
    assert 4 <= len(result.steps) <= 12
    texts = [s.text for s in result.steps]
    assert texts[:4] == ["close the left gripper", "close the right gripper", "open the left gripper",
                         "open the right gripper"]
    assert [s.end - 1 for s in result.steps[:4]] == pytest.approx(ends, abs=2)
    # steps tile the episode and the key frame is the last frame of each step
    assert result.steps[0].start == 0 and result.steps[-1].end == len(states)
    assert all(a.end == b.start for a, b in zip(result.steps, result.steps[1:]))
    assert all(s.keyframe == s.end - 1 for s in result.steps)


@pytest.mark.parametrize("seed", range(5))
def test_step_count_bounds_hold(tmp_path: Path, seed: int) -> None:
    """Random numbers of gripper cycles: always min_steps..max_steps."""
    rng = np.random.default_rng(seed)
    cycles = int(rng.integers(0, 10))
    q = np.zeros(14)
    q[6] = q[13] = 1.0
    rows = []
    for _ in range(cycles):
        for x in _ramp(0, 1, 20):
            q[:6] = x * rng.random()
            rows.append(q.copy())
        q[6] = 1 - q[6]
        rows.extend([q.copy()] * 15)
    rows.extend([q.copy() + 0.01 * k for k in range(60)])
    ds = write_signals(tmp_path / "ds", [np.asarray(rows, np.float32)])
    steps = Segmenter(ds, SegmentConfig(min_steps=4, max_steps=6)).segment(0).steps
    assert 4 <= len(steps) <= 6
    assert steps[0].start == 0 and steps[-1].end == len(rows)
    assert all(s.end - s.start >= 1 and s.text for s in steps)


def test_no_gripper_falls_back_to_velocity_pauses(tmp_path: Path) -> None:
    """Joint names without a gripper: split at the pauses between three moves (documented fallback)."""
    q = np.zeros(6)
    rows = []
    for cols in ([0, 1], [2, 3], [4, 5], [0, 5]):
        start = q.copy()
        for x in _ramp(0, 1, 40):
            q[cols] = start[cols] + x
            rows.append(q.copy())
        rows.extend([q.copy()] * 20)  # a pause
    names = [f"joint{i}" for i in range(6)]
    ds = write_signals(tmp_path / "ds", [np.asarray(rows, np.float32)], names=names, robot_type="ur5")
    result = Segmenter(ds).segment(0)
    assert result.method == "pauses" and len(result.steps) == 4
    # each cut lies in a pause (inside the 20 still frames after a 40-frame move)
    for k, s in enumerate(result.steps[1:], 1):
        assert 60 * k - 20 <= s.start <= 60 * k, s
    assert all(s.text == "move the arm" for s in result.steps)
    with pytest.raises(SegmentationError, match="fallback='pauses'"):
        Segmenter(ds, SegmentConfig(fallback="error")).segment(0)


def test_annotations_win_and_are_capped(tmp_path: Path) -> None:
    states, _ = aloha_transfer_states()
    notes = [[(i * 15, f"step {i}") for i in range(15)]]
    ds = write_signals(tmp_path / "ds", [states], subtasks=notes)
    result = Segmenter(ds).segment(0)
    assert result.method == "annotation:language_persistent"
    assert len(result.steps) == 12  # 15 annotated steps merged down to max_steps
    assert result.steps[0].text.startswith("step 0")
    assert Segmenter(ds, SegmentConfig(use_annotations=False)).segment(0).method == "gripper"


def test_too_short_episode_is_an_error(tmp_path: Path) -> None:
    ds = write_signals(tmp_path / "ds", [np.zeros((15, 14), np.float32)])
    with pytest.raises(SegmentationError, match="episode 0 has 15 frames"):
        segment_dataset(ds)


def test_joint_speed_is_smoothed_and_aligned() -> None:
    q = np.concatenate([np.zeros((10, 2)), np.ones((10, 2))])
    v = joint_speed(q, window=1)
    assert v.shape == (20,) and v.argmax() == 10
    assert joint_speed(q, window=5).max() < v.max()


@pytest.mark.sim
def test_sim_dataset_records_annotated_steps(tmp_path: Path) -> None:
    """One closed-loop transfer episode from emu_ros.sim: annotations load and gripper events agree with them."""
    pytest.importorskip("gym_aloha")
    from finetune_embodied.make_sim_dataset import SimDatasetConfig, build_dataset

    root = build_dataset(SimDatasetConfig(out=str(tmp_path / "sim"), episodes_per_task=1, record_every=10))
    ds = LeRobotDatasetReader(root)
    assert ds.fps == 5 and ds.camera_keys == ["observation.images.cam_high"]
    notes = Segmenter(ds).segment(0)
    assert notes.method == "annotation:language_persistent"
    assert [s.text for s in notes.steps][1] == "Grasp the red cube with the right gripper"
    from_signals = Segmenter(ds, SegmentConfig(use_annotations=False)).segment(0)
    assert from_signals.method.startswith("gripper") and 4 <= len(from_signals.steps) <= 12
    # the right gripper settles closed inside the annotated grasp step (which also holds the loop's settle
    # and step check before the next step starts)
    close_right = next(s for s in from_signals.steps if s.text == "close the right gripper")
    assert notes.steps[1].start < close_right.end <= notes.steps[1].end
    rollouts = json.loads((root / "meta" / "sim_rollouts.json").read_text())
    assert rollouts[0]["task"] == "transfer_cube" and rollouts[0]["frames"] == ds.episodes[0].length


def test_preview_writes_storyboard(demo_dataset: Path, tmp_path: Path) -> None:
    from PIL import Image

    from finetune_embodied.preview import main

    main(["--dataset", str(demo_dataset), "--out", str(tmp_path / "sb"), "--episodes", "0", "2",
          "--camera", "top", "--thumb_height", "64"])
    out = tmp_path / "sb"
    page = (out / "index.html").read_text()
    assert "Episode 0: task 0" in page and "grasp 2" in page and "episode_000001.png" not in page
    segments = json.loads((out / "segments.json").read_text())
    assert [s["episode_index"] for s in segments] == [0, 2]
    assert [st["text"] for st in segments[1]["steps"]] == ["reach 2", "grasp 2"]
    png = Image.open(out / "episode_000002.png")
    assert png.height >= 64 and png.width >= 3 * 64  # start frame + one key frame per step
    assert "min_steps: 4" in (out / "preview_config.yaml").read_text()


def test_physical_settle_waits_for_the_fingers() -> None:
    from finetune_embodied.segment import physical_settle

    measured = np.concatenate([np.ones(12), _ramp(1, 0.4, 6), np.full(10, 0.4)])  # starts 2 frames after command
    assert physical_settle(measured, start=10, window=5) == 17
    assert physical_settle(np.ones(20), start=5, window=5) == 5
