"""Small fakes for the guidance/bridge core: a robot adapter with injectable faults, a skill
executor that plans real joint goals with the profile's kinematics, a world model, an image source
that renders a toy scene, and a scene renderer for visual-check tests.

The fakes are honest in the way that matters for the tests: the adapter only moves joints when a
goal succeeds, the gripper ends open/closed/empty according to the injected fault, and the camera
shows where the toy cube really is, so the monitor sees the same signals a robot would give.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional

import numpy as np

from emu_ros.core.kinematics import SerialChain
from emu_ros.core.profile import RobotProfile
from emu_ros.core.protocols import (CameraUnavailable, GoalStatus, GripperGoal, JointState, MotionResult,
                                      SkillCall, SkillExecution, TrajectoryGoal, TrajectoryPoint)
from emu_ros.core.types import (Cancelled, CancelToken, CameraFrame, Observation, PlanRequest, PlanStep)


# ---- toy scene ---------------------------------------------------------------------------------
@dataclass
class Scene:
    """A top view: grey table, a red cube at pixel (x, y), optionally lifted (drawn larger + shadow)."""

    cube_xy: tuple = (40, 60)
    lifted: bool = False
    gripper_xy: Optional[tuple] = None
    size: tuple = (96, 128)
    noise_seed: Optional[int] = None

    def render(self) -> np.ndarray:
        h, w = self.size
        img = np.empty((h, w, 3), np.uint8)
        img[:] = (150, 140, 120)  # table
        img[:, : w // 8] = (60, 60, 70)  # left arm base
        img[:, -w // 8:] = (60, 60, 70)  # right arm base
        x, y = self.cube_xy
        r = 9 if self.lifted else 6
        if self.lifted:  # shadow on the table below a lifted cube
            img[max(0, y + 8 - 5): y + 8 + 5, max(0, x + 6 - 5): x + 6 + 5] = (90, 85, 75)
        img[max(0, y - r): y + r, max(0, x - r): x + r] = (200, 30, 30)
        if self.gripper_xy is not None:
            gx, gy = self.gripper_xy
            img[max(0, gy - 3): gy + 3, max(0, gx - 12): gx + 12] = (30, 30, 30)
        if self.noise_seed is not None:
            rng = np.random.default_rng(self.noise_seed)
            img = np.clip(img.astype(int) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
        return img


class FakeImageSource:
    """Renders `scene` for every requested camera; `fail` = raise CameraUnavailable."""

    def __init__(self, scene: Optional[Scene] = None, cameras=("cam_high",)):
        self.scene = scene or Scene()
        self.cameras = tuple(cameras)
        self.fail = False
        self.calls = 0

    def observe(self, cameras=None) -> Observation:
        self.calls += 1
        if self.fail:
            raise CameraUnavailable("cam_high: no frame for 3.0 s (max_age_s 2.0)")
        now = time.time()
        names = tuple(cameras) if cameras else self.cameras
        return Observation(frames={c: CameraFrame(c, self.scene.render(), now) for c in names}, stamp=now)


# ---- robot adapter -----------------------------------------------------------------------------
class FakeAdapter:
    """Joint-space robot: succeeded goals move the joints to the last point (+ injected offsets).

    Faults are queued per goal kind: `traj_results` / `grip_results` pop a GoalStatus (or None =
    succeed) per goal; `joint_offset` adds an error to every reached position; `grasp_misses`
    counts how many upcoming closes end on nothing; `block` makes trajectory goals hang until
    canceled (for cancel tests), setting `blocking` when they start.
    """

    name = "fake"

    def __init__(self, profile: RobotProfile):
        self.profile = profile
        self.positions = {}
        for arm in profile.arms:
            self.positions.update(dict(zip(arm.joint_names, arm.home)))
        for g in profile.grippers:
            self.positions[g.joint] = 1.0
        self.trajectories: List[TrajectoryGoal] = []
        self.gripper_goals: List[GripperGoal] = []
        self.traj_results: List[Optional[GoalStatus]] = []
        self.grip_results: List[Optional[GoalStatus]] = []
        self.joint_offset = 0.0
        self.grasp_misses = 0
        self.holding_opening = 0.6
        self.block = False
        self.blocking = threading.Event()
        self.cancel_calls = 0
        self.state_fails = False
        self._lock = threading.Lock()

    def execute_trajectory(self, goal: TrajectoryGoal, cancel: Optional[CancelToken] = None,
                           timeout: float = 30.0) -> MotionResult:
        with self._lock:
            self.trajectories.append(goal)
            status = self.traj_results.pop(0) if self.traj_results else None
        if self.block:
            self.blocking.set()
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout:
                if cancel is not None and cancel.wait(0.01):
                    return MotionResult(GoalStatus.CANCELED, message="canceled")
            return MotionResult(GoalStatus.TIMEOUT, message="no result in time")
        if status is not None and status is not GoalStatus.SUCCEEDED:
            return MotionResult(status, error_code=-4 if status is GoalStatus.ABORTED else 0,
                                message=f"injected {status.value}")
        final = goal.points[-1].positions
        with self._lock:
            for n, q in zip(goal.joint_names, final):
                self.positions[n] = float(q) + self.joint_offset
        return MotionResult(GoalStatus.SUCCEEDED, duration=goal.points[-1].time_from_start)

    def execute_gripper(self, goal: GripperGoal, cancel: Optional[CancelToken] = None,
                        timeout: float = 10.0) -> MotionResult:
        with self._lock:
            self.gripper_goals.append(goal)
            status = self.grip_results.pop(0) if self.grip_results else None
        if status is not None and status is not GoalStatus.SUCCEEDED:
            return MotionResult(status, message=f"injected {status.value}")
        joint = self.profile.gripper(goal.gripper).joint
        with self._lock:
            if goal.position < 0.5:
                if self.grasp_misses > 0:
                    self.grasp_misses -= 1
                    self.positions[joint] = 0.05  # closed on nothing
                else:
                    self.positions[joint] = self.holding_opening
            else:
                self.positions[joint] = 0.97
        return MotionResult(GoalStatus.SUCCEEDED)

    def joint_state(self) -> JointState:
        if self.state_fails:
            raise ConnectionError("joint_states topic silent")
        with self._lock:
            return JointState(positions=dict(self.positions))

    def cancel_all(self) -> None:
        self.cancel_calls += 1


# ---- skill executor ----------------------------------------------------------------------------
#: Toy object positions (world frame, m) for the fake perception.
OBJECTS = {"cube": (0.1, 0.5, 0.02), "peg": (0.15, 0.5, 0.02), "socket": (-0.15, 0.5, 0.02)}
LOCATIONS = {"meet_point": (0.0, 0.5, 0.25), "table": (0.05, 0.45, 0.05), "above": None}


class FakeExecutor:
    """Turns SkillCalls into profile-valid goals: IK on the arm's chain to a toy target, one
    trajectory (current → target, limits respected), then a gripper goal for grasp/release."""

    def __init__(self, profile: RobotProfile, adapter: FakeAdapter, raise_on: Optional[str] = None):
        self.profile = profile
        self.adapter = adapter
        self.raise_on = raise_on
        self.calls: List[SkillCall] = []
        #: Called with each SkillCall while it "moves" (tests change the toy scene here).
        self.on_execute: Optional[Callable[[SkillCall], None]] = None
        self.chains = {a.name: SerialChain(a.chain) for a in profile.arms if a.chain is not None}

    def _arm(self, call: SkillCall):
        side = call.arm if call.arm in ("left", "right") else "right"
        return self.profile.arm(f"{side}_arm")

    def _target(self, call: SkillCall) -> np.ndarray:
        base = OBJECTS.get(call.obj or "", (0.1, 0.5, 0.02))
        if call.location in LOCATIONS and LOCATIONS[call.location] is not None:
            base = LOCATIONS[call.location]
        lift = {"reach": 0.08, "grasp": 0.0, "lift": 0.1, "release": 0.0}.get(call.skill, 0.05)
        if call.params.get("mode") == "descend":
            lift = 0.0
        return np.array(base) + np.array([0.0, 0.0, lift])

    def execute(self, call: SkillCall, cancel: Optional[CancelToken] = None) -> SkillExecution:
        self.calls.append(call)
        if self.raise_on and call.skill == self.raise_on:
            raise RuntimeError(f"injected executor crash in {call.skill}")
        if self.on_execute is not None:
            self.on_execute(call)
        arm = self._arm(call)
        ex = SkillExecution(call=call)
        chain = self.chains[arm.name]
        q0 = np.array([self.adapter.positions[n] for n in arm.joint_names])  # (not joint_state(): tests break that)
        res = chain.ik(self._target(call), q0=q0)
        if not res.ok:
            ex.error, ex.error_code = f"IK failed ({res.position_error:.3f} m off)", "ik_failed"
            return ex
        goal = TrajectoryGoal(group=arm.name, joint_names=arm.joint_names,
                              points=(TrajectoryPoint(tuple(q0), 0.0), TrajectoryPoint(tuple(res.q), 1.0)),
                              goal_tolerance=self.profile.tolerances.joint_goal)
        result = self.adapter.execute_trajectory(goal, cancel, timeout=self.profile.tolerances.motion_timeout_s)
        ex.goals.append((goal, result))
        if cancel is not None and cancel.cancelled:
            raise Cancelled("skill canceled")
        if not result.ok:
            return ex
        ex.joint_targets = dict(zip(arm.joint_names, (float(v) for v in res.q)))
        if call.skill in ("grasp", "release"):
            close = call.skill == "grasp"
            g = GripperGoal(gripper=arm.gripper, position=0.0 if close else 1.0)
            ex.goals.append((g, self.adapter.execute_gripper(g, cancel)))
            if close:
                ex.expect_holding = (arm.gripper,)
            else:
                ex.expect_released = (arm.gripper,)
        return ex


# ---- world model -------------------------------------------------------------------------------
class FakeWorldModel:
    """Yields `steps` (texts, or (text, image) pairs, or raw items) and records every request.

    `raw=True` yields the items unchanged (text chunks, images, junk) as a model runtime would.
    `script` (optional) is a list of per-call behaviours: a list of items to yield, or an
    Exception instance to raise; after it runs out, `steps` is used.
    """

    name = "fake-world-model"

    def __init__(self, steps=(), script=None, delay_s: float = 0.0, raw: bool = False):
        self.raw = raw  # True: yield the items as they are (raw interleaved output for the parser)
        self.steps = list(steps)
        self.script = list(script or [])
        self.requests: List[PlanRequest] = []
        self.delay_s = delay_s

    def plan(self, request: PlanRequest, cancel: Optional[CancelToken] = None) -> Iterator[PlanStep]:
        self.requests.append(request)
        items = self.script.pop(0) if self.script else self.steps
        if isinstance(items, BaseException):
            raise items
        for i, it in enumerate(items):
            if self.delay_s and cancel is not None and cancel.wait(self.delay_s):
                raise Cancelled("canceled")
            if self.raw:
                yield it
            elif isinstance(it, str):
                yield PlanStep(index=i, text=it, source=self.name)
            elif isinstance(it, tuple):
                yield PlanStep(index=i, text=it[0], image=it[1], source=self.name)
            else:
                yield it


SEVEN_STEPS = [
    "Move the right gripper above the red cube",
    "Lower the right gripper around the cube",
    "Grasp the red cube with the right gripper",
    "Lift the cube with the right arm to the meeting point between the arms",
    "Reach the cube with the left arm",
    "Grasp the cube with the left gripper",
    "Release the cube with the right gripper",
]


@dataclass
class EventRecorder:
    """A runner listener that keeps every event (and can act on one, e.g. cancel)."""

    events: list = field(default_factory=list)
    on_event: Optional[Callable] = None

    def __call__(self, event) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def types(self) -> List[str]:
        return [e.type.value for e in self.events]
