"""`SimRobotAdapter`: the RobotAdapter of the simulated ALOHA, with real outcome codes.

A TrajectoryGoal is executed the way a ros2_control joint trajectory controller does it: the
waypoints are linearly interpolated at the control rate (50 Hz) and sent to the position servos;
the tracking error is watched all along (path tolerance) and at the end (goal tolerance within a
settle time). The outcome is therefore measured, not assumed: a blocked arm or a diverging physics
step gives ABORTED, a goal that does not finish in wall-clock time gives TIMEOUT, a cancel gives
CANCELED, an invalid goal REJECTED. Error codes follow control_msgs/FollowJointTrajectory
(-1 invalid goal, -2 invalid joints, -4 path tolerance violated, -5 goal tolerance violated).

Threading: goals for different groups may run concurrently from different threads. Whoever holds
the simulator lock advances the one shared clock by a tick and every active goal moves with it, so
two arms move together and no thread ever waits for another's goal to end.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from emu_ros.core.profile import RobotProfile
from emu_ros.core.protocols import GoalStatus, GripperGoal, JointState, MotionResult, TrajectoryGoal
from emu_ros.core.types import CancelToken
from emu_ros.sim.aloha_env import CONTROL_DT, AlohaSim

log = logging.getLogger(__name__)

INVALID_GOAL = -1
INVALID_JOINTS = -2
PATH_TOLERANCE_VIOLATED = -4
GOAL_TOLERANCE_VIOLATED = -5
PHYSICS_ERROR = -100


@dataclass(frozen=True)
class SimAdapterConfig:
    #: Tracking error (rad) that may not persist for `path_violation_s` during a motion.
    path_tolerance: float = 0.3
    path_violation_s: float = 0.4
    #: Time after the last waypoint to get within the goal tolerance.
    settle_timeout_s: float = 1.0
    #: Joints are compared against max(goal.goal_tolerance, this) (low-gain wrists sag a little under load).
    min_goal_tolerance: float = 0.02
    #: Gripper: done when within this of the command, or when stalled (an object between the fingers).
    gripper_tolerance: float = 0.03
    gripper_stall_velocity: float = 0.05  # normalised units / s
    gripper_min_s: float = 0.2
    gripper_max_s: float = 1.5
    #: 0 = as fast as possible (headless eval); 1 = real time (demo video, ROS clock).
    realtime_factor: float = 0.0


class _Active:
    """One goal being executed: produces set-points per tick and decides its own outcome."""

    def __init__(self, key: str, idx: np.ndarray, start_tick: int):
        self.key = key
        self.idx = idx
        self.start_tick = start_tick
        self.result: Optional[MotionResult] = None
        self.cancel_reason = ""


class _TrajActive(_Active):
    def __init__(self, key, idx, start_tick, q0, goal: TrajectoryGoal, tol: float, abort_at: Optional[float]):
        super().__init__(key, idx, start_tick)
        times = [float(p.time_from_start) for p in goal.points]
        pos = [np.asarray(p.positions, float) for p in goal.points]
        if times[0] > 1e-9:
            times.insert(0, 0.0)
            pos.insert(0, q0)
        self.times = np.asarray(times)
        self.pos = np.stack(pos)
        self.tol = tol
        self.abort_at = abort_at  # injected fault: abort at this fraction of the duration
        self.over_path_s = 0.0
        self.frozen: Optional[np.ndarray] = None

    @property
    def duration(self) -> float:
        return float(self.times[-1])

    def setpoint(self, t: float) -> np.ndarray:
        if self.frozen is not None:
            return self.frozen
        if t >= self.times[-1]:
            return self.pos[-1]
        k = int(np.searchsorted(self.times, t, side="right")) - 1
        k = max(0, min(k, len(self.times) - 2))
        t0, t1 = self.times[k], self.times[k + 1]
        a = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
        return self.pos[k] + a * (self.pos[k + 1] - self.pos[k])


class _GripActive(_Active):
    def __init__(self, key, idx, start_tick, target: float):
        super().__init__(key, idx, start_tick)
        self.target = float(np.clip(target, 0.0, 1.0))
        self.still_ticks = 0


class SimRobotAdapter:
    """RobotAdapter over `AlohaSim`: joint trajectories and grippers by the profile's joint names."""

    name = "sim-aloha"

    def __init__(self, sim: AlohaSim, profile: RobotProfile, config: Optional[SimAdapterConfig] = None):
        self.sim = sim
        self.profile = profile
        self.config = config or SimAdapterConfig()
        self._lock = threading.RLock()
        self._active: dict = {}
        self._cancel_epoch = 0
        self._injected_aborts: list = []  # group names (or "*") whose next trajectory aborts
        self._wall0: Optional[float] = None
        self._clock_thread: Optional[threading.Thread] = None
        self._clock_stop = threading.Event()
        self._ticked = threading.Condition()
        self._tick0 = 0
        # profile joint name -> index in the 14-d action / measured vector
        self.index: dict = {}
        self.groups: dict = {}
        self.gripper_index: dict = {}
        self.limits: dict = {}
        for arm in profile.arms:
            side = "left" if "left" in arm.name else "right" if "right" in arm.name else None
            if side is None or len(arm.joint_names) != 6:
                raise ValueError(f"sim adapter: arm {arm.name!r} does not map onto the ALOHA's left/right 6-dof arms")
            base = 0 if side == "left" else 7
            for i, j in enumerate(arm.joint_names):
                self.index[j] = base + i
            self.groups[arm.name] = tuple(arm.joint_names)
            if arm.chain is not None:
                for js in arm.chain.joints:
                    self.limits[js.name] = (js.lower, js.upper)
            if arm.gripper:
                g = profile.gripper(arm.gripper)
                self.gripper_index[g.name] = base + 6
                self.index[g.joint] = base + 6

    # ------------------------------------------------------------------ protocol
    def joint_state(self) -> JointState:
        q = self.sim.qpos14()
        v = self.sim.qvel14()
        return JointState(positions={n: float(q[i]) for n, i in self.index.items()},
                          velocities={n: float(v[i]) for n, i in self.index.items()}, stamp=time.time())

    def cancel_all(self) -> None:
        """Stop every goal where it is (hold the measured position); their callers get CANCELED."""
        with self._lock:
            for a in self._active.values():
                a.cancel_reason = "cancel_all"
        log.info("cancel_all: %d active goal(s)", len(self._active))

    def inject_abort(self, group: str = "*") -> None:
        """Fault injection: the next trajectory of `group` (or any, "*") is aborted half-way."""
        with self._lock:
            self._injected_aborts.append(group)

    def execute_trajectory(self, goal: TrajectoryGoal, cancel: Optional[CancelToken] = None,
                           timeout: float = 30.0) -> MotionResult:
        bad = [j for j in goal.joint_names if j not in self.index or j in self.gripper_joint_names]
        if bad or not goal.joint_names:
            return self._reject(INVALID_JOINTS, f"unknown joints {bad or '[]'} (known: {sorted(self.index)})")
        if len(set(goal.joint_names)) != len(goal.joint_names):
            return self._reject(INVALID_JOINTS, "duplicate joint names")
        if not goal.points:
            return self._reject(INVALID_GOAL, "trajectory has no points")
        last = -1.0
        for k, p in enumerate(goal.points):
            if len(p.positions) != len(goal.joint_names):
                return self._reject(INVALID_GOAL, f"point {k}: {len(p.positions)} positions for {len(goal.joint_names)} joints")
            if p.time_from_start <= last or p.time_from_start < 0:
                return self._reject(INVALID_GOAL, f"point {k}: time_from_start must increase (got {p.time_from_start})")
            last = p.time_from_start
            for j, x in zip(goal.joint_names, p.positions):
                lo, hi = self.limits.get(j, (-np.inf, np.inf))
                if not (lo - 1e-3 <= x <= hi + 1e-3) or not np.isfinite(x):
                    return self._reject(INVALID_GOAL, f"point {k}: {j}={x:.4f} outside limits [{lo:.3f}, {hi:.3f}]")
        idx = np.array([self.index[j] for j in goal.joint_names])
        with self._lock:
            abort_at = None
            for k, g in enumerate(self._injected_aborts):
                if g == "*" or g == goal.group:
                    abort_at = 0.5
                    del self._injected_aborts[k]
                    break
            q0 = self.sim.action[idx].copy()
            tol = max(goal.goal_tolerance, self.config.min_goal_tolerance)
            act = _TrajActive(goal.group, idx, self.sim.ticks, q0, goal, tol, abort_at)
            self._claim(act)
        return self._run(act, cancel, timeout)

    def execute_gripper(self, goal: GripperGoal, cancel: Optional[CancelToken] = None,
                        timeout: float = 10.0) -> MotionResult:
        if goal.gripper not in self.gripper_index:
            return self._reject(INVALID_JOINTS, f"unknown gripper {goal.gripper!r} (known: {sorted(self.gripper_index)})")
        if not np.isfinite(goal.position):
            return self._reject(INVALID_GOAL, f"gripper position {goal.position} is not finite")
        with self._lock:
            act = _GripActive(goal.gripper, np.array([self.gripper_index[goal.gripper]]), self.sim.ticks, goal.position)
            self._claim(act)
        return self._run(act, cancel, timeout)

    def hold(self, seconds: float, cancel: Optional[CancelToken] = None) -> None:
        """Let simulated time pass with the current commands (settling, waiting for a camera)."""
        end = self.sim.ticks + int(round(seconds / CONTROL_DT))
        while self.sim.ticks < end and not (cancel and cancel.cancelled):
            if self.clock_running:
                self._wait_tick()
                continue
            with self.sim.lock:
                if self.sim.ticks < end:
                    self._tick()

    # ------------------------------------------------------------------ real-time clock
    @property
    def clock_running(self) -> bool:
        return self._clock_thread is not None and self._clock_thread.is_alive()

    def start_clock(self, realtime_factor: float = 1.0) -> None:
        """Advance the simulator in (scaled) real time from a background thread, goals or not.

        For the ROS demo: time then passes while the runner settles, plans or waits for a camera,
        objects keep falling, and camera frames show motion at its real speed. Goal calls then only
        wait for the clock instead of stepping themselves. Headless evaluation leaves it off and
        steps as fast as the CPU allows.
        """
        if realtime_factor <= 0:
            raise ValueError(f"realtime_factor must be > 0, got {realtime_factor}")
        if self.clock_running:
            return
        self._clock_stop.clear()
        self._clock_thread = threading.Thread(target=self._clock_loop, args=(float(realtime_factor),),
                                              name="sim-clock", daemon=True)
        self._clock_thread.start()

    def stop_clock(self) -> None:
        self._clock_stop.set()
        if self._clock_thread is not None:
            self._clock_thread.join(timeout=2.0)
        self._clock_thread = None

    def _clock_loop(self, factor: float) -> None:
        wall0, tick0 = time.monotonic(), self.sim.ticks
        while not self._clock_stop.is_set():
            due = tick0 + int((time.monotonic() - wall0) * factor / CONTROL_DT)
            if self.sim.ticks < tick0:  # the simulator was reset: re-anchor
                wall0, tick0 = time.monotonic(), self.sim.ticks
                continue
            if self.sim.ticks >= due:
                self._clock_stop.wait(CONTROL_DT / factor / 2)
                continue
            if due - self.sim.ticks > int(0.5 / CONTROL_DT):  # fell behind (slow CPU): drop the backlog
                wall0, tick0 = time.monotonic(), self.sim.ticks
            try:
                with self.sim.lock:
                    self._tick()
            except Exception:  # noqa: BLE001 - keep the clock alive; goals report their own errors
                log.exception("sim clock tick failed")

    @property
    def gripper_joint_names(self) -> set:
        return {self.profile.gripper(g).joint for g in self.gripper_index}

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _reject(code: int, msg: str) -> MotionResult:
        log.warning("goal rejected: %s", msg)
        return MotionResult(GoalStatus.REJECTED, code, msg)

    def _claim(self, act: _Active) -> None:
        """A new goal for a group preempts the old one (as a trajectory controller does)."""
        old = self._active.get(act.key)
        if old is not None and old.result is None:
            old.result = MotionResult(GoalStatus.CANCELED, 0, "preempted by a newer goal")
        self._active[act.key] = act

    def _run(self, act: _Active, cancel: Optional[CancelToken], timeout: float) -> MotionResult:
        wall0 = time.monotonic()
        while True:
            with self.sim.lock:
                if act.result is not None:
                    break
                if cancel is not None and cancel.cancelled:
                    act.cancel_reason = cancel.reason or "canceled"
                if act.cancel_reason:
                    self._hold_here(act)
                    act.result = MotionResult(GoalStatus.CANCELED, 0, f"canceled ({act.cancel_reason})",
                                              self._elapsed(act))
                    break
                if time.monotonic() - wall0 > timeout:
                    self._hold_here(act)
                    act.result = MotionResult(GoalStatus.TIMEOUT, 0, f"no result within {timeout:.1f} s",
                                              self._elapsed(act))
                    break
                if not self.clock_running:
                    self._tick()
                    continue
            self._wait_tick()  # the clock thread advances time; wake up on its next tick
        with self._lock:
            if self._active.get(act.key) is act:
                del self._active[act.key]
        if not act.result.ok:
            log.info("%s goal %s: %s", act.key, act.result.status.value, act.result.message)
        return act.result

    def _wait_tick(self) -> None:
        with self._ticked:
            self._ticked.wait(0.05)

    def _elapsed(self, act: _Active) -> float:
        return (self.sim.ticks - act.start_tick) * CONTROL_DT

    def _hold_here(self, act: _Active) -> None:
        q = self.sim.qpos14()
        self.sim.action[act.idx] = q[act.idx]
        if isinstance(act, _TrajActive):
            act.frozen = q[act.idx].copy()

    def _tick(self) -> None:
        """Advance the shared clock by one control period (caller holds sim.lock)."""
        cfg = self.config
        with self._lock:
            active = [a for a in self._active.values() if a.result is None]
        for a in active:  # set-points for this tick
            t = (self.sim.ticks - a.start_tick + 1) * CONTROL_DT
            if isinstance(a, _TrajActive):
                if a.abort_at is not None and a.frozen is None and t >= a.abort_at * a.duration:
                    self._hold_here(a)
                    a.result = MotionResult(GoalStatus.ABORTED, PATH_TOLERANCE_VIOLATED,
                                            "controller aborted the trajectory (injected fault)", t)
                    continue
                self.sim.action[a.idx] = a.setpoint(t)
            else:
                self.sim.action[a.idx] = a.target
        try:
            self.sim.step()
        except Exception as e:  # noqa: BLE001 - dm_control PhysicsError and MuJoCo warnings
            for a in active:
                if a.result is None:
                    a.result = MotionResult(GoalStatus.ABORTED, PHYSICS_ERROR, f"physics error: {e}")
            self._reset_after_physics_error()
            return
        if cfg.realtime_factor > 0 and not self.clock_running:
            self._pace()
        with self._ticked:
            self._ticked.notify_all()
        q = self.sim.qpos14()
        v = self.sim.qvel14()
        for a in active:
            if a.result is not None:
                continue
            t = (self.sim.ticks - a.start_tick) * CONTROL_DT
            if isinstance(a, _TrajActive):
                err = float(np.max(np.abs(q[a.idx] - a.setpoint(t))))
                if t <= a.duration:
                    a.over_path_s = a.over_path_s + CONTROL_DT if err > cfg.path_tolerance else 0.0
                    if a.over_path_s >= cfg.path_violation_s:
                        self._hold_here(a)
                        a.result = MotionResult(GoalStatus.ABORTED, PATH_TOLERANCE_VIOLATED,
                                                f"tracking error {err:.3f} rad above path tolerance "
                                                f"{cfg.path_tolerance} for {cfg.path_violation_s} s", t)
                else:
                    if err <= a.tol:
                        a.result = MotionResult(GoalStatus.SUCCEEDED, 0, f"reached (max error {err:.4f} rad)", t)
                    elif t > a.duration + cfg.settle_timeout_s:
                        a.result = MotionResult(GoalStatus.ABORTED, GOAL_TOLERANCE_VIOLATED,
                                                f"final error {err:.3f} rad above goal tolerance {a.tol}", t)
            else:
                pos, vel = float(q[a.idx[0]]), float(v[a.idx[0]])
                if t < cfg.gripper_min_s:
                    continue
                reached = abs(pos - a.target) <= cfg.gripper_tolerance
                a.still_ticks = a.still_ticks + 1 if abs(vel) < cfg.gripper_stall_velocity else 0
                if reached or a.still_ticks >= 5 or t >= cfg.gripper_max_s:
                    how = "reached" if reached else "stalled" if a.still_ticks >= 5 else "stopped"
                    a.result = MotionResult(GoalStatus.SUCCEEDED, 0, f"gripper {how} at {pos:.3f}", t)

    def _pace(self) -> None:
        now = time.monotonic()
        if self._wall0 is None or self.sim.ticks < self._tick0:
            self._wall0, self._tick0 = now, self.sim.ticks
        ahead = (self.sim.ticks - self._tick0) * CONTROL_DT / self.config.realtime_factor - (now - self._wall0)
        if ahead > 0:
            time.sleep(min(ahead, 0.1))
        elif ahead < -0.5:  # fell behind (rendering, GC): re-anchor instead of racing
            self._wall0, self._tick0 = now, self.sim.ticks

    def _reset_after_physics_error(self) -> None:
        """Keep the simulator usable after a divergence: zero velocities, hold the measured pose."""
        import mujoco

        d, m = self.sim.data, self.sim.model
        d.qvel[:] = 0.0
        d.qacc_warmstart[:] = 0.0
        mujoco.mj_forward(m, d)
        self.sim.action[:] = self.sim.qpos14()
