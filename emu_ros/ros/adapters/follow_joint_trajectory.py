"""RobotAdapter over control_msgs FollowJointTrajectory + GripperCommand (ros2_control / MoveIt setups).

The result is requested as soon as a goal is accepted (servers expire stored results), rejected
goals and missing servers are reported as such, and a cancel reaches the controller. control_msgs
is imported lazily: it is on every robot with ros2_control, not in the PyPI wheels (tests generate
it locally).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Dict, Optional

from action_msgs.msg import GoalStatus as GoalStatusMsg
from rclpy.action import ActionClient
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from emu_ros.core.profile import RobotProfile
from emu_ros.core.protocols import GoalStatus, GripperGoal, JointState, MotionResult, TrajectoryGoal
from emu_ros.core.types import CancelToken
from emu_ros.ros.adapters.base import (AdapterConfigError, JointStateCache, gripper_state_ranges, import_interface,
                                       result, wait_future)

log = logging.getLogger(__name__)


def _duration(seconds: float):
    from builtin_interfaces.msg import Duration

    frac, whole = math.modf(max(0.0, seconds))
    return Duration(sec=int(whole), nanosec=int(frac * 1e9))


def _cancel_if_accepted(future) -> None:
    try:
        handle = future.result()
        if handle is not None and handle.accepted:
            handle.cancel_goal_async()
    except Exception as e:  # noqa: BLE001 - best effort, from an executor callback
        log.warning("late cancel of an abandoned goal failed: %s", e)


class FollowJointTrajectoryAdapter:
    """One FollowJointTrajectory client per arm, one GripperCommand client per gripper."""

    def __init__(self, node: Node, profile: RobotProfile, server_timeout_s: float = 2.0):
        self.name = f"follow_joint_trajectory:{profile.name}"
        self._node = node
        self._profile = profile
        self._server_timeout = server_timeout_s
        s = profile.adapter_settings
        self._fjt = import_interface(s.get("trajectory_action_type", "control_msgs/action/FollowJointTrajectory"))
        self._grip = import_interface(s.get("gripper_action_type", "control_msgs/action/GripperCommand"))
        group = ReentrantCallbackGroup()
        traj_names = s.get("trajectory_actions") or {}
        grip_names = s.get("gripper_actions") or {}
        self._arm_clients: Dict[str, ActionClient] = {}
        for arm in profile.arms:
            if arm.name not in traj_names:
                raise AdapterConfigError(f"{profile.source_path}: adapter.trajectory_actions has no entry for arm {arm.name!r}")
            self._arm_clients[arm.name] = ActionClient(node, self._fjt, traj_names[arm.name], callback_group=group)
        self._grip_clients: Dict[str, ActionClient] = {
            g.name: ActionClient(node, self._grip, grip_names[g.name], callback_group=group)
            for g in profile.grippers if g.name in grip_names}
        self._hw_names = {arm.name: tuple(arm.hardware_joint_names) for arm in profile.arms}
        topics = s.get("joint_state_topics") or ["/joint_states"]
        name_map = {}
        for topic in topics:
            mapping = {}
            for arm in profile.arms:
                mapping.update(dict(zip(arm.hardware_joint_names, arm.joint_names)))
            for g in profile.grippers:
                mapping.setdefault(g.hardware_joint, g.joint)
            name_map[topic] = mapping
        self._state = JointStateCache(node, topics, name_map, gripper_state_ranges(profile))
        self._active_lock = threading.Lock()
        self._active = []  # goal handles in flight

    # --------------------------------------------------------------------------------- protocol
    def joint_state(self) -> JointState:
        return self._state.snapshot()

    def cancel_all(self) -> None:
        with self._active_lock:
            handles, self._active = list(self._active), []
        for h in handles:
            try:
                h.cancel_goal_async()
            except Exception as e:  # noqa: BLE001 - cancel must never raise into the runner
                log.warning("cancel of a goal failed: %s", e)

    def execute_trajectory(self, goal: TrajectoryGoal, cancel: Optional[CancelToken] = None,
                           timeout: float = 30.0) -> MotionResult:
        client = self._arm_clients.get(goal.group)
        if client is None:
            return result(GoalStatus.REJECTED, f"no trajectory controller configured for group {goal.group!r}", -1)
        msg = self._fjt.Goal()
        msg.trajectory.joint_names = list(self._hw_names[goal.group])
        if len(goal.joint_names) != len(self._hw_names[goal.group]):
            return result(GoalStatus.REJECTED, f"goal has {len(goal.joint_names)} joints, arm {goal.group} has "
                                               f"{len(self._hw_names[goal.group])}", -2)
        from trajectory_msgs.msg import JointTrajectoryPoint

        for p in goal.points:
            pt = JointTrajectoryPoint(positions=[float(x) for x in p.positions], time_from_start=_duration(p.time_from_start))
            if p.velocities is not None:
                pt.velocities = [float(v) for v in p.velocities]
            msg.trajectory.points.append(pt)
        msg.goal_time_tolerance = _duration(1.0)
        return self._run(client, msg, cancel, timeout, what=f"trajectory for {goal.group}")

    def execute_gripper(self, goal: GripperGoal, cancel: Optional[CancelToken] = None, timeout: float = 10.0) -> MotionResult:
        client = self._grip_clients.get(goal.gripper)
        if client is None:
            return result(GoalStatus.REJECTED, f"no gripper controller configured for {goal.gripper!r}", -1)
        spec = self._profile.gripper(goal.gripper)
        msg = self._grip.Goal()
        msg.command.position = spec.closed_command + goal.position * (spec.open_command - spec.closed_command)
        msg.command.max_effort = float(goal.max_effort)
        res = self._run(client, msg, cancel, timeout, what=f"gripper {goal.gripper}")
        return res

    # --------------------------------------------------------------------------------- internals
    def _run(self, client: ActionClient, msg, cancel: Optional[CancelToken], timeout: float, what: str) -> MotionResult:
        t0 = time.monotonic()
        if not client.wait_for_server(timeout_sec=self._server_timeout):
            return result(GoalStatus.UNAVAILABLE, f"{what}: action server {client._action_name} not available "
                                                  f"after {self._server_timeout:.1f} s", started=t0)
        send = client.send_goal_async(msg)
        state = wait_future(send, timeout, cancel)
        if state != "done":
            # The goal may still be accepted later: cancel it then, so no arm keeps moving unwatched.
            send.add_done_callback(_cancel_if_accepted)
            return result(GoalStatus.CANCELED if state == "canceled" else GoalStatus.TIMEOUT,
                          f"{what}: no goal response ({state})", started=t0)
        handle = send.result()
        if handle is None or not handle.accepted:
            return result(GoalStatus.REJECTED, f"{what}: goal rejected by {client._action_name}", -1, t0)
        res_future = handle.get_result_async()  # ask at once: servers expire finished results
        with self._active_lock:
            self._active.append(handle)
        try:
            state = wait_future(res_future, max(0.0, timeout - (time.monotonic() - t0)), cancel)
            if state != "done":
                cancel_fut = handle.cancel_goal_async()
                wait_future(cancel_fut, 2.0)
                status = GoalStatus.CANCELED if state == "canceled" else GoalStatus.TIMEOUT
                return result(status, f"{what}: {'canceled' if state == 'canceled' else f'no result within {timeout:.1f} s'}",
                              started=t0)
            wrapped = res_future.result()
        finally:
            with self._active_lock:
                if handle in self._active:
                    self._active.remove(handle)
        code = int(getattr(wrapped.result, "error_code", 0))
        text = str(getattr(wrapped.result, "error_string", ""))
        if wrapped.status == GoalStatusMsg.STATUS_SUCCEEDED and code == 0:
            if hasattr(wrapped.result, "reached_goal") and not wrapped.result.reached_goal and not wrapped.result.stalled:
                return result(GoalStatus.ABORTED, f"{what}: gripper neither reached its goal nor stalled", -5, t0)
            return result(GoalStatus.SUCCEEDED, text, 0, t0)
        if wrapped.status == GoalStatusMsg.STATUS_CANCELED:
            return result(GoalStatus.CANCELED, f"{what}: canceled by the server {text}".strip(), code, t0)
        return result(GoalStatus.ABORTED, f"{what}: aborted (error_code {code}) {text}".strip(), code or -1, t0)
