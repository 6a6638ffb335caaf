"""ProfileSkillExecutor: skills (reach, grasp, lift, place, release, push, wipe, open, close) as joint goals.

A skill turns one mapped step ("grasp the red cube with the right gripper") into a few Cartesian
poses for the arm's tool point (fingertip centre), solves them with the profile's serial chain
(damped least squares, several candidate tool rotations to stay off the flipped-wrist branch),
densifies straight-line segments into joint waypoints (so the tool moves on a line, not on a
joint-space arc that could sweep through the object), times them by each joint's max_velocity and
a Cartesian speed cap, and sends them to the RobotAdapter with the gripper goals in between.

Nothing here is robot specific: arms, chains, grippers and limits come from the RobotProfile;
object positions come from a Perception (a detector on a robot, a labelled oracle in simulation);
geometry (approach height, grasp depth, handover meet point, ...) comes from SkillCall.params,
then from a per-task section, then from `SkillDefaults`.

The executor records what should hold afterwards (`expect_holding`, `expect_released`,
`joint_targets`) for the step monitor, which checks it against measured joint states only.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from emu_ros.core.kinematics import SerialChain, rotation_error
from emu_ros.core.profile import ArmSpec, RobotProfile
from emu_ros.core.protocols import (GripperGoal, Perception, RobotAdapter, SkillCall, SkillExecution,
                                      TrajectoryGoal, TrajectoryPoint)
from emu_ros.core.types import CancelToken

log = logging.getLogger(__name__)

SKILLS = ("reach", "grasp", "lift", "place", "release", "open", "close", "push", "wipe", "handover", "insert", "home")


@dataclass(frozen=True)
class SkillDefaults:
    """Geometry and timing used when neither the step nor the task says otherwise (metres, seconds)."""

    approach_height: float = 0.07  # tool point above the object's top face before descending
    grasp_offset_z: float = 0.002  # tool point above the object's centre when closing (grasp depth)
    object_half_height: float = 0.02
    grasp_symmetry: int = 2  # 4: a cube may be gripped across either pair of faces
    lift_height: float = 0.08
    meet_point: tuple = (0.0, 0.5, 0.25)  # where a handed-over object is presented
    handover_depth: float = 0.016  # how much of the exposed object the receiving fingers cover
    handover_min_gap: float = 0.006  # receiving fingertips stay this far from the giver's
    pregrasp_distance: float = 0.08
    insert_speed: float = 0.18  # m/s on the final straight approach of a handover / insertion
    linear_speed: float = 0.6  # m/s cap on any Cartesian segment
    waypoint_spacing: float = 0.02  # m between IK waypoints on straight segments
    retreat: float = 0.10
    place_height: float = 0.0  # object centre above the place target when opening
    lift_orient: str = "toward"  # at a lift target: "toward" = fingers point across the table, "keep" = as grasped
    insert_depth: float = 0.09  # held object's centre this far from the target's centre at the end of an insert
    pre_insert: float = 0.05  # extra distance of the aligned pre-insert pose
    align_iterations: int = 2  # measure-and-correct passes at the pre-insert pose
    object_half_length: float = 0.0  # held object's half length along its insertion axis
    push_distance: float = 0.08
    pusher_half_width: float = 0.01  # half thickness of the closed fingers along a push
    wipe_width: float = 0.10
    wipe_strokes: int = 3
    surface_z: float = 0.0
    speed_scale: float = 1.0  # >1 slows every motion down
    gripper_open: float = 1.0
    gripper_closed: float = 0.0
    close_settle_s: float = 0.0


class SkillError(RuntimeError):
    """A skill cannot be carried out (unknown object, unreachable pose); the text says why."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, float)
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else v


