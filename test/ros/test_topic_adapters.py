"""Interbotix (ALOHA default bringup) and AimDK topic adapters against fake robots on real rclpy."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState as JointStateMsg

interbotix = pytest.importorskip("interbotix_xs_msgs.msg", reason="test-only interbotix_xs_msgs not built")
aimdk = pytest.importorskip("aimdk_msgs.msg", reason="test-only aimdk_msgs not built")

from emu_ros.core.protocols import GoalStatus, GripperGoal, TrajectoryGoal, TrajectoryPoint  # noqa: E402
from emu_ros.ros.adapters import make_adapter  # noqa: E402

ARM = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]


class FakeInterbotixFollower(Node):
    """xs_sdk stand-in: applies joint_group/joint_single commands and publishes joint_states (metres fingers)."""

    def __init__(self, robot: str, lag: float = 1.0, stuck: bool = False):
        super().__init__(f"fake_{robot}")
        self.q = dict(zip(ARM, [0.0, -0.96, 1.16, 0.0, -0.3, 0.0]))
        self.q["left_finger"] = 0.058  # metres, open (the real follower's finger joint)
        self.target = dict(self.q)
        self.lag, self.stuck, self.commands = lag, stuck, 0
        self.create_subscription(interbotix.JointGroupCommand, f"/{robot}/commands/joint_group", self._group, 10)
        self.create_subscription(interbotix.JointSingleCommand, f"/{robot}/commands/joint_single", self._single, 10)
        self.pub = self.create_publisher(JointStateMsg, f"/{robot}/joint_states", qos_profile_sensor_data)
        self.create_timer(0.01, self._tick)

    def _group(self, m):
        self.commands += 1
        assert m.name == "arm" and len(m.cmd) == 6
        if not self.stuck:
            self.target.update(zip(ARM, m.cmd))

    def _single(self, m):
        assert m.name == "gripper"
        # the command is the gripper motor position in rad (closed 0.6197 .. open 1.6214); the finger follows
        # in metres (0.0184 .. 0.0580), as on the real follower
        assert 0.5 < m.cmd < 1.7, f"gripper command {m.cmd} is not a motor position in rad"
        self.target["left_finger"] = 0.0184 + (0.0580 - 0.0184) * (m.cmd - 0.6197) / (1.6214 - 0.6197)

    def _tick(self):
        for k in self.q:
            self.q[k] += self.lag * (self.target[k] - self.q[k])
        self.pub.publish(JointStateMsg(name=list(self.q), position=list(self.q.values())))


def aloha_profile(tmp_path):
    import yaml

    from emu_ros.core.profile import config_dir, parse_profile

    data = yaml.safe_load((config_dir() / "robots/aloha.yaml").read_text())
    data["adapter"]["stream_hz"] = 100
    data["adapter"]["settle_timeout_s"] = 5.0  # the fake follower shares this process (and its GIL)
    return parse_profile(data, "aloha-test")  # grippers exactly as shipped: finger range in metres


def goal(q):
    names = tuple(f"left_{j}" for j in ARM)
    return TrajectoryGoal(group="left_arm", joint_names=names, points=(TrajectoryPoint(tuple(q), 0.3),), goal_tolerance=0.02)


def test_interbotix_adapter_streams_and_measures(spin, tmp_path, wait_for):
    profile = aloha_profile(tmp_path)
    host = Node("interbotix_adapter_host")
    adapter = make_adapter(host, profile)
    spin(host)
    # no follower yet: nobody listens → UNAVAILABLE, not a hang
    r = adapter.execute_trajectory(goal(np.zeros(6)), timeout=2.0)
    assert r.status is GoalStatus.UNAVAILABLE
    follower = FakeInterbotixFollower("follower_left")
    spin(follower)
    assert wait_for(lambda: "left_waist" in adapter.joint_state().positions)
    target = [0.2, -0.8, 1.0, 0.1, -0.2, 0.3]
    # generous timeouts: this process also spins the fake follower at 100 Hz, and on a loaded 2-core box
    # the streaming thread can wait over a second for the GIL; the timeout is not what is under test here
    r = adapter.execute_trajectory(goal(target), timeout=30.0)
    assert r.ok, r.message
    assert np.allclose(adapter.joint_state().get([f"left_{j}" for j in ARM]), target, atol=0.02)
    # a 0.3 s segment at 100 Hz is ~30 set-points; a GIL-starved streaming thread skips some (time-based), so
    # the bound only separates "streamed" from "one jump"
    assert follower.commands >= 5, "set-points are streamed, not one jump"
    assert adapter.joint_state().positions["left_gripper"] == pytest.approx(1.0, abs=0.02)  # 0.058 m = open
    r = adapter.execute_gripper(GripperGoal("left_gripper", 0.0), timeout=3.0)
    assert r.ok and adapter.joint_state().positions["left_gripper"] < 0.1  # the opening, from metres
    follower.stuck = True  # the arm stops following: goal tolerance violated
    r = adapter.execute_trajectory(goal([0.0] * 6), timeout=30.0)
    assert r.status is GoalStatus.ABORTED and r.error_code == -5


def test_aimdk_adapter_publishes_both_arms(spin, tmp_path, wait_for):
    import yaml

    from emu_ros.core.profile import config_dir, parse_profile

    data = yaml.safe_load((config_dir() / "robots/agibot_a2.yaml").read_text())
    profile = parse_profile(data, "agibot-test")
    host = Node("aimdk_adapter_host")
    adapter = make_adapter(host, profile)
    received = []
    robot = Node("fake_aimdk")
    topic = profile.adapter_settings.get("arm_command_topic", "/motion/control/arm_joint_command")
    robot.create_subscription(aimdk.JointCommandArray, topic, received.append, 10)
    state_pub = robot.create_publisher(JointStateMsg, profile.adapter_settings.get("joint_state_topic", "/joint_states"),
                                       qos_profile_sensor_data)
    names = [n for a in profile.arms for n in a.hardware_joint_names]
    q = {n: 0.0 for n in names}

    def on_cmd(m):
        for j in m.joints:
            q[j.name] = j.position

    robot.create_subscription(aimdk.JointCommandArray, topic, on_cmd, 10)
    robot.create_timer(0.02, lambda: state_pub.publish(JointStateMsg(name=list(q), position=list(q.values()))))
    spin(host, robot)
    arm = profile.arms[0]
    assert wait_for(lambda: arm.joint_names[0] in adapter.joint_state().positions)
    target = [0.1] * len(arm.joint_names)
    g = TrajectoryGoal(group=arm.name, joint_names=arm.joint_names, points=(TrajectoryPoint(tuple(target), 0.2),))
    r = adapter.execute_trajectory(g, timeout=5.0)
    assert r.ok, r.message
    assert received and len(received[-1].joints) == len(names), "one message carries both arms"
    assert [j.name for j in received[-1].joints] == names


def test_a_missing_interface_names_where_to_get_it():
    from emu_ros.ros.adapters.base import AdapterConfigError, import_interface

    with pytest.raises(AdapterConfigError, match="interbotix_ros_core.*not on apt"):
        import_interface("interbotix_xs_msgs/msg/NoSuchCommand")
    with pytest.raises(AdapterConfigError, match=r"sudo apt install ros-\$ROS_DISTRO-control-msgs"):
        import_interface("control_msgs/action/NoSuchAction")
    with pytest.raises(AdapterConfigError, match="must look like pkg/msg/Name"):
        import_interface("FollowJointTrajectory")
