"""Contact skills: push, wipe and insert — motions that keep the tool on a surface or an axis
(part of ProfileSkillExecutor)."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from emu_ros.bridge.skill_geometry import SkillError, frame, unit
from emu_ros.core.protocols import SkillCall, SkillExecution
from emu_ros.core.types import CancelToken

log = logging.getLogger(__name__)


class ContactSkills:
    """push / wipe / insert (mixed into ProfileSkillExecutor)."""

    def _skill_push(self, call: SkillCall, ex: SkillExecution, cancel: Optional[CancelToken]) -> None:
        """Push an object along a horizontal direction (params `direction` [dx, dy], `push_distance`)."""
        arm = self._arm(call)
        pos, _, body = self._locate(call.obj)
        d = unit(list(call.params.get("direction") or self.param(call, "direction") or (0.0, 1.0))[:2] + [0.0])
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
            toward = unit([base[0] - p_tgt[0], base[1] - p_tgt[1], 0.0])
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
