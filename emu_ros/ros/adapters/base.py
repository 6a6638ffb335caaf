"""Shared parts of the ROS robot adapters: joint-state cache, gripper normalisation, waiting on futures.

Adapters are called from the bridge's task thread, never from the executor: they block on
threading Events that executor callbacks set, in short slices so a CancelToken is honoured at once.
"""
from __future__ import annotations

import importlib
import threading
import time
from typing import Any, Dict, Optional, Sequence

from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState as JointStateMsg

from emu_ros.core.profile import RobotProfile
from emu_ros.core.protocols import GoalStatus, JointState, MotionResult
from emu_ros.core.types import CancelToken


class AdapterConfigError(ValueError):
    """The profile's adapter section does not say how to reach an arm or gripper."""


def import_interface(type_name: str) -> Any:
    """`control_msgs/action/FollowJointTrajectory` → the class, with an error that says what to install."""
    try:
        pkg, kind, name = type_name.split("/")
    except ValueError:
        raise AdapterConfigError(f"interface type {type_name!r} must look like pkg/msg/Name or pkg/action/Name") from None
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as e:
        how = WHERE_FROM.get(pkg, f"sudo apt install ros-$ROS_DISTRO-{pkg.replace('_', '-')}")
        raise AdapterConfigError(f"cannot import {type_name} ({e}); install it: {how}; then source its "
                                 f"setup.bash") from None


#: Where the adapters' interface packages come from, for the error a missing one raises.
WHERE_FROM = {
    "control_msgs": "sudo apt install ros-$ROS_DISTRO-control-msgs",
    "interbotix_xs_msgs": "build Interbotix/interbotix_ros_core (interbotix_xs_msgs) in your workspace, as the "
                          "ALOHA setup does; it is not on apt",
    "aimdk_msgs": "build aimdk_msgs from Agibot's AimDK SDK in your workspace; it is not on apt",
}


def wait_future(future: Any, timeout: float, cancel: Optional[CancelToken] = None, period: float = 0.05) -> str:
    """Wait for an rclpy future from a non-executor thread: 'done', 'timeout' or 'canceled'."""
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    end = time.monotonic() + timeout
    while not done.is_set():
        if cancel is not None and cancel.cancelled:
            return "canceled"
        left = end - time.monotonic()
        if left <= 0:
            return "timeout"
        done.wait(min(period, left))
    return "done"


class JointStateCache:
    """Latest position per joint from one or more JointState topics, mapped to profile names.

    `name_map` maps robot-side names (possibly namespaced per topic) to profile joint names;
    `gripper_ranges` maps a profile gripper joint to (closed, open) robot positions for normalising.
    """

    def __init__(self, node: Node, topics: Sequence[str], name_map: Dict[str, Dict[str, str]],
                 gripper_ranges: Dict[str, tuple]):
        self._lock = threading.Lock()
        self._positions: Dict[str, float] = {}
        self._velocities: Dict[str, float] = {}
        self._stamp = 0.0
        self._received = 0
        self._gripper_ranges = gripper_ranges
        self._subs = []
        for topic in topics:
            mapping = name_map.get(topic, {})
            self._subs.append(node.create_subscription(
                JointStateMsg, topic, lambda m, mp=mapping: self._on_state(m, mp), qos_profile_sensor_data))

    def _on_state(self, msg: JointStateMsg, mapping: Dict[str, str]) -> None:
        with self._lock:
            for i, raw in enumerate(msg.name):
                name = mapping.get(raw, raw if not mapping else None)
                if name is None or i >= len(msg.position):
                    continue
                pos = float(msg.position[i])
                if name in self._gripper_ranges:
                    closed, opened = self._gripper_ranges[name]
                    pos = (pos - closed) / (opened - closed) if opened != closed else 0.0
                self._positions[name] = pos
                if i < len(msg.velocity):
                    self._velocities[name] = float(msg.velocity[i])
            self._stamp = time.time()
            self._received += 1

    @property
    def received(self) -> int:
        return self._received

    def snapshot(self) -> JointState:
        with self._lock:
            return JointState(positions=dict(self._positions), velocities=dict(self._velocities), stamp=self._stamp)


def state_qos() -> QoSProfile:
    """Command topics: reliable, volatile, shallow — a stale command must never be replayed."""
    return QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE)


def result(status: GoalStatus, message: str = "", code: int = 0, started: Optional[float] = None) -> MotionResult:
    return MotionResult(status=status, error_code=code, message=message,
                        duration=0.0 if started is None else time.monotonic() - started)


def gripper_state_ranges(profile: RobotProfile) -> Dict[str, tuple]:
    """Per gripper joint (profile name): (closed, open) reading in the joint's units, from the profile."""
    return {g.joint: (g.closed_position, g.open_position) for g in profile.grippers}
