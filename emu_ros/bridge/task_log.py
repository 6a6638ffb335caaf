"""Append-only task log: one JSONL line per event, images as PNG files, a summary at the end.

Layout of one run directory::

    <run_dir>/
      events.jsonl      one JSON object per line, flushed and fsync'd before `write` returns
      images/*.png      step images and camera views, each written to a temp file then os.replace'd
      summary.json      written atomically (temp + os.replace) when the run ends, is aborted or canceled

Every line has: ``seq`` (0, 1, 2 ... in write order), ``t`` (wall time, s), ``event`` (name),
``run_id``, then the event's fields; images appear as ``"images": {"<key>": "images/<file>.png"}``
(paths relative to the run directory). A crash loses nothing already written: a torn last line
(power loss mid-write) is skipped by `read_events`, every earlier line is complete.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
SUMMARY_FILE = "summary.json"
IMAGE_DIR = "images"


class TaskLogClosed(RuntimeError):
    """Writing to a TaskLog after `close()`; open a new one with TaskLog.create()."""


def to_jsonable(value: Any) -> Any:
    """Plain JSON types for dataclasses, enums, numpy values, paths and tuples (images excluded)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not isinstance(getattr(value, f.name), np.ndarray)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return f"<array {value.dtype} {list(value.shape)}>"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 RGB (or grey) image."""
    import io

    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


class TaskLog:
    """One run's log directory. Thread-safe; `write` returns only once the line is on disk."""

    def __init__(self, run_dir: Path, run_id: Optional[str] = None):
        self.run_dir = Path(run_dir)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        (self.run_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / EVENTS_FILE
        self._lock = threading.Lock()
        # Appending to an existing run continues its numbering, so seq stays unique per file.
        self._seq = sum(1 for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()) \
            if self.path.exists() else 0
        self._file = open(self.path, "a", encoding="utf-8")
        self._images = 0
        self.closed = False

    @classmethod
    def create(cls, root: Path, task: str, run_id: Optional[str] = None) -> "TaskLog":
        """A new run directory `<root>/<UTC time>_<task slug>_<run id>`."""
        run_id = run_id or uuid.uuid4().hex[:12]
        slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:40] or "task"
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        return cls(Path(root) / f"{stamp}_{slug}_{run_id[:6]}", run_id=run_id)

    def save_image(self, name: str, image: np.ndarray) -> str:
        """Save a PNG atomically; returns its path relative to the run directory."""
        with self._lock:
            if self.closed:
                raise TaskLogClosed(f"task log {self.run_dir} is closed")
            self._images += 1
            n = self._images
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "image"
        rel = f"{IMAGE_DIR}/{n:04d}_{safe}.png"
        atomic_write_bytes(self.run_dir / rel, encode_png(image))
        return rel

    def write(self, event: str, data: Optional[Mapping[str, Any]] = None,
              images: Optional[Mapping[str, Optional[np.ndarray]]] = None) -> Dict[str, Any]:
        """Append one event line (images saved first, referenced by relative path); returns the record."""
        refs = {}
        for key, img in (images or {}).items():
            if img is not None:
                refs[key] = self.save_image(f"{event}_{key}", img)
        with self._lock:
            if self.closed:
                raise TaskLogClosed(f"task log {self.run_dir} is closed")
            record = {"seq": self._seq, "t": round(time.time(), 6), "event": str(event), "run_id": self.run_id}
            record.update(to_jsonable(dict(data or {})))
            if refs:
                record["images"] = refs
            line = json.dumps(record, ensure_ascii=False, allow_nan=False)
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._seq += 1
        return record

    @property
    def events_written(self) -> int:
        """Lines in events.jsonl so far."""
        return self._seq

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """summary.json, atomically (may be called again to update it)."""
        data = {"run_id": self.run_id, "events": self._seq, **to_jsonable(dict(summary))}
        path = self.run_dir / SUMMARY_FILE
        atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        return path

    def close(self, summary: Optional[Mapping[str, Any]] = None) -> None:
        """Write the summary (if given) and close the events file; idempotent."""
        if summary is not None and not self.closed:
            self.write_summary(summary)
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
            finally:
                self._file.close()

    def __enter__(self) -> "TaskLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_events(run_dir: Path) -> List[Dict[str, Any]]:
    """All complete event lines of a run (a torn final line is skipped with a warning)."""
    path = Path(run_dir) / EVENTS_FILE
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("%s: skipping a torn last line", path)
            else:
                raise
    return out


def read_summary(run_dir: Path) -> Dict[str, Any]:
    """The run's summary.json."""
    return json.loads((Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
