"""Write LeRobot v3.0 datasets from numpy frames (pyarrow + PyAV + pandas), readable by lerobot 0.6.1.

Why: tests and the demo need small datasets generated locally (never downloaded), and users of emu_ros should be
able to export simulator rollouts without installing lerobot. The API mirrors ``LeRobotDataset.create`` /
``add_frame`` / ``save_episode`` / ``finalize`` so code moves between the two easily. Compatibility with the real
lerobot is checked by ``test/finetune/test_lerobot_compat.py``.

Step annotations are written in the lerobot 0.6 scheme: a ``language_persistent`` column whose rows of style
``subtask`` start at the step's first frame (``save_episode(subtasks=[(start_frame, text), ...])``).

Example::

    w = LeRobotDatasetWriter.create("/tmp/ds", fps=50, robot_type="aloha", features={
        "observation.images.top": {"dtype": "video", "shape": (96, 128, 3), "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": (14,), "names": ALOHA_JOINT_NAMES}})
    for t in range(T):
        w.add_frame({"observation.images.top": rgb[t], "observation.state": q[t], "task": "transfer the cube"})
    w.save_episode(subtasks=[(0, "reach the cube"), (40, "close the right gripper")])
    w.finalize()
"""

from __future__ import annotations

import json
import logging
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .dataset import (CODEBASE_VERSION, DEFAULT_DATA_PATH, DEFAULT_VIDEO_PATH, EPISODES_DIR, INFO_PATH,
                      LANGUAGE_EVENTS, LANGUAGE_PERSISTENT, STEP_OUTCOME, TASKS_PATH)

log = logging.getLogger(__name__)

ALOHA_JOINT_NAMES = [f"{side}_{j}" for side in ("left", "right") for j in
                     ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")]

_DEFAULT_COLUMNS = {
    "timestamp": {"dtype": "float32", "shape": (1,), "names": None},
    "frame_index": {"dtype": "int64", "shape": (1,), "names": None},
    "episode_index": {"dtype": "int64", "shape": (1,), "names": None},
    "index": {"dtype": "int64", "shape": (1,), "names": None},
    "task_index": {"dtype": "int64", "shape": (1,), "names": None},
}
_ARROW_SCALARS = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
                  "bool": pa.bool_()}
_PERSISTENT_ROW = pa.struct([pa.field("role", pa.string(), nullable=False), pa.field("content", pa.string()),
                             pa.field("style", pa.string()), pa.field("timestamp", pa.float32(), nullable=False),
                             pa.field("camera", pa.string()), pa.field("tool_calls", pa.list_(pa.string()))])
_EVENT_ROW = pa.struct([pa.field("role", pa.string(), nullable=False), pa.field("content", pa.string()),
                        pa.field("style", pa.string()), pa.field("camera", pa.string()),
                        pa.field("tool_calls", pa.list_(pa.string()))])


class DatasetWriterError(ValueError):
    """Wrong use of the writer (bad frame, missing task, finalize twice); the message names the fix."""


