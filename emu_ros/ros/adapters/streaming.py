"""RobotAdapters for robots commanded by topics, not actions: Interbotix xs_sdk (ALOHA) and Agibot AimDK.

A topic gives no result, so the outcome is measured: the trajectory is interpolated and streamed at
`stream_hz`, then the measured joint state must come within the goal tolerance before a settle
timeout (else ABORTED, error −5 like FollowJointTrajectory's GOAL_TOLERANCE_VIOLATED). No
subscriber on the command topic → UNAVAILABLE; no joint state ever received → UNAVAILABLE.
"""
from __future__ import annotations

import abc
import logging
import threading
import time
from typing import Dict, Optional

import numpy as np
from rclpy.node import Node

from emu_ros.core.profile import RobotProfile
from emu_ros.core.protocols import GoalStatus, GripperGoal, JointState, MotionResult, TrajectoryGoal
from emu_ros.core.types import CancelToken
from emu_ros.ros.adapters.base import (AdapterConfigError, JointStateCache, gripper_state_ranges, import_interface,
                                       result, state_qos)

log = logging.getLogger(__name__)


def interpolate(q0: np.ndarray, goal: TrajectoryGoal, dt: float) -> list:
    """Linear set-points every `dt` seconds from the current positions through the goal's waypoints."""
    times = [0.0] + [p.time_from_start for p in goal.points]
    poses = [q0] + [np.asarray(p.positions, float) for p in goal.points]
    out, t = [], dt
    for i in range(1, len(times)):
        t_a, t_b = times[i - 1], max(times[i], times[i - 1] + 1e-6)
        while t < t_b:
            a = (t - t_a) / (t_b - t_a)
            out.append((1 - a) * poses[i - 1] + a * poses[i])
            t += dt
    out.append(poses[-1])
    return out


