"""Robot profiles: the shipped files load, and malformed ones fail with the file and field named."""
from __future__ import annotations

import copy

import pytest
import yaml

from emu_ros.core.profile import ProfileError, config_dir, load_profile, parse_profile


@pytest.mark.parametrize("name", ["aloha", "sim_aloha", "agibot_a2"])
def test_shipped_profiles_load(name):
    p = load_profile(name)
    assert p.name == name and p.cameras and len(p.arms) == 2
    assert p.visual_check.camera in p.camera_names
    for arm in p.arms:
        assert len(arm.home) == len(arm.joint_names)
        assert p.gripper(arm.gripper).joint


def test_agibot_is_joint_space_only_with_aimdk_topics():
    p = load_profile("agibot_a2")
    assert p.adapter == "aimdk" and p.adapter_settings["arm_command_topic"] == "/motion/control/arm_joint_command"
    assert {c.topic for c in p.cameras} == {"/aima/hal/rgbd_camera/head_front/color",
                                            "/aima/hal/fish_eye_camera/chest_left/color",
                                            "/aima/hal/fish_eye_camera/chest_right/color"}
    assert all(a.chain is None and len(a.joint_names) == 7 for a in p.arms)
    assert p.arm("right_arm").poses["stow"] == (0.0,) * 7


def test_aloha_and_sim_share_camera_and_joint_layout():
    real, sim = load_profile("aloha"), load_profile("sim_aloha")
    assert [(c.name, c.topic) for c in real.cameras] == [(c.name, c.topic) for c in sim.cameras]
    assert [a.joint_names for a in real.arms] == [a.joint_names for a in sim.arms]


@pytest.fixture()
def sim_dict():
    return yaml.safe_load((config_dir() / "robots" / "sim_aloha.yaml").read_text())


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("name"), "missing required field 'name'"),
    (lambda d: d.pop("cameras"), "missing required field 'cameras'"),
    (lambda d: d["adapter"].pop("kind"), r"adapter: missing required field 'kind'"),
    (lambda d: d["adapter"].update(kind="moveit"), "'moveit' is not one of"),
    (lambda d: d["cameras"][0].update(fps=30), r"cameras\[0\]: unknown field\(s\) \['fps'\]"),
    (lambda d: d["tolerances"].update(joint_gaol=0.1), r"tolerances: unknown field\(s\) \['joint_gaol'\]"),
    (lambda d: d["visual_check"].update(roi=[0.5, 0.0, 0.4, 1.0]), "roi.*x0<x1"),
    (lambda d: d["visual_check"].update(roi=[0.0, 0.0, 1.0]), r"roi: expected 4 numbers, got 3"),
    (lambda d: d["visual_check"].update(roi=[0.0, 0.0, 1.5, 1.0]), "must be fractions"),
    (lambda d: d["visual_check"].update(camera="cam_top"), "'cam_top' is not a declared camera"),
    (lambda d: d["arms"][0].update(gripper="claw"), "'claw' is not a declared gripper"),
    (lambda d: d["arms"][0].update(home=[0, 0]), r"arms\[0\].home: expected 6 numbers, got 2"),
    (lambda d: d["arms"][0]["chain"]["joints"][1].update(lower=2.0, upper=1.0), "lower 2.0 must be < upper 1.0"),
    (lambda d: d["arms"][0]["chain"]["joints"][1].update(kind="ball"), "'ball' is not revolute|prismatic"),
    (lambda d: d["arms"][0].update(joint_names=["a"]), "differ from the chain"),
    (lambda d: d["cameras"].append(dict(d["cameras"][0])), "duplicate camera names"),
    (lambda d: d["cameras"][0].update(downsample=0), r"cameras\[0\]: camera 'cam_high': downsample must be an integer >= 1"),
    (lambda d: d["cameras"][0].update(downsample=1.5), "downsample must be an integer"),
    (lambda d: d["cameras"][0].update(max_age_s=0), "max_age_s must be > 0"),
    (lambda d: d["grippers"][0].update(empty_below=1.5),
     r"grippers\[0\]: gripper 'left_gripper': empty_below 1.5 is outside the joint's range \[0.0, 1.0\]"),
    (lambda d: d["grippers"][0].update(closed_position=0.02, open_position=0.02), "both 0.02"),
    (lambda d: d["grippers"][0].update(empty_below=0.95, closed_above=0.9), "empty_below must be closer"),
    (lambda d: d["perception"].update(detector="yolo"), r"perception: detector 'yolo' is not one of"),
    (lambda d: d["perception"].update(cameras=["cam_top"]), r"perception.cameras: \['cam_top'\] are not declared"),
    (lambda d: d["perception"].update(min_confidence=1.5), "min_confidence must be in"),
    (lambda d: d["perception"]["objects"]["box"].pop("colour"), r"detector colour needs objects\[\].colour"),
    (lambda d: d["perception"]["objects"]["box"].update(size=[0.04, 0.04]), r"objects.box: object 'box': size"),
    (lambda d: d["perception"]["objects"]["box"].update(hue=3), r"objects.box: unknown field\(s\) \['hue'\]"),
    (lambda d: d["perception"].update(detector="owlv2"), "owlv2 needs detector_dir"),
    (lambda d: d["perception"].update(detector="aruco"), r"aruco needs objects\[\].marker_id"),
    (lambda d: d["cameras"][0].update(to_base={"xyz": [0, 0, 1]}), "to_base must be"),
    (lambda d: d["cameras"][0].update(to_base={"xyz": [0, 0], "rpy": [0, 0, 0]}), r"to_base.xyz: expected 3 numbers"),
])
def test_profile_errors_name_file_and_field(sim_dict, mutate, match):
    data = copy.deepcopy(sim_dict)
    mutate(data)
    with pytest.raises(ProfileError, match=match):
        parse_profile(data, "sim_aloha.yaml")


