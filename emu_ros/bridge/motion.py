"""Arm motion for skills: IK over candidate tool rotations, straight-line tool paths densified into
timed joint waypoints, free-space joint moves, and sending trajectory / gripper goals.

`ArmMotion` is one of the parts `ProfileSkillExecutor` is made of (skills.py); it reads the
executor's profile, adapter, chains and `param()`. Timing comes from each joint's max_velocity and a
Cartesian speed cap, so a skill never asks a controller for more than the profile allows.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from emu_ros.bridge.skill_geometry import SkillError, frame, slerp_rotation, unit
from emu_ros.core.kinematics import rotation_error
from emu_ros.core.profile import ArmSpec
from emu_ros.core.protocols import GripperGoal, SkillCall, SkillExecution, TrajectoryGoal, TrajectoryPoint
from emu_ros.core.types import CancelToken


class ArmMotion:
    """Kinematics and goal sending for the skill families (mixed into ProfileSkillExecutor)."""

    def _q(self, arm: ArmSpec) -> np.ndarray:
        """Measured arm joints, clipped into the chain's limits: a joint resting a hair past its limit
        (3.1428 for a 3.14158 forearm roll, measured) would otherwise make the first waypoint of every
        path planned from here an invalid goal."""
        q = self.adapter.joint_state().get(arm.joint_names)
        chain = self.chains.get(arm.name)
        return q if chain is None else np.clip(q, chain.lower, chain.upper)

    def _opening(self, gripper: str) -> float:
        return float(self.adapter.joint_state().positions.get(self.profile.gripper(gripper).joint, np.nan))

    def _holds_something(self, gripper: str) -> bool:
        g = self.profile.gripper(gripper)
        x = self._opening(gripper)
        return g.opening(g.empty_below) <= x < g.opening(g.closed_above)

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
            p, R = p0 + a * (p1 - p0), slerp_rotation(R0, R1, a)
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
        # smooth-step peaks at 1.5x the mean speed; speed_scale > 1 slows the move down like every other motion
        T = max(float(np.max(np.abs(q1 - q0) / vmax)) * 1.5, 0.2) * float(self.param(call, "speed_scale"))
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

    def _topdown_rotations(self, arm: ArmSpec, obj_pos: np.ndarray, yaw: float, symmetry: int) -> list:
        """Top-down tool rotations whose closing axis is aligned with the object's faces.

        For a 4-fold object only the two closing axes most across the arm's reach direction are kept
        (the natural wrist); both signs of each are tried, i.e. the two symmetric grasp yaws.
        """
        base = np.asarray(arm.chain.base_xyz, float)
        reach = unit([obj_pos[0] - base[0], obj_pos[1] - base[1], 0.0])
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
