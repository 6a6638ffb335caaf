"""Gripper skills: open, close, release (open and step back) and going home (part of ProfileSkillExecutor)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from emu_ros.core.protocols import SkillCall, SkillExecution
from emu_ros.core.types import CancelToken


class GripperSkills:
    """open / close / home / release (mixed into ProfileSkillExecutor)."""

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