def test_missing_profile_lists_available():
    with pytest.raises(ProfileError, match=r"not found.*available: \[.*'aloha'"):
        load_profile("no_such_robot")


def test_invalid_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ProfileError, match="invalid YAML"):
        load_profile(str(p))


def test_agibot_ik_skills_fail_clearly_through_the_monitor():
    """No chain on the A2: a grasp at an object position is a FAILED step naming the missing chain."""
    from fakes import FakeAdapter

    from emu_ros.bridge.monitor import StepMonitor
    from emu_ros.core.protocols import ObjectEstimate
    from emu_ros.bridge.skill_mapper import SkillMapper
    from emu_ros.bridge.skills import ProfileSkillExecutor
    from emu_ros.core.types import OutcomeStatus, PlanStep

    class Detector:
        name, ground_truth = "detector", False

        def locate(self, obj):
            return ObjectEstimate(obj, (0.4, 0.0, 0.8))

    p = load_profile("agibot_a2")
    adapter = FakeAdapter(p)
    text = "Grasp the red cube with the right gripper"
    ex = ProfileSkillExecutor(p, adapter, Detector()).execute(SkillMapper.load().map(text).call)
    out = StepMonitor(p).evaluate(PlanStep(0, text), ex, adapter.joint_state())
    assert out.status is OutcomeStatus.FAILED and "no kinematic chain" in out.reason
    assert adapter.trajectories == []


def test_aloha_gripper_thresholds_are_in_the_finger_joints_metres():
    """The Interbotix follower reports its finger in metres: range and thresholds are written that way."""
    p = load_profile("aloha")
    g = p.gripper("left_gripper")
    assert g.hardware_joint == "left_finger" and g.unit == "m"
    assert 0.015 < g.closed_position < g.empty_below < g.released_above < g.closed_above < g.open_position < 0.07
    assert g.opening(g.empty_below) == pytest.approx(0.2, abs=0.01)  # 20 % of the stroke
    assert g.opening(0.0184) == pytest.approx(0.0) and g.position(1.0) == pytest.approx(0.058)
    assert "m (opening" in g.describe(0.1)
    # a threshold left in [0, 1] by mistake is caught at load, naming the field
    data = yaml.safe_load((config_dir() / "robots" / "aloha.yaml").read_text())
    data["grippers"][0]["empty_below"] = 0.2
    with pytest.raises(ProfileError, match=r"grippers\[0\].*empty_below 0.2 is outside the joint's range"):
        parse_profile(data, "aloha.yaml")
