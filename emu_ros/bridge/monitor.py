"""StepMonitor: was a step finished? Decided only from what a real robot has.

Signals (DESIGN §3 honesty rule): the adapter's result per goal, the measured joint state (arm
joints against the skill's joint targets; the gripper opening tells a closed-on-nothing grasp),
the time the step took, and the camera view after the step compared with the step's predicted
image. Simulator ground truth never enters here.

Verdicts, in the order they are checked (the first that applies wins):
  FAILED   skill error (IK, object not found, unmapped), a goal aborted / rejected / timed out /
           unavailable, the step took longer than the step timeout, no joint state, an arm joint
           off its target by more than the tolerance, a gripper that should hold something
           never closed  → the runner retries the step, then re-plans.
  CANCELED a goal was canceled.
  UNFINISHED  the motion ran but the goal state is not there: a gripper that should hold an
           object closed on nothing (opening < empty_below: missed grasp or slip), a gripper
           that should have released is still closed, or the view does not match the predicted
           image (visual check)  → the runner re-plans from the current views.
  FINISHED otherwise.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from emu_ros.core.profile import RobotProfile
from emu_ros.core.protocols import GoalStatus, GripperGoal, JointState, SkillExecution
from emu_ros.bridge.visual_check import StepJudge, judge_from_profile
from emu_ros.core.types import Observation, OutcomeStatus, PlanStep, StepOutcome

log = logging.getLogger(__name__)

#: Failure codes (StepOutcome.code) the monitor produces.
CODES = ("skill_error", "aborted", "rejected", "timeout", "unavailable", "canceled", "step_timeout",
         "no_joint_state", "joint_tolerance", "gripper_not_closed", "gripper_empty", "not_released",
         "visual_mismatch", "camera_unavailable", "gripper_out_of_range")
#: A gripper opening this far (fraction of the stroke) beyond closed..open is not a reading of this profile.
RANGE_SLACK = 0.15
_GOAL_CODES = {GoalStatus.ABORTED: "aborted", GoalStatus.REJECTED: "rejected", GoalStatus.TIMEOUT: "timeout",
               GoalStatus.UNAVAILABLE: "unavailable", GoalStatus.CANCELED: "canceled"}


@dataclass(frozen=True)
class MonitorConfig:
    """What the monitor checks; None = take the value from the robot profile."""

    joint_tolerance: Optional[float] = None
    step_timeout_s: Optional[float] = None
    #: Run the visual check when the step has a predicted image and the camera gave a frame.
    visual_check: bool = True
    #: Without a camera frame: True = the step FAILS (camera_unavailable), False = judge without it.
    require_visual: bool = False


class StepMonitor:
    """Judges executed steps for one robot profile; stateless, so safe to share."""

    def __init__(self, profile: RobotProfile, judge: Optional[StepJudge] = None, config: Optional[MonitorConfig] = None):
        self.profile = profile
        self.config = config or MonitorConfig()
        self.judge = judge if judge is not None else judge_from_profile(profile.visual_check)
        self.camera = profile.visual_check.camera
        self.joint_tolerance = float(self.config.joint_tolerance if self.config.joint_tolerance is not None
                                     else profile.tolerances.joint_goal)
        self.step_timeout_s = float(self.config.step_timeout_s if self.config.step_timeout_s is not None
                                    else profile.tolerances.step_timeout_s)
        self._gripper_by_name = {g.name: g for g in profile.grippers}

    def evaluate(self, step: PlanStep, execution: SkillExecution, state: Optional[JointState],
                 observation: Optional[Observation] = None, elapsed_s: float = 0.0,
                 before: Optional[Observation] = None) -> StepOutcome:
        """The verdict on one executed step (see the module docstring for the order of checks)."""
        details: dict = {"skill": execution.call.skill, "elapsed_s": round(float(elapsed_s), 3),
                         "goals": [_goal_summary(g, r) for g, r in execution.goals]}

        def out(status: OutcomeStatus, code: str, reason: str) -> StepOutcome:
            return StepOutcome(step_index=step.index, text=step.text, status=status, reason=reason, code=code,
                               details=details)

        if execution.error:
            return out(OutcomeStatus.FAILED, execution.error_code or "skill_error",
                       f"skill '{execution.call.skill}' failed: {execution.error}")
        for goal, result in execution.goals:
            if not result.ok:
                code = _GOAL_CODES.get(result.status, "aborted")
                status = OutcomeStatus.CANCELED if code == "canceled" else OutcomeStatus.FAILED
                what = goal.group if hasattr(goal, "group") else getattr(goal, "gripper", "?")
                msg = f" (error {result.error_code}: {result.message})" if (result.error_code or result.message) else ""
                return out(status, code, f"{type(goal).__name__} for {what} {result.status.value}{msg}")
        if elapsed_s > self.step_timeout_s:
            return out(OutcomeStatus.FAILED, "step_timeout",
                       f"step took {elapsed_s:.1f} s, more than the step timeout {self.step_timeout_s:.1f} s")
        if state is None and (execution.joint_targets or execution.expect_holding or execution.expect_released):
            return out(OutcomeStatus.FAILED, "no_joint_state", "no joint state from the robot to check the step against")
        verdict = self._check_joints(execution, state, details) or self._check_grippers(execution, state, details)
        if verdict is not None:
            status, code, reason = verdict
            return out(status, code, reason)
        verdict = self._check_visual(step, observation, before, details)
        if verdict is not None:
            status, code, reason = verdict
            return out(status, code, reason)
        return out(OutcomeStatus.FINISHED, "", "")

    # ---- checks ------------------------------------------------------------------------------
    def _check_joints(self, execution: SkillExecution, state: Optional[JointState], details: dict):
        if not execution.joint_targets:
            return None
        names = list(execution.joint_targets)
        try:
            measured = state.get(names)
        except KeyError as e:
            return OutcomeStatus.FAILED, "no_joint_state", f"joint state incomplete: {e.args[0]}"
        target = np.array([float(execution.joint_targets[n]) for n in names])
        err = np.abs(measured - target)
        worst = int(np.argmax(err))
        details["max_joint_error"] = round(float(err[worst]), 5)
        details["worst_joint"] = names[worst]
        if err[worst] > self.joint_tolerance:
            return (OutcomeStatus.FAILED, "joint_tolerance",
                    f"joint {names[worst]} is {err[worst]:.3f} from its target {target[worst]:.3f} "
                    f"(tolerance {self.joint_tolerance:.3f}): the arm did not reach the goal")
        return None

    def _reading(self, name: str, state: Optional[JointState], details: dict) -> tuple:
        """(spec, opening, failure or None) of one gripper; a reading far outside the profile's declared
        range means the profile's units or calibration are wrong, and no threshold can be trusted."""
        g = self._gripper(name)
        opening = _opening(state, g.joint)
        if opening is None:
            return g, None, (OutcomeStatus.FAILED, "no_joint_state", f"no opening reported for gripper {name} "
                                                                     f"(joint {g.joint})")
        details[f"{name}_opening"] = round(opening, 4)
        if not -RANGE_SLACK <= opening <= 1 + RANGE_SLACK:
            lo, hi = sorted((g.closed_position, g.open_position))
            return g, opening, (OutcomeStatus.FAILED, "gripper_out_of_range",
                                f"{name} reads {g.describe(opening)}, outside its declared range [{lo:.4g}, {hi:.4g}]"
                                f"{' ' + g.unit if g.unit else ''}: the profile's gripper units or calibration do "
                                f"not match the robot (measure them: emu-ros calibrate-gripper --gripper {name})")
        return g, opening, None

    def _check_grippers(self, execution: SkillExecution, state: Optional[JointState], details: dict):
        for name in execution.expect_holding:
            g, opening, bad = self._reading(name, state, details)
            if bad:
                return bad
            if opening < g.opening(g.empty_below):
                return (OutcomeStatus.UNFINISHED, "gripper_empty",
                        f"{name} closed on nothing ({g.describe(opening)} < {g.threshold('empty_below')}): "
                        "the object was missed or slipped out")
            if opening > g.opening(g.closed_above):
                return (OutcomeStatus.FAILED, "gripper_not_closed",
                        f"{name} did not close ({g.describe(opening)} > {g.threshold('closed_above')})")
        for name in execution.expect_released:
            g, opening, bad = self._reading(name, state, details)
            if bad:
                return bad
            if opening < g.opening(g.released_above):
                return (OutcomeStatus.UNFINISHED, "not_released",
                        f"{name} is still closed ({g.describe(opening)} < {g.threshold('released_above')}): "
                        "the object was not released")
        return None

    def _check_visual(self, step: PlanStep, observation: Optional[Observation], before: Optional[Observation],
                      details: dict):
        if not self.config.visual_check or step.image is None:
            details["visual"] = "skipped: no predicted image" if step.image is None else "disabled"
            return None
        frame = _frame(observation, self.camera)
        if frame is None:
            details["visual"] = f"skipped: no frame from camera {self.camera}"
            if self.config.require_visual:
                return (OutcomeStatus.FAILED, "camera_unavailable",
                        f"camera {self.camera} gave no frame after the step; the visual check is required")
            return None
        prior = _frame(before, self.camera)
        try:
            verdict = self.judge.judge(step.text, step.image, frame, prior)
        except Exception as e:  # noqa: BLE001 - a broken judge must not break the task
            # ...nor pass the step: a check that could not be made is an unverified step, which is not
            # a finished one (the runner re-plans from the current view).
            log.exception("visual judge %s failed", getattr(self.judge, "name", self.judge))
            details["visual"] = f"judge error: {type(e).__name__}: {e}"
            return (OutcomeStatus.UNFINISHED, "unverified",
                    f"the visual check could not be made ({type(e).__name__}: {e}): the step is unverified")
        details["visual"] = {"score": round(verdict.score, 4), "threshold": verdict.threshold, **verdict.details}
        if not verdict.passed:
            return (OutcomeStatus.UNFINISHED, "visual_mismatch",
                    f"the {self.camera} view does not match the step's predicted image (similarity "
                    f"{verdict.score:.2f} < {verdict.threshold:.2f})")
        return None

    def _gripper(self, name: str):
        if name in self._gripper_by_name:
            return self._gripper_by_name[name]
        for arm in self.profile.arms:  # an arm name is accepted for its gripper
            if arm.name == name and arm.gripper:
                return self._gripper_by_name[arm.gripper]
        raise KeyError(f"profile {self.profile.name!r} has no gripper {name!r} "
                       f"(grippers: {sorted(self._gripper_by_name)})")


def _opening(state: Optional[JointState], joint: str) -> Optional[float]:
    if state is None or joint not in state.positions:
        return None
    return float(state.positions[joint])


def _frame(observation: Optional[Observation], camera: str) -> Optional[np.ndarray]:
    if observation is None or camera not in observation.frames:
        return None
    return observation.frames[camera].image


def _goal_summary(goal, result) -> dict:
    if isinstance(goal, GripperGoal):
        head = {"gripper": goal.gripper, "position": goal.position}
    else:
        head = {"group": getattr(goal, "group", "?"), "joints": list(getattr(goal, "joint_names", ())),
                "points": len(getattr(goal, "points", ()))}
    return {**head, "status": result.status.value, "error_code": result.error_code, "message": result.message,
            "duration": round(float(result.duration), 3)}