class StreamingTopicAdapter(abc.ABC):
    """Streams joint set-points on topics and judges completion from measured joint states."""

    def __init__(self, node: Node, profile: RobotProfile, name_map: Dict[str, Dict[str, str]]):
        s = profile.adapter_settings
        self._node = node
        self._profile = profile
        self._hz = float(s.get("stream_hz", 50.0))
        self._settle = float(s.get("settle_timeout_s", 2.0))
        self._gripper_wait = float(s.get("gripper_wait_s", 1.0))
        self._cancel_event = threading.Event()
        self._state = JointStateCache(node, list(name_map), name_map, gripper_state_ranges(profile))

    # hooks: each robot's message layout differs
    @abc.abstractmethod
    def _publish_arm(self, arm: str, q: np.ndarray) -> None:
        """Send one joint set-point for `arm` (profile joint order)."""

    @abc.abstractmethod
    def _publish_gripper(self, gripper: str, command: float) -> None:
        """Send one gripper command in robot units."""

    @abc.abstractmethod
    def _subscribers(self, arm_or_gripper: str) -> int:
        """How many subscribers listen to the command topic of this arm or gripper."""

    # protocol
    def joint_state(self) -> JointState:
        return self._state.snapshot()

    def cancel_all(self) -> None:
        """Stop streaming: the arm holds the last set-point it received."""
        self._cancel_event.set()

    def execute_trajectory(self, goal: TrajectoryGoal, cancel: Optional[CancelToken] = None,
                           timeout: float = 30.0) -> MotionResult:
        t0 = time.monotonic()
        self._cancel_event.clear()
        try:
            arm = self._profile.arm(goal.group)
        except KeyError as e:
            return result(GoalStatus.REJECTED, str(e), -2, t0)
        if tuple(goal.joint_names) != tuple(arm.joint_names):
            return result(GoalStatus.REJECTED, f"goal joints {goal.joint_names} != arm {arm.name} joints {arm.joint_names}", -2, t0)
        if self._subscribers(arm.name) == 0:
            return result(GoalStatus.UNAVAILABLE, f"nobody subscribes to the command topic of {arm.name}", started=t0)
        state = self._state.snapshot()
        try:
            q0 = state.get(arm.joint_names)
        except KeyError:
            return result(GoalStatus.UNAVAILABLE, f"no joint state received for {arm.name}", started=t0)
        dt = 1.0 / self._hz
        for q in interpolate(q0, goal, dt):
            if self._stopped(cancel):
                return result(GoalStatus.CANCELED, f"{arm.name}: canceled", started=t0)
            if time.monotonic() - t0 > timeout:
                return result(GoalStatus.TIMEOUT, f"{arm.name}: trajectory exceeded {timeout:.1f} s", started=t0)
            self._publish_arm(arm.name, q)
            time.sleep(dt)
        target = np.asarray(goal.points[-1].positions, float)
        end = time.monotonic() + self._settle
        err = float("inf")
        while time.monotonic() < end:
            if self._stopped(cancel):
                return result(GoalStatus.CANCELED, f"{arm.name}: canceled", started=t0)
            err = float(np.max(np.abs(self._state.snapshot().get(arm.joint_names) - target)))
            if err <= goal.goal_tolerance:
                return result(GoalStatus.SUCCEEDED, "", 0, t0)
            time.sleep(dt)
        return result(GoalStatus.ABORTED, f"{arm.name}: final joint error {err:.3f} > tolerance {goal.goal_tolerance:.3f}", -5, t0)

    def execute_gripper(self, goal: GripperGoal, cancel: Optional[CancelToken] = None, timeout: float = 10.0) -> MotionResult:
        t0 = time.monotonic()
        self._cancel_event.clear()
        try:
            spec = self._profile.gripper(goal.gripper)
        except KeyError as e:
            return result(GoalStatus.REJECTED, str(e), -1, t0)
        if self._subscribers(spec.name) == 0:
            return result(GoalStatus.UNAVAILABLE, f"nobody subscribes to the command topic of {spec.name}", started=t0)
        self._publish_gripper(spec.name, spec.closed_command + goal.position * (spec.open_command - spec.closed_command))
        # A gripper closing on an object stalls short of its goal: wait for it to stop, the monitor judges.
        end = time.monotonic() + min(timeout, self._gripper_wait * 3)
        last, still = None, 0
        while time.monotonic() < end:
            if self._stopped(cancel):
                return result(GoalStatus.CANCELED, f"{spec.name}: canceled", started=t0)
            time.sleep(0.05)
            pos = self._state.snapshot().positions.get(spec.joint)
            if pos is None:
                continue
            still = still + 1 if last is not None and abs(pos - last) < 0.005 else 0
            last = pos
            if abs(pos - goal.position) < 0.03 or (still >= 4 and time.monotonic() - t0 > self._gripper_wait):
                return result(GoalStatus.SUCCEEDED, "", 0, t0)
        if last is None:
            return result(GoalStatus.UNAVAILABLE, f"no state received for gripper joint {spec.joint}", started=t0)
        return result(GoalStatus.SUCCEEDED, f"{spec.name}: still moving at the wait limit", 0, t0)

    def _stopped(self, cancel: Optional[CancelToken]) -> bool:
        return self._cancel_event.is_set() or (cancel is not None and cancel.cancelled)


