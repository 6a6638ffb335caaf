"""`emu-ros calibrate-gripper`: read a gripper's open / closed-on-nothing positions off /joint_states.

    emu-ros calibrate-gripper --profile aloha --gripper left_gripper [--seconds 1.5]

With the robot's bringup running, it asks you to open the gripper fully, then to close it on nothing,
averages the joint's readings for each, and prints the profile line (range and thresholds in the
joint's own units: empty_below at 20 % of the stroke, released_above at 80 %, closed_above at 90 %).
The numbers are what the robot reports; nothing is guessed.
"""
from __future__ import annotations

import argparse
import threading
import time
from typing import Callable, Optional

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState

from emu_ros.core.profile import GripperSpec, RobotProfile, load_profile
from emu_ros.ros.node_utils import background_node

FRACTIONS = {"empty_below": 0.2, "released_above": 0.8, "closed_above": 0.9}


def state_topic(profile: RobotProfile, gripper: str) -> str:
    """The JointState topic that carries `gripper`'s joint for the profile's adapter."""
    s = profile.adapter_settings
    if profile.adapter == "interbotix":
        for arm in profile.arms:
            if arm.gripper == gripper:
                robot = ((s.get("arms") or {}).get(arm.name) or {}).get("robot_name")
                if robot:
                    return f"/{robot}/joint_states"
    return (s.get("joint_state_topics") or [s.get("joint_state_topic", "/joint_states")])[0]


def profile_line(spec: GripperSpec, closed: float, opened: float, unit: str) -> str:
    """The profile's grippers entry for measured closed/open readings."""
    def at(fraction: float) -> float:
        return closed + fraction * (opened - closed)

    th = ", ".join(f"{k}: {at(f):.4g}" for k, f in FRACTIONS.items())
    unit_text = unit or '""'
    return (f"- {{name: {spec.name}, joint: {spec.joint}, hardware_joint: {spec.hardware_joint}, unit: {unit_text},\n"
            f"   closed_position: {closed:.4g}, open_position: {opened:.4g}, {th},\n"
            f"   closed_command: {spec.closed_command:g}, open_command: {spec.open_command:g}}}")


class JointRecorder:
    """Collects one joint's readings from a JointState topic."""

    def __init__(self, node: Node, topic: str, joint: str):
        self.joint, self._lock, self._values = joint, threading.Lock(), []
        self.names_seen: set = set()
        node.create_subscription(JointState, topic, self._on_state, qos_profile_sensor_data)

    def _on_state(self, msg: JointState) -> None:
        with self._lock:
            self.names_seen.update(msg.name)
            if self.joint in msg.name:
                i = list(msg.name).index(self.joint)
                if i < len(msg.position):
                    self._values.append(float(msg.position[i]))

    def record(self, seconds: float, settle_s: float = 0.3) -> np.ndarray:
        """Readings over `seconds`, after `settle_s` whose readings are dropped: messages already queued
        (sensor QoS keeps a few) or a gripper still coming to rest would report the previous position."""
        time.sleep(settle_s)
        with self._lock:
            self._values = []
        time.sleep(seconds)
        with self._lock:
            return np.asarray(self._values, float)


def measure(recorder: JointRecorder, prompt: Callable[[str], object], what: str, seconds: float) -> float:
    prompt(f"{what}, then press Enter")
    values = recorder.record(seconds)
    if values.size == 0:
        seen = sorted(recorder.names_seen) or "no JointState messages at all"
        raise RuntimeError(f"no readings of joint {recorder.joint!r} in {seconds:.1f} s (joints seen: {seen}); "
                           f"is the bringup running, and is the profile's hardware_joint right?")
    return float(np.median(values))


def calibrate(node: Node, profile: RobotProfile, gripper: str, seconds: float = 1.5,
              prompt: Callable[[str], object] = input, topic: Optional[str] = None) -> str:
    spec = profile.gripper(gripper)
    recorder = JointRecorder(node, topic or state_topic(profile, gripper), spec.hardware_joint)
    opened = measure(recorder, prompt, f"Open {gripper} fully", seconds)
    closed = measure(recorder, prompt, f"Close {gripper} on nothing (fully)", seconds)
    if abs(opened - closed) < 1e-6:
        raise RuntimeError(f"{spec.hardware_joint} read {opened:.4g} both open and closed: the gripper did not move")
    return profile_line(spec, closed, opened, spec.unit)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="emu-ros calibrate-gripper", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="aloha")
    p.add_argument("--gripper", required=True, help="gripper name in the profile, e.g. left_gripper")
    p.add_argument("--topic", default=None, help="JointState topic (default: the profile adapter's)")
    p.add_argument("--seconds", type=float, default=1.5, help="averaging time per position")
    args = p.parse_args(argv)
    profile = load_profile(args.profile)
    with background_node("emu_calibrate_gripper") as node:
        try:
            print(calibrate(node, profile, args.gripper, args.seconds, topic=args.topic))
            return 0
        except (RuntimeError, KeyError) as e:
            print(f"calibrate-gripper: {e}")
            return 1
