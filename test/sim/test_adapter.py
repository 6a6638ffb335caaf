"""SimRobotAdapter outcome codes are measured, not assumed."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from emu_ros.core.protocols import GoalStatus, GripperGoal, TrajectoryGoal, TrajectoryPoint
from emu_ros.core.types import CancelToken

RIGHT = ("right_waist", "right_shoulder", "right_elbow", "right_forearm_roll", "right_wrist_angle", "right_wrist_rotate")
LEFT = tuple(n.replace("right", "left") for n in RIGHT)


def _goal(q, t=1.0, names=RIGHT, group="right_arm"):
    return TrajectoryGoal(group=group, joint_names=names, points=(TrajectoryPoint(tuple(q), t),), goal_tolerance=0.02)


def test_reaches_target_and_reports_success(cube_world):
    sim, adapter, _, _ = cube_world
    q0 = adapter.joint_state().get(RIGHT)
    target = q0 + np.array([0.3, 0.2, -0.2, 0.0, 0.2, 0.0])
    res = adapter.execute_trajectory(_goal(target))
    assert res.status is GoalStatus.SUCCEEDED, res.message
    assert np.max(np.abs(adapter.joint_state().get(RIGHT) - target)) < 0.02
    assert res.duration >= 1.0


def test_rejects_unknown_joints_limits_and_bad_times(cube_world):
    _, adapter, _, _ = cube_world
    r = adapter.execute_trajectory(_goal([0] * 6, names=("nope",) + RIGHT[1:]))
    assert r.status is GoalStatus.REJECTED and r.error_code == -2
    r = adapter.execute_trajectory(_goal([0, 0, 0, 0, 5.0, 0]))
    assert r.status is GoalStatus.REJECTED and r.error_code == -1 and "limits" in r.message
    bad = TrajectoryGoal("right_arm", RIGHT, (TrajectoryPoint((0,) * 6, 1.0), TrajectoryPoint((0,) * 6, 0.5)))
    assert adapter.execute_trajectory(bad).status is GoalStatus.REJECTED
    assert adapter.execute_gripper(GripperGoal("third_gripper", 0.0)).status is GoalStatus.REJECTED


def test_injected_abort_happens_once(cube_world):
    _, adapter, _, _ = cube_world
    q0 = adapter.joint_state().get(RIGHT)
    adapter.inject_abort("right_arm")
    r = adapter.execute_trajectory(_goal(q0 + 0.3, 1.0))
    assert r.status is GoalStatus.ABORTED and r.error_code == -4
    assert r.duration == pytest.approx(0.5, abs=0.05)
    assert adapter.execute_trajectory(_goal(q0 + 0.3, 1.0)).ok


def test_blocked_arm_is_aborted(cube_world):
    """Driving the gripper down through the table: the servo cannot follow, the controller gives up."""
    _, adapter, _, _ = cube_world
    q = adapter.joint_state().get(RIGHT)
    target = q.copy()
    target[1] = 1.2  # shoulder far forward/down: the arm hits the table long before
    target[2] = 0.3
    r = adapter.execute_trajectory(_goal(target, 1.0))
    assert r.status is GoalStatus.ABORTED, r
    assert r.error_code in (-4, -5)


def test_cancel_and_timeout(cube_world):
    _, adapter, _, _ = cube_world
    q0 = adapter.joint_state().get(RIGHT)
    tok = CancelToken()
    tok.cancel("operator")
    r = adapter.execute_trajectory(_goal(q0 + 0.2, 2.0), cancel=tok)
    assert r.status is GoalStatus.CANCELED and "operator" in r.message
    r = adapter.execute_trajectory(_goal(q0 - 0.2, 30.0), timeout=0.05)
    assert r.status is GoalStatus.TIMEOUT


def test_cancel_all_from_another_thread(cube_world):
    sim, adapter, _, _ = cube_world
    adapter.config = adapter.config.__class__(realtime_factor=1.0)  # slow enough to be interrupted
    q0 = adapter.joint_state().get(RIGHT)
    t = threading.Timer(0.2, adapter.cancel_all)
    t.start()
    r = adapter.execute_trajectory(_goal(q0 + 0.3, 3.0))
    t.join()
    assert r.status is GoalStatus.CANCELED


def test_two_arms_move_concurrently(cube_world):
    sim, adapter, _, _ = cube_world
    ql, qr = adapter.joint_state().get(LEFT), adapter.joint_state().get(RIGHT)
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("l", adapter.execute_trajectory(
        _goal(ql + 0.2, 1.0, LEFT, "left_arm"))))
    t0 = sim.ticks
    th.start()
    out["r"] = adapter.execute_trajectory(_goal(qr + 0.2, 1.0))
    th.join()
    assert out["l"].ok and out["r"].ok
    assert sim.ticks - t0 < 2 * 50 + 40  # shared clock: not one arm after the other


def test_gripper_normalised_and_stalls_on_nothing(cube_world):
    _, adapter, _, _ = cube_world
    assert adapter.execute_gripper(GripperGoal("right_gripper", 1.0)).ok
    assert adapter.joint_state().positions["right_gripper"] > 0.9
    r = adapter.execute_gripper(GripperGoal("right_gripper", 0.0))
    assert r.ok
    assert adapter.joint_state().positions["right_gripper"] < 0.15  # closed on nothing


def test_camera_streamer_renders_only_subscribed_cameras_and_survives_dropout(cube_world):
    import time

    from emu_ros.sim.aloha_env import SimCameraStreamer, SimImageSource

    sim, adapter, _, _ = cube_world
    images = SimImageSource(sim, cameras=("cam_high", "cam_left_wrist"), size=(48, 64))
    got = []
    streamer = SimCameraStreamer(images, got.append, rate_hz=20.0, subscribed=("cam_high",)).start()
    try:
        q0 = adapter.joint_state().get(RIGHT)
        assert adapter.execute_trajectory(_goal(q0 + 0.1, 0.5)).ok  # stepping and rendering interleave
        deadline = time.monotonic() + 5.0
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        images.dropout(["cam_high"], 0.6)
        time.sleep(0.15)  # a frame already being rendered may still arrive
        n = len(got)
        time.sleep(0.25)
        assert len(got) == n  # silent during the dropout
    finally:
        streamer.stop()
    assert got and {f.camera for f in got} == {"cam_high"}
    assert got[0].image.shape == (48, 64, 3)


def test_realtime_clock_advances_time_and_goals_follow_it(cube_world):
    import time

    sim, adapter, _, _ = cube_world
    adapter.start_clock(1.0)
    try:
        t0, w0 = sim.time, time.monotonic()
        time.sleep(0.3)
        assert 0.15 < sim.time - t0 < 0.5  # time passes with no goal running
        q0 = adapter.joint_state().get(RIGHT)
        w1 = time.monotonic()
        r = adapter.execute_trajectory(_goal(q0 + 0.2, 0.5))
        assert r.ok and time.monotonic() - w1 >= 0.45  # a 0.5 s goal takes 0.5 s of wall time
    finally:
        adapter.stop_clock()
    assert not adapter.clock_running