class InterbotixAdapter(StreamingTopicAdapter):
    """ALOHA default bringup: /<robot>/commands/joint_group (arm) and .../joint_single (gripper).

    adapter settings: `arms: {left_arm: {robot_name: follower_left}, ...}`; gripper `<side>_gripper`
    goes to the robot of the arm that owns it. State: /<robot>/joint_states.
    """

    def __init__(self, node: Node, profile: RobotProfile):
        s = profile.adapter_settings
        arms_cfg = s.get("arms") or {}
        group_t = import_interface(s.get("group_command_type", "interbotix_xs_msgs/msg/JointGroupCommand"))
        single_t = import_interface(s.get("single_command_type", "interbotix_xs_msgs/msg/JointSingleCommand"))
        self._group_t, self._single_t = group_t, single_t
        self.name = f"interbotix:{profile.name}"
        self._pubs, self._gripper_pubs, name_map = {}, {}, {}
        for arm in profile.arms:
            robot = (arms_cfg.get(arm.name) or {}).get("robot_name")
            if not robot:
                raise AdapterConfigError(f"{profile.source_path}: adapter.arms.{arm.name}.robot_name is required")
            self._pubs[arm.name] = node.create_publisher(group_t, f"/{robot}/commands/joint_group", state_qos())
            mapping = dict(zip(arm.hardware_joint_names, arm.joint_names))
            if arm.gripper:
                g = profile.gripper(arm.gripper)
                self._gripper_pubs[g.name] = node.create_publisher(single_t, f"/{robot}/commands/joint_single", state_qos())
                mapping[g.hardware_joint] = g.joint  # e.g. Interbotix `left_finger` (metres) -> the opening
            name_map[f"/{robot}/joint_states"] = mapping
        super().__init__(node, profile, name_map)

    def _publish_arm(self, arm: str, q: np.ndarray) -> None:
        self._pubs[arm].publish(self._group_t(name="arm", cmd=[float(x) for x in q]))

    def _publish_gripper(self, gripper: str, command: float) -> None:
        self._gripper_pubs[gripper].publish(self._single_t(name="gripper", cmd=float(command)))

    def _subscribers(self, key: str) -> int:
        pub = self._pubs.get(key) or self._gripper_pubs.get(key)
        return 0 if pub is None else pub.get_subscription_count()


class AimdkAdapter(StreamingTopicAdapter):
    """Agibot AimDK servo topic (e.g. A2 `/motion/control/arm_joint_command`, mode PASSIVE_UPPER_BODY_JOINT_SERVO).

    One message carries both arms (left joints first, then right, as AimDK documents). The message
    type is configurable because AimDK packages differ per robot and SDK version; it must have a
    `joints` array whose items carry name/position/velocity/stiffness/damping.
    """

    def __init__(self, node: Node, profile: RobotProfile):
        s = profile.adapter_settings
        self.name = f"aimdk:{profile.name}"
        self._cmd_t = import_interface(s.get("command_type", "aimdk_msgs/msg/JointCommandArray"))
        self._item_t = import_interface(s.get("command_item_type", "aimdk_msgs/msg/JointCommand"))
        self._stiffness = float(s.get("stiffness", 0.0))
        self._damping = float(s.get("damping", 0.0))
        self._arm_order = [a.name for a in profile.arms]
        self._last = {a.name: None for a in profile.arms}
        self._pub = node.create_publisher(self._cmd_t, s.get("arm_command_topic", "/motion/control/arm_joint_command"), state_qos())
        hand_t = s.get("hand_command_type")
        self._hand_pub = (node.create_publisher(import_interface(hand_t), s.get("hand_command_topic", "/motion/control/hand_joint_command"),
                                                state_qos()) if hand_t else None)
        mapping = {}
        for arm in profile.arms:
            mapping.update(dict(zip(arm.hardware_joint_names, arm.joint_names)))
        for g in profile.grippers:
            mapping[g.joint] = g.joint
        super().__init__(node, profile, {s.get("joint_state_topic", "/joint_states"): mapping})

    def _publish_arm(self, arm: str, q: np.ndarray) -> None:
        self._last[arm] = np.asarray(q, float)
        state = self._state.snapshot()
        msg = self._cmd_t()
        for name in self._arm_order:  # the servo topic wants both arms: hold the other at its measured pose
            a = self._profile.arm(name)
            values = self._last[name] if self._last[name] is not None else state.get(a.joint_names)
            for hw, v in zip(a.hardware_joint_names, values):
                msg.joints.append(self._item_t(name=hw, position=float(v), velocity=0.0, effort=0.0,
                                               stiffness=self._stiffness, damping=self._damping))
        self._pub.publish(msg)

    def _publish_gripper(self, gripper: str, command: float) -> None:
        if self._hand_pub is None:
            raise AdapterConfigError("profile adapter.hand_command_type is not set: this AimDK profile cannot drive grippers")
        msg = self._hand_pub.msg_type()
        msg.joints.append(self._item_t(name=gripper, position=float(command)))
        self._hand_pub.publish(msg)

    def _subscribers(self, key: str) -> int:
        if key in self._last:
            return self._pub.get_subscription_count()
        return 0 if self._hand_pub is None else self._hand_pub.get_subscription_count()
