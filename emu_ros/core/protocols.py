"""The seams between the planner bridge and the outside world (robot, perception, cameras).

Each is a `typing.Protocol` so the bridge is tested with small fakes and runs unchanged on a
simulator, a ros2_control arm, Interbotix topics or AimDK topics.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from emu_ros.core.types import CancelToken, Observation, Plan


@dataclass(frozen=True)
class TrajectoryPoint:
    """One waypoint: joint positions (rad or m) reached `time_from_start` seconds after the goal starts."""

    positions: tuple
    time_from_start: float
    velocities: Optional[tuple] = None


@dataclass(frozen=True)
class TrajectoryGoal:
    """A joint-space trajectory for one joint group (an arm), as FollowJointTrajectory would carry it."""

    group: str
    joint_names: tuple
    points: tuple  # of TrajectoryPoint
    #: Allowed final error per joint (rad/m); the monitor checks it against the measured state.
    goal_tolerance: float = 0.02


@dataclass(frozen=True)
class GripperGoal:
    """Open/close one gripper. `position` is normalised: 0 = fully closed, 1 = fully open."""

    gripper: str
    position: float
    max_effort: float = 0.0  # 0 = controller default


class GoalStatus(str, enum.Enum):
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"  # the controller gave up (tolerance violated, fault)
    REJECTED = "rejected"  # the goal was refused (invalid joints, limits)
    CANCELED = "canceled"
    TIMEOUT = "timeout"  # no result in time, or the server did not answer
    UNAVAILABLE = "unavailable"  # no action server / topic subscriber


@dataclass(frozen=True)
class MotionResult:
    """What an adapter reports for one goal: status, controller error code and text."""

    status: GoalStatus
    error_code: int = 0
    message: str = ""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is GoalStatus.SUCCEEDED


@dataclass(frozen=True)
class JointState:
    """Measured joint positions by name (arm joints in rad; grippers normalised 0 closed..1 open)."""

    positions: dict
    velocities: dict = field(default_factory=dict)
    stamp: float = field(default_factory=time.time)

    def get(self, names: Sequence[str]) -> np.ndarray:
        missing = [n for n in names if n not in self.positions]
        if missing:
            raise KeyError(f"joint state lacks {missing} (have: {sorted(self.positions)})")
        return np.array([self.positions[n] for n in names], dtype=float)


@runtime_checkable
class RobotAdapter(Protocol):
    """Sends goals to the arms and grippers and reads their state; blocking calls honour `cancel`."""

    name: str

    def execute_trajectory(self, goal: TrajectoryGoal, cancel: Optional[CancelToken] = None,
                           timeout: float = 30.0) -> MotionResult: ...

    def execute_gripper(self, goal: GripperGoal, cancel: Optional[CancelToken] = None,
                        timeout: float = 10.0) -> MotionResult: ...

    def joint_state(self) -> JointState: ...

    def cancel_all(self) -> None: ...


@dataclass(frozen=True)
class ObjectEstimate:
    """Where an object is, in the robot's world frame (m), with a yaw (rad) and a confidence 0..1."""

    name: str
    position: tuple
    yaw: float = 0.0
    confidence: float = 1.0
    source: str = ""


class PerceptionError(RuntimeError):
    """`locate` could not give a position it trusts: the object is out of view, its depth is missing,
    the estimate's confidence is below the profile's minimum, or the camera is unavailable. The
    message says which (camera, object, confidence); `code` is the skill failure code. Skills turn it
    into a step failure that re-plans; they never fall back to a guess."""

    def __init__(self, message: str, code: str = "object_not_found"):
        super().__init__(message)
        self.code = code


@runtime_checkable
class Perception(Protocol):
    """Object positions for skills. `ground_truth` is True only for the simulator oracle (labelled so).

    `locate` returns None for an object it has never heard of and raises PerceptionError when it
    knows the object but cannot see it well enough.
    """

    name: str
    ground_truth: bool

    def locate(self, obj: str) -> Optional[ObjectEstimate]: ...


class CameraUnavailable(RuntimeError):
    """A required camera is missing or its last frame is too old: do not plan or judge blind."""


@runtime_checkable
class ImageSource(Protocol):
    """The latest frame per camera; raises CameraUnavailable naming missing/stale cameras."""

    def observe(self, cameras: Optional[Sequence[str]] = None) -> Observation: ...


@dataclass(frozen=True)
class SkillCall:
    """A step text mapped to one skill: which arm, which object/location, extra numeric params."""

    skill: str  # reach | grasp | lift | place | release | fold | push | wipe | open | close | ...
    text: str
    arm: Optional[str] = None
    obj: Optional[str] = None
    location: Optional[str] = None
    params: dict = field(default_factory=dict)


@dataclass
class SkillExecution:
    """What running a skill did: every goal sent with its result, and what should now hold.

    The step monitor reads this (never simulator state): the results, and the expectations it
    checks against measured joint states — `joint_targets` (final joint positions), grippers that
    should now hold an object (`expect_holding`) or be open and empty (`expect_released`).
    """

    call: SkillCall
    goals: list = field(default_factory=list)  # of (TrajectoryGoal | GripperGoal, MotionResult)
    joint_targets: dict = field(default_factory=dict)
    expect_holding: tuple = ()
    expect_released: tuple = ()
    error: str = ""  # a skill-level failure before/while sending goals (IK failed, object not found)
    error_code: str = ""

    @property
    def motion_ok(self) -> bool:
        return not self.error and all(r.ok for _, r in self.goals)


@runtime_checkable
class SkillExecutor(Protocol):
    """Turns a SkillCall into adapter goals (IK from the profile's chains, object poses from Perception)."""

    def execute(self, call: SkillCall, cancel: Optional[CancelToken] = None) -> SkillExecution: ...


@dataclass(frozen=True)
class Review:
    """A person's decision on a proposed plan; a rejection's reason goes into the re-plan."""

    approved: bool
    reason: str = ""


class ReviewTimeout(RuntimeError):
    """Nobody approved or rejected the plan in time: the task aborts (the arm never moved for it)."""


@runtime_checkable
class PlanReviewer(Protocol):
    """Shows a plan (text + predicted images) to a person and waits for approve / reject.

    Blocks until decided; raises ReviewTimeout when nobody answers in time and Cancelled when
    `cancel` fires. Called before the first motion and after every re-plan or continuation.
    """

    def review(self, plan: Plan, cancel: CancelToken) -> Review: ...
