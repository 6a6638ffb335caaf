"""A person in the loop: the bridge shows each plan and waits for approve / reject before the arm moves.

`RosPlanReviewer` is the runner's PlanReviewer for ExecuteTask goals with `require_approval`: it
publishes the plan under review on `~/pending_plan` (emu_ros/Plan with the predicted step images,
latched, for rviz or a review UI) and its step list on `~/pending_markers`, then waits until
`~/review_plan` (emu_ros/srv/ReviewPlan) approves or rejects it, the goal is canceled, or the
timeout passes (an abort: the arm never moved for that plan).

    ros2 service call /emu_bridge/review_plan emu_ros/srv/ReviewPlan "{approve: true}"
    ros2 service call /emu_bridge/review_plan emu_ros/srv/ReviewPlan "{approve: false, reason: 'left arm first'}"
"""
from __future__ import annotations

import threading
import time
from typing import Optional

from visualization_msgs.msg import MarkerArray

from emu_ros.core.protocols import Review, ReviewTimeout
from emu_ros.core.types import Cancelled, CancelToken, Plan
from emu_ros.msg import Plan as PlanMsg
from emu_ros.ros.conversions import plan_markers, plan_to_msg
from emu_ros.ros.node_utils import LATCHED  # a review UI that connects late still gets the plan


class RosPlanReviewer:
    """Publishes the plan to review and blocks the task thread until `decide` is called for it."""

    def __init__(self, node, frame_id: str = "world"):
        self._node, self._frame_id = node, frame_id
        self._plan_pub = node.create_publisher(PlanMsg, "~/pending_plan", LATCHED)
        self._marker_pub = node.create_publisher(MarkerArray, "~/pending_markers", LATCHED)
        self._lock = threading.Lock()
        self._decided = threading.Event()
        self._pending: Optional[str] = None
        self._review: Optional[Review] = None
        self.timeout_s = 300.0

    def review(self, plan: Plan, cancel: CancelToken) -> Review:
        with self._lock:
            self._pending, self._review = plan.plan_id, None
            self._decided.clear()
        self._plan_pub.publish(plan_to_msg(plan, self._frame_id))
        self._marker_pub.publish(plan_markers(plan, self._frame_id))
        name = self._node.get_fully_qualified_name()
        self._node.get_logger().info(
            f"plan {plan.plan_id} ({len(plan.steps)} steps) waits for approval on {name}/pending_plan: "
            f"ros2 service call {name}/review_plan emu_ros/srv/ReviewPlan \"{{approve: true}}\" (timeout "
            f"{self.timeout_s:.0f} s)")
        deadline = time.monotonic() + self.timeout_s
        try:
            while not self._decided.wait(0.1):
                if cancel.cancelled:
                    raise Cancelled(cancel.reason or "canceled while waiting for approval")
                if time.monotonic() > deadline:
                    raise ReviewTimeout(f"nobody approved or rejected plan {plan.plan_id} within "
                                        f"{self.timeout_s:.0f} s ({name}/review_plan)")
            with self._lock:
                return self._review
        finally:
            with self._lock:
                self._pending = None

    def decide(self, plan_id: str, approve: bool, reason: str) -> tuple:
        """The service's answer: (accepted, message)."""
        with self._lock:
            if self._pending is None:
                return False, "no plan is waiting for review"
            if plan_id and plan_id != self._pending:
                return False, f"plan {plan_id!r} is not the one waiting for review ({self._pending!r})"
            self._review = Review(approved=bool(approve), reason=reason.strip())
            self._decided.set()
            return True, f"plan {self._pending} {'approved' if approve else 'rejected'}"
