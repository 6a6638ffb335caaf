"""EmuClient: drive emu_ros from Python, in the spirit of nav2_simple_commander.

    from emu_ros.client import EmuClient, TaskResult

    client = EmuClient()                       # its own node, spun in a background thread
    client.wait_until_active()
    client.execute_task("fold the t-shirt", on_feedback=lambda fb: print(fb.phase, fb.step_text))
    while not client.is_task_complete():
        time.sleep(0.2)
    if client.get_result() is TaskResult.SUCCEEDED: ...
    client.latest_plan()                       # the last plan published by emu_guidance (Plan dataclass)
    client.destroy()

Every wait is bounded; failures are reported through `get_task_error()` as (code, message), never
raised into the caller's control loop.
"""
from __future__ import annotations

import enum
import threading
import time
from typing import Callable, Optional

import rclpy
from action_msgs.msg import GoalStatus
from lifecycle_msgs.srv import GetState
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

from emu_ros.action import ExecuteTask
from emu_ros.core.types import Plan
from emu_ros.msg import Plan as PlanMsg
from emu_ros.ros.conversions import plan_from_msg


class TaskResult(enum.Enum):
    UNKNOWN = 0
    SUCCEEDED = 1
    CANCELED = 2
    FAILED = 3


class EmuClient:
    def __init__(self, node: Optional[Node] = None, namespace: str = "", bridge: str = "emu_bridge",
                 guidance: str = "emu_guidance"):
        """Use `node` (you spin it, after this constructor: rclpy's ActionClient must not be added to a
        node whose executor is already spinning, ros2/rclpy#1589) or create an own node spun in a background
        single-threaded executor (a single thread: rclpy's ActionClient may drop feedback under a
        multi-threaded executor)."""
        self._own = node is None
        self._inited = False
        if self._own and not rclpy.ok():
            rclpy.init()
            self._inited = True
        self.node = node or Node("emu_client", namespace=namespace)
        prefix = f"/{namespace.strip('/')}" if namespace else ""
        self._bridge = f"{prefix}/{bridge}"
        self._guidance = f"{prefix}/{guidance}"
        self._client = ActionClient(self.node, ExecuteTask, f"{self._bridge}/execute_task")
        self._state_cli = self.node.create_client(GetState, f"{self._guidance}/get_state")
        latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                             durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self._plan: Optional[PlanMsg] = None
        self.node.create_subscription(PlanMsg, f"{self._guidance}/plan", self._on_plan, latched)
        self._lock = threading.Lock()
        self._handle = None
        self._result_future = None
        self._feedback = None
        self._status = GoalStatus.STATUS_UNKNOWN
        self._result = None
        self._error = (0, "")
        self._executor = self._spinner = None
        if self._own:
            self._executor = SingleThreadedExecutor()
            self._executor.add_node(self.node)
            self._spinner = threading.Thread(target=self._spin, name="emu_client_spin", daemon=True)
            self._spinner.start()

    # ------------------------------------------------------------------------------ status
    def wait_until_active(self, timeout: float = 30.0) -> bool:
        """True once emu_guidance reports `active` and the execute_task server answers."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._state_cli.wait_for_service(timeout_sec=0.5):
                fut = self._state_cli.call_async(GetState.Request())
                if self._wait(fut, max(0.1, end - time.monotonic())) and fut.result().current_state.label == "active":
                    return self._client.wait_for_server(timeout_sec=max(0.1, end - time.monotonic()))
            time.sleep(0.2)
        self._error = (-1, f"{self._guidance} not active after {timeout:.0f} s")
        return False

    def latest_plan(self) -> Optional[Plan]:
        """The last plan emu_guidance published (transient local: available even if it came before us)."""
        with self._lock:
            msg = self._plan
        return plan_from_msg(msg) if msg is not None else None

    # ------------------------------------------------------------------------------ tasks
    def execute_task(self, instruction: str, max_replans: int = -1,
                     on_feedback: Optional[Callable[[ExecuteTask.Feedback], None]] = None,
                     server_timeout: float = 10.0) -> bool:
        """Send an ExecuteTask goal; True if accepted. Poll is_task_complete()/get_result() afterwards."""
        self._reset()
        if not self._client.wait_for_server(timeout_sec=server_timeout):
            self._error = (-1, f"{self._bridge}/execute_task not available after {server_timeout:.0f} s")
            return False

        def feedback(msg) -> None:
            with self._lock:
                self._feedback = msg.feedback
            if on_feedback is not None:
                try:
                    on_feedback(msg.feedback)
                except Exception as e:  # noqa: BLE001 - a user callback must not kill the client's executor
                    self.node.get_logger().error(f"on_feedback raised {type(e).__name__}: {e}",
                                                 throttle_duration_sec=5.0)

        goal = ExecuteTask.Goal(instruction=instruction, max_replans=int(max_replans))
        send = self._call(lambda: self._client.send_goal_async(goal, feedback_callback=feedback), server_timeout)
        if send is None or not self._wait(send, server_timeout):
            self._error = (-2, "no answer to the goal")
            return False
        handle = send.result()
        if not handle.accepted:
            self._error = (-3, "goal rejected (empty instruction, or a task is already running)")
            return False
        result = self._call(handle.get_result_async, server_timeout)  # ask at once: servers expire results
        if result is None:
            self._error = (-2, "could not request the result")
            return False
        with self._lock:
            self._handle = handle
            self._result_future = result
        return True

    def is_task_complete(self) -> bool:
        with self._lock:
            fut = self._result_future
        if fut is None:
            return True
        if not fut.done():
            return False
        res = fut.result()
        with self._lock:
            self._status, self._result = res.status, res.result
            if res.status != GoalStatus.STATUS_SUCCEEDED:
                self._error = (int(res.status), res.result.message)
        return True

    def wait_for_result(self, timeout: Optional[float] = None) -> TaskResult:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_task_complete():
            if end is not None and time.monotonic() > end:
                return TaskResult.UNKNOWN
            time.sleep(0.05)
        return self.get_result()

    def get_feedback(self) -> Optional[ExecuteTask.Feedback]:
        with self._lock:
            return self._feedback

    def get_result(self) -> TaskResult:
        return {GoalStatus.STATUS_SUCCEEDED: TaskResult.SUCCEEDED, GoalStatus.STATUS_CANCELED: TaskResult.CANCELED,
                GoalStatus.STATUS_ABORTED: TaskResult.FAILED}.get(self._status, TaskResult.UNKNOWN)

    def get_result_message(self) -> Optional[ExecuteTask.Result]:
        return self._result

    def get_task_error(self) -> tuple:
        return self._error

    def cancel(self, timeout: float = 5.0) -> bool:
        """Cancel the running task; True once the server accepted the cancel request."""
        with self._lock:
            handle = self._handle
        if handle is None:
            return False
        fut = self._call(handle.cancel_goal_async, timeout)
        return fut is not None and self._wait(fut, timeout) and len(fut.result().goals_canceling) > 0

    def destroy(self) -> None:
        """Stop the background executor, destroy the node, and shut rclpy down if we started it."""
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=1.0)
            self._spinner.join(timeout=2.0)
        self.node.destroy_node()
        if self._inited:
            rclpy.try_shutdown()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception as e:  # noqa: BLE001 - context shut down under us: nothing left to spin
            self.node.get_logger().debug(f"client executor stopped: {e}")

    # ------------------------------------------------------------------------------ internals
    def _on_plan(self, msg: PlanMsg) -> None:
        with self._lock:
            self._plan = msg

    def _reset(self) -> None:
        with self._lock:
            self._handle = self._result_future = self._feedback = self._result = None
            self._status, self._error = GoalStatus.STATUS_UNKNOWN, (0, "")

    def _call(self, fn, timeout: float):
        """Run an ActionClient request on the executor thread and return what it returns.

        rclpy's ActionClient registers the pending request after sending it: called from another
        thread while the executor spins, a fast response can arrive first and be dropped.
        """
        if not self._own:
            return fn()  # the caller spins the node from this thread
        box, done = {}, threading.Event()

        def run():
            try:
                box["v"] = fn()
            finally:
                done.set()

        self._executor.create_task(run)
        return box.get("v") if done.wait(timeout) else None

    def _wait(self, fut, timeout: float) -> bool:
        if self._own:
            done = threading.Event()
            fut.add_done_callback(lambda _f: done.set())
            return done.wait(timeout)
        end = time.monotonic() + timeout  # the caller spins the node
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.02)
        return fut.done()
