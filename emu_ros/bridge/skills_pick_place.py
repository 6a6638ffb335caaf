"""Pick-and-place skills: reach, grasp (top-down, aligned with the object's faces), lift and place
(part of ProfileSkillExecutor). A grasp records what it expects to hold for the step monitor."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from emu_ros.bridge.skill_geometry import SkillError, frame, unit
from emu_ros.core.kinematics import rotation_error
from emu_ros.core.profile import ArmSpec
from emu_ros.core.protocols import SkillCall, SkillExecution
from emu_ros.core.types import CancelToken

log = logging.getLogger(__name__)


class PickPlaceSkills:
    """reach / grasp / lift / place (mixed into ProfileSkillExecutor)."""

    def _skill_reach(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        if call.obj:
            pos, yaw, body = self._locate(call.obj)
            giver = self._giver(arm, body)
            if giver is not None:
                self._handover_approach(arm, giver, call, pos, body, ex, cancel)
                return
            if self._is_pinch_object(call, body):  # a thin object: above the point where it will be pinched
                self._above_pinch(arm, call, pos, yaw, body, ex, cancel)
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
        if giver is None and self._is_pinch_object(call, body):  # thin and flat: only a pinch holds it
            self._pinch(arm, call, pos, yaw, body, ex, cancel)
            return
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
        self._close_on(arm, call, body, pos, yaw, ex, cancel)

    def _close_on(self, arm: ArmSpec, call: SkillCall, body: str, pos: np.ndarray, yaw: float, ex: SkillExecution,
                  cancel: Optional[CancelToken]) -> None:
        """Close the gripper on `body` (seen at pos, yaw); the monitor then checks that it holds something."""
        if not self._grip(arm, float(self.param(call, "gripper_closed")), ex, cancel):
            return
        self.holding[arm.gripper] = body
        self.remember_grasp(arm, body, pos, yaw)
        ex.expect_holding = (arm.gripper,)

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
            x = unit([target[0] - base[0], target[1] - base[1], 0.0])
            keep = str(self.param(call, "lift_orient", body)) == "keep"
            if keep:
                x = R0[:, 0]
            R1 = frame(x, R0[:, 1])
            offset = np.zeros(3)  # unmeasured: the object is taken to sit at the tool centre
            est = self.measure(body, "in the hand (transport pose)") if body else None
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

    def _skill_place(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        body = self.holding.get(arm.gripper)
        target = self._location(call, call.location)
        if target is None:
            raise SkillError(f"place: step {call.text!r} names no location", "no_location")
        q0 = self._q(arm)
        p0, R0 = self._tool(arm, q0)
        offset = np.zeros(3)  # unmeasured: the object is taken to sit at the tool centre
        est = self.measure(body, "in the hand (place)") if body else None
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
        if body and not self._holds_something(arm.gripper):
            # it slipped out on the way: opening now would report a place that did not happen; the
            # monitor sees the empty gripper (expect_holding) and the step is unfinished
            log.info("place: %s no longer holds %s at the place target", arm.gripper, body)
            self.holding.pop(arm.gripper, None)
            ex.expect_holding = (arm.gripper,)
            return
        if call.params.get("release", True):
            if not self._grip(arm, float(self.param(call, "gripper_open")), ex, cancel):
                return
            self.holding.pop(arm.gripper, None)
            self._retreat(arm, call, body, ex, cancel)
            ex.expect_released = (arm.gripper,)
        else:
            ex.expect_holding = (arm.gripper,)

    def _retreat(self, arm: ArmSpec, call: SkillCall, body: Optional[str], ex: SkillExecution,
                 cancel: Optional[CancelToken]) -> None:
        """Move the opened hand away from what it just put down: `retreat` metres up, and as far back toward
        the arm's base when `retreat_toward_base` is set (a shared bin is then left free for the other arm).
        Where that is out of reach a shorter straight-up retreat is used; the object is already placed."""
        q2 = self._q(arm)
        p2, R2 = self._tool(arm, q2)
        r = float(self.param(call, "retreat", body))
        back = unit(np.r_[np.asarray(arm.chain.base_xyz, float)[:2] - p2[:2], 0.0])
        goals = [p2 + np.array([0.0, 0.0, r]), p2 + np.array([0.0, 0.0, r / 2])]
        if self.param(call, "retreat_toward_base", body):
            goals.insert(0, p2 + np.array([0.0, 0.0, r]) + r * back)
        for k, goal in enumerate(goals):
            try:
                pts = self._line(arm, q2, goal, R2, call, what="retreat")
            except SkillError as e:
                if k == len(goals) - 1:
                    raise
                log.info("retreat of the %s: %s; trying a shorter one", arm.name, e)
                continue
            self._send(arm, pts, ex, cancel)
            return
