"""Hand-over between the two arms: which arm gives, where the receiving fingers meet the exposed
part of the object, and the slow straight approach onto it (part of ProfileSkillExecutor)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from emu_ros.bridge.skill_geometry import SkillError, frame
from emu_ros.core.profile import ArmSpec
from emu_ros.core.protocols import SkillCall, SkillExecution
from emu_ros.core.types import CancelToken


class HandoverSkills:
    """The handover skill and its geometry (mixed into ProfileSkillExecutor)."""

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
