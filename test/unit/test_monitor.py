"""StepMonitor verdicts from robot-side signals only: results, joints, gripper opening, time, camera."""
from __future__ import annotations

import numpy as np
import pytest
from fakes import Scene

from emu_ros.bridge.monitor import MonitorConfig, StepMonitor
from emu_ros.bridge.visual_check import HistSSIMJudge
from emu_ros.core.protocols import (GoalStatus, GripperGoal, JointState, MotionResult, SkillCall, SkillExecution,
                                      TrajectoryGoal, TrajectoryPoint)
from emu_ros.core.types import CameraFrame, Observation, OutcomeStatus, PlanStep

ARM = ("right_waist", "right_shoulder", "right_elbow", "right_forearm_roll", "right_wrist_angle", "right_wrist_rotate")
TARGET = dict(zip(ARM, (0.1, -0.5, 0.8, 0.0, 0.3, 0.0)))
OK = MotionResult(GoalStatus.SUCCEEDED)


def execution(skill="grasp", holding=(), released=(), results=(OK,), error="", error_code=""):
    goal = TrajectoryGoal("right_arm", ARM, (TrajectoryPoint(tuple(TARGET.values()), 1.0),))
    goals = [(goal, results[0])] + [(GripperGoal("right_gripper", 0.0), r) for r in results[1:]]
    return SkillExecution(call=SkillCall(skill, f"{skill} the cube"), goals=goals, joint_targets=dict(TARGET),
                          expect_holding=tuple(holding), expect_released=tuple(released), error=error,
                          error_code=error_code)


def state(offset=0.0, gripper=0.6, drop=()):
    pos = {k: v + offset for k, v in TARGET.items() if k not in drop}
    pos["right_gripper"] = gripper
    return JointState(positions=pos)


def obs(scene):
    return Observation(frames={"cam_high": CameraFrame("cam_high", scene.render(), 0.0)})


STEP = PlanStep(index=2, text="Grasp the red cube with the right gripper")


@pytest.fixture()
def monitor(profile):
    return StepMonitor(profile)


def test_all_good_is_finished(monitor):
    out = monitor.evaluate(STEP, execution(holding=("right_gripper",)), state(0.01), elapsed_s=2.0)
    assert out.status is OutcomeStatus.FINISHED and out.ok
    assert out.details["max_joint_error"] == pytest.approx(0.01)
    assert out.details["right_gripper_opening"] == 0.6


@pytest.mark.parametrize("status, code", [(GoalStatus.ABORTED, "aborted"), (GoalStatus.REJECTED, "rejected"),
                                          (GoalStatus.TIMEOUT, "timeout"), (GoalStatus.UNAVAILABLE, "unavailable")])
def test_goal_failures_are_failed_with_code(monitor, status, code):
    res = MotionResult(status, error_code=-4, message="PATH_TOLERANCE_VIOLATED")
    out = monitor.evaluate(STEP, execution(results=(res,)), state())
    assert out.status is OutcomeStatus.FAILED and out.code == code
    assert "error -4: PATH_TOLERANCE_VIOLATED" in out.reason


def test_canceled_goal_is_canceled(monitor):
    out = monitor.evaluate(STEP, execution(results=(MotionResult(GoalStatus.CANCELED),)), state())
    assert out.status is OutcomeStatus.CANCELED


def test_skill_error_is_failed(monitor):
    out = monitor.evaluate(STEP, execution(error="no IK solution 0.12 m off", error_code="ik_failed"), state())
    assert (out.status, out.code) == (OutcomeStatus.FAILED, "ik_failed") and "no IK solution" in out.reason


def test_joint_tolerance_exceeded(monitor, profile):
    out = monitor.evaluate(STEP, execution(), state(offset=profile.tolerances.joint_goal * 2))
    assert (out.status, out.code) == (OutcomeStatus.FAILED, "joint_tolerance")
    assert "tolerance 0.050" in out.reason and out.details["worst_joint"] in ARM


def test_missing_joint_state(monitor):
    assert monitor.evaluate(STEP, execution(), None).code == "no_joint_state"
    out = monitor.evaluate(STEP, execution(), state(drop=("right_elbow",)))
    assert out.code == "no_joint_state" and "right_elbow" in out.reason


def test_step_timeout(monitor, profile):
    out = monitor.evaluate(STEP, execution(), state(), elapsed_s=profile.tolerances.step_timeout_s + 1)
    assert (out.status, out.code) == (OutcomeStatus.FAILED, "step_timeout")