def frame(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Rotation whose columns are the tool axes: x along the fingers, y the closing axis (orthogonalised)."""
    x = _unit(x)
    y = np.asarray(y, float) - np.dot(y, x) * x
    if np.linalg.norm(y) < 1e-6:
        y = np.cross(x, [0.0, 0.0, 1.0]) if abs(x[2]) < 0.9 else np.cross(x, [0.0, 1.0, 0.0])
    y = _unit(y)
    return np.column_stack([x, y, np.cross(x, y)])


def _slerp_R(R0: np.ndarray, R1: np.ndarray, a: float) -> np.ndarray:
    from emu_ros.core.kinematics import axis_angle_matrix

    w = rotation_error(R0, R1)  # world-frame rotation vector R0 -> R1
    ang = float(np.linalg.norm(w))
    if ang < 1e-9:
        return R1.copy()
    return axis_angle_matrix(w / ang, a * ang) @ R0


class ProfileSkillExecutor:
    """SkillExecutor for any profile whose arms have kinematic chains."""

    def __init__(self, profile: RobotProfile, adapter: RobotAdapter, perception: Optional[Perception] = None,
                 task_params: Optional[Mapping[str, Any]] = None):
        self.profile = profile
        self.adapter = adapter
        self.perception = perception
        self.task_params = dict(task_params or {})
        self.chains = {a.name: SerialChain(a.chain) for a in profile.arms if a.chain is not None}
        #: gripper -> object it was last seen closing on (robot-side belief, cleared on release/open)
        self.holding: dict = {}

    # ================================================================== entry point
    def execute(self, call: SkillCall, cancel: Optional[CancelToken] = None) -> SkillExecution:
        ex = SkillExecution(call=call)
        skill = (call.skill or "").lower()
        handler = getattr(self, f"_skill_{skill}", None)
        if skill not in SKILLS or handler is None:
            ex.error, ex.error_code = f"skill {call.skill!r} is not supported (supported: {', '.join(SKILLS)})", "unsupported_skill"
            return ex
        try:
            handler(call, ex, cancel)
        except SkillError as e:
            ex.error, ex.error_code = str(e), e.code
            log.warning("skill %s failed: %s", skill, e)
        return ex

    def reset(self) -> None:
        """Forget beliefs about held objects (new episode)."""
        self.holding.clear()

    # ================================================================== parameters and lookups
    def param(self, call: SkillCall, name: str, obj_body: Optional[str] = None) -> Any:
        if name in call.params:
            return call.params[name]
        objs = self.task_params.get("objects") or {}
        if obj_body and name in (objs.get(obj_body) or {}):
            return objs[obj_body][name]
        skill_sec = (self.task_params.get("skills") or {}).get(call.skill) or {}
        if name in skill_sec:
            return skill_sec[name]
        if name in self.task_params:
            return self.task_params[name]
        return getattr(SkillDefaults, name) if name in {f.name for f in fields(SkillDefaults)} else None

    def _arm(self, call: SkillCall) -> ArmSpec:
        if not call.arm and call.obj and self.perception is not None:
            est = self.perception.locate(call.obj)  # no arm named: the arm holding the object
            for a in self.profile.arms:
                if est is not None and a.gripper and self.holding.get(a.gripper) == est.name and a.name in self.chains:
                    return a
        if not call.arm:
            if len(self.chains) == 1:
                return self.profile.arm(next(iter(self.chains)))
            raise SkillError(f"step {call.text!r} does not say which arm (arms: {sorted(self.chains)})", "no_arm")
        key = call.arm.lower()
        for a in self.profile.arms:
            side = a.name.split("_")[0]
            if key in (a.name, side, f"{side} arm", f"{side} gripper", f"{side} hand") or key == (a.gripper or ""):
                if a.name not in self.chains:
                    raise SkillError(f"arm {a.name!r} has no kinematic chain in profile {self.profile.name!r}", "no_chain")
                return a
        raise SkillError(f"unknown arm {call.arm!r} (arms: {[a.name for a in self.profile.arms]})", "unknown_arm")

    def _locate(self, obj: Optional[str], what: str = "object") -> tuple:
        if not obj:
            raise SkillError(f"the step names no {what}", "no_object")
        if self.perception is None:
            raise SkillError(f"no perception to locate {obj!r}", "no_perception")
        est = self.perception.locate(obj)
        if est is None:
            raise SkillError(f"{what} {obj!r} not found by perception {self.perception.name!r}", "object_not_found")
        return np.asarray(est.position, float), float(est.yaw), est.name

    def _location(self, call: SkillCall, loc: Optional[str]) -> Optional[np.ndarray]:
        """A named place (task `locations`, built-in handover/meet point) or an object used as a location."""
        if not loc:
            return None
        key = loc.lower()
        named = dict(self.param(call, "locations") or {})
        for name, xyz in named.items():
            if name.lower() in key or key in name.lower():
                return np.asarray(xyz, float)
        if re.search(r"handover|hand-over|meet|middle|cent(er|re)", key):
            return np.asarray(self.param(call, "meet_point"), float)
        if self.perception is not None:
            est = self.perception.locate(loc)
            if est is not None:
                return np.asarray(est.position, float)
        raise SkillError(f"location {loc!r} is unknown (named: {sorted(named)}, or an object perception can find)",
                         "location_not_found")

    # ================================================================== kinematics helpers
    def _q(self, arm: ArmSpec) -> np.ndarray:
        return self.adapter.joint_state().get(arm.joint_names)

    def _opening(self, gripper: str) -> float:
        return float(self.adapter.joint_state().positions.get(self.profile.gripper(gripper).joint, np.nan))

    def _holds_something(self, gripper: str) -> bool:
        g = self.profile.gripper(gripper)
        x = self._opening(gripper)
        return g.empty_below <= x < g.closed_above

    def _tool(self, arm: ArmSpec, q: Optional[np.ndarray] = None) -> tuple:
        return self.chains[arm.name].fk(self._q(arm) if q is None else q)

    def _solve(self, arm: ArmSpec, p: np.ndarray, rotations: Sequence[np.ndarray], seed: np.ndarray,
               what: str) -> tuple:
        """Best IK over candidate rotations and seeds (current, home): least motion, away from limits."""
        chain = self.chains[arm.name]
        seeds = [seed] + ([np.asarray(arm.home, float)] if len(arm.home) == chain.n else [])
        best = None
        for k, R in enumerate(rotations):
            for s in seeds:
                r = chain.ik(p, R, s)
                if not r.ok:
                    continue
                margin = np.minimum(r.q - chain.lower, chain.upper - r.q)
                score = float(np.linalg.norm(r.q - seed)) + 2.0 * float(np.sum(np.maximum(0.0, 0.15 - margin)))
                if best is None or score < best[0]:
                    best = (score, r.q, k)
        if best is None:
            raise SkillError(f"IK failed for the {arm.name} {what}: no solution at ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) "
                             f"for {len(rotations)} tool orientation(s)", "ik_failed")
        return best[1], rotations[best[2]]

    def _line(self, arm: ArmSpec, q0: np.ndarray, p1: np.ndarray, R1: np.ndarray, call: SkillCall,
              speed: Optional[float] = None, what: str = "path") -> list:
        """Joint waypoints moving the tool on a straight line (slerped rotation) from FK(q0) to (p1, R1).

        Returns [(q, seconds)] timed by joint max velocities and the Cartesian speed cap.
        """
        chain = self.chains[arm.name]
        p0, R0 = chain.fk(q0)
        dist = float(np.linalg.norm(p1 - p0))
        ang = float(np.linalg.norm(rotation_error(R0, R1)))
        spacing = float(self.param(call, "waypoint_spacing"))
        n = max(1, int(np.ceil(max(dist / spacing, ang / 0.15))))
        vmax = np.array([j.max_velocity for j in chain.spec.joints])
        lin = float(speed or self.param(call, "linear_speed"))
        scale = float(self.param(call, "speed_scale"))
        out, q = [], q0.copy()
        for i in range(1, n + 1):
            a = i / n
            p, R = p0 + a * (p1 - p0), _slerp_R(R0, R1, a)
            r = chain.ik(p, R, q)
            if not r.ok:
                raise SkillError(f"IK failed for the {arm.name} {what} at waypoint {i}/{n} "
                                 f"(error {r.position_error * 1000:.1f} mm, {r.rotation_error:.2f} rad)", "ik_failed")
            if np.max(np.abs(r.q - q)) > 0.6:
                raise SkillError(f"the {arm.name} {what} needs a wrist flip between waypoints {i - 1} and {i}",
                                 "ik_discontinuous")
            dt = max(float(np.max(np.abs(r.q - q) / vmax)), dist / n / lin, 0.04) * scale
            out.append((r.q, dt))
            q = r.q
        return out

    def _joint_move(self, arm: ArmSpec, q0: np.ndarray, q1: np.ndarray, call: SkillCall) -> list:
        """A direct joint-space move (free space, no line constraint), split in a few timed points."""
        chain = self.chains[arm.name]
        vmax = np.array([j.max_velocity for j in chain.spec.joints])
        T = max(float(np.max(np.abs(q1 - q0) / vmax)) * 1.5, 0.2)  # smooth-step peaks at 1.5x the mean speed * float(self.param(call, "speed_scale"))
        n = max(2, int(np.ceil(T / 0.25)))
        # smooth-step profile: slow start and end, so the servos do not overshoot at the corners
        return [(q0 + (3 * (i / n) ** 2 - 2 * (i / n) ** 3) * (q1 - q0), T / n) for i in range(1, n + 1)]

    def _send(self, arm: ArmSpec, pts: list, ex: SkillExecution, cancel: Optional[CancelToken]) -> bool:
        if not pts:
            return True
        t, points = 0.0, []
        for q, dt in pts:
            t += dt
            points.append(TrajectoryPoint(positions=tuple(float(x) for x in q), time_from_start=round(t, 4)))
        goal = TrajectoryGoal(group=arm.name, joint_names=tuple(arm.joint_names), points=tuple(points),
                              goal_tolerance=self.profile.tolerances.joint_goal)
        res = self.adapter.execute_trajectory(goal, cancel, timeout=max(self.profile.tolerances.motion_timeout_s, 3 * t))
        ex.goals.append((goal, res))
        for j, x in zip(arm.joint_names, pts[-1][0]):
            ex.joint_targets[j] = float(x)
        return res.ok

    def _grip(self, arm: ArmSpec, position: float, ex: SkillExecution, cancel: Optional[CancelToken]) -> bool:
        if not arm.gripper:
            raise SkillError(f"arm {arm.name!r} has no gripper", "no_gripper")
        goal = GripperGoal(gripper=arm.gripper, position=float(position))
        res = self.adapter.execute_gripper(goal, cancel, timeout=self.profile.tolerances.gripper_timeout_s * 2)
        ex.goals.append((goal, res))
        return res.ok

    def _stop(self, ex: SkillExecution, cancel: Optional[CancelToken]) -> bool:
        """True when the skill must not send more goals (a goal failed or cancel fired)."""
        return bool((cancel and cancel.cancelled) or not all(r.ok for _, r in ex.goals))

    # ================================================================== grasp geometry
    def _topdown_rotations(self, arm: ArmSpec, obj_pos: np.ndarray, yaw: float, symmetry: int) -> list:
        """Top-down tool rotations whose closing axis is aligned with the object's faces.

        For a 4-fold object only the two closing axes most across the arm's reach direction are kept
        (the natural wrist); both signs of each are tried, i.e. the two symmetric grasp yaws.
        """
        base = np.asarray(arm.chain.base_xyz, float)
        reach = _unit([obj_pos[0] - base[0], obj_pos[1] - base[1], 0.0])
        cands = []
        for k in range(max(1, int(symmetry))):
            th = yaw + k * (2 * np.pi / max(1, int(symmetry)))
            c = np.array([-np.sin(th), np.cos(th), 0.0])
            cands.append((abs(float(np.dot(c, reach))), c))
        cands.sort(key=lambda t: t[0])
        keep = [c for _, c in cands[: 2 if symmetry >= 4 else len(cands)]]
        rots = []
        for c in keep:
            for s in (1.0, -1.0):
                rots.append(frame([0.0, 0.0, -1.0], s * c))
        return rots

    def _giver(self, arm: ArmSpec, body: str) -> Optional[ArmSpec]:
        """Another arm that holds `body` now (executor belief confirmed by its measured gripper opening)."""
        for other in self.profile.arms:
            if other.name == arm.name or not other.gripper or other.name not in self.chains:
                continue
            if self.holding.get(other.gripper) == body and self._holds_something(other.gripper):
                return other
        return None

    def _handover_pose(self, arm: ArmSpec, giver: ArmSpec, call: SkillCall, obj_pos: np.ndarray,
                       body: str) -> tuple:
        """Receiving tool pose facing the giver's fingers and closing across them, on the exposed part."""
        pg, Rg = self._tool(giver)
        xg, zg = Rg[:, 0], Rg[:, 2]
        half = float(self.param(call, "object_half_height", body))
        d = float(np.dot(obj_pos - pg, xg))  # object centre beyond the giver's fingertips
        gap = max(float(self.param(call, "handover_min_gap")), d + half - float(self.param(call, "handover_depth")))
        p = pg + xg * gap
        rots = [frame(-xg, zg), frame(-xg, -zg)]
        return p, rots

    # ================================================================== skills
    def _skill_open(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        self._grip(arm, float(self.param(call, "gripper_open")), ex, cancel)
        self.holding.pop(arm.gripper, None)
        ex.expect_released = (arm.gripper,)

    def _skill_close(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        self._grip(arm, float(self.param(call, "gripper_closed")), ex, cancel)

    def _skill_home(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        q0 = self._q(arm)
        target = np.asarray(arm.poses.get(call.location or "", arm.home), float)
        self._send(arm, self._joint_move(arm, q0, target, call), ex, cancel)

    def _skill_reach(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        if call.obj:
            pos, yaw, body = self._locate(call.obj)
            giver = self._giver(arm, body)
            if giver is not None:
                self._handover_approach(arm, giver, call, pos, body, ex, cancel)
                return
            if not self._grip(arm, float(self.param(call, "gripper_open")), ex, cancel):
                return
            self.holding.pop(arm.gripper, None)
            self._above(arm, call, pos, yaw, body, ex, cancel)
            return
        mode = call.params.get("mode")
        if mode in ("retract", "descend"):
            q0 = self._q(arm)
            p0, R0 = self._tool(arm, q0)
            d = float(call.params.get("distance_m") or self.param(call, "retreat" if mode == "retract" else "approach_height"))
            p1 = p0 - R0[:, 0] * d if mode == "retract" else p0 - np.array([0.0, 0.0, d])
            self._send(arm, self._line(arm, q0, p1, R0, call, what=mode), ex, cancel)
            return
        target = self._location(call, call.location)
        if target is None:
            raise SkillError(f"reach: step {call.text!r} names neither an object nor a location", "no_object")
        q0 = self._q(arm)
        _, R0 = self._tool(arm, q0)
        q1, _ = self._solve(arm, target, [R0], q0, "reach target")
        self._send(arm, self._joint_move(arm, q0, q1, call), ex, cancel)

    def _above(self, arm: ArmSpec, call: SkillCall, pos: np.ndarray, yaw: float, body: str, ex: SkillExecution,
               cancel: Optional[CancelToken]) -> Optional[np.ndarray]:
        """Move the open gripper over the object, pointing down. Returns the chosen tool rotation."""
        half = float(self.param(call, "object_half_height", body))
        rots = self._topdown_rotations(arm, pos, yaw, int(self.param(call, "grasp_symmetry", body)))
        above = pos + np.array([0.0, 0.0, half + float(self.param(call, "approach_height", body))])
        q0 = self._q(arm)
        p_now, _ = self._tool(arm, q0)
        q1, R = self._solve(arm, above, rots, q0, "pre-grasp pose above the object")
        pts = []
        if p_now[2] < above[2] - 0.02:  # leave low positions vertically first, so nothing is swept off
            _, R_now = self._tool(arm, q0)
            pts += self._line(arm, q0, np.array([p_now[0], p_now[1], above[2]]), R_now, call, what="lift-off")
            q0 = pts[-1][0]
        pts += self._joint_move(arm, q0, q1, call)
        return R if self._send(arm, pts, ex, cancel) else None

    def _skill_grasp(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        pos, yaw, body = self._locate(call.obj)
        giver = self._giver(arm, body)
        if giver is not None:  # receiving a handed-over object
            p, rots = self._handover_pose(arm, giver, call, pos, body)
            p_now, R_now = self._tool(arm)
            if np.linalg.norm(p_now - p) > 0.01 or min(np.linalg.norm(rotation_error(R_now, R)) for R in rots) > 0.1:
                self._handover_approach(arm, giver, call, pos, body, ex, cancel)
                if self._stop(ex, cancel):
                    return
        else:
            half = float(self.param(call, "object_half_height", body))
            above_z = pos[2] + half + float(self.param(call, "approach_height", body))
            p_now, R_now = self._tool(arm)
            rots = self._topdown_rotations(arm, pos, yaw, int(self.param(call, "grasp_symmetry", body)))
            aligned = min(np.linalg.norm(rotation_error(R_now, R)) for R in rots) < 0.1
            over = np.linalg.norm(p_now[:2] - pos[:2]) < 0.01 and pos[2] < p_now[2] <= above_z + 0.03
            if over and aligned and self._opening(arm.gripper) > 0.8:
                R = min(rots, key=lambda R: np.linalg.norm(rotation_error(R_now, R)))
            else:  # not (or no longer) above the object: re-approach from its current position
                if not self._grip(arm, float(self.param(call, "gripper_open")), ex, cancel):
                    return
                R = self._above(arm, call, pos, yaw, body, ex, cancel)
                if R is None or self._stop(ex, cancel):
                    return
            grasp_p = pos + np.array([0.0, 0.0, float(self.param(call, "grasp_offset_z", body))])
            off = np.asarray(self.param(call, "grasp_offset", body) or (0.0, 0.0, 0.0), float)  # object frame
            c, s_ = np.cos(yaw), np.sin(yaw)
            grasp_p = grasp_p + np.array([c * off[0] - s_ * off[1], s_ * off[0] + c * off[1], off[2]])
            q0 = self._q(arm)
            if not self._send(arm, self._line(arm, q0, grasp_p, R, call, what="descent"), ex, cancel):
                return
        if not self._grip(arm, float(self.param(call, "gripper_closed")), ex, cancel):
            return
        self.holding[arm.gripper] = body
        ex.expect_holding = (arm.gripper,)

    def _handover_approach(self, arm: ArmSpec, giver: ArmSpec, call: SkillCall, pos: np.ndarray, body: str,
                           ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        """Open, go to a pre-grasp pose behind the exposed part, then slide in slowly along the giver's axis."""
        p, rots = self._handover_pose(arm, giver, call, pos, body)
        if not self._grip(arm, float(self.param(call, "gripper_open")), ex, cancel):
            return
        self.holding.pop(arm.gripper, None)
        q0 = self._q(arm)
        back = float(self.param(call, "pregrasp_distance"))
        pre = [p - R[:, 0] * back for R in rots]
        # choose the rotation by the pre-grasp solution, then reuse it for the insertion
        best = None
        for pp, R in zip(pre, rots):
            try:
                q, _ = self._solve(arm, pp, [R], q0, "handover pre-grasp")
            except SkillError:
                continue
            cost = float(np.linalg.norm(q - q0))
            if best is None or cost < best[0]:
                best = (cost, q, R)
        if best is None:
            raise SkillError(f"IK failed for the {arm.name} handover pre-grasp near ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f})",
                             "ik_failed")
        _, q_pre, R = best
        pts = self._joint_move(arm, q0, q_pre, call)
        if not self._send(arm, pts, ex, cancel):
            return
        self._send(arm, self._line(arm, self._q(arm), p, R, call, speed=float(self.param(call, "insert_speed")),
                                   what="handover insertion"), ex, cancel)
        gs = [g for g, b in self.holding.items() if b == body and g != arm.gripper]
        ex.expect_holding = tuple(gs)

    def _skill_handover(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        """Receive the object with this arm: approach (if needed) and close; the giver keeps holding."""
        self._skill_grasp(call, ex, cancel)

    def _skill_lift(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        body = self.holding.get(arm.gripper)
        q0 = self._q(arm)
        p0, R0 = self._tool(arm, q0)
        target = self._location(call, call.location)
        up = p0 + np.array([0.0, 0.0, float(self.param(call, "lift_height"))])
        pts = self._line(arm, q0, up, R0, call, what="lift")
        if target is not None:
            # present the object at `target`, fingers pointing from this arm's base toward the other side
            base = np.asarray(arm.chain.base_xyz, float)
            x = _unit([target[0] - base[0], target[1] - base[1], 0.0])
            keep = str(self.param(call, "lift_orient", body)) == "keep"
            if keep:
                x = R0[:, 0]
            R1 = frame(x, R0[:, 1])
            offset = np.zeros(3)
            if body and self.perception is not None:
                est = self.perception.locate(body)
                if est is not None:  # object position in the tool frame, measured now
                    offset = R0.T @ (np.asarray(est.position, float) - p0)
            p1 = target - R1 @ offset
            qa = pts[-1][0]
            q1, R1 = self._solve(arm, p1, [R1, frame(x, -R0[:, 1])], qa, "transport pose")
            # free space above the table: a joint-space move avoids the wrist singularity that a
            # straight-line re-orientation from pointing down to pointing sideways passes through
            pts += self._joint_move(arm, qa, q1, call)
        self._send(arm, pts, ex, cancel)
        if body:
            ex.expect_holding = (arm.gripper,)

    def _skill_release(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        body = self.holding.get(arm.gripper)
        if not self._grip(arm, float(self.param(call, "gripper_open")), ex, cancel):
            return
        self.holding.pop(arm.gripper, None)
        q0 = self._q(arm)
        p0, R0 = self._tool(arm, q0)
        back = p0 - R0[:, 0] * float(self.param(call, "retreat"))
        self._send(arm, self._line(arm, q0, back, R0, call, what="retreat"), ex, cancel)
        ex.expect_released = (arm.gripper,)
        ex.expect_holding = tuple(g for g, b in self.holding.items() if b == body and body is not None)

    def _skill_place(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        body = self.holding.get(arm.gripper)
        target = self._location(call, call.location)
        if target is None:
            raise SkillError(f"place: step {call.text!r} names no location", "no_location")
        q0 = self._q(arm)
        p0, R0 = self._tool(arm, q0)
        offset = np.zeros(3)
        if body and self.perception is not None:
            est = self.perception.locate(body)
            if est is not None:
                offset = R0.T @ (np.asarray(est.position, float) - p0)
        R = frame([0.0, 0.0, -1.0], R0[:, 1]) if call.params.get("topdown", True) else R0
        goal_obj = target + np.array([0.0, 0.0, float(self.param(call, "place_height", body))])
        goal_obj = goal_obj + np.asarray(self.param(call, "place_offset", body) or (0, 0, 0), float)
        p_down = goal_obj - R @ offset
        p_above = p_down + np.array([0.0, 0.0, float(self.param(call, "approach_height", body))])
        pts = []
        up = np.array([p0[0], p0[1], max(p0[2], p_above[2])])
        pts += self._line(arm, q0, up, R0, call, what="lift before place")
        qa = pts[-1][0]
        q1, R = self._solve(arm, p_above, [R, frame(R[:, 0], -R[:, 1])], qa, "pose above the place target")
        pts += self._joint_move(arm, qa, q1, call)
        pts += self._line(arm, q1, p_down, R, call, what="placing descent")
        if not self._send(arm, pts, ex, cancel):
            return
        if call.params.get("release", True):
            if not self._grip(arm, float(self.param(call, "gripper_open")), ex, cancel):
                return
            self.holding.pop(arm.gripper, None)
            q2 = self._q(arm)
            p2, R2 = self._tool(arm, q2)
            self._send(arm, self._line(arm, q2, p2 + np.array([0, 0, float(self.param(call, "retreat"))]), R2, call,
                                       what="retreat"), ex, cancel)
            ex.expect_released = (arm.gripper,)
        else:
            ex.expect_holding = (arm.gripper,)

    def _cartesian_path(self, arm: ArmSpec, call: SkillCall, waypoints: Sequence[np.ndarray], R: np.ndarray,
                        ex: SkillExecution, cancel: Optional[CancelToken], what: str) -> None:
        """Free move above the first waypoint, then straight segments through all of them, then up."""
        q0 = self._q(arm)
        first = np.asarray(waypoints[0], float)
        clear = float(self.param(call, "approach_height"))
        q_above, R = self._solve(arm, first + [0, 0, clear], [R, frame(R[:, 0], -R[:, 1])], q0, f"{what} start")
        pts = self._joint_move(arm, q0, q_above, call)
        q = q_above
        for w in [first, *waypoints[1:]]:
            seg = self._line(arm, q, np.asarray(w, float), R, call, what=what)
            pts += seg
            q = seg[-1][0]
        pts += self._line(arm, q, np.asarray(waypoints[-1], float) + [0, 0, clear], R, call, what=f"{what} exit")
        self._send(arm, pts, ex, cancel)

    def _skill_push(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        """Push an object along a horizontal direction (params `direction` [dx, dy], `push_distance`)."""
        arm = self._arm(call)
        pos, _, body = self._locate(call.obj)
        d = _unit(list(call.params.get("direction") or self.param(call, "direction") or (0.0, 1.0))[:2] + [0.0])
        half = float(self.param(call, "object_half_height", body))
        start = pos - d * (half + 0.03)
        end = pos + d * float(self.param(call, "push_distance", body))
        if not self._grip(arm, float(self.param(call, "gripper_closed")), ex, cancel):
            return
        R = frame([0.0, 0.0, -1.0], np.cross([0.0, 0.0, 1.0], d))  # fingers across the push direction
        # the closed fingers end where the object's near face must be: its centre then ends at `end`
        pusher = float(self.param(call, "pusher_half_width"))
        self._cartesian_path(arm, call, [start, end - d * (half + pusher)], R, ex, cancel, "push")

    def _skill_wipe(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        """Zig-zag strokes with the closed gripper over an area (object or location), just above the surface."""
        arm = self._arm(call)
        centre = self._location(call, call.location) if call.location else self._locate(call.obj, "area")[0]
        if centre is None:
            raise SkillError("wipe: step names no area", "no_location")
        w = float(self.param(call, "wipe_width"))
        n = max(1, int(self.param(call, "wipe_strokes")))
        z = float(self.param(call, "surface_z")) + 0.01
        pts = []
        for i in range(n + 1):
            y = centre[1] - w / 2 + w * i / n
            xs = (centre[0] - w / 2, centre[0] + w / 2) if i % 2 == 0 else (centre[0] + w / 2, centre[0] - w / 2)
            pts += [np.array([xs[0], y, z]), np.array([xs[1], y, z])]
        if not self._grip(arm, float(self.param(call, "gripper_closed")), ex, cancel):
            return
        self._cartesian_path(arm, call, pts, frame([0.0, 0.0, -1.0], [0.0, 1.0, 0.0]), ex, cancel, "wipe")

    def _skill_insert(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        """Insert the held object into a target object along the target's axis.

        Aligns the held object at a pre-insert distance (yaw turned parallel to the axis, leading end
        on the axis), re-measures both objects (perception) and corrects `align_iterations` times,
        then slides in slowly by pure translation until the object's centre is `insert_depth` from
        the target's centre. The gripper keeps holding (no release).
        """
        arm = self._arm(call)
        body = self.holding.get(arm.gripper)
        if body is None:
            raise SkillError(f"insert: the {arm.gripper} holds nothing to insert", "not_holding")
        if not call.location:
            raise SkillError(f"insert: step {call.text!r} names no target to insert into", "no_location")
        _, _, tgt_body = self._locate(call.location, "target")
        base = np.asarray(arm.chain.base_xyz, float)

        def aim(extra: float, rotate: bool) -> tuple:
            """(q, tool position, tool rotation) that puts the held object's leading end on the axis."""
            p_obj, yaw_obj, _ = self._locate(body)
            p_tgt, yaw, _ = self._locate(tgt_body, "target")
            # the insertion axis: the target's face direction (yaw + k*pi/2) that points most toward
            # this arm's base, i.e. the opening the arm can reach (a yaw is only known mod pi/2)
            toward = _unit([base[0] - p_tgt[0], base[1] - p_tgt[1], 0.0])
            axes = [np.array([np.cos(yaw + k * np.pi / 2), np.sin(yaw + k * np.pi / 2), 0.0]) for k in range(4)]
            a = max(axes, key=lambda v: float(np.dot(v, toward)))
            depth = float(self.param(call, "insert_depth", tgt_body)) + extra
            half_len = float(self.param(call, "object_half_length", body))
            q = self._q(arm)
            p_tip, R = self._tool(arm, q)
            obj_axes = [np.array([np.cos(yaw_obj + k * np.pi / 2), np.sin(yaw_obj + k * np.pi / 2), 0.0])
                        for k in range(4)]
            b = max(obj_axes, key=lambda v: float(np.dot(v, a)))  # held object's axis, same sense as a
            Rz = np.eye(3)
            if rotate:  # turn the tool about the vertical so the object's axis becomes parallel to a
                delta = float(np.arctan2(b[0] * a[1] - b[1] * a[0], float(np.dot(a, b))))
                Rz = np.array([[np.cos(delta), -np.sin(delta), 0.0], [np.sin(delta), np.cos(delta), 0.0],
                               [0.0, 0.0, 1.0]])
            # the leading end (it enters first) goes where it would be with a perfectly aligned object;
            # if the wrist cannot turn the last degrees (friction), the entry still hits the opening
            lead = p_obj - b * half_len
            rel = Rz @ (lead - p_tip)
            return q, p_tgt + a * (depth - half_len) - rel, Rz @ R

        pre = float(self.param(call, "pre_insert", tgt_body))
        q0, p_pre, R = aim(pre, True)
        q1, _ = self._solve(arm, p_pre, [R], q0, "pre-insert pose")
        if not self._send(arm, self._joint_move(arm, q0, q1, call), ex, cancel):
            return
        for _ in range(int(self.param(call, "align_iterations"))):  # correct with fresh estimates
            q0, p_pre, R = aim(pre, True)
            if not self._send(arm, self._line(arm, q0, p_pre, R, call, what="alignment"), ex, cancel):
                return
        q0, p_in, R = aim(0.0, False)
        if self._send(arm, self._line(arm, q0, p_in, R, call, speed=float(self.param(call, "insert_speed")),
                                      what="insertion"), ex, cancel):
            ex.expect_holding = (arm.gripper,)
