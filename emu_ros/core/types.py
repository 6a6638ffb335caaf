"""Data types shared by the guidance engine, the planner bridge and the ROS layer.

Everything here is plain Python + numpy so the core stays free of ROS: the ROS layer converts
these to and from `emu_ros.msg` / `sensor_msgs` at its boundary.
"""
from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class CameraFrame:
    """One RGB image from one camera: uint8 [H, W, 3], stamped in seconds (ROS time or wall time)."""

    camera: str
    image: np.ndarray
    stamp: float

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            got = f"{type(img).__name__} {getattr(img, 'dtype', '?')} {getattr(img, 'shape', '?')}"
            raise ValueError(f"camera {self.camera!r}: expected a uint8 RGB array [H, W, 3], got {got}")


@dataclass(frozen=True)
class Observation:
    """What the robot perceives at one moment: the latest frame per camera (+ joint positions if known)."""

    frames: Mapping[str, CameraFrame]
    stamp: float = field(default_factory=time.time)
    joint_positions: Optional[Mapping[str, float]] = None

    def frame(self, camera: str) -> CameraFrame:
        """The frame of `camera`, or a KeyError naming the cameras that are present."""
        try:
            return self.frames[camera]
        except KeyError:
            raise KeyError(f"camera {camera!r} not in observation (have: {sorted(self.frames)})") from None


@dataclass
class PlanStep:
    """One guidance step: a short instruction and the picture of the scene once it is done.

    `source` names the backend that produced it (e.g. ``emu35-dida``, ``scripted-reference``)
    so a scripted plan can never be mistaken for the model's.
    """

    index: int
    text: str
    image: Optional[np.ndarray] = None
    source: str = ""
    stamp: float = field(default_factory=time.time)
    #: Parser remarks (e.g. "image without text"), kept for logs.
    notes: tuple = ()


@dataclass
class Plan:
    """An ordered list of steps for one task; `revision` = how many re-plans produced it."""

    task: str
    steps: list
    plan_id: str
    revision: int = 0
    source: str = ""
    stamp: float = field(default_factory=time.time)
    #: What the engine noticed while building the plan (parser remarks, dropped steps), for logs.
    notes: tuple = ()
    #: False when the world model's output was cut (token budget, full cache, max_steps): steps may be
    #: missing after the last one. The runner then asks for the rest; it never reports such a plan done.
    complete: bool = True
    cut_reason: str = ""


class OutcomeStatus(str, enum.Enum):
    """How a step ended, decided from robot-side signals only."""

    FINISHED = "finished"
    UNFINISHED = "unfinished"  # motion ran but the goal state was not reached (missed grasp, slip)
    FAILED = "failed"  # controller abort/reject, timeout, unmapped step, adapter error
    CANCELED = "canceled"


@dataclass
class StepOutcome:
    """The verdict on one executed step, with the reason a human (and the re-plan prompt) can read."""

    step_index: int
    text: str
    status: OutcomeStatus
    reason: str = ""
    #: Machine-readable failure kind (e.g. "visual_mismatch", "gripper_empty", "aborted").
    code: str = ""
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is OutcomeStatus.FINISHED


@dataclass(frozen=True)
class HistoryEntry:
    """A step already tried in this task, as the world model sees it in a re-plan prompt."""

    text: str
    status: OutcomeStatus
    reason: str = ""


@dataclass
class PlanRequest:
    """Everything a world model needs to plan: task, current views and what happened so far."""

    task: str
    observation: Optional[Observation] = None
    history: Sequence[HistoryEntry] = ()
    max_steps: int = 12
    revision: int = 0


class CancelToken:
    """A thread-safe cancel flag passed down to long calls (generation, arm motion)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "canceled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` s; True if cancelled meanwhile."""
        return self._event.wait(timeout)


class PlanningError(RuntimeError):
    """The world model could not produce a usable plan (exception, malformed or empty output)."""


class Cancelled(RuntimeError):
    """Raised inside long operations when their CancelToken fires."""


@runtime_checkable
class WorldModel(Protocol):
    """A planner backend: task + observations + history → a stream of steps.

    `name` ends up in every step's `source` field. Implementations yield steps as soon as
    each is complete, and stop early when `cancel` fires.
    """

    name: str

    def plan(self, request: PlanRequest, cancel: Optional[CancelToken] = None) -> Iterator[PlanStep]:
        ...
