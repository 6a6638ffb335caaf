"""GuidanceEngine: request building, streaming, validation, error wrapping, history, cancel."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from fakes import FakeImageSource, FakeWorldModel

from emu_ros.guidance.engine import EngineConfig, GuidanceEngine
from emu_ros.guidance.prompting import build_question, describe_history
from emu_ros.core.types import (Cancelled, CancelToken, HistoryEntry, OutcomeStatus, PlanningError, PlanRequest,
                                    PlanStep, StepOutcome)

IMG = np.zeros((8, 8, 3), np.uint8)


def test_plan_streams_steps_with_observation_and_source():
    wm = FakeWorldModel(["reach the cube", ("grasp the cube", IMG), "lift the cube"])
    engine = GuidanceEngine(wm, FakeImageSource())
    seen = []
    plan = engine.plan("transfer the cube", on_step=seen.append)
    assert [s.text for s in plan.steps] == ["reach the cube", "grasp the cube", "lift the cube"]
    assert [s.index for s in seen] == [0, 1, 2] and seen[1].image is not None
    assert plan.source == "fake-world-model" and all(s.source == "fake-world-model" for s in plan.steps)
    req = wm.requests[0]
    assert req.task == "transfer the cube" and "cam_high" in req.observation.frames


def test_raw_interleaved_output_is_parsed():
    wm = FakeWorldModel(script=[["Step 1: reach the cube", IMG, "Step 2: grasp", IMG, 42]], raw=True)
    plan = GuidanceEngine(wm, FakeImageSource()).plan("t")
    assert [s.text for s in plan.steps] == ["reach the cube", "grasp"]
    assert any("ignored output item of type int" in n for n in plan.notes)


def test_truncated_tail_without_image_is_dropped_with_note():
    wm = FakeWorldModel(script=[["Step 1: reach", IMG, "Step 2: grasp", IMG, "Step 3: li"]], raw=True)
    plan = GuidanceEngine(wm, FakeImageSource()).plan("t")
    assert [s.text for s in plan.steps] == ["reach", "grasp"]
    assert any("cut before its image" in n for n in plan.notes)


def test_max_steps_truncates_and_stops_generation():
    produced = []

    class Endless:
        name = "endless"

        def plan(self, request, cancel=None):
            i = 0
            while not (cancel and cancel.cancelled):
                produced.append(i)
                yield PlanStep(index=i, text=f"reach the cube {i}")
                i += 1

    plan = GuidanceEngine(Endless(), FakeImageSource(), EngineConfig(max_steps=5)).plan("t")
    assert len(plan.steps) == 5 and len(produced) <= 7
    assert any("max_steps=5" in n for n in plan.notes)


@pytest.mark.parametrize("behaviour, match", [
    (RuntimeError("CUDA out of memory"), "CUDA out of memory"),
    ([], "no steps"),
    ([IMG, IMG], "without text"),
    ([3.5, None, {"a": 1}], "no steps"),
    (["   ", "<|extra_204|>"], "no steps"),
])
def test_backend_failures_become_planning_errors(behaviour, match):
    wm = FakeWorldModel(script=[behaviour], raw=True)
    with pytest.raises(PlanningError, match=match):
        GuidanceEngine(wm, FakeImageSource()).plan("fold the t-shirt")


def test_an_output_that_ends_before_any_step_is_a_done_plan_a_cut_one_is_an_error():
    """A model that ends its answer at once sees nothing left to do: a complete plan of no steps, said in its
    notes. The same emptiness when the output was cut, or with items the parser dropped, stays an error."""
    from emu_ros.guidance.parser import OutputEnd

    done = GuidanceEngine(FakeWorldModel(script=[[OutputEnd("eos")]], raw=True), FakeImageSource()).plan("t")
    assert done.steps == [] and done.complete and any("sees the task as done" in n for n in done.notes)
    for output in ([OutputEnd("max_new_tokens", truncated=True)], [3.5, OutputEnd("eos")]):
        with pytest.raises(PlanningError, match="no steps"):
            GuidanceEngine(FakeWorldModel(script=[output], raw=True), FakeImageSource()).plan("t")


def test_backend_that_is_not_iterable_is_a_planning_error():
    class Broken:
        name = "broken"

        def plan(self, request, cancel=None):
            return 17

    with pytest.raises(PlanningError, match="broken"):
        GuidanceEngine(Broken(), FakeImageSource()).plan("t")


def test_camera_unavailable_refuses_to_plan_blind():
    src = FakeImageSource()
    src.fail = True
    with pytest.raises(PlanningError, match="cannot plan without camera views: cam_high"):
        GuidanceEngine(FakeWorldModel(["reach"]), src).plan("t")
    plan = GuidanceEngine(FakeWorldModel(["reach"]), src, EngineConfig(require_observation=False)).plan("t")
    assert plan.steps[0].text == "reach"


def test_empty_task_and_no_image_source():
    with pytest.raises(PlanningError, match="empty task"):
        GuidanceEngine(FakeWorldModel(["a"]), FakeImageSource()).plan("  ")
    with pytest.raises(PlanningError, match="plan blind"):
        GuidanceEngine(FakeWorldModel(["a"])).plan("t")


def test_history_is_kept_per_task_and_sent_to_the_model():
    wm = FakeWorldModel(["reach the cube", "grasp the cube"])
    engine = GuidanceEngine(wm, FakeImageSource())
    engine.record("task a", StepOutcome(0, "reach the cube", OutcomeStatus.FINISHED))
    engine.record("task a", StepOutcome(1, "grasp the cube", OutcomeStatus.UNFINISHED, "gripper closed on nothing"))
    engine.plan("task a", revision=1)
    engine.plan("task b")
    assert [h.text for h in wm.requests[0].history] == ["reach the cube", "grasp the cube"]
    assert wm.requests[0].revision == 1
    assert wm.requests[1].history == ()
    engine.plan("task a", history=[HistoryEntry("x", OutcomeStatus.FAILED, "aborted")])
    assert [h.text for h in engine.history("task a")] == ["x"]
    engine.reset("task a")
    assert engine.history("task a") == []


def test_cancel_from_another_thread_stops_generation():
    wm = FakeWorldModel(["reach"] * 50, delay_s=0.05)
    engine = GuidanceEngine(wm, FakeImageSource())
    threading.Timer(0.12, engine.cancel).start()
    with pytest.raises(Cancelled):
        engine.plan("t")


def test_cancel_token_of_the_caller_is_honoured():
    token = CancelToken()
    token.cancel("operator")
    with pytest.raises(Cancelled, match="operator"):
        GuidanceEngine(FakeWorldModel(["reach"] * 5, delay_s=0.01), FakeImageSource()).plan("t", cancel=token)


def test_on_step_callback_errors_do_not_break_planning():
    def bad(step):
        raise ValueError("listener bug")

    plan = GuidanceEngine(FakeWorldModel(["a", "b"]), FakeImageSource()).plan("t", on_step=bad)
    assert len(plan.steps) == 2


def test_question_describes_progress_and_failure():
    req = PlanRequest(task="transfer the cube", history=(
        HistoryEntry("Move the right gripper above the cube", OutcomeStatus.FINISHED),
        HistoryEntry("Grasp the cube", OutcomeStatus.UNFINISHED, "right_gripper closed on nothing")))
    q = build_question(req, steps_hint=4)
    assert q.startswith("Transfer the cube.")
    assert "Steps already done: Move the right gripper above the cube." in q
    assert 'The step "Grasp the cube" was not finished (right_gripper closed on nothing).' in q
    assert q.endswith("Please provide 4 steps for the task.")
    assert describe_history(()) == ""
