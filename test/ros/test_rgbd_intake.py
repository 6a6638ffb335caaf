"""Camera perception over real ROS topics: colour, aligned depth and CameraInfo published by an
outside node, pulled by the bridge's intake, turned into an object position in the base frame.

Bad input stays a clear CameraUnavailable / PerceptionError naming camera, topic and cause, and the
node keeps working once good messages arrive.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import yaml
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from emu_ros.core.profile import load_profile, parse_profile
from emu_ros.core.protocols import CameraUnavailable, PerceptionError, SkillCall
from emu_ros.perception.camera_perception import CameraPerception
from emu_ros.ros.camera_intake import CAMERA_QOS, node_camera_hub, subscribe_cameras
from emu_ros.ros.image_conversion import numpy_to_image
from emu_ros.ros.rgbd_intake import RosRGBDSource, depth_image
from synthetic_rgbd import K, TO_BASE, scene

COLOUR, DEPTH, INFO = "/t_rgbd/color/image_raw", "/t_rgbd/aligned_depth_to_color/image_raw", "/t_rgbd/color/camera_info"
CUBE_AT = (0.06, -0.03, 0.02)


def profile(to_base=TO_BASE, **perception):
    return parse_profile(profile_dict(to_base, **perception), "test_rgbd.yaml")


def profile_dict(to_base=TO_BASE, **perception) -> dict:
    """sim_aloha with one RGB-D camera on the test topics and a perception section."""
    data = yaml.safe_load(open(load_profile("sim_aloha").source_path).read())
    cam = {"name": "cam_high", "topic": COLOUR, "width": 640, "height": 480, "max_age_s": 5.0,
           "depth_topic": DEPTH, "info_topic": INFO}
    if to_base is not None:
        cam["to_base"] = to_base
    data["cameras"] = [cam]
    data["perception"] = {"detector": "colour", "cameras": ["cam_high"],
                          "objects": {"box": {"aliases": ["red cube"], "size": [0.04, 0.04, 0.04],
                                              "colour": [255, 0, 0]}}, **perception}
    return data


class Camera(Node):
    """An outside RGB-D driver: publishes one colour/depth/info triple on demand."""

    def __init__(self):
        super().__init__("fake_realsense")
        self.colour = self.create_publisher(Image, COLOUR, CAMERA_QOS)
        self.depth = self.create_publisher(Image, DEPTH, CAMERA_QOS)
        self.info = self.create_publisher(CameraInfo, INFO, CAMERA_QOS)
        self.frame = scene([(CUBE_AT, (0.04, 0.04, 0.04), 0.2, (220, 10, 10))])

    def publish(self, depth_encoding: str = "16UC1", info: bool = True, depth_lag_s: float = 0.0):
        stamp = self.get_clock().now().to_msg()
        self.colour.publish(numpy_to_image(self.frame.rgb, "rgb8", stamp=stamp))
        if depth_encoding == "16UC1":
            d = numpy_to_image(np.nan_to_num(self.frame.depth * 1000.0).astype(np.uint16), "16UC1", stamp=stamp)
        else:  # a colour image on the depth topic (a wrong remap)
            d = numpy_to_image(self.frame.rgb, "rgb8", stamp=stamp)
        d.header.stamp.sec -= int(depth_lag_s)
        self.depth.publish(d)
        if info:
            m = CameraInfo(width=K.width, height=K.height)
            m.header.stamp = stamp
            m.k = [K.fx, 0.0, K.cx, 0.0, K.fy, K.cy, 0.0, 0.0, 1.0]
            self.info.publish(m)


@pytest.fixture
def rig(ros_context):
    made = []

    def _make(prof):
        node = Node("t_rgbd_bridge")
        hub = node_camera_hub(node, prof.cameras, required=["cam_high"])
        subs = subscribe_cameras(node, hub, prof.cameras)
        src = RosRGBDSource(node, prof, hub, prof.perception.cameras)
        cam = Camera()
        made.append((node, cam, src, subs))
        return node, cam, src

    yield _make
    for node, cam, src, subs in made:
        src.close()
        cam.destroy_node()
        node.destroy_node()


def until(fn, timeout=5.0):
    """Call fn until it stops raising CameraUnavailable (messages in flight), then return its result."""
    end = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (CameraUnavailable, PerceptionError):
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_cube_position_from_published_rgbd(rig):
    prof = profile()
    node, cam, src = rig(prof)
    perception = CameraPerception(prof.perception, src)
    cam.publish()
    est = until(lambda: perception.locate("the red cube"))
    np.testing.assert_allclose(est.position, CUBE_AT, atol=0.003)  # 16UC1 is 1 mm per unit
    assert est.source == "camera-colour:cam_high" and est.confidence > 0.9


def test_wrong_depth_encoding_then_recovery(rig):
    node, cam, src = rig(profile())
    cam.publish(depth_encoding="rgb8")
    with pytest.raises(CameraUnavailable, match=r"cam_high.*aligned_depth_to_color.*'rgb8' is not a depth format"):
        until(lambda: src.rgbd(["cam_high"]), timeout=2.0)
    cam.publish()  # the driver fixed: the same source works
    frame = until(lambda: src.rgbd(["cam_high"]))["cam_high"]
    assert frame.depth.dtype == np.float32 and np.nanmax(frame.depth) == pytest.approx(0.8, abs=0.002)


def test_missing_camera_info_names_the_topic(rig):
    node, cam, src = rig(profile())
    cam.publish(info=False)
    with pytest.raises(CameraUnavailable, match=f"no CameraInfo received on {INFO}"):
        until(lambda: src.rgbd(["cam_high"]), timeout=1.0)


def test_depth_from_another_moment_is_not_an_aligned_pair(rig):
    node, cam, src = rig(profile())
    cam.publish(depth_lag_s=1.0)
    with pytest.raises(CameraUnavailable, match="ms apart .* not an aligned pair"):
        until(lambda: src.rgbd(["cam_high"]), timeout=1.0)


def test_missing_to_base_is_named_and_object_steps_fail_saying_so(rig):
    prof = profile(to_base=None)
    node, cam, src = rig(prof)
    assert "lacks to_base" in src.problems["cam_high"]
    perception = CameraPerception(prof.perception, src)
    with pytest.raises(PerceptionError, match="calibrate-camera") as e:
        perception.locate("red cube")
    assert e.value.code == "camera_unavailable"


def test_depth_image_32fc1_and_short_data():
    m = Image(height=2, width=2, encoding="32FC1", step=8)
    m.data = np.array([[0.5, 0.0], [np.nan, 1.25]], "<f4").tobytes()
    z = depth_image(m)
    assert z[0, 0] == pytest.approx(0.5) and np.isnan(z[0, 1]) and np.isnan(z[1, 0]) and z[1, 1] == pytest.approx(1.25)
    m.data = m.data[:5]
    with pytest.raises(ValueError, match="has 5 bytes"):
        depth_image(m)


def test_bridge_with_a_missing_detector_directory_stays_up(ros_context, tmp_path):
    from emu_ros.ros.bridge_node import BridgeNode

    from rclpy.parameter import Parameter

    data = profile_dict(detector="owlv2", detector_dir=str(tmp_path / "owlv2"))
    data["perception"]["objects"]["box"] = {"aliases": ["red cube"], "size": [0.04, 0.04, 0.04], "prompt": "a red cube"}
    data["adapter"] = {"kind": "follow_joint_trajectory",  # a real ROS adapter; no controller needs to answer
                       "trajectory_actions": {"left_arm": "/t_owl/left/follow_joint_trajectory",
                                              "right_arm": "/t_owl/right/follow_joint_trajectory"},
                       "gripper_actions": {"left_gripper": "/t_owl/left/gripper_cmd",
                                           "right_gripper": "/t_owl/right/gripper_cmd"},
                       "joint_state_topics": ["/t_owl/joint_states"]}
    prof_file = tmp_path / "p.yaml"
    prof_file.write_text(yaml.safe_dump(data))

    node = BridgeNode("t_rgbd_owl_bridge", parameter_overrides=[Parameter("profile", value=str(prof_file))])
    try:
        reason = node.executor_.no_perception_reason
        assert "owlv2 detector could not be loaded" in reason and str(tmp_path / "owlv2") in reason
        ex = node.executor_.execute(SkillCall(skill="grasp", text="Grasp the red cube with the right gripper",
                                              arm="right", obj="red cube"))
        assert ex.error_code == "no_perception" and "could not be loaded" in ex.error and not ex.goals
    finally:
        node.destroy_node()
