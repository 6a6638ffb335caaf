"""ProfileSkillExecutor: goals sent, expectations recorded, clear errors."""
from __future__ import annotations

import numpy as np

from emu_ros.core.protocols import GripperGoal, SkillCall, TrajectoryGoal


def _traj_goals(ex):
    return [g for g, _ in ex.goals if isinstance(g, TrajectoryGoal)]


def test_reach_above_cube_sends_timed_waypoints_within_velocity_limits(cube_world, profile):
    from emu_ros.core.kinematics import SerialChain

    sim, adapter, perception, executor = cube_world
    ex = executor.execute(SkillCall("reach", "Move the right gripper above the red cube", arm="right", obj="cube"))
    assert ex.motion_ok, ex.error or [r.message for _, r in ex.goals]
    assert isinstance(ex.goals[0][0], GripperGoal) and ex.goals[0][0].position == 1.0  # opens first
    goals = _traj_goals(ex)
    assert goals and all(g.joint_names == profile.arm("right_arm").joint_names for g in goals)
    arm = profile.arm("right_arm")
    vmax = np.array([j.max_velocity for j in arm.chain.joints])
    for g in goals:
        assert len(g.points) >= 2
        prev_t, prev_q = 0.0, None
        for p in g.points:
            assert p.time_from_start > prev_t
            if prev_q is not None:
                assert np.all(np.abs(np.array(p.positions) - prev_q) / (p.time_from_start - prev_t) <= vmax * 1.01)
            prev_t, prev_q = p.time_from_start, np.array(p.positions)
    # the fingertip is now above the cube, pointing down, 7 cm over its top face
    tip, R = SerialChain(arm.chain).fk(adapter.joint_state().get(arm.joint_names))
    cube = np.array(perception.locate("cube").position)
    assert np.linalg.norm(tip[:2] - cube[:2]) < 0.01
    assert abs(tip[2] - (cube[2] + 0.02 + 0.07)) < 0.01
    assert R[2, 0] < -0.99
    assert set(ex.joint_targets) == set(arm.joint_names)


def test_grasp_expects_holding_and_the_gripper_holds(cube_world, profile):
    sim, adapter, _, executor = cube_world
    ex = executor.execute(SkillCall("grasp", "Grasp the red cube with the right gripper", arm="right", obj="cube"))
    assert ex.motion_ok and ex.expect_holding == ("right_gripper",)
    opening = adapter.joint_state().positions["right_gripper"]
    assert profile.gripper("right_gripper").empty_below < opening < profile.gripper("right_gripper").closed_above
    assert executor.holding == {"right_gripper": "box"}
    ex = executor.execute(SkillCall("lift", "Lift the cube with the right arm to the meeting point", arm="right",
                                    obj="cube", location="meet_point"))
    assert ex.motion_ok and ex.expect_holding == ("right_gripper",)
    assert sim.body_pose("box")[0][2] > 0.2  # really in the air (ground truth only in tests)


def test_unknown_object_and_unreachable_target_are_clear_errors(cube_world):
    _, adapter, _, executor = cube_world
    ex = executor.execute(SkillCall("grasp", "Grasp the banana", arm="right", obj="banana"))
    assert ex.error_code == "object_not_found" and "banana" in ex.error and not ex.goals
    far = SkillCall("reach", "Reach the far corner", arm="right", location="far corner",
                    params={"locations": {"far corner": (3.0, 3.0, 0.1)}})
    ex = executor.execute(far)
    assert ex.error_code == "ik_failed" and "IK failed" in ex.error
    ex = executor.execute(SkillCall("fold", "Fold the towel", arm="left", obj="towel"))
    assert ex.error_code == "unsupported_skill"
    ex = executor.execute(SkillCall("grasp", "Grasp the cube", obj="cube"))
    assert ex.error_code == "no_arm"


def test_params_override_task_section_and_defaults(cube_world):
    from emu_ros.bridge.skills import SkillDefaults

    _, _, _, executor = cube_world
    call = SkillCall("reach", "x", arm="right", obj="cube", params={"approach_height": 0.12})
    assert executor.param(call, "approach_height", "box") == 0.12
    assert executor.param(SkillCall("grasp", "x"), "grasp_symmetry", "box") == 4  # task section
    assert executor.param(SkillCall("grasp", "x"), "grasp_symmetry", "peg") == SkillDefaults.grasp_symmetry


def test_push_moves_the_cube_along_the_direction(cube_world):
    sim, adapter, perception, executor = cube_world
    before = np.array(perception.locate("cube").position)
    ex = executor.execute(SkillCall("push", "Push the red cube to the left", arm="right", obj="cube",
                                    params={"direction": (0.0, 1.0), "push_distance": 0.06}))
    assert ex.motion_ok, ex.error or [r.message for _, r in ex.goals]
    after = np.array(perception.locate("cube").position)  # ground truth only to check the test's effect
    assert after[1] - before[1] > 0.03 and abs(after[0] - before[0]) < 0.03


def test_wipe_is_a_cartesian_zigzag_above_the_surface(cube_world, profile):
    from emu_ros.core.kinematics import SerialChain

    _, adapter, _, executor = cube_world
    ex = executor.execute(SkillCall("wipe", "Wipe the table with the left arm", arm="left", location="spot",
                                    params={"locations": {"spot": (-0.1, 0.5, 0.0)}, "wipe_strokes": 2}))
    assert ex.motion_ok, ex.error
    chain = SerialChain(profile.arm("left_arm").chain)
    tips = [chain.fk(np.array(p.positions))[0] for g in _traj_goals(ex) for p in g.points]
    low = [t for t in tips if t[2] < 0.03]
    assert len(low) > 10  # many waypoints near the surface: a real path, not two end points
    assert max(t[0] for t in low) - min(t[0] for t in low) > 0.08


def test_place_puts_the_held_cube_down_at_a_named_location_and_releases(cube_world, profile):
    sim, adapter, perception, executor = cube_world
    assert executor.execute(SkillCall("grasp", "Grasp the red cube", arm="right", obj="cube")).motion_ok
    spot = (0.05, 0.62, 0.02)
    ex = executor.execute(SkillCall("place", "Place the cube on the spot", arm="right", obj="cube", location="spot",
                                    params={"locations": {"spot": spot}}))
    assert ex.motion_ok, ex.error or [r.message for _, r in ex.goals]
    assert ex.expect_released == ("right_gripper",) and "right_gripper" not in executor.holding
    assert adapter.joint_state().positions["right_gripper"] > profile.gripper("right_gripper").released_above
    cube = np.array(perception.locate("cube").position)
    assert np.linalg.norm(cube[:2] - np.array(spot[:2])) < 0.02 and cube[2] < 0.03
