"""Closed loop on the simulated ALOHA (the bridge's TaskRunner + StepMonitor): the injected missed grasp is caught
from robot signals and re-planned."""
from __future__ import annotations

import json

from emu_ros.sim.episode import EpisodeConfig, SimWorld, run_episode
from emu_ros.sim.faults import FaultSpec


def test_missed_grasp_is_detected_and_recovered_with_one_replan():
    world = SimWorld("transfer_cube")
    r = run_episode(EpisodeConfig(task="transfer_cube", seed=3, fault=FaultSpec("missed_grasp", seed=3)), world)
    assert r.fault_fired and r.fault_detected
    failed = [s for s in r.steps if s.status != "finished"]
    assert len(failed) == 1 and failed[0].code == "gripper_empty" and "Grasp the red cube" in failed[0].text
    assert r.replans == 1
    assert r.success and r.max_reward == 4.0  # the simulator's own reward
    assert r.backend == "scripted-reference" and r.perception == "sim-ground-truth-oracle"
    # without re-planning the same seed stops at the failed grasp and the task is not done
    r2 = run_episode(EpisodeConfig(task="transfer_cube", seed=3, fault=FaultSpec("missed_grasp", seed=3),
                                   replan=False), world)
    assert r2.stopped == "aborted" and "Grasp the red cube" in r2.failed_step and r2.fault_detected
    assert not r2.success and r2.replans == 0


def test_slip_and_abort_recover():
    world = SimWorld("transfer_cube")
    # a slip is unfinished (re-planned); an aborted trajectory is FAILED and retried in place first
    for kind, code, replans, retries in (("slip", "gripper_empty", 1, 0), ("abort", "aborted", 0, 1)):
        r = run_episode(EpisodeConfig(task="transfer_cube", seed=5, fault=FaultSpec(kind, seed=5)), world)
        assert r.fault_fired and r.fault_detected and r.success, (kind, r.steps)
        assert [s.code for s in r.steps if s.status != "finished"] == [code]
        assert (r.replans, r.retries) == (replans, retries), kind


def test_eval_cli_json(tmp_path, capsys):
    from emu_ros.sim.evaluate import main, wilson_interval

    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and 0.92 < lo < 0.94
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.27 < hi < 0.29
    out = tmp_path / "s.json"
    assert main(["--task", "transfer_cube", "--episodes", "2", "--fault", "missed_grasp", "--compare",
                 "--planner", "scripted", "--seed", "0", "--json", str(out), "--quiet"]) == 0
    rows = json.loads(out.read_text())
    assert [r["replan"] for r in rows] == [True, False]
    for key in ("task", "fault", "episodes", "replan", "success_rate", "ci95", "mean_replans", "mean_steps",
                "mean_episode_s", "backend"):
        assert key in rows[0]
    assert rows[0]["success_rate"] == 1.0 and rows[1]["success_rate"] == 0.0
    assert "no-replan" in capsys.readouterr().out


def test_camera_dropout_during_a_step_is_judged_from_robot_signals():
    """The StepMonitor's rule: a step without a predicted image is verified by the robot's own signals, so a
    camera that drops out during it does not fail it (the standalone loop used to call it unverified)."""
    world = SimWorld("transfer_cube")
    r = run_episode(EpisodeConfig(task="transfer_cube", seed=1,
                                  fault=FaultSpec("camera_dropout", step=1, seed=1, dropout_s=0.6)), world)
    assert r.fault_fired and r.success and r.replans == 0 and not r.fault_detected
    # the dropout does not outlive the episode: the next one plans from the cameras at once
    world.images.dropout(None, 30.0)
    r2 = run_episode(EpisodeConfig(task="transfer_cube", seed=2), world)
    assert r2.success, r2.message


def test_insertion_task_succeeds_by_sim_reward():
    world = SimWorld("insertion")
    r = run_episode(EpisodeConfig(task="insertion", seed=0), world)
    assert r.success and r.replans == 0 and r.step_runs == 5


def test_missed_grasp_with_rendered_reference_step_images(tmp_path):
    """The missed grasp with rendered reference step images (the StepMonitor's visual check sees them)."""
    world = SimWorld("transfer_cube")
    r = run_episode(EpisodeConfig(task="transfer_cube", seed=2, fault=FaultSpec("missed_grasp", seed=2),
                                  step_images=True, out_dir=str(tmp_path)), world)
    assert r.runner_status == "succeeded" and r.success and r.replans == 1
    assert [s.code for s in r.steps if s.status != "finished"] == ["gripper_empty"]
    images = sorted((tmp_path / "reference_seed2" / "reference_images").glob("*.png"))
    assert len(images) == 6


def test_fault_targets_are_seeded_and_eligible():
    from emu_ros.sim.faults import FaultInjector
    from emu_ros.sim.tasks import step_texts

    world = SimWorld("transfer_cube")
    calls = [world.mapper.map(t).call for t in step_texts("transfer_cube")]
    pick = lambda kind, step, seed: FaultInjector(FaultSpec(kind, step=step, seed=seed), world.sim, world.adapter,
                                                  world.images, calls).target
    assert pick("missed_grasp", None, 0) == 1  # the right arm's grasp from the table
    assert {pick("missed_grasp", "random", s) for s in range(10)} == {1}  # never the receiving grasp
    assert pick("slip", None, 0) == 2 and pick("abort", 4, 0) == 4
    targets = [pick("camera_dropout", "random", s) for s in range(12)]
    assert targets == [pick("camera_dropout", "random", s) for s in range(12)]  # reproducible per seed
    assert len(set(targets)) > 2
    assert pick("none", None, 0) is None