class _VideoFile:
    """One open mp4 per camera; episodes are appended back to back so timestamps continue across episodes."""

    def __init__(self, path: Path, fps: int, height: int, width: int, vcodec: str, gop: int, crf: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(vcodec, rate=fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = Fraction(1, fps)
        options = {"g": str(gop), "crf": str(crf)}
        if vcodec == "libx264":
            options["bf"] = "0"  # no B-frames: pts == decode order, exact seeks for the readers
        if vcodec == "libsvtav1":
            options = {"g": str(gop), "crf": str(crf), "preset": "12"}
        self.stream.options = options
        self.frames_written = 0

    def write(self, frames: list[np.ndarray]) -> None:
        """Encode RGB frames; pts continue from the previous episode (its from_timestamp = frames before / fps)."""
        import av

        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = self.frames_written
            self.frames_written += 1
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoder and write the mp4 trailer."""
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


class LeRobotDatasetWriter:
    """Create a v3.0 dataset on disk. Use ``create()``; ``__init__`` is internal (rule: classmethods write)."""

    def __init__(self, root: Path, fps: int, features: dict[str, dict[str, Any]], robot_type: str | None,
                 vcodec: str, gop: int, crf: int, episodes_per_file: int | None, _token: object = None) -> None:
        if _token is not _CREATE_TOKEN:
            raise DatasetWriterError("use LeRobotDatasetWriter.create(root, fps, features, ...) to write a dataset; "
                                     "read one with finetune_embodied.dataset.LeRobotDatasetReader(root)")
        self.root, self.fps, self.robot_type = root, fps, robot_type
        self.vcodec, self.gop, self.crf, self.episodes_per_file = vcodec, gop, crf, episodes_per_file
        self.user_features = {k: _normalise_spec(k, v) for k, v in features.items()}
        self.features = dict(self.user_features)
        self.has_language = False
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict[str, Any]] = []
        self.total_frames = 0
        self.file_index = 0
        self.episodes_in_file = 0
        self.videos: dict[str, _VideoFile] = {}
        self.data_tables: list[pa.Table] = []
        self.buffer: list[dict[str, Any]] = []
        self.finalized = False
        self.stats_acc: dict[str, list[np.ndarray]] = {}

    @classmethod
    def create(cls, root: str | Path, fps: int, features: dict[str, dict[str, Any]], robot_type: str | None = None,
               vcodec: str = "libx264", gop: int = 2, crf: int = 23, episodes_per_file: int | None = None,
               overwrite: bool = False) -> LeRobotDatasetWriter:
        """Start a new dataset at ``root`` (must not exist unless ``overwrite``)."""
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            if not overwrite:
                raise DatasetWriterError(f"{root} exists and is not empty; pass overwrite=True or pick a new root")
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        if fps <= 0:
            raise DatasetWriterError(f"fps must be positive, got {fps}")
        return cls(root, int(fps), features, robot_type, vcodec, gop, crf, episodes_per_file, _CREATE_TOKEN)

    # ------------------------------------------------------------------ per frame / per episode
    def add_frame(self, frame: dict[str, Any]) -> None:
        """Buffer one frame: every declared feature plus ``task`` (str)."""
        if self.finalized:
            raise DatasetWriterError("add_frame after finalize(); create a new writer")
        if not isinstance(frame.get("task"), str) or not frame["task"]:
            raise DatasetWriterError("each frame needs a non-empty 'task' string (lerobot requires it too)")
        missing = sorted(set(self.user_features) - set(frame))
        extra = sorted(set(frame) - set(self.user_features) - {"task"})
        if missing or extra:
            raise DatasetWriterError(f"frame keys mismatch: missing {missing}, undeclared {extra}")
        checked = {"task": frame["task"]}
        for key, spec in self.user_features.items():
            value = np.asarray(frame[key])
            if spec["dtype"] == "video":
                if value.shape != tuple(spec["shape"]) or value.dtype != np.uint8:
                    raise DatasetWriterError(f"{key}: expected uint8 {tuple(spec['shape'])}, got {value.dtype} "
                                             f"{value.shape}")
            elif value.reshape(-1).shape[0] != int(np.prod(spec["shape"])):
                raise DatasetWriterError(f"{key}: expected shape {tuple(spec['shape'])}, got {value.shape}")
            checked[key] = value
        self.buffer.append(checked)

    def save_episode(self, subtasks: list[tuple[int, str]] | None = None,
                     outcomes: dict[int, str] | None = None) -> int:
        """Encode the buffered frames as one episode; ``subtasks`` = [(start_frame, text), ...]. Returns its index.

        ``outcomes`` = {start_frame: "unfinished: why"} marks attempts that did not finish (a missed grasp before
        its retry); they are stored as ``step_outcome`` rows beside the subtask rows (lerobot reads only the
        subtask style and ignores them)."""
        if not self.buffer:
            raise DatasetWriterError("save_episode() with no frames; call add_frame() first")
        episode_index = len(self.episode_rows)
        length = len(self.buffer)
        if subtasks:
            bad = [s for s, _ in subtasks if not 0 <= s < length]
            bad += [s for s in (outcomes or {}) if s not in {start for start, _ in subtasks}]
            if bad:
                raise DatasetWriterError(f"subtask start frames {bad} outside episode of {length} frames "
                                         "(or outcomes for frames where no subtask starts)")
            self.has_language = True
        if self.episodes_per_file and self.episodes_in_file >= self.episodes_per_file:
            self._close_file()
        row = {"episode_index": episode_index, "tasks": sorted({f["task"] for f in self.buffer}, key=str),
               "length": length, "data/chunk_index": 0, "data/file_index": self.file_index,
               "dataset_from_index": self.total_frames, "dataset_to_index": self.total_frames + length}
        for key, spec in self.user_features.items():
            if spec["dtype"] != "video":
                continue
            video = self._video(key, spec)
            start = video.frames_written / self.fps
            video.write([f[key] for f in self.buffer])
            row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": self.file_index,
                        f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": start + length / self.fps})
        self.data_tables.append(self._episode_table(episode_index, subtasks, outcomes or {}))
        self.episode_rows.append(row)
        self.total_frames += length
        self.episodes_in_file += 1
        self.buffer = []
        return episode_index

    def finalize(self) -> Path:
        """Close videos and parquet files and write meta/ (required, as in lerobot)."""
        if self.finalized:
            raise DatasetWriterError("finalize() called twice")
        if self.buffer:
            raise DatasetWriterError(f"{len(self.buffer)} frames added but not saved; call save_episode() first")
        if not self.episode_rows:
            raise DatasetWriterError("no episodes saved; refusing to write an empty dataset")
        self._close_file()
        self._write_meta()
        self.finalized = True
        log.info("wrote %d episodes / %d frames to %s", len(self.episode_rows), self.total_frames, self.root)
        return self.root

    # ------------------------------------------------------------------ internals
    def _video(self, key: str, spec: dict[str, Any]) -> _VideoFile:
        if key not in self.videos:
            h, w = int(spec["shape"][0]), int(spec["shape"][1])
            path = self.root / DEFAULT_VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=self.file_index)
            self.videos[key] = _VideoFile(path, self.fps, h, w, self.vcodec, self.gop, self.crf)
        return self.videos[key]

    def _episode_table(self, episode_index: int, subtasks: list[tuple[int, str]] | None,
                       outcomes: dict[int, str]) -> pa.Table:
        n = len(self.buffer)
        cols: dict[str, pa.Array] = {}
        for key, spec in self.user_features.items():
            if spec["dtype"] == "video":
                continue
            scalar = _ARROW_SCALARS[spec["dtype"]]
            values = np.stack([f[key].reshape(-1) for f in self.buffer]).astype(scalar.to_pandas_dtype())
            self.stats_acc.setdefault(key, []).append(values)
            if tuple(spec["shape"]) == (1,):
                cols[key] = pa.array(values[:, 0], type=scalar)
            else:
                flat = pa.array(values.reshape(-1), type=scalar)
                cols[key] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        task_index = [self.tasks.setdefault(f["task"], len(self.tasks)) for f in self.buffer]
        cols["timestamp"] = pa.array(np.arange(n, dtype=np.float32) / np.float32(self.fps), type=pa.float32())
        cols["frame_index"] = pa.array(np.arange(n), type=pa.int64())
        cols["episode_index"] = pa.array(np.full(n, episode_index), type=pa.int64())
        cols["index"] = pa.array(np.arange(self.total_frames, self.total_frames + n), type=pa.int64())
        cols["task_index"] = pa.array(task_index, type=pa.int64())
        rows = [{"role": "assistant", "content": text, "style": "subtask", "timestamp": float(start) / self.fps,
                 "camera": None, "tool_calls": None} for start, text in sorted(subtasks or [])]
        rows += [{"role": "assistant", "content": note, "style": STEP_OUTCOME, "timestamp": float(start) / self.fps,
                  "camera": None, "tool_calls": None} for start, note in sorted(outcomes.items())]
        cols[LANGUAGE_PERSISTENT] = pa.array([rows] * n, type=pa.list_(_PERSISTENT_ROW))
        cols[LANGUAGE_EVENTS] = pa.array([[]] * n, type=pa.list_(_EVENT_ROW))
        return pa.table(cols)

    def _close_file(self) -> None:
        for video in self.videos.values():
            video.close()
        self.videos = {}
        if self.data_tables:
            tables = self.data_tables
            path = self.root / DEFAULT_DATA_PATH.format(chunk_index=0, file_index=self.file_index)
            path.parent.mkdir(parents=True, exist_ok=True)
            schema = tables[0].schema
            with pq.ParquetWriter(str(path), schema, compression="snappy") as writer:
                for table in tables:  # one row group per episode, as lerobot writes them
                    writer.write_table(table.cast(schema))
            self.data_tables = []
            self.file_index += 1
            self.episodes_in_file = 0

    def _write_meta(self) -> None:
        import pandas as pd

        if not self.has_language:  # only declare language columns when some episode carries annotations
            for path in sorted((self.root / "data").glob("chunk-*/file-*.parquet")):
                table = pq.read_table(path)
                pq.write_table(table.drop_columns([LANGUAGE_PERSISTENT, LANGUAGE_EVENTS]), path)
        features = {k: _with_video_info(v, self.fps, self.vcodec) for k, v in self.user_features.items()}
        features.update(_DEFAULT_COLUMNS)
        if self.has_language:
            features[LANGUAGE_PERSISTENT] = {"dtype": "language", "shape": (1,), "names": None}
            features[LANGUAGE_EVENTS] = {"dtype": "language", "shape": (1,), "names": None}
        info = {"codebase_version": CODEBASE_VERSION, "fps": self.fps, "features": _jsonable(features),
                "total_episodes": len(self.episode_rows), "total_frames": self.total_frames,
                "total_tasks": len(self.tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
                "video_files_size_in_mb": 200, "data_path": DEFAULT_DATA_PATH,
                "video_path": DEFAULT_VIDEO_PATH if any(v["dtype"] == "video" for v in features.values()) else None,
                "robot_type": self.robot_type, "splits": {"train": f"0:{len(self.episode_rows)}"}}
        (self.root / INFO_PATH).parent.mkdir(parents=True, exist_ok=True)
        (self.root / INFO_PATH).write_text(json.dumps(info, indent=4), encoding="utf-8")
        # tasks.parquet: the task string is the pandas index, as lerobot's load_tasks() expects.
        tasks = pd.DataFrame({"task_index": list(self.tasks.values())}, index=pd.Index(list(self.tasks), name="task"))
        tasks.to_parquet(self.root / TASKS_PATH)
        episodes = self.root / EPISODES_DIR / "chunk-000" / "file-000.parquet"
        episodes.parent.mkdir(parents=True, exist_ok=True)
        rows = [dict(r, **{"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}) for r in self.episode_rows]
        pq.write_table(pa.Table.from_pylist(rows), episodes)
        stats = {}
        for key, chunks in self.stats_acc.items():
            values = np.concatenate(chunks).astype(np.float64)
            stats[key] = {"min": values.min(0).tolist(), "max": values.max(0).tolist(),
                          "mean": values.mean(0).tolist(), "std": values.std(0).tolist(), "count": [len(values)]}
        (self.root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4), encoding="utf-8")


_CREATE_TOKEN = object()


def _normalise_spec(key: str, spec: dict[str, Any]) -> dict[str, Any]:
    dtype = spec.get("dtype")
    if dtype not in ("video", *_ARROW_SCALARS):
        raise DatasetWriterError(f"feature {key!r}: dtype {dtype!r} not supported by this writer "
                                 f"(video, {', '.join(_ARROW_SCALARS)})")
    if key in _DEFAULT_COLUMNS or key in ("task", LANGUAGE_PERSISTENT, LANGUAGE_EVENTS):
        raise DatasetWriterError(f"feature {key!r} is reserved; the writer fills it")
    shape = tuple(int(s) for s in spec["shape"])
    if dtype == "video":
        if len(shape) != 3 or shape[2] != 3 or shape[0] % 2 or shape[1] % 2:
            raise DatasetWriterError(f"video {key!r}: shape must be (H, W, 3) with even H and W (yuv420p), "
                                     f"got {shape}")
        names = spec.get("names") or ["height", "width", "channels"]
    else:
        names = spec.get("names")
    return {"dtype": dtype, "shape": shape, "names": names}


def _with_video_info(spec: dict[str, Any], fps: int, vcodec: str) -> dict[str, Any]:
    if spec["dtype"] != "video":
        return spec
    codec = {"libx264": "h264", "libsvtav1": "av1"}.get(vcodec, vcodec)
    return dict(spec, info={"video.height": spec["shape"][0], "video.width": spec["shape"][1],
                            "video.codec": codec, "video.pix_fmt": "yuv420p", "video.fps": fps,
                            "video.channels": 3, "has_audio": False, "is_depth_map": False})


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
