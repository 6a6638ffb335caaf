"""emu_bridge: `~/execute_task` — plan with emu_guidance, execute on the robot, check, re-plan.

The node wires ROS to the ROS-free TaskRunner: plans come from the guidance node's
`~/generate_plan` (every re-plan is a new goal carrying the history), arm/gripper goals go through
the profile's robot adapter, step checks read the adapter's joint states and this node's camera
subscriptions. Runner events become ExecuteTask feedback. One task at a time: a goal arriving while
a task runs is rejected; cancel stops the runner, which cancels the arm goals.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node

from emu_ros.action import ExecuteTask
from emu_ros.srv import ReviewPlan
from emu_ros.bridge.monitor import StepMonitor
from emu_ros.core.profile import load_profile
from emu_ros.bridge.runner import EventType, RunnerConfig, RunnerEvent, TaskRunner
from emu_ros.bridge.skill_mapper import SkillMapper
from emu_ros.bridge.skills import ProfileSkillExecutor
from emu_ros.core.types import CancelToken
from emu_ros.perception.camera_perception import CameraPerception
from emu_ros.perception.detectors import make_detector
from emu_ros.ros.adapters import make_adapter
from emu_ros.ros.camera_intake import node_camera_hub, subscribe_cameras
from emu_ros.ros.dds import use_large_image_profile
from emu_ros.ros.image_conversion import empty_image, numpy_to_image
from emu_ros.ros.log_routing import LogRoute
from emu_ros.ros.node_utils import GOAL_SERVICE_QOS, declare, in_thread, param, spin_nodes
from emu_ros.ros.plan_client import RosPlanner
from emu_ros.ros.plan_review import RosPlanReviewer
from emu_ros.ros.rgbd_intake import RosRGBDSource

#: Runner event → ExecuteTask feedback phase.
PHASES = {EventType.PLANNING: "planning", EventType.STEP_PLANNED: "planning", EventType.PLAN_READY: "planning",
          EventType.STEP_STARTED: "executing", EventType.STEP_FINISHED: "checking",
          EventType.STEP_UNFINISHED: "checking", EventType.STEP_FAILED: "checking",
          EventType.REPLANNING: "replanning", EventType.DONE: "done", EventType.ABORTED: "aborted",
          EventType.CANCELED: "canceled", EventType.CONTINUING: "planning",
          EventType.AWAITING_APPROVAL: "awaiting_approval", EventType.APPROVED: "executing",
          EventType.REJECTED: "replanning"}


class BridgeNode(Node):
    def __init__(self, node_name: str = "emu_bridge", adapter=None, perception=None, task_params: Optional[dict] = None,
                 skill_executor=None, **kwargs):
        """`adapter`, `perception` and `skill_executor` may be injected (the simulator, fault injection);
        otherwise the profile's ROS adapter and a ProfileSkillExecutor are built."""
        super().__init__(node_name, **kwargs)
        # The core (runner, monitor, skills, simulator, adapters) logs through Python logging: to /rosout.
        self._log_route = LogRoute(self, ["emu_ros.bridge", "emu_ros.sim", "emu_ros.ros.adapters"])
        try:
            self._setup(adapter, perception, task_params, skill_executor)
        except BaseException:
            self._log_route.close()  # a node that could not start leaves no logging routed to it
            super().destroy_node()
            raise

    def _setup(self, adapter, perception, task_params, skill_executor) -> None:
        declare(self, "profile", "aloha", "Robot profile: a name in config/robots or a YAML path", read_only=True)
        declare(self, "generate_plan_action", "/emu_guidance/generate_plan", "GeneratePlan action of the guidance node")
        declare(self, "skills", "default", "Skill library: a name in config/skills or a YAML path", read_only=True)
        declare(self, "max_replans", 3, "Default re-plan budget per task (ExecuteTask.max_replans = -1)", int_range=(0, 50))
        declare(self, "max_retries", 1, "Retries of a failed step before re-planning", int_range=(0, 10))
        declare(self, "plan_timeout_s", 300.0, "Longest wait for one plan", float_range=(1.0, 3600.0))
        declare(self, "log_dir", "~/.ros/emu_ros/tasks", "Where task logs (JSONL, images, summary.json) are written")
        declare(self, "guidance_mode", "plan", "'plan': the whole plan, then execute; 'stepwise': one step per "
                "request, generated from the current camera views after the previous step finished; 'pipelined': "
                "execute each step as soon as the world model has produced it, while the next is generated (plans "
                "under review run as 'plan')", read_only=True)
        declare(self, "approval_timeout_s", 300.0, "With ExecuteTask.require_approval: how long a plan waits on "
                "~/review_plan before the task aborts (the goal's approval_timeout_s overrides)",
                float_range=(1.0, 86400.0))
        declare(self, "confirm_done", False, "After the last step, ask the world model once more from the current "
                "view (as a fresh task) whether anything is left, and do it before reporting the task done (for "
                "world models that plan a finished scene as zero steps; off by default, see the README)")
        RunnerConfig(guidance_mode=param(self, "guidance_mode"))  # a bad mode stops the node at start, not a goal
        self.profile = load_profile(param(self, "profile"))
        self._group = ReentrantCallbackGroup()
        # Cameras are pulled, not spun: their messages wait in the reader (keep-last 1) until the hub
        # takes the newest one for an observation, so 30 Hz frames cost this process no Python at all
        # (emu_ros/ros/camera_intake.py has the measurement behind this).
        self.adapter = adapter if adapter is not None else make_adapter(self, self.profile)
        self.hub = node_camera_hub(self, self.profile.cameras, required=[self.profile.visual_check.camera])
        self._subs = subscribe_cameras(self, self.hub, self.profile.cameras)
        self.planner = RosPlanner(self, param(self, "generate_plan_action"), plan_timeout_s=param(self, "plan_timeout_s"))
        self.mapper = SkillMapper.load(param(self, "skills"))
        self.rgbd = None
        why_none = "the robot profile has no perception section (see config/robots/aloha.yaml)"
        if perception is None and self.profile.perception is not None:
            perception, why_none = self._camera_perception()
        self.executor_ = skill_executor or ProfileSkillExecutor(self.profile, self.adapter, perception, task_params=task_params)
        if perception is None and hasattr(self.executor_, "no_perception_reason"):
            self.executor_.no_perception_reason = why_none
        self.monitor = StepMonitor(self.profile)
        self.runner: Optional[TaskRunner] = None
        self._token: Optional[CancelToken] = None
        self._busy = threading.Lock()
        # A person in the loop (ExecuteTask.require_approval): ~/pending_plan + ~/review_plan.
        self.reviewer = RosPlanReviewer(self)
        self._review_srv = self.create_service(ReviewPlan, "~/review_plan", self._on_review, callback_group=self._group)
        self._server = ActionServer(self, ExecuteTask, "~/execute_task", execute_callback=self._execute,
                                    goal_callback=self._on_goal, cancel_callback=self._on_cancel,
                                    callback_group=self._group,
                                    goal_service_qos_profile=GOAL_SERVICE_QOS, cancel_service_qos_profile=GOAL_SERVICE_QOS)
        self.get_logger().info(f"ready: profile {self.profile.name}, adapter {getattr(self.adapter, 'name', '?')}, "
                               f"planner {self.planner.action_name}")

    def _camera_perception(self) -> tuple:
        """(CameraPerception, "") from the profile's perception section, or (None, why) — a detector
        that cannot load (weights missing) leaves the node up; object steps then fail saying why."""
        spec = self.profile.perception
        try:
            detector = make_detector(spec)
        except (FileNotFoundError, ImportError, ValueError) as e:
            why = f"the {spec.detector} detector could not be loaded: {e}"
            self.get_logger().error(f"camera perception disabled: {why}")
            return None, why
        self.rgbd = RosRGBDSource(self, self.profile, self.hub, spec.cameras)
        perception = CameraPerception(spec, self.rgbd, detector)
        self.get_logger().info(f"perception: {perception.name} on {list(spec.cameras)} (depth, camera_info: "
                               f"{self.rgbd.topics()}), min confidence {spec.min_confidence}")
        return perception, ""

    def destroy_node(self):
        if self.rgbd is not None:
            self.rgbd.close()
        self._log_route.close()
        return super().destroy_node()

    def make_runner(self, max_replans: int) -> TaskRunner:
        cfg = RunnerConfig(max_replans=max_replans, max_retries=param(self, "max_retries"),
                           guidance_mode=param(self, "guidance_mode"), confirm_done=param(self, "confirm_done"))
        return TaskRunner(self.planner, self.mapper, self.executor_, self.adapter, self.monitor, image_source=self.hub,
                          config=cfg, log_root=Path(param(self, "log_dir")).expanduser())

    def stop(self, timeout: float = 10.0) -> bool:
        """Cancel the running task (if any) and wait until its thread is done; True when idle.

        Call at shutdown before tearing down what the adapter drives (e.g. the simulator), so no
        task thread keeps moving arms through freed resources.
        """
        token = self._token
        if token is not None:
            token.cancel("node shutting down")
        if self._busy.acquire(timeout=timeout):
            self._busy.release()
            return True
        return False

    # ---------------------------------------------------------------------------- callbacks
    def _on_goal(self, goal) -> GoalResponse:
        if self._busy.locked():
            self.get_logger().warning("execute_task goal rejected: a task is running (one at a time)")
            return GoalResponse.REJECT
        if not goal.instruction.strip():
            self.get_logger().warning("execute_task goal rejected: empty instruction")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_review(self, request, response):
        response.accepted, response.message = self.reviewer.decide(request.plan_id, request.approve, request.reason)
        self.get_logger().info(f"review_plan: {response.message}")
        return response

    def _on_cancel(self, handle) -> CancelResponse:
        token = self._token
        if token is not None:  # set before the runner exists: a cancel right after acceptance is never lost
            token.cancel("canceled by the ExecuteTask client")
        return CancelResponse.ACCEPT

    async def _execute(self, handle):
        result = ExecuteTask.Result()
        if not self._busy.acquire(blocking=False):
            handle.abort()
            result.message = "busy: another task is running"
            return result
        try:
            self._token = token = CancelToken()
            if handle.is_cancel_requested:
                token.cancel("canceled before start")
            req = handle.request
            replans = param(self, "max_replans") if req.max_replans < 0 else int(req.max_replans)
            self.runner = runner = self.make_runner(replans)
            runner.add_listener(lambda e: self._feedback(handle, e))
            reviewer = None
            if req.require_approval:
                self.reviewer.timeout_s = (float(req.approval_timeout_s) if req.approval_timeout_s > 0
                                           else param(self, "approval_timeout_s"))
                reviewer = self.reviewer
            try:
                outcome = await in_thread(self, lambda: runner.run(req.instruction, cancel=token, reviewer=reviewer),
                                          name="emu_bridge_task")
            except BaseException as e:  # noqa: BLE001 - the runner never raises for task failures; report anything else
                result.message = f"runner crashed: {type(e).__name__}: {e}"
                handle.abort()
                return result
        finally:
            self.runner = self._token = None
            self._busy.release()
        result.success = outcome.success
        result.steps_completed = outcome.steps_done
        result.replans = outcome.replans
        result.message = outcome.message + (f" (log: {outcome.log_dir})" if outcome.log_dir else "")
        if outcome.status == "succeeded":
            handle.succeed()
        elif outcome.status == "canceled" and handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        return result

    def _feedback(self, handle, e: RunnerEvent) -> None:
        if not handle.is_active:
            return
        fb = ExecuteTask.Feedback(phase=PHASES.get(e.type, e.type.value), step_index=int(e.step_index or 0),
                                  step_text=e.step_text, attempt=int(e.attempt) + 1, replans=int(e.replans))
        fb.step_image = (numpy_to_image(e.step.image, "rgb8") if e.step is not None and e.step.image is not None
                         else empty_image())
        if e.outcome is not None:
            fb.outcome = f"{e.outcome.status.value}: {e.outcome.reason}" if e.outcome.reason else e.outcome.status.value
        elif e.message:
            fb.outcome = e.message
        handle.publish_feedback(fb)


def main(args=None) -> int:
    dds = use_large_image_profile()  # before rclpy.init: the participant reads it when created
    rclpy.init(args=args)
    try:
        node = BridgeNode()
        node.get_logger().info(dds)
    except Exception as e:  # noqa: BLE001 - a bad profile/adapter config: say why and exit cleanly
        rclpy.logging.get_logger("emu_bridge").fatal(f"cannot start: {e}")
        rclpy.try_shutdown()
        return 1
    return spin_nodes([node])
