"""clear_table: the table-clearing scene with a napkin; a missed napkin pinch is detected from the gripper and
the plan is repaired (the runner, the StepMonitor and the scripted reference, as `emu-ros eval` runs them)."""
from __future__ import annotations

import numpy as np
import pytest

from emu_ros.bridge.runner import EventType
from emu_ros.sim.clear_table import BIN_CENTER, OBJECTS, in_bin, sample_layout
from emu_ros.sim.episode import EpisodeConfig, SimWorld, run_episode
from emu_ros.sim.faults import FaultSpec
from emu_ros.sim.tasks import step_texts


@pytest.fixture(scope="module")
def world():
    w = SimWorld("clear_table")
    yield w
    w.sim.close()


def test_layout_is_seeded_and_starts_outside_the_bin(world):
    a, b, c = sample_layout(7), sample_layout(7), sample_layout(8)
    assert a.poses == b.poses and a.poses != c.poses
    world.reset(7)
    for name in OBJECTS:
        pos, _ = world.sim.body_pose(name)
        x, y, _ = a.poses[name]
        assert abs(pos[0] - x) < 0.01 and abs(pos[1] - y) < 0.01, name  # settled where the layout put it
        assert not in_bin(pos), name
    assert world.sim.reward == 0.0
    assert in_bin((BIN_CENTER[0], BIN_CENTER[1], 0.03)) and not in_bin((BIN_CENTER[0], BIN_CENTER[1], 0.25))
    texts = step_texts("clear_table")
    assert 10 <= len(texts) <= 14
    assert any(t.startswith("Pinch") and "napkin" in t for t in texts)
    assert {"left", "right"} <= {w for t in texts for w in ("left", "right") if f"{w} " in t}


def _events(world, cfg):
    events = []
    res = run_episode(cfg, world, listeners=(events.append,))
    return res, events


def test_missed_napkin_is_detected_and_the_plan_repaired(world):
    res, events = _events(world, EpisodeConfig(task="clear_table", seed=41, fault=FaultSpec("missed_napkin", seed=41)))
    assert res.fault_fired and res.fault_detected
    bad = [s for s in res.steps if s.status != "finished"]
    assert [s.code for s in bad] == ["gripper_empty"] and bad[0].text.startswith("Pinch the end of the napkin")
    plans = [e.plan for e in events if e.type is EventType.PLAN_READY]
    assert len(plans) == 2 and plans[1].revision == 1
    # the repair starts from the napkin where it now lies and keeps everything after it
    assert plans[1].steps[0].text == "Move the right gripper above the end of the napkin"
    assert [s.text for s in plans[1].steps] == step_texts("clear_table")
    assert res.success and res.max_reward == 4.0, res.steps  # every object in the bin: the simulator's state
    assert res.backend == "scripted-reference" and res.perception == "sim-ground-truth-oracle"
    # without re-planning the same seed stops at the missed pinch and nothing is cleared
    res2, _ = _events(world, EpisodeConfig(task="clear_table", seed=41, fault=FaultSpec("missed_napkin", seed=41),
                                           replan=False))
    assert res2.runner_status == "aborted" and not res2.success and res2.fault_detected


def test_napkin_slip_is_caught_at_the_bin_not_reported_as_placed(world):
    res, events = _events(world, EpisodeConfig(task="clear_table", seed=42, fault=FaultSpec("napkin_slip", seed=42)))
    assert res.fault_fired and res.fault_detected
    bad = [s for s in res.steps if s.status != "finished"]
    assert bad and bad[0].text == "Put the napkin into the bin with the right arm" and bad[0].code == "gripper_empty"
    plans = [e.plan for e in events if e.type is EventType.PLAN_READY]
    assert plans[1].steps[0].text == "Move the right gripper above the end of the napkin"
    assert res.success, res.steps


def test_knocked_cup_lies_on_its_side_and_is_picked_up_lying(world):
    res, _ = _events(world, EpisodeConfig(task="clear_table", seed=43, fault=FaultSpec("knocked_cup", seed=43)))
    assert res.fault_fired and res.fault_detected
    assert [s.code for s in res.steps if s.status != "finished"] == ["gripper_empty"]
    assert res.success, res.steps


def test_faults_are_reproducible(world):
    from emu_ros.sim.faults import FaultInjector

    details = []
    for _ in range(2):
        res, _ = _events(world, EpisodeConfig(task="clear_table", seed=44, fault=FaultSpec("missed_napkin", seed=44)))
        details.append([(s.text, s.status, s.code) for s in res.steps])
        assert res.fault_fired
    assert details[0] == details[1]
    # a fault that no step of the task can take is refused by name
    with pytest.raises(ValueError, match="eligible"):
        FaultInjector(FaultSpec("knocked_cup"), world.sim, world.adapter, None, [None])


def test_pinch_holds_the_napkin_off_the_table(world, profile):
    world.reset(45)
    arm_call = world.mapper.map("Pinch the end of the napkin with the right gripper").call
    assert arm_call.skill == "pinch" and arm_call.obj == "napkin"
    ex = world.executor.execute(arm_call)
    assert not ex.error and all(r.ok for _, r in ex.goals), ex.error
    assert ex.expect_holding == ("right_gripper",)
    place = world.executor.execute(world.mapper.map("Put the napkin into the bin with the right arm").call)
    assert not place.error and place.expect_released == ("right_gripper",)
    world.adapter.hold(0.5)
    pos, _ = world.sim.body_pose("napkin")
    assert in_bin(pos), pos
    # "grasp the napkin" is the same pinch (the object is thin): it ends holding, never a top grasp of its middle
    world.reset(46)
    g = world.executor.execute(world.mapper.map("Grasp the napkin with the right gripper").call)
    assert not g.error and g.expect_holding == ("right_gripper",)
    spec = profile.gripper("right_gripper")
    opening = world.adapter.joint_state().positions[spec.joint]
    assert spec.opening(spec.empty_below) <= opening < spec.opening(spec.closed_above)
    assert np.isfinite(opening)


def test_eval_prints_one_table_for_several_faults(tmp_path, capsys):
    import json

    from emu_ros.sim.evaluate import main

    out = tmp_path / "rows.json"
    assert main(["--task", "clear_table", "--episodes", "1", "--seed", "47", "--fault", "none", "missed_napkin",
                 "--quiet", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["fault"] for r in rows] == ["none", "missed_napkin"]
    assert rows[1]["fault_fired"] == rows[1]["fault_detected"] == 1 and rows[1]["all_steps_first_try"] == 0
    text = capsys.readouterr().out
    assert "all 4 objects inside the bin at the end" in text
    assert "trained on transfer_cube, insertion, not clear_table: the labelled scripted reference plans it" in text
    # a fault of another task is refused with its reason, not a traceback
    assert main(["--task", "transfer_cube", "--episodes", "1", "--fault", "missed_napkin", "--quiet",
                 "--planner", "scripted"]) == 2
    assert "eligible" in capsys.readouterr().err


def test_napkin_model_bench_measures_every_model(tmp_path):
    import json

    from emu_ros.bench.napkin_models import main

    assert main(["--seconds", "0.1", "--json", str(tmp_path / "n.json")]) == 0
    rows = json.loads((tmp_path / "n.json").read_text())
    assert set(rows) == {"hinged strip (shipped)", "flexcomp 9x3", "flexcomp 17x5"}
    assert all(r["ms_per_control_tick"] > 0 for r in rows.values())
    assert rows["flexcomp 17x5"]["nv"] > rows["hinged strip (shipped)"]["nv"]
