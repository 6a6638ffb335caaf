"""Read local LeRobot v3.0 datasets (parquet + json + mp4) without lerobot, torch or the hub.

Why our own reader: lerobot 0.6.1 needs Python >= 3.12 and torch < 2.12, while emu_ros runs on Python 3.11 with
torch 2.13. The v3.0 on-disk format is small and documented, so pyarrow + PyAV cover it; compatibility with files
written by the real ``LeRobotDataset`` API is checked by ``test/finetune/test_lerobot_compat.py`` in an optional
lerobot venv (``scripts/setup_lerobot_env.sh``).

Layout read here (lerobot ``datasets/utils.py`` constants)::

    meta/info.json                              codebase_version "v3.0", fps, features, data_path, video_path
    meta/tasks.parquet                          task string (pandas index or column "task") -> task_index
    meta/subtasks.parquet                       (lerobot 0.4/0.5, optional) subtask string -> subtask_index
    meta/episodes/chunk-*/file-*.parquet        one row per episode: length, tasks, data/{chunk,file}_index,
                                                dataset_{from,to}_index, videos/<key>/{chunk_index,file_index,
                                                from_timestamp,to_timestamp}
    data/chunk-*/file-*.parquet                 per-frame rows of many episodes
    videos/<key>/chunk-*/file-*.mp4             many episodes per file; an episode is [from_timestamp, to_timestamp)

Step/subtask text is read from whichever annotation the dataset carries (see ``StepAnnotation``):
lerobot 0.4/0.5 ``subtask_index`` + meta/subtasks.parquet, lerobot 0.6 ``language_persistent`` rows of style
``subtask``, or AgiBot-World frame-level ``action_text`` / ``skill`` columns.

Usage::

    ds = LeRobotDatasetReader("/data/aloha_sim", cameras=["observation.images.top"])
    ep = ds.load_episode(0)                       # numeric columns + per-frame task strings
    frames = ds.frames(0, "observation.images.top", [0, 10, ep.length - 1])   # (3, H, W, 3) uint8
    steps = ds.step_annotations(0)                # [] when the dataset has no step language
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
TASKS_PATH = "meta/tasks.parquet"
SUBTASKS_PATH = "meta/subtasks.parquet"
EPISODES_DIR = "meta/episodes"
DEFAULT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"

# Columns every v3.0 data file carries (lerobot DEFAULT_FEATURES).
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
LANGUAGE_PERSISTENT = "language_persistent"
#: Style of our extra language rows marking an attempt that did not finish ("unfinished: why"); lerobot skips them.
STEP_OUTCOME = "step_outcome"
LANGUAGE_EVENTS = "language_events"
# AgiBot-World ports (lerobot examples/port_datasets/agibot_hdf5, any4lerobot) keep step text per frame.
FRAME_TEXT_COLUMNS = ("action_text", "skill")


class LeRobotFormatError(ValueError):
    """The directory is not a readable LeRobot v3.0 dataset; the message names the file and the fix."""


class CodebaseVersionError(LeRobotFormatError):
    """meta/info.json declares a codebase_version other than v3.0."""


class MissingVideoError(LeRobotFormatError, FileNotFoundError):
    """An episode references an mp4 file that is not on disk."""


class EpisodeIndexError(LeRobotFormatError):
    """meta/episodes and data/ disagree about which episodes exist or how long they are."""


class UnknownCameraError(LeRobotFormatError, KeyError):
    """A camera name was requested that the dataset does not declare."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class FeatureSpec:
    """One entry of info.json ``features``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    names: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_camera(self) -> bool:
        """Video or image features are cameras; only ``video`` is stored in mp4 files."""
        return self.dtype in ("video", "image")


@dataclass(frozen=True)
class DatasetInfo:
    """The fields of meta/info.json this reader relies on (unknown keys are kept in ``raw``)."""

    codebase_version: str
    fps: int
    features: dict[str, FeatureSpec]
    total_episodes: int
    total_frames: int
    total_tasks: int
    robot_type: str | None
    data_path: str
    video_path: str | None
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, path: Path) -> DatasetInfo:
        """Parse info.json; reject other codebase versions with a conversion hint."""
        if not path.is_file():
            raise LeRobotFormatError(f"{path} not found: not a LeRobot dataset root (expected meta/info.json)")
        raw = json.loads(path.read_text(encoding="utf-8"))
        version = str(raw.get("codebase_version", "<missing>"))
        if version != CODEBASE_VERSION:
            hint = (" Convert it with lerobot's `python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 "
                    "--repo-id=<id> --root=<dir>` (in the lerobot venv)." if version.startswith("v2") else "")
            raise CodebaseVersionError(f"{path}: codebase_version is {version!r}, this reader supports "
                                       f"{CODEBASE_VERSION!r} only.{hint}")
        missing = [k for k in ("fps", "features") if k not in raw]
        if missing:
            raise LeRobotFormatError(f"{path}: missing keys {missing}")
        features = {name: FeatureSpec(name=name, dtype=str(spec["dtype"]), shape=tuple(spec.get("shape") or ()),
                                      names=spec.get("names"), info=dict(spec.get("info") or {}))
                    for name, spec in raw["features"].items()}
        return cls(codebase_version=version, fps=int(raw["fps"]), features=features,
                   total_episodes=int(raw.get("total_episodes", 0)), total_frames=int(raw.get("total_frames", 0)),
                   total_tasks=int(raw.get("total_tasks", 0)), robot_type=raw.get("robot_type"),
                   data_path=str(raw.get("data_path", DEFAULT_DATA_PATH)),
                   video_path=raw.get("video_path", DEFAULT_VIDEO_PATH), raw=raw)

    @property
    def camera_keys(self) -> list[str]:
        """All camera features (video and image), in info.json order."""
        return [k for k, f in self.features.items() if f.is_camera]

    @property
    def video_keys(self) -> list[str]:
        """Camera features stored as mp4 videos."""
        return [k for k, f in self.features.items() if f.dtype == "video"]


@dataclass(frozen=True)
class VideoSpan:
    """Where one episode of one camera lives: an mp4 file and a [from, to) time window in it."""

    chunk_index: int
    file_index: int
    from_timestamp: float
    to_timestamp: float


@dataclass(frozen=True)
class EpisodeMeta:
    """One row of meta/episodes."""

    episode_index: int
    length: int
    tasks: tuple[str, ...]
    data_chunk_index: int
    data_file_index: int
    dataset_from_index: int
    dataset_to_index: int
    videos: dict[str, VideoSpan]


@dataclass(frozen=True)
class StepAnnotation:
    """A human/VLM-annotated step of an episode: frames [start, end) and its text.

    ``source`` says which annotation scheme it came from: ``subtask_index`` (lerobot 0.4/0.5),
    ``language_persistent`` (lerobot 0.6 subtask rows), ``action_text`` or ``skill`` (AgiBot World).
    """

    start: int
    end: int
    text: str
    source: str
    outcome: str = ""
    """"" = finished (or not recorded); else why this attempt did not finish ("unfinished: gripper empty")."""


@dataclass
class EpisodeData:
    """The per-frame table of one episode as numpy arrays (cameras excluded; decode them with ``frames``)."""

    episode_index: int
    fps: int
    columns: dict[str, np.ndarray]
    frame_tasks: list[str]
    raw_columns: dict[str, list[Any]]

    @property
    def length(self) -> int:
        """Number of frames."""
        return len(self.columns["frame_index"])

    def __getitem__(self, key: str) -> np.ndarray:
        """A numeric column by feature name, e.g. ``ep["observation.state"]`` -> (T, D)."""
        if key not in self.columns:
            raise KeyError(f"episode {self.episode_index} has no numeric column {key!r}; "
                           f"available: {sorted(self.columns)}")
        return self.columns[key]


def _read_table(path: Path, **kwargs: Any) -> pa.Table:
    try:
        return pq.read_table(path, **kwargs)
    except (OSError, pa.ArrowInvalid) as exc:
        raise LeRobotFormatError(f"{path}: cannot read parquet ({exc})") from exc


def _string_index_table(path: Path, index_column: str, text_column: str) -> list[str]:
    """Read tasks.parquet / subtasks.parquet: text stored as pandas index or column, ordered by index column."""
    table = _read_table(path)
    names = table.column_names
    if index_column not in names:
        raise LeRobotFormatError(f"{path}: no {index_column!r} column (columns: {names})")
    text_col = text_column if text_column in names else next(
        (n for n in names if n.startswith("__index_level_") or n == "index"), None)
    if text_col is None:
        raise LeRobotFormatError(f"{path}: no {text_column!r} column or pandas index (columns: {names})")
    indices = table.column(index_column).to_pylist()
    texts = table.column(text_col).to_pylist()
    out = [""] * (max(indices) + 1 if indices else 0)
    for i, text in zip(indices, texts):
        out[int(i)] = str(text)
    return out


def decode_video_frames(path: Path, timestamps: Sequence[float], tolerance_s: float) -> np.ndarray:
    """Decode the frames nearest to ``timestamps`` (seconds in the file) as (N, H, W, 3) uint8 RGB.

    Seeks once to the key frame before the earliest timestamp and decodes forward to the latest, like lerobot's
    pyav backend; raises if a requested time has no frame within ``tolerance_s`` (a broken or truncated video).
    """
    import av  # PyAV; imported lazily so metadata-only use does not need it

    if not path.is_file():
        raise MissingVideoError(f"{path}: video file not found")
    wanted = np.asarray(timestamps, dtype=np.float64)
    if wanted.size == 0:
        raise ValueError("no timestamps requested")
    best_err = np.full(len(wanted), np.inf)
    best: list[np.ndarray | None] = [None] * len(wanted)
    first, last = float(wanted.min()), float(wanted.max())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        container.seek(max(0, int(first / stream.time_base)), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base)
            err = np.abs(wanted - t)
            closer = np.nonzero((err <= tolerance_s) & (err < best_err))[0]
            if closer.size:
                rgb = frame.to_ndarray(format="rgb24")
                for j in closer:
                    best_err[j], best[j] = err[j], rgb
            if t > last + tolerance_s:
                break
    missing = [float(wanted[j]) for j in range(len(wanted)) if best[j] is None]
    if missing:
        raise LeRobotFormatError(f"{path}: no frame within {tolerance_s:.4f}s of t={missing[:5]} "
                                 f"(video shorter than the episode table says, or wrong fps?)")
    return np.stack(best)  # type: ignore[arg-type]


class LeRobotDatasetReader:
    """A local LeRobot v3.0 dataset opened read-only.

    Opening validates metadata cheaply (info.json version, tasks, episode table vs. data files, that every video
    file referenced by the selected cameras exists), so bad datasets fail at construction with a message that names
    the problem, never later as an empty training set. Frames are decoded lazily with PyAV.
    """

    def __init__(self, root: str | Path, cameras: Sequence[str] | None = None,
                 tolerance_s: float | None = None, check_videos: bool = True) -> None:
        self.root = Path(root)
        self.info = DatasetInfo.from_json(self.root / INFO_PATH)
        self.fps = self.info.fps
        # Half a frame: rejects an off-by-one frame but tolerates time_base rounding (e.g. 30 fps in 1/12800).
        self.tolerance_s = tolerance_s if tolerance_s is not None else 0.4 / self.fps
        self.camera_keys = self._select_cameras(cameras)
        self.tasks = self._load_tasks()
        self.subtasks = (_string_index_table(self.root / SUBTASKS_PATH, "subtask_index", "subtask")
                         if (self.root / SUBTASKS_PATH).is_file() else None)
        self.episodes = self._load_episodes()
        self._by_index = {ep.episode_index: ep for ep in self.episodes}
        self._check_data_files()
        if check_videos:
            self._check_videos()

    # ------------------------------------------------------------------ validation at open
    def _select_cameras(self, cameras: Sequence[str] | None) -> list[str]:
        available = self.info.camera_keys
        if cameras is None:
            return available
        out = []
        for name in cameras:
            key = name if name in available else f"observation.images.{name}"
            if key not in available:
                raise UnknownCameraError(f"camera {name!r} is not in {self.root}; available cameras: {available}")
            out.append(key)
        return out

    def _load_tasks(self) -> list[str]:
        path = self.root / TASKS_PATH
        if not path.is_file():
            raise LeRobotFormatError(f"{path} not found (every v3.0 dataset has meta/tasks.parquet)")
        return _string_index_table(path, "task_index", "task")

    def _load_episodes(self) -> list[EpisodeMeta]:
        files = sorted((self.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotFormatError(f"{self.root / EPISODES_DIR}: no chunk-*/file-*.parquet episode tables")
        rows: list[dict[str, Any]] = []
        for path in files:
            table = _read_table(path)
            keep = [c for c in table.column_names if not c.startswith("stats/")]
            rows.extend(table.select(keep).to_pylist())
        episodes = []
        for row in rows:
            videos = {}
            for key in self.info.video_keys:
                prefix = f"videos/{key}/"
                if prefix + "from_timestamp" not in row:
                    raise LeRobotFormatError(f"{self.root / EPISODES_DIR}: episode {row.get('episode_index')} has "
                                             f"no {prefix}from_timestamp for video feature {key!r}")
                videos[key] = VideoSpan(int(row[prefix + "chunk_index"]), int(row[prefix + "file_index"]),
                                        float(row[prefix + "from_timestamp"]), float(row[prefix + "to_timestamp"]))
            episodes.append(EpisodeMeta(
                episode_index=int(row["episode_index"]), length=int(row["length"]),
                tasks=tuple(row.get("tasks") or ()), data_chunk_index=int(row["data/chunk_index"]),
                data_file_index=int(row["data/file_index"]), dataset_from_index=int(row["dataset_from_index"]),
                dataset_to_index=int(row["dataset_to_index"]), videos=videos))
        episodes.sort(key=lambda e: e.episode_index)
        indices = [e.episode_index for e in episodes]
        if len(set(indices)) != len(indices):
            dupes = sorted({i for i in indices if indices.count(i) > 1})
            raise EpisodeIndexError(f"{self.root / EPISODES_DIR}: duplicate episode_index {dupes}")
        if self.info.total_episodes and self.info.total_episodes != len(episodes):
            raise EpisodeIndexError(f"{self.root}: info.json says total_episodes={self.info.total_episodes} but "
                                    f"meta/episodes has {len(episodes)} rows")
        for ep in episodes:
            if ep.dataset_to_index - ep.dataset_from_index != ep.length:
                raise EpisodeIndexError(f"episode {ep.episode_index}: length {ep.length} != dataset_to_index - "
                                        f"dataset_from_index = {ep.dataset_to_index - ep.dataset_from_index}")
        return episodes

    def _data_path(self, chunk_index: int, file_index: int) -> Path:
        return self.root / self.info.data_path.format(chunk_index=chunk_index, file_index=file_index)

    def _video_path(self, key: str, span: VideoSpan) -> Path:
        if self.info.video_path is None:
            raise LeRobotFormatError(f"{self.root / INFO_PATH}: video_path is null but {key!r} is a video feature")
        return self.root / self.info.video_path.format(video_key=key, chunk_index=span.chunk_index,
                                                       file_index=span.file_index)

    def _check_data_files(self) -> None:
        """Compare per-episode row counts in data/ (only the episode_index column is read) with meta/episodes."""
        files = sorted({(e.data_chunk_index, e.data_file_index) for e in self.episodes})
        counts: dict[int, int] = {}
        for chunk, file in files:
            path = self._data_path(chunk, file)
            if not path.is_file():
                raise LeRobotFormatError(f"{path} not found (referenced by meta/episodes)")
            col = _read_table(path, columns=["episode_index"]).column("episode_index").to_numpy()
            values, n = np.unique(col, return_counts=True)
            for v, c in zip(values.tolist(), n.tolist()):
                counts[v] = counts.get(v, 0) + c
        declared = {e.episode_index: e.length for e in self.episodes}
        extra = sorted(set(counts) - set(declared))
        missing = sorted(set(declared) - set(counts))
        wrong = [(i, declared[i], counts[i]) for i in declared if i in counts and counts[i] != declared[i]]
        if extra or missing or wrong:
            raise EpisodeIndexError(
                f"{self.root}: meta/episodes and data/ disagree: episodes only in data {extra[:10]}, only in "
                f"meta/episodes {missing[:10]}, (episode, meta length, data rows) mismatches {wrong[:10]}. "
                "The dataset was probably edited by hand or partially copied; re-export it.")

    def _check_videos(self) -> None:
        missing = sorted({str(self._video_path(key, ep.videos[key])) for ep in self.episodes
                          for key in self.camera_keys if key in ep.videos
                          and not self._video_path(key, ep.videos[key]).is_file()})
        if missing:
            raise MissingVideoError(f"{self.root}: {len(missing)} video file(s) referenced by meta/episodes are "
                                    f"missing, e.g. {missing[:3]}. Copy the videos/ folder too, or open the dataset "
                                    "with cameras=[...] limited to the cameras you have.")

    # ------------------------------------------------------------------ public API
    @property
    def num_episodes(self) -> int:
        """Number of episodes."""
        return len(self.episodes)

    @property
    def episode_indices(self) -> list[int]:
        """Episode indices in ascending order (not necessarily 0..N-1 after filtering)."""
        return [e.episode_index for e in self.episodes]

    def episode_meta(self, episode_index: int) -> EpisodeMeta:
        """The meta/episodes row of one episode."""
        if episode_index not in self._by_index:
            raise EpisodeIndexError(f"episode {episode_index} not in {self.root}; "
                                    f"episodes: {self.episode_indices[:20]}...")
        return self._by_index[episode_index]

    def camera_shape(self, camera: str) -> tuple[int, int, int]:
        """(H, W, C) declared for a camera."""
        return tuple(self.info.features[self._camera_key(camera)].shape)  # type: ignore[return-value]

    @cached_property
    def numeric_features(self) -> list[str]:
        """Non-camera, non-language, non-string features (state, action, effort, ...)."""
        skip = {"video", "image", "string", "language"}
        return [k for k, f in self.info.features.items() if f.dtype not in skip]

    def load_episode(self, episode_index: int) -> EpisodeData:
        """Read the per-frame rows of one episode, sorted by frame_index; checks they are contiguous."""
        meta = self.episode_meta(episode_index)
        path = self._data_path(meta.data_chunk_index, meta.data_file_index)
        image_cols = {k for k, f in self.info.features.items() if f.dtype == "image"}  # decoded on demand only
        names = [n for n in pq.read_schema(path).names if n not in image_cols]
        table = _read_table(path, columns=names, filters=[("episode_index", "=", episode_index)])
        if table.num_rows != meta.length:
            raise EpisodeIndexError(f"{path}: episode {episode_index} has {table.num_rows} rows, meta/episodes "
                                    f"says {meta.length}")
        table = table.sort_by("frame_index")
        columns: dict[str, np.ndarray] = {}
        raw: dict[str, list[Any]] = {}
        for name in table.column_names:
            col = table.column(name)
            if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
                if name in self.numeric_features:
                    columns[name] = np.asarray(col.to_pylist(), dtype=np.float64 if "float" in
                                               self.info.features[name].dtype else None)
                else:
                    raw[name] = col.to_pylist()
            elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type):
                columns[name] = col.to_numpy()
            else:
                raw[name] = col.to_pylist()
        frame_index = columns["frame_index"]
        if not np.array_equal(frame_index, np.arange(meta.length)):
            raise EpisodeIndexError(f"{path}: episode {episode_index} frame_index is not 0..{meta.length - 1}")
        frame_tasks = [self.tasks[int(i)] if 0 <= int(i) < len(self.tasks) else "" for i in columns["task_index"]]
        return EpisodeData(episode_index=episode_index, fps=self.fps, columns=columns, frame_tasks=frame_tasks,
                           raw_columns=raw)

    def _camera_key(self, camera: str) -> str:
        key = camera if camera in self.info.features else f"observation.images.{camera}"
        if key not in self.camera_keys:
            raise UnknownCameraError(f"camera {camera!r} is not among the opened cameras {self.camera_keys} "
                                     f"(dataset cameras: {self.info.camera_keys})")
        return key

    def frames(self, episode_index: int, camera: str, frame_indices: Sequence[int]) -> np.ndarray:
        """Decode frames of one episode/camera as (N, H, W, 3) uint8 RGB."""
        key = self._camera_key(camera)
        meta = self.episode_meta(episode_index)
        idx = [int(i) for i in frame_indices]
        bad = [i for i in idx if not 0 <= i < meta.length]
        if bad:
            raise IndexError(f"episode {episode_index} has {meta.length} frames; requested {bad[:5]}")
        if self.info.features[key].dtype != "video":
            return self._image_frames(episode_index, key, idx)
        span = meta.videos[key]
        times = [span.from_timestamp + i / self.fps for i in idx]
        return decode_video_frames(self._video_path(key, span), times, self.tolerance_s)

    def _image_frames(self, episode_index: int, key: str, idx: list[int]) -> np.ndarray:
        """Frames of an ``image`` feature (PNG bytes embedded in the data parquet)."""
        import io

        from PIL import Image

        meta = self.episode_meta(episode_index)
        path = self._data_path(meta.data_chunk_index, meta.data_file_index)
        table = _read_table(path, columns=[key, "frame_index"], filters=[("episode_index", "=", episode_index)])
        table = table.sort_by("frame_index")
        cells = table.column(key).to_pylist()
        return np.stack([np.asarray(Image.open(io.BytesIO(cells[i]["bytes"])).convert("RGB")) for i in idx])

    def step_annotations(self, episode_index: int, episode: EpisodeData | None = None) -> list[StepAnnotation]:
        """Annotated steps of an episode from the first scheme present, or [] when none is."""
        ep = episode if episode is not None else self.load_episode(episode_index)
        if LANGUAGE_PERSISTENT in ep.raw_columns:
            steps = _steps_from_language(ep.raw_columns[LANGUAGE_PERSISTENT], ep.length, self.fps)
            if steps:
                return steps
        if "subtask_index" in ep.columns and self.subtasks is not None:
            texts = [self.subtasks[int(i)] if 0 <= int(i) < len(self.subtasks) else ""
                     for i in ep.columns["subtask_index"]]
            steps = _runs(texts, "subtask_index")
            if steps:
                return steps
        for name in FRAME_TEXT_COLUMNS:
            if name in ep.raw_columns:
                steps = _runs([str(t) if t is not None else "" for t in ep.raw_columns[name]], name)
                if steps:
                    return steps
        return []


def _runs(texts: list[str], source: str) -> list[StepAnnotation]:
    """Group consecutive frames with the same non-empty text into steps."""
    steps: list[StepAnnotation] = []
    start = 0
    for i in range(1, len(texts) + 1):
        if i == len(texts) or texts[i] != texts[start]:
            text = texts[start].strip()
            if text:
                steps.append(StepAnnotation(start, i, text, source))
            start = i
    return steps


def _steps_from_language(cells: list[Any], length: int, fps: int) -> list[StepAnnotation]:
    """lerobot 0.6 ``language_persistent``: subtask rows are active from their timestamp until the next one."""
    rows = next((c for c in cells if c), None) or []
    subtasks = sorted(((float(r["timestamp"]), str(r.get("content") or "").strip()) for r in rows
                       if r.get("style") == "subtask"), key=lambda x: x[0])
    notes = {round(float(r["timestamp"]) * fps): str(r.get("content") or "") for r in rows
             if r.get("style") == STEP_OUTCOME}
    starts = [(min(length - 1, max(0, int(round(ts * fps)))), text, notes.get(round(ts * fps), ""))
              for ts, text in subtasks if text]
    steps = []
    for k, (start, text, note) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else length
        if end > start:
            steps.append(StepAnnotation(start, end, text, LANGUAGE_PERSISTENT, note))
    return steps
