"""`emu-ros calibrate-gripper` against a fake follower publishing its finger in metres on real rclpy."""
from __future__ import annotations

import pytest
import yaml
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState

from emu_ros.core.profile import load_profile, parse_profile
from emu_ros.ros.calibrate_gripper import calibrate, state_topic


class FakeFinger(Node):
    def __init__(self, topic: str):
        super().__init__("fake_finger")
        self.finger = 0.0575
        self.pub = self.create_publisher(JointState, topic, qos_profile_sensor_data)
        self.create_timer(0.02, lambda: self.pub.publish(JointState(name=["waist", "left_finger"],
                                                                    position=[0.0, self.finger])))


def test_calibration_reads_open_and_closed_and_prints_a_loadable_profile_line(spin):
    profile = load_profile("aloha")
    topic = state_topic(profile, "left_gripper")
    assert topic == "/follower_left/joint_states"
    fake, host = FakeFinger(topic), Node("calibrate_host")
    spin(fake, host)
    asked = []

    def prompt(text):  # the operator moves the gripper when asked
        asked.append(text)
        fake.finger = 0.0575 if text.startswith("Open") else 0.0191

    line = calibrate(host, profile, "left_gripper", seconds=0.6, prompt=prompt)
    assert [a.split()[0] for a in asked] == ["Open", "Close"]
    entry = yaml.safe_load(line)[0]
    assert entry["closed_position"] == pytest.approx(0.0191, abs=1e-4)
    assert entry["open_position"] == pytest.approx(0.0575, abs=1e-4)
    data = yaml.safe_load(open(profile.source_path).read())
    data["grippers"][0] = entry
    g = parse_profile(data, "calibrated").gripper("left_gripper")  # the printed line is a valid profile entry
    assert g.opening(g.empty_below) == pytest.approx(0.2, abs=0.01)


def test_a_joint_that_never_reports_is_a_clear_error(spin):
    profile = load_profile("aloha")
    host = Node("calibrate_host_silent")
    spin(host)
    with pytest.raises(RuntimeError, match="no readings of joint 'left_finger'.*no JointState messages"):
        calibrate(host, profile, "left_gripper", seconds=0.3, prompt=lambda _t: None, topic="/nobody/joint_states")
