"""emu_bridge on real rclpy against fake ros2_control servers (FollowJointTrajectory + GripperCommand).

The fake servers use the locally generated control_msgs (test/ros/interfaces); the guidance node is
the real one with the scripted planner. Each scenario checks what an ExecuteTask client sees.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

control_msgs = pytest.importorskip("control_msgs.action", reason="test-only control_msgs not built (scripts/setup_env.sh)")
from control_msgs.action import FollowJointTrajectory, GripperCommand  # noqa: E402

from emu_ros.action import ExecuteTask  # noqa: E402
from emu_ros.core.protocols import ObjectEstimate  # noqa: E402
from emu_ros.ros.bridge_node import BridgeNode  # noqa: E402
from emu_ros.ros.guidance_node import GuidanceNode  # noqa: E402
from emu_ros.ros.image_conversion import numpy_to_image  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CAM = "/cam_high/camera/color/image_rect_raw"


def make_profile(tmp: Path) -> Path:
    data = yaml.safe_load((REPO / "config/robots/sim_aloha.yaml").read_text())
    data["name"] = "fake_ros2_control_aloha"
    data["adapter"] = {
        "kind": "follow_joint_trajectory",
        "trajectory_actions": {"left_arm": "/left_arm_controller/follow_joint_trajectory",
                               "right_arm": "/right_arm_controller/follow_joint_trajectory"},
        "gripper_actions": {"left_gripper": "/left_gripper_controller/gripper_cmd",
                            "right_gripper": "/right_gripper_controller/gripper_cmd"},
        "joint_state_topics": ["/joint_states"],
    }
    data["cameras"] = [c for c in data["cameras"] if c["name"] == "cam_high"]
    data.pop("perception")  # object poses come from the injected perception of each scenario
    data["tolerances"] = {"joint_goal": 0.05, "step_timeout_s": 8, "motion_timeout_s": 4, "gripper_timeout_s": 2,
                          "settle_s": 0.05}
    p = tmp / "fake_robot.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def make_task(tmp: Path, with_image: bool = False) -> Path:
    d = tmp / "tasks"
    d.mkdir(exist_ok=True)
    steps = [{"id": "reach", "text": "Move the right gripper above the red cube"},
             {"id": "grasp", "text": "Grasp the red cube with the right gripper", "on_failure": "reach"},
             {"id": "release", "text": "Release the cube with the right gripper"}]
    if with_image:  # a predicted view that the camera will never show: the visual check must fail
        from PIL import Image as PILImage

        PILImage.fromarray(np.zeros((48, 64, 3), np.uint8)).save(d / "dark.png")
        steps[0]["image"] = "dark.png"
    (d / "pick_cube.yaml").write_text(yaml.safe_dump({"task": "pick_cube", "steps": steps}))
    return d


class StaticPerception:
    name, ground_truth = "test-fixed-positions", False

    def locate(self, obj):
        return ObjectEstimate(name="cube", position=(0.1, 0.5, 0.02), yaw=0.0) if "cube" in obj else None


class FakeRobot(Node):
    """ros2_control stand-in: FJT/GripperCommand servers that move a published joint state."""

    def __init__(self, profile_path: Path):
        super().__init__("fake_ros2_control")
        prof = yaml.safe_load(profile_path.read_text())
        self.q = {}
        for arm in prof["arms"]:
            for j, h in zip(arm["chain"]["joints"], arm["home"]):
                self.q[j["name"]] = float(h)
        self.q.update(left_gripper=1.0, right_gripper=1.0)
        self.mode = {"arm": "ok", "gripper": "ok"}
        self.object_between = True
        self.trajectories, self.gripper_goals, self.canceled = [], [], 0
        self.lock = threading.Lock()
        g = ReentrantCallbackGroup()
        self.pub = self.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        self.create_timer(0.02, self._publish, callback_group=g)
        for side in ("left", "right"):
            ActionServer(self, FollowJointTrajectory, f"/{side}_arm_controller/follow_joint_trajectory", self._fjt,
                         goal_callback=self._accept, cancel_callback=self._cancel, callback_group=g)
            ActionServer(self, GripperCommand, f"/{side}_gripper_controller/gripper_cmd",
                         lambda h, s=side: self._grip(h, s), goal_callback=self._accept,
                         cancel_callback=self._cancel, callback_group=g)

    def _accept(self, goal):
        if self.mode["arm"] == "reject" and hasattr(goal, "trajectory"):
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _cancel(self, _h):
        self.canceled += 1
        return CancelResponse.ACCEPT

    def _publish(self):
        with self.lock:
            names, pos = list(self.q), list(self.q.values())
        self.pub.publish(JointState(name=names, position=pos))

    def _fjt(self, h):
        traj = h.request.trajectory
        self.trajectories.append(traj)
        mode = self.mode["arm"]
        if mode == "hang":  # a controller that never finishes (bounded so a broken test cannot hang CI)
            end = time.monotonic() + 30.0
            while not h.is_cancel_requested and time.monotonic() < end:
                time.sleep(0.02)
            h.canceled()
            return FollowJointTrajectory.Result(error_code=0)
        if mode in ("abort", "abort_once"):
            if mode == "abort_once":
                self.mode["arm"] = "ok"
            h.abort()
            return FollowJointTrajectory.Result(error_code=-4, error_string="path tolerance violated (test)")
        time.sleep(0.02)
        with self.lock:
            for n, p in zip(traj.joint_names, traj.points[-1].positions):
                self.q[n] = p
        h.succeed()
        return FollowJointTrajectory.Result(error_code=0)

    def _grip(self, h, side):
        p = h.request.command.position
        self.gripper_goals.append((side, p))
        closing = p < 0.5
        with self.lock:
            self.q[f"{side}_gripper"] = (0.6 if self.object_between else 0.05) if closing else p
        h.succeed()
        # gripper_action_controller: closing on an object stalls; closing on nothing reaches the goal.
        held = closing and self.object_between
        return GripperCommand.Result(position=p, stalled=held, reached_goal=not held)


@pytest.fixture
def system(spin, tmp_path):
    """guidance + bridge + fake robot + camera; returns (robot, client_node, send)."""
    def build(with_image=False, max_retries=1, max_replans=2, guidance_mode="plan"):
        profile = make_profile(tmp_path)
        tasks = make_task(tmp_path, with_image)
        robot = FakeRobot(profile)
        guidance = GuidanceNode(parameter_overrides=[Parameter("profile", value=str(profile)),
                                                     Parameter("task_dir", value=str(tasks))])
        bridge = BridgeNode(perception=StaticPerception(), parameter_overrides=[
            Parameter("profile", value=str(profile)), Parameter("max_retries", value=max_retries),
            Parameter("max_replans", value=max_replans), Parameter("log_dir", value=str(tmp_path / "logs")),
            Parameter("guidance_mode", value=guidance_mode)])
        cam = Node("fake_camera")
        pub = cam.create_publisher(Image, CAM, qos_profile_sensor_data)
        frame = numpy_to_image(np.full((48, 64, 3), 200, np.uint8))
        cam.create_timer(0.05, lambda: pub.publish(frame))
        spin(robot, guidance, bridge, cam)
        assert guidance.trigger_configure() and guidance.trigger_activate()
        client_node = Node("execute_client")
        client = ActionClient(client_node, ExecuteTask, "/emu_bridge/execute_task")  # before spinning: see test_guidance_node.plan_client
        spin(client_node, single=True)
        assert client.wait_for_server(timeout_sec=10)

        def send(instruction="pick_cube", timeout=60.0, cancel_after=None, **goal_fields):
            fb, done, out = [], threading.Event(), {}

            def on_goal(f):
                h = f.result()
                out["handle"] = h
                if not h.accepted:
                    out["rejected"] = True
                    done.set()
                    return
                h.get_result_async().add_done_callback(lambda r: (out.update(result=r.result()), done.set()))

            client.send_goal_async(ExecuteTask.Goal(instruction=instruction, max_replans=-1, **goal_fields),
                                   feedback_callback=lambda m: fb.append(m.feedback)).add_done_callback(on_goal)
            if cancel_after is not None:
                assert cancel_after(fb), "cancel condition never reached"
                out["handle"].cancel_goal_async()
            assert done.wait(timeout), "ExecuteTask did not finish"
            return out, fb

        return robot, bridge, send

    return build


def phases(fb):
    return [f.phase for f in fb]


def test_task_succeeds_and_trajectories_reach_the_controllers(system, wait_for):
    robot, bridge, send = system()
    time.sleep(0.3)
    out, fb = send()
    r = out["result"]
    assert r.status == 4, r.result.message
    assert r.result.success and r.result.steps_completed == 3 and r.result.replans == 0
    right = [f"right_{j}" for j in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")]
    assert robot.trajectories and all(list(t.joint_names) == right for t in robot.trajectories)
    lims = bridge.profile.arm("right_arm").chain.joints
    for t in robot.trajectories:
        for pt in t.points:
            assert all(j.lower - 1e-6 <= q <= j.upper + 1e-6 for j, q in zip(lims, pt.positions))
        times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in t.points]
        assert times == sorted(times) and times[-1] > 0
    assert ("right", 0.0) in robot.gripper_goals  # grasp closes the right gripper
    assert "executing" in phases(fb) and "planning" in phases(fb)


def test_aborted_goal_is_retried(system):
    robot, _, send = system()
    robot.mode["arm"] = "abort_once"
    out, fb = send()
    assert out["result"].status == 4 and out["result"].result.success
    failed = [f for f in fb if f.outcome.startswith("failed")]
    assert failed and "abort" in failed[0].outcome
    assert any(f.phase == "executing" and f.attempt == 2 for f in fb), "the failed step is tried again"


def test_persistent_abort_then_replans_then_aborts(system):
    robot, _, send = system(max_retries=1, max_replans=1)
    robot.mode["arm"] = "abort"
    out, fb = send()
    r = out["result"]
    assert r.status == 6 and not r.result.success
    assert r.result.replans == 1 and "replanning" in phases(fb)
    assert "re-plan" in r.result.message or "replan" in r.result.message.lower()


def test_rejected_goal_and_missing_server_are_failures(system, spin):
    robot, bridge, send = system(max_retries=0, max_replans=0)
    robot.mode["arm"] = "reject"
    out, fb = send()
    assert out["result"].status == 6
    assert any("rejected" in f.outcome for f in fb)


def test_failed_visual_check_replans(system):
    robot, _, send = system(with_image=True, max_replans=1)
    out, fb = send()
    r = out["result"]
    unfinished = [f for f in fb if f.outcome.startswith("unfinished")]
    assert unfinished and "predicted image" in unfinished[0].outcome
    assert "replanning" in phases(fb)
    assert r.result.replans >= 1


def test_missed_grasp_is_unfinished_and_replanned(system):
    robot, _, send = system(max_replans=1)
    robot.object_between = False  # the gripper closes on nothing
    out, fb = send()
    assert any(f.outcome.startswith("unfinished") for f in fb)
    assert "replanning" in phases(fb)
    assert out["result"].result.replans == 1 and not out["result"].result.success


def test_cancel_mid_step_cancels_the_arm_goal(system, wait_for):
    robot, _, send = system()
    robot.mode["arm"] = "hang"
    # cancel once a trajectory goal is really in flight at the controller (mid-step)
    out, fb = send(cancel_after=lambda fb: wait_for(lambda: len(robot.trajectories) > 0, 20))
    assert out["result"].status == 5, out["result"].result.message  # CANCELED
    assert wait_for(lambda: robot.canceled >= 1), "the arm goal was canceled at the controller"


def test_second_goal_while_busy_is_rejected_and_node_survives_many(system, wait_for):
    robot, bridge, send = system()
    robot.mode["arm"] = "hang"
    results = []
    t = threading.Thread(target=lambda: results.append(send(timeout=60)), daemon=True)
    t.start()
    assert wait_for(lambda: bridge.runner is not None, 10)
    rejected = 0
    for _ in range(20):
        out, _ = send(timeout=10)
        rejected += bool(out.get("rejected"))
    assert rejected == 20
    bridge.runner.cancel("test done")
    t.join(30)
    assert results and results[0][0]["result"].status in (5, 6)


def test_approval_reject_then_approve_and_no_motion_before_approval(system, spin, wait_for):
    """require_approval: the first plan is rejected with a reason, the second approved; the arm moves
    only after the approval, and the reviewer sees each plan (with its steps) on ~/pending_plan."""
    from emu_ros.msg import Plan as PlanMsg
    from emu_ros.ros.node_utils import LATCHED
    from emu_ros.srv import ReviewPlan

    robot, bridge, send = system()
    person = Node("plan_reviewer")
    pending = []
    person.create_subscription(PlanMsg, "/emu_bridge/pending_plan", pending.append, LATCHED)
    review = person.create_client(ReviewPlan, "/emu_bridge/review_plan")
    spin(person, single=True)
    assert review.wait_for_service(timeout_sec=10)

    def call(**kw):
        fut = review.call_async(ReviewPlan.Request(**kw))
        assert wait_for(fut.done, timeout=10)
        return fut.result()

    assert not call(approve=True).accepted  # nothing waiting yet: refused, not queued
    box = {}
    worker = threading.Thread(target=lambda: box.update(zip(("out", "fb"), send(require_approval=True,
                                                                                  approval_timeout_s=30.0))))
    worker.start()
    assert wait_for(lambda: len(pending) == 1, timeout=20), "the first plan was never shown for review"
    time.sleep(0.5)
    assert robot.trajectories == [] and robot.gripper_goals == [], "the arm moved before any approval"
    assert len(pending[0].steps) == 3 and pending[0].steps[0].text.startswith("Move the right gripper")
    assert not call(plan_id="not-this-one", approve=True).accepted
    assert call(plan_id=pending[0].plan_id, approve=False, reason="check the cube position first").accepted
    assert wait_for(lambda: len(pending) == 2, timeout=20), "no new plan after the rejection"
    time.sleep(0.5)
    assert robot.trajectories == [], "the arm moved on a rejected plan"
    assert pending[1].revision == 1 and pending[1].plan_id != pending[0].plan_id
    assert call(approve=True).accepted
    worker.join(60)
    r = box["out"]["result"]
    assert r.status == 4 and r.result.success and r.result.replans == 1, r.result.message
    assert robot.trajectories, "the approved plan was executed"
    ph = phases(box["fb"])
    assert ph.index("awaiting_approval") < ph.index("replanning") < ph.index("executing")


def test_approval_timeout_aborts_without_motion(system, wait_for):
    robot, bridge, send = system()
    out, fb = send(require_approval=True, approval_timeout_s=1.0, timeout=30)
    r = out["result"]
    assert r.status == 6 and not r.result.success  # ABORTED
    assert "no approval: nobody approved or rejected plan" in r.result.message
    assert robot.trajectories == [] and robot.gripper_goals == []


def test_pipelined_mode_through_the_nodes(system):
    """guidance_mode pipelined: steps streamed by ~/generate_plan feedback are executed as they come."""
    robot, bridge, send = system(guidance_mode="pipelined")
    out, fb = send()
    r = out["result"]
    assert r.status == 4 and r.result.success and r.result.steps_completed == 3, r.result.message
    assert robot.trajectories and ("right", 0.0) in robot.gripper_goals


def test_unknown_guidance_mode_is_a_start_error(ros_context):
    with pytest.raises(ValueError, match="guidance_mode must be one of"):
        BridgeNode(node_name="emu_bridge_bad_mode", parameter_overrides=[
            Parameter("profile", value="sim_aloha"), Parameter("guidance_mode", value="batched")])
