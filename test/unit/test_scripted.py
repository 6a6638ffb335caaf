"""Scripted reference planner: schema validation, labelling, task lookup, resume after failures."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DATA
from fakes import FakeImageSource

from emu_ros.guidance.backends import make_world_model
from emu_ros.guidance.backends.scripted import SOURCE, ScriptedWorldModel, TaskFileError, load_task_file
from emu_ros.guidance.engine import GuidanceEngine
from emu_ros.core.types import HistoryEntry, OutcomeStatus, PlanningError, PlanRequest

TASKS = DATA / "tasks"
F, U, X = OutcomeStatus.FINISHED, OutcomeStatus.UNFINISHED, OutcomeStatus.FAILED


def texts(wm, history=(), task="pick_and_place_cube"):
    return [s.text for s in wm.plan(PlanRequest(task=task, history=tuple(history)))]


def test_example_task_file_loads_with_images_and_labels():
    wm = make_world_model("scripted", task_dir=TASKS)
    steps = list(wm.plan(PlanRequest(task="Pick up the red cube and put it in the bowl.")))
    assert len(steps) == 7
    assert all(s.source == SOURCE == "scripted-reference" for s in steps)
    assert steps[0].image is not None and steps[0].image.shape == (96, 128, 3) and steps[1].image is None
    assert wm.name == "scripted-reference"


def test_engine_labels_the_plan_scripted():
    plan = GuidanceEngine(ScriptedWorldModel(task_dir=TASKS), FakeImageSource()).plan("pick_and_place_cube")
    assert plan.source == "scripted-reference" and {s.source for s in plan.steps} == {"scripted-reference"}


def test_unknown_task_lists_the_scripted_tasks():
    with pytest.raises(PlanningError, match=r"no task file for 'make coffee'.*pick_and_place_cube"):
        texts(ScriptedWorldModel(task_dir=TASKS), task="make coffee")


def test_resume_reissues_failed_step_and_the_rest():
    wm = ScriptedWorldModel(task_dir=TASKS)
    all_steps = texts(wm)
    hist = [HistoryEntry(all_steps[0], F), HistoryEntry(all_steps[1], F), HistoryEntry(all_steps[4], F),
            HistoryEntry(all_steps[2], F), HistoryEntry(all_steps[3], F), HistoryEntry(all_steps[4], X, "aborted")]
    assert texts(wm, hist) == all_steps[4:]


def test_on_failure_resumes_from_the_recovery_step():
    wm = ScriptedWorldModel(task_dir=TASKS)
    s = texts(wm)
    missed = [HistoryEntry(s[0], F), HistoryEntry(s[1], F), HistoryEntry(s[2], U, "closed on nothing")]
    assert texts(wm, missed) == s  # grasp.on_failure = reach
    # after the recovery, the second attempt at the steps counts
    again = missed + [HistoryEntry(s[0], F), HistoryEntry(s[1], F), HistoryEntry(s[2], F), HistoryEntry(s[3], F)]
    assert texts(wm, again) == s[4:]


def test_all_finished_is_a_planning_error():
    wm = ScriptedWorldModel(task_dir=TASKS)
    s = texts(wm)
    with pytest.raises(PlanningError, match="already finished"):
        texts(wm, [HistoryEntry(t, F) for t in s])


@pytest.mark.parametrize("body, match", [
    ("steps: [{text: a}]", "missing 'task'"),
    ("task: t\nsteps: []", "non-empty list"),
    ("task: t\nsteps: [{text: ''}]", "'text' is missing or empty"),
    ("task: t\nsteps: [{text: a, colour: red}]", r"unknown field\(s\) \['colour'\]"),
    ("task: t\nsteps: [{text: a, image: nope.png}]", "nope.png not found"),
    ("task: t\nsteps: [{id: a, text: x}, {id: a, text: y}]", "duplicate step id"),
    ("task: t\nsteps: [{text: x, on_failure: zz}]", "unknown step 'zz'"),
    ("task: t\nplan: []\nsteps: [x]", r"unknown field\(s\) \['plan'\]"),
    ("- a\n- b", "must be a mapping"),
])
def test_task_file_errors_name_the_problem(tmp_path: Path, body, match):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(TaskFileError, match=match):
        load_task_file(p)


def test_string_steps_and_default_ids(tmp_path: Path):
    p = tmp_path / "simple.yaml"
    p.write_text("task: simple\nsteps:\n  - Grasp the cube\n  - text: Lift the cube\n")
    t = load_task_file(p)
    assert [s.id for s in t.steps] == ["s1", "s2"] and t.matches("SIMPLE")


def test_factory_rejects_unknown_backend():
    with pytest.raises(ValueError, match="unknown world-model backend 'gpt'"):
        make_world_model("gpt")


def test_repository_task_files_are_valid():
    """Whatever task files config/tasks holds must load (their images included)."""
    from emu_ros.core.profile import config_dir

    d = config_dir() / "tasks"
    for p in sorted(d.glob("*.yaml")):
        assert load_task_file(p).steps
