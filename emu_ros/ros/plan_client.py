"""RosPlanner: the bridge's Planner over the guidance node's `~/generate_plan` action.

Each plan (first plan or re-plan) is a new GeneratePlan goal carrying the history of tried steps;
streamed feedback steps are passed on as they arrive; a CancelToken cancels the goal. Called from
the task thread (never the executor), so it may block with bounded waits.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional, Sequence

from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient
from rclpy.callback_groups import ReentrantCallbackGroup

from emu_ros.action import GeneratePlan
from emu_ros.core.types import Cancelled, CancelToken, HistoryEntry, Plan, PlanningError, PlanStep
from emu_ros.ros.adapters.base import wait_future
from emu_ros.ros.conversions import history_to_msgs, plan_from_msg, step_from_msg


class RosPlanner:
    def __init__(self, node, action_name: str, server_timeout_s: float = 5.0, plan_timeout_s: float = 300.0,
                 max_steps: int = 0):
        self._client = ActionClient(node, GeneratePlan, action_name, callback_group=ReentrantCallbackGroup())
        self.action_name = action_name
        self.server_timeout_s = server_timeout_s
        self.plan_timeout_s = plan_timeout_s
        self.max_steps = max_steps

    def plan(self, task: str, history: Optional[Sequence[HistoryEntry]] = None, revision: int = 0,
             on_step: Optional[Callable[[PlanStep], None]] = None, cancel: Optional[CancelToken] = None,
             max_steps: Optional[int] = None) -> Plan:
        """`max_steps` overrides the client's (the bridge's stepwise mode asks for one step at a time)."""
        if not self._client.wait_for_server(timeout_sec=self.server_timeout_s):
            raise PlanningError(f"guidance action server {self.action_name} not available after "
                                f"{self.server_timeout_s:.0f} s (is emu_guidance configured and active?)")
        goal = GeneratePlan.Goal(instruction=task, history=history_to_msgs(history or ()), revision=int(revision),
                                 max_steps=int(max_steps or self.max_steps))

        def feedback(msg) -> None:
            if on_step is not None:
                on_step(step_from_msg(msg.feedback.step))

        send = self._client.send_goal_async(goal, feedback_callback=feedback)
        state = wait_future(send, self.server_timeout_s, cancel)
        if state != "done":  # a goal accepted after we stopped waiting must not keep the model busy
            send.add_done_callback(lambda f: f.result().accepted and f.result().cancel_goal_async())
        if state == "canceled":
            raise Cancelled("canceled while sending the plan request")
        if state == "timeout":
            raise PlanningError(f"{self.action_name} did not answer the goal within {self.server_timeout_s:.0f} s")
        handle = send.result()
        if not handle.accepted:
            raise PlanningError(f"{self.action_name} rejected the plan request (busy or not active)")
        res = handle.get_result_async()
        state = wait_future(res, self.plan_timeout_s, cancel)
        if state != "done":
            done = threading.Event()
            handle.cancel_goal_async().add_done_callback(lambda _f: done.set())
            done.wait(2.0)
            if state == "canceled":
                raise Cancelled("plan generation canceled")
            raise PlanningError(f"no plan within {self.plan_timeout_s:.0f} s")
        wrapped = res.result()
        if wrapped.status == GoalStatus.STATUS_SUCCEEDED and wrapped.result.success:
            return plan_from_msg(wrapped.result.plan)
        if wrapped.status == GoalStatus.STATUS_CANCELED:
            raise Cancelled("plan generation canceled by the guidance node")
        raise PlanningError(wrapped.result.message or f"planning failed (status {wrapped.status})")