def test_closed_on_nothing_is_a_missed_grasp(monitor):
    out = monitor.evaluate(STEP, execution(holding=("right_gripper",)), state(gripper=0.05))
    assert (out.status, out.code) == (OutcomeStatus.UNFINISHED, "gripper_empty")
    assert "closed on nothing (opening 0.05 < empty_below 0.20)" in out.reason


def test_gripper_never_closed(monitor):
    out = monitor.evaluate(STEP, execution(holding=("right_arm",)), state(gripper=0.97))
    assert (out.status, out.code) == (OutcomeStatus.FAILED, "gripper_not_closed")


def test_release_checked(monitor):
    assert monitor.evaluate(STEP, execution(released=("right_gripper",)), state(gripper=0.6)).code == "not_released"
    assert monitor.evaluate(STEP, execution(released=("right_gripper",)), state(gripper=0.95)).ok


def test_visual_mismatch_is_unfinished(profile):
    # threshold as calibrated on the toy scenes (test_visual_check); the profile's 0.5 is uncalibrated
    monitor = StepMonitor(profile, judge=HistSSIMJudge(threshold=0.75))
    predicted = Scene(cube_xy=(64, 30), lifted=True)
    step = PlanStep(index=3, text="Lift the cube", image=predicted.render())
    good = monitor.evaluate(step, execution(), state(), obs(Scene(cube_xy=(65, 31), lifted=True)))
    assert good.ok and good.details["visual"]["score"] > 0.9
    bad = monitor.evaluate(step, execution(), state(), obs(Scene(cube_xy=(30, 70))), before=obs(Scene(cube_xy=(30, 70))))
    assert (bad.status, bad.code) == (OutcomeStatus.UNFINISHED, "visual_mismatch")
    assert "does not match the step's predicted image" in bad.reason


def test_visual_check_without_camera(profile):
    step = PlanStep(index=0, text="Lift", image=Scene().render())
    lenient = StepMonitor(profile).evaluate(step, execution(), state(), None)
    assert lenient.ok and "no frame" in lenient.details["visual"]
    strict = StepMonitor(profile, config=MonitorConfig(require_visual=True)).evaluate(step, execution(), state(), None)
    assert (strict.status, strict.code) == (OutcomeStatus.FAILED, "camera_unavailable")


def test_custom_judge_and_judge_errors(profile):
    class Never:
        name = "never"

        def judge(self, text, predicted, observed, before=None):
            from emu_ros.bridge.visual_check import VisualVerdict
            return VisualVerdict(0.0, 0.5, False, {"why": "learned judge says no"})

    class Broken:
        name = "broken"

        def judge(self, *a, **k):
            raise RuntimeError("model not loaded")

    step = PlanStep(index=0, text="Lift", image=Scene().render())
    assert StepMonitor(profile, judge=Never()).evaluate(step, execution(), state(), obs(Scene())).code == "visual_mismatch"
    out = StepMonitor(profile, judge=Broken()).evaluate(step, execution(), state(), obs(Scene()))
    # a check that could not be made never passes the step: unverified = unfinished (re-plan)
    assert not out.ok and out.status is OutcomeStatus.UNFINISHED and out.code == "unverified"
    assert "model not loaded" in out.reason and "judge error" in out.details["visual"]


def test_unknown_gripper_is_a_clear_error(monitor):
    with pytest.raises(KeyError, match="no gripper 'claw'"):
        monitor.evaluate(STEP, execution(holding=("claw",)), state())


def test_a_reading_outside_the_declared_range_is_a_profile_error_not_a_grasp(monitor):
    # e.g. a finger reported in metres read against a profile in motor radians: every threshold is meaningless
    for reading in (1.6, -0.4):
        out = monitor.evaluate(STEP, execution(holding=("right_gripper",)), state(gripper=reading))
        assert (out.status, out.code) == (OutcomeStatus.FAILED, "gripper_out_of_range")
        assert "outside its declared range [0, 1]" in out.reason and "calibrate-gripper" in out.reason
    out = monitor.evaluate(STEP, execution(released=("right_gripper",)), state(gripper=2.0))
    assert out.code == "gripper_out_of_range"
    # the slack keeps a little overshoot a normal reading
    assert monitor.evaluate(STEP, execution(released=("right_gripper",)), state(gripper=1.05)).ok
