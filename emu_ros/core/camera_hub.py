"""CameraHub: the latest frame per camera, with staleness limits — the ImageSource the engine plans from.

Camera callbacks (ROS subscriptions, the simulator) call `update` (a decoded array) or `update_raw`
(an opaque message plus a converter; O(1) in the callback); planners call `observe`. A missing or
stale required camera raises CameraUnavailable naming it and its age, so the robot never plans or
judges a step from a frozen or absent view.

Lazy conversion: `update_raw` stores only a reference. `observe` converts the latest raw item of each
wanted camera once (the result is cached until a newer message arrives). A converter raising
ValueError marks that message bad, with its reason. Rule for a bad latest message: the observation
falls back to the last good converted frame only if that frame's own arrival is still within
max_age_s; otherwise the camera is refused, naming the bad message's reason. Staleness is judged by
the hub clock at arrival, as before.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from emu_ros.core.protocols import CameraUnavailable
from emu_ros.core.types import CameraFrame, Observation


@dataclass(frozen=True)
class CameraStatus:
    camera: str
    received: int
    age_s: Optional[float]  # None = never received
    stale: bool
    last_error: str = ""


class CameraHub:
    """Thread-safe latest-frame store. `max_age_s` per camera; `clock` is injectable for tests."""

    def __init__(self, cameras: Iterable[str], max_age_s: float | dict = 1.0, required: Optional[Iterable[str]] = None,
                 clock: Callable[[], float] = time.monotonic):
        self._cameras = tuple(cameras)
        if not self._cameras:
            raise ValueError("CameraHub needs at least one camera name")
        self._max_age = {c: float(max_age_s[c] if isinstance(max_age_s, dict) else max_age_s) for c in self._cameras}
        self._required = tuple(required) if required is not None else self._cameras
        self._clock = clock
        self._lock = threading.Lock()
        self._frames: dict = {}
        self._arrival: dict = {}
        self._counts = {c: 0 for c in self._cameras}
        self._errors = {c: "" for c in self._cameras}
        self._pending: dict = {}  # camera -> (raw, stamp, converter, arrival): received, not yet converted

    @property
    def cameras(self) -> tuple:
        return self._cameras

    def update(self, camera: str, image: np.ndarray, stamp: Optional[float] = None) -> None:
        """Store the newest frame of `camera` (a uint8 RGB [H, W, 3] array)."""
        if camera not in self._counts:
            raise KeyError(f"unknown camera {camera!r} (hub cameras: {list(self._cameras)})")
        now = self._clock()
        frame = CameraFrame(camera=camera, image=image, stamp=float(stamp if stamp is not None else time.time()))
        with self._lock:
            self._frames[camera] = frame
            self._arrival[camera] = now
            self._counts[camera] += 1
            self._errors[camera] = ""
            self._pending.pop(camera, None)

    def update_raw(self, camera: str, raw, stamp: float, converter: Callable[[object], np.ndarray]) -> None:
        """Keep a reference to the newest message of `camera`; `converter(raw)` runs at most once, at observe."""
        if camera not in self._counts:
            raise KeyError(f"unknown camera {camera!r} (hub cameras: {list(self._cameras)})")
        now = self._clock()
        with self._lock:
            self._pending[camera] = (raw, float(stamp), converter, now)
            self._counts[camera] += 1

    def _convert_pending(self, wanted) -> None:
        """Convert the pending raw item of each wanted camera (outside the lock), once."""
        with self._lock:
            todo = {c: self._pending.pop(c) for c in wanted if c in self._pending}
        for c, (raw, stamp, converter, arrival) in todo.items():
            try:
                arr = converter(raw)
                if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
                    raise ValueError(f"converted image must be uint8 [H, W, 3], got "
                                     f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}")
                err = None
            except ValueError as e:
                arr, err = None, str(e) or type(e).__name__
            with self._lock:
                if c in self._pending and self._pending[c][3] >= arrival:
                    continue  # a newer message arrived meanwhile; it wins
                if err is None:
                    self._frames[c] = CameraFrame(camera=c, image=arr, stamp=stamp)
                    self._arrival[c] = arrival
                    self._errors[c] = ""
                else:
                    self._errors[c] = err

    def report_error(self, camera: str, error: str) -> None:
        """Record why the last message of `camera` was dropped (shown in status and errors)."""
        with self._lock:
            if camera in self._errors:
                self._errors[camera] = error

    def status(self) -> list:
        now = self._clock()
        with self._lock:
            out = []
            for c in self._cameras:
                t = self._arrival.get(c)
                age = None if t is None else now - t
                out.append(CameraStatus(c, self._counts[c], age, age is None or age > self._max_age[c], self._errors[c]))
            return out

    def observe(self, cameras: Optional[Sequence[str]] = None) -> Observation:
        """The latest frames. Raises CameraUnavailable if a required (or requested) camera is missing/stale."""
        wanted = tuple(cameras) if cameras else self._cameras
        unknown = [c for c in wanted if c not in self._counts]
        if unknown:
            raise CameraUnavailable(f"unknown camera(s) {unknown} (hub cameras: {list(self._cameras)})")
        must = set(cameras) if cameras else set(self._required)
        self._convert_pending(wanted)
        problems = []
        for st in self.status():
            if st.camera in must and st.stale:
                why = ("no good frame received" if st.last_error else "no frame received") if st.age_s is None else f"last frame {st.age_s:.2f} s old > {self._max_age[st.camera]:.2f} s"
                if st.last_error:
                    why += f"; last message dropped: {st.last_error}"
                problems.append(f"{st.camera}: {why}")
        if problems:
            raise CameraUnavailable("cannot observe: " + "; ".join(problems))
        now = self._clock()
        with self._lock:
            frames = {c: self._frames[c] for c in wanted
                      if c in self._frames and now - self._arrival[c] <= self._max_age[c]}
        return Observation(frames=frames)
