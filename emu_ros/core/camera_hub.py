"""CameraHub: the latest frame per camera, with staleness limits — the ImageSource the engine plans from.

Frames come in three ways: `update` (a decoded array, pushed), `update_raw` (an opaque message plus a
converter, pushed: O(1)), or a pull source (`add_source`): a function the hub calls at observe time to
take the newest waiting message itself — the ROS nodes use this, so no Python runs per camera frame at
all (see emu_ros/ros/camera_intake.py). Planners call `observe`. A missing or stale required camera
raises CameraUnavailable naming it and its age, so the robot never plans or judges a step from a
frozen or absent view.

Lazy conversion: raw items are only referenced. `observe` converts the latest raw item of each wanted
camera once (the result is cached until a newer message arrives). A converter raising ValueError
marks that message bad, with its reason.

Staleness rule: a frame's age is `stamp_clock() - header stamp` — the capture time the driver wrote,
on the clock the nodes pass in (the ROS clock, so `use_sim_time` with `ros2 bag play --clock` works).
A frame delayed in transport or buffered by a driver is therefore refused even if it arrived just now.
A frame without a stamp (0, what some drivers send) is judged by its arrival on the monotonic hub
clock instead, and its status says so. A stamp further in the future than max_age_s is refused too
(the camera's clock and this machine's are not synchronised). Rule for a bad latest message: the
observation falls back to the last good converted frame only while that frame is fresh by the same
rule; otherwise the camera is refused, naming the bad message's reason.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Protocol, Sequence

import numpy as np

from emu_ros.core.protocols import CameraUnavailable
from emu_ros.core.types import CameraFrame, Observation


@dataclass(frozen=True)
class CameraStatus:
    camera: str
    received: int
    age_s: Optional[float]  # None = no good frame yet
    stale: bool
    last_error: str = ""
    #: How age_s was judged: "stamp" (header stamp vs stamp_clock) or "arrival" (unstamped frame).
    judged_by: str = ""
    #: Header stamp -> arrival in this process of the newest message (None: unstamped or none yet):
    #: the driver's and the transport's delay, before any wait for a planner.
    delivery_s: Optional[float] = None


@dataclass(frozen=True)
class TakenMessage:
    """What a pull source hands the hub: the message, its header stamp, how long it waited for us."""
    raw: object
    stamp: float
    waited_s: float = 0.0  # time between its arrival at this process and the take (0 if unknown)


class PullSource(Protocol):
    """Takes the newest waiting message of one camera, or None when nothing new arrived."""

    def __call__(self) -> Optional[TakenMessage]: ...


class CameraHub:
    """Thread-safe latest-frame store. `max_age_s` per camera.

    `clock` (monotonic) times arrivals; `stamp_clock` is the clock header stamps are written on
    (wall time by default; the ROS nodes pass their node clock). Both are injectable for tests.
    """

    def __init__(self, cameras: Iterable[str], max_age_s: float | dict = 1.0, required: Optional[Iterable[str]] = None,
                 clock: Callable[[], float] = time.monotonic, stamp_clock: Callable[[], float] = time.time):
        self._cameras = tuple(cameras)
        if not self._cameras:
            raise ValueError("CameraHub needs at least one camera name")
        self._max_age = {c: float(max_age_s[c] if isinstance(max_age_s, dict) else max_age_s) for c in self._cameras}
        self._required = tuple(required) if required is not None else self._cameras
        self._clock = clock
        self._stamp_clock = stamp_clock
        self._lock = threading.Lock()
        self._frames: dict = {}
        self._arrival: dict = {}
        self._counts = {c: 0 for c in self._cameras}
        self._errors = {c: "" for c in self._cameras}
        self._delivery: dict = {}
        self._pending: dict = {}  # camera -> (raw, stamp, converter, arrival): received, not yet converted
        self._sources: dict = {}  # camera -> (PullSource, converter)
        self._pull_lock = threading.Lock()  # one taker at a time: a message is taken exactly once

    @property
    def cameras(self) -> tuple:
        return self._cameras

    def update(self, camera: str, image: np.ndarray, stamp: Optional[float] = None) -> None:
        """Store the newest frame of `camera` (a uint8 RGB [H, W, 3] array)."""
        if camera not in self._counts:
            raise KeyError(f"unknown camera {camera!r} (hub cameras: {list(self._cameras)})")
        now = self._clock()
        frame = CameraFrame(camera=camera, image=image, stamp=float(stamp if stamp is not None else self._stamp_clock()))
        with self._lock:
            self._frames[camera] = frame
            self._arrival[camera] = now
            self._counts[camera] += 1
            self._errors[camera] = ""
            self._pending.pop(camera, None)

    def update_raw(self, camera: str, raw, stamp: float, converter: Callable[[object], np.ndarray],
                   waited_s: float = 0.0) -> None:
        """Keep a reference to the newest message of `camera`; `converter(raw)` runs at most once, at observe."""
        if camera not in self._counts:
            raise KeyError(f"unknown camera {camera!r} (hub cameras: {list(self._cameras)})")
        waited = max(0.0, float(waited_s))
        now = self._clock() - waited
        delivery = self._stamp_clock() - waited - float(stamp) if stamp > 0.0 else None
        with self._lock:
            self._pending[camera] = (raw, float(stamp), converter, now)
            self._counts[camera] += 1
            self._delivery[camera] = delivery

    def add_source(self, camera: str, take: PullSource, converter: Callable[[object], np.ndarray]) -> None:
        """Pull `camera`'s newest message with `take()` whenever an observation or a status is requested."""
        if camera not in self._counts:
            raise KeyError(f"unknown camera {camera!r} (hub cameras: {list(self._cameras)})")
        with self._pull_lock:
            self._sources[camera] = (take, converter)

    def clear_sources(self) -> None:
        """Forget every pull source (their subscriptions are being destroyed); stored frames stay."""
        with self._pull_lock:
            self._sources.clear()

    def _pull(self, wanted) -> None:
        with self._pull_lock:
            for c in wanted:
                if c not in self._sources:
                    continue
                take, converter = self._sources[c]
                got = take()
                if got is not None:
                    self.update_raw(c, got.raw, got.stamp, converter, got.waited_s)

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

    def _age(self, camera: str, now: float, now_stamp: float) -> tuple:
        """(age_s, judged_by, stale) of the stored good frame of `camera` (lock held)."""
        frame = self._frames.get(camera)
        if frame is None:
            return None, "", True
        limit = self._max_age[camera]
        if frame.stamp > 0.0:
            age = now_stamp - frame.stamp
            return age, "stamp", age > limit or age < -limit
        age = now - self._arrival[camera]
        return age, "arrival", age > limit

    def status(self, pull: bool = True) -> list:
        """Per camera: messages received, age of the newest good frame and how it was judged, last error.

        `pull=False` reports what is stored without taking or converting new messages.
        """
        if pull:
            self._pull(self._cameras)
            self._convert_pending(self._cameras)
        return self._status()

    def _status(self) -> list:
        now, now_stamp = self._clock(), self._stamp_clock()
        with self._lock:
            out = []
            for c in self._cameras:
                age, judged_by, stale = self._age(c, now, now_stamp)
                out.append(CameraStatus(c, self._counts[c], age, stale, self._errors[c], judged_by,
                                        self._delivery.get(c)))
            return out

    def observe(self, cameras: Optional[Sequence[str]] = None) -> Observation:
        """The latest frames. Raises CameraUnavailable if a required (or requested) camera is missing/stale."""
        wanted = tuple(cameras) if cameras else self._cameras
        unknown = [c for c in wanted if c not in self._counts]
        if unknown:
            raise CameraUnavailable(f"unknown camera(s) {unknown} (hub cameras: {list(self._cameras)})")
        must = set(cameras) if cameras else set(self._required)
        self._pull(wanted)
        self._convert_pending(wanted)
        problems = []
        statuses = self._status()
        for st in statuses:
            if st.camera in must and st.stale:
                problems.append(f"{st.camera}: {self._why_stale(st)}")
        if problems:
            raise CameraUnavailable("cannot observe: " + "; ".join(problems))
        fresh = {st.camera for st in statuses if not st.stale}
        with self._lock:
            frames = {c: self._frames[c] for c in wanted if c in fresh and c in self._frames}
        return Observation(frames=frames)

    def _why_stale(self, st: CameraStatus) -> str:
        limit = self._max_age[st.camera]
        if st.age_s is None:
            why = "no good frame received" if st.last_error else "no frame received"
        elif st.age_s < -limit:
            why = (f"last frame stamped {-st.age_s:.2f} s in the future (> {limit:.2f} s): the camera's clock and "
                   f"this node's are not synchronised (use chrony/PTP, or use_sim_time with `ros2 bag play --clock`)")
        elif st.judged_by == "stamp":
            why = f"last frame {st.age_s:.2f} s old by its header stamp > {limit:.2f} s"
        else:
            why = f"last frame (unstamped) arrived {st.age_s:.2f} s ago > {limit:.2f} s"
        if st.last_error:
            why += f"; last message dropped: {st.last_error}"
        return why
