"""Pinch grasp of a thin, flat object (a napkin folded into a strip): part of ProfileSkillExecutor.

A thin object cannot be grasped like a cube: there is only a few millimetres of edge for the finger
pads, so the tool point has to come down almost onto the table. The pinch therefore has its own
approach — lower (fingertip centre `pinch_height` above the table), slower (the last
`pinch_descent` metres at `pinch_speed`), flatter (the fingers tilted `pinch_tilt` rad about the
closing axis, wrist trailing, so the gripper body stays clear of the table) — and pinches at the
end of the strip nearest the arm (`pinch_inset` in from that end), closing across its width.

An object takes this path when its task parameters say `pinch: true`; "grasp the napkin" and
"pinch the end of the napkin" then do the same thing, and "move above the napkin" goes above the
pinch point.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from emu_ros.bridge.skill_geometry import SkillError, frame, unit
from emu_ros.core.kinematics import axis_angle_matrix
from emu_ros.core.profile import ArmSpec
from emu_ros.core.protocols import SkillCall, SkillExecution
from emu_ros.core.types import CancelToken

log = logging.getLogger(__name__)


class PinchSkills:
    """pinch (mixed into ProfileSkillExecutor; reach/grasp route pinch objects here)."""

    def _is_pinch_object(self, call: SkillCall, body: Optional[str]) -> bool:
        return bool(body) and bool(self.param(call, "pinch", body))

    def _pinch_pose(self, arm: ArmSpec, call: SkillCall, pos: np.ndarray, yaw: float, body: str) -> tuple:
        """(pinch point, candidate tool rotations): at the strip's end nearest the arm, closing across it."""
        along = np.array([np.cos(yaw), np.sin(yaw), 0.0])  # the strip's long axis
        base = np.asarray(arm.chain.base_xyz, float)
        # from the pinched end (the one nearer the arm's base) toward the middle
        reach = -along if np.dot(along, pos - base) < 0 else along
        half_len = float(self.param(call, "object_half_length", body))
        inset = float(self.param(call, "pinch_inset", body))
        point = pos - reach * (half_len - inset)
        point[2] = float(self.param(call, "surface_z")) + float(self.param(call, "pinch_height", body))
        across = np.array([-along[1], along[0], 0.0])
        # tilt about the closing axis so the fingertips lead toward the middle of the strip and the wrist
        # trails behind, away from the object
        tilted = axis_angle_matrix(unit(np.cross(np.array([0.0, 0.0, 1.0]), reach)),
                                   -float(self.param(call, "pinch_tilt", body)))
        rots = []
        for s in (1.0, -1.0):
            R = frame([0.0, 0.0, -1.0], s * across)
            rots.append(tilted @ R)
            rots.append(R)  # untilted, where the tilt is out of reach
        return point, rots

    def _above_pinch(self, arm: ArmSpec, call: SkillCall, pos: np.ndarray, yaw: float, body: str, ex: SkillExecution,
                     cancel: Optional[CancelToken]) -> Optional[np.ndarray]:
        """Open the gripper over the pinch point, `approach_height` up. Returns the chosen tool rotation."""
        point, rots = self._pinch_pose(arm, call, pos, yaw, body)
        above = point + np.array([0.0, 0.0, float(self.param(call, "approach_height", body))])
        if not self._grip(arm, float(self.param(call, "gripper_open")), ex, cancel):
            return None
        self.holding.pop(arm.gripper, None)
        q0 = self._q(arm)
        p_now, R_now = self._tool(arm, q0)
        pts = []
        if p_now[2] < above[2] - 0.02:  # leave low positions vertically first
            pts += self._line(arm, q0, np.array([p_now[0], p_now[1], above[2]]), R_now, call, what="lift-off")
            q0 = pts[-1][0]
        # the pinch descends with the rotation chosen here, so pick one that also reaches the pinch point
        q1, R = None, None
        for cand in rots:
            try:
                q1, R = self._solve(arm, above, [cand], q0, "pose above the pinch point")
                self._solve(arm, point, [R], q1, "pinch point")
                break
            except SkillError:
                q1 = None
        if q1 is None:
            raise SkillError(f"IK failed for the {arm.name} pinch of {body!r}: neither the pose above the pinch point "
                             f"nor the pinch point ({point[0]:.3f}, {point[1]:.3f}, {point[2]:.3f}) is reachable",
                             "ik_failed")
        pts += self._joint_move(arm, q0, q1, call)
        return R if self._send(arm, pts, ex, cancel) else None

    def _skill_pinch(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        arm = self._arm(call)
        pos, yaw, body = self._locate(call.obj)
        if not self._is_pinch_object(call, body):
            log.info("pinch of %r: not a thin object in this task, grasping it normally", body)
            self._skill_grasp(call, ex, cancel)
            return
        self._pinch(arm, call, pos, yaw, body, ex, cancel)

    def _pinch(self, arm: ArmSpec, call: SkillCall, pos: np.ndarray, yaw: float, body: str, ex: SkillExecution,
               cancel: Optional[CancelToken]) -> None:
        point, _ = self._pinch_pose(arm, call, pos, yaw, body)
        p_now, _ = self._tool(arm)
        above_z = point[2] + float(self.param(call, "approach_height", body))
        over = np.linalg.norm(p_now[:2] - point[:2]) < 0.015 and point[2] < p_now[2] <= above_z + 0.03
        if not (over and self._opening(arm.gripper) > 0.8):  # not above the pinch point: approach it first
            if self._above_pinch(arm, call, pos, yaw, body, ex, cancel) is None or self._stop(ex, cancel):
                return
        q0 = self._q(arm)
        _, R = self._tool(arm, q0)
        slow = float(self.param(call, "pinch_descent", body))
        speed = float(self.param(call, "pinch_speed", body))
        pts = self._line(arm, q0, point + np.array([0.0, 0.0, slow]), R, call, what="pinch approach")
        pts += self._line(arm, pts[-1][0], point, R, call, speed=speed, what="pinch descent")
        if self._send(arm, pts, ex, cancel):
            self._close_on(arm, call, body, pos, yaw, ex, cancel)
