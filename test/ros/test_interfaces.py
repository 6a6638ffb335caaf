"""The generated interfaces and the hand-written core import side by side from the repository root."""
from __future__ import annotations

import importlib

import numpy as np


def test_generated_and_handwritten_modules_share_one_package():
    import emu_ros
    from emu_ros.action import ExecuteTask, GeneratePlan
    from emu_ros.msg import Plan, PlanStep, StepRecord
    from emu_ros.core.types import PlanStep as CorePlanStep

    # The source tree comes first (tests run from the root), the install tree supplies msg/action.
    assert len(emu_ros.__path__) >= 1
    assert importlib.import_module("emu_ros.msg").__file__ != importlib.import_module("emu_ros.guidance").__file__
    assert CorePlanStep(index=0, text="x").text == "x"
    step = PlanStep(index=2, text="grasp the cube", source="scripted-reference")
    plan = Plan(task="transfer", plan_id="p1", revision=1, steps=[step])
    assert plan.steps[0].text == "grasp the cube" and plan.revision == 1
    assert StepRecord(text="a", status="failed", reason="gripper empty").status == "failed"
    goal = ExecuteTask.Goal(instruction="fold the t-shirt", max_replans=3)
    assert goal.max_replans == 3
    fb = GeneratePlan.Feedback(step=step)
    assert fb.step.index == 2
    res = ExecuteTask.Result(success=True, steps_completed=7, replans=1, message="done")
    assert res.steps_completed == 7


def test_message_fields_match_the_contract():
    """Field names are the public contract (DESIGN.md §5): a rename must fail here first."""
    from emu_ros.action import ExecuteTask, GeneratePlan
    from emu_ros.msg import Plan, PlanStep

    assert set(PlanStep.get_fields_and_field_types()) == {"index", "text", "image", "stamp", "source"}
    assert set(Plan.get_fields_and_field_types()) == {"task", "plan_id", "revision", "source", "stamp", "steps",
                                                    "complete", "cut_reason"}
    assert {"instruction", "max_replans"} <= set(ExecuteTask.Goal.get_fields_and_field_types())
    assert {"phase", "step_index", "step_text", "step_image", "attempt", "replans", "outcome"} <= set(
        ExecuteTask.Feedback.get_fields_and_field_types())
    assert {"success", "steps_completed", "replans", "message"} <= set(ExecuteTask.Result.get_fields_and_field_types())
    assert {"instruction", "images", "history"} <= set(GeneratePlan.Goal.get_fields_and_field_types())
    assert np.dtype("uint8")  # numpy importable next to rclpy in one process


def test_a_cut_plan_stays_cut_through_the_message():
    from emu_ros.core.types import Plan, PlanStep
    from emu_ros.ros.conversions import plan_from_msg, plan_to_msg

    cut = Plan(task="t", steps=[PlanStep(index=0, text="grasp")], plan_id="p", complete=False,
               cut_reason="the output was cut (max_new_tokens) after 1 step(s)")
    back = plan_from_msg(plan_to_msg(cut))
    assert back.complete is False and back.cut_reason == cut.cut_reason
    assert plan_from_msg(plan_to_msg(Plan(task="t", steps=[], plan_id="q"))).complete is True
