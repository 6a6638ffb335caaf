"""Core guidance types ↔ emu_ros messages, and the rviz MarkerArray of a plan."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from visualization_msgs.msg import Marker, MarkerArray

from emu_ros.core.types import HistoryEntry, OutcomeStatus, Plan, PlanStep
from emu_ros.msg import Plan as PlanMsg
from emu_ros.msg import PlanStep as PlanStepMsg
from emu_ros.msg import StepRecord
from emu_ros.ros.image_conversion import empty_image, image_to_numpy, numpy_to_image


def to_time(seconds: float) -> Time:
    frac, whole = math.modf(max(0.0, float(seconds)))
    return Time(sec=int(whole), nanosec=int(round(frac * 1e9)) % 1_000_000_000)


def from_time(t: Time) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def step_to_msg(step: PlanStep, frame_id: str = "") -> PlanStepMsg:
    msg = PlanStepMsg(index=int(step.index), text=step.text, source=step.source, stamp=to_time(step.stamp))
    msg.image = numpy_to_image(step.image, "rgb8", stamp=msg.stamp, frame_id=frame_id) if step.image is not None else empty_image()
    return msg


def step_from_msg(msg: PlanStepMsg) -> PlanStep:
    image = image_to_numpy(msg.image) if msg.image.width > 0 else None
    if image is not None and image.ndim != 3:  # a depth image is not a step image
        image = None
    return PlanStep(index=int(msg.index), text=msg.text, image=image, source=msg.source, stamp=from_time(msg.stamp))


def plan_to_msg(plan: Plan, frame_id: str = "") -> PlanMsg:
    return PlanMsg(task=plan.task, plan_id=plan.plan_id, revision=int(plan.revision), source=plan.source,
                   stamp=to_time(plan.stamp), steps=[step_to_msg(s, frame_id) for s in plan.steps],
                   complete=bool(plan.complete), cut_reason=plan.cut_reason)


def plan_from_msg(msg: PlanMsg) -> Plan:
    return Plan(task=msg.task, steps=[step_from_msg(s) for s in msg.steps], plan_id=msg.plan_id,
                revision=int(msg.revision), source=msg.source, stamp=from_time(msg.stamp),
                complete=bool(msg.complete), cut_reason=msg.cut_reason)


def history_to_msgs(history: Sequence[HistoryEntry]) -> list:
    return [StepRecord(text=h.text, status=h.status.value, reason=h.reason) for h in history]


def history_from_msgs(records: Sequence[StepRecord]) -> list:
    out = []
    for r in records:
        try:
            status = OutcomeStatus(r.status)
        except ValueError:
            raise ValueError(f"history entry {r.text!r}: unknown status {r.status!r} "
                             f"(expected one of {[s.value for s in OutcomeStatus]})") from None
        out.append(HistoryEntry(text=r.text, status=status, reason=r.reason))
    return out


def plan_markers(plan: Optional[Plan], frame_id: str, current: int = -1, stamp: Optional[Time] = None,
                 origin: tuple = (0.0, -0.35, 0.6), line_height: float = 0.05) -> MarkerArray:
    """One TEXT_VIEW_FACING marker per step, stacked downwards; the current step highlighted.

    Starts with DELETEALL so a shorter re-plan leaves no stale lines behind.
    """
    arr = MarkerArray()
    clear = Marker(action=Marker.DELETEALL)
    clear.header.frame_id = frame_id
    arr.markers.append(clear)
    if plan is None:
        return arr
    for i, step in enumerate(plan.steps):
        m = Marker(ns="emu_ros_steps", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        m.header.frame_id = frame_id
        if stamp is not None:
            m.header.stamp = stamp
        m.pose.position.x, m.pose.position.y = origin[0], origin[1]
        m.pose.position.z = origin[2] - i * line_height * 1.4
        m.pose.orientation.w = 1.0
        active = i == current
        m.scale.z = line_height * (1.3 if active else 1.0)
        m.color.a = 1.0
        m.color.r, m.color.g, m.color.b = (1.0, 0.85, 0.1) if active else ((0.6, 0.6, 0.6) if i < current else (1.0, 1.0, 1.0))
        marker = "▶ " if active else ("✓ " if i < current else "  ")
        m.text = f"{marker}{i + 1}. {step.text}"
        arr.markers.append(m)
    title = Marker(ns="emu_ros_title", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
    title.header.frame_id = frame_id
    title.pose.position.x, title.pose.position.y, title.pose.position.z = origin[0], origin[1], origin[2] + line_height * 1.6
    title.pose.orientation.w = 1.0
    title.scale.z = line_height * 1.2
    title.color.a, title.color.r, title.color.g, title.color.b = 1.0, 0.4, 0.8, 1.0
    title.text = f"{plan.task}  [rev {plan.revision}, {plan.source}]"
    arr.markers.append(title)
    return arr


def observation_images_from_msgs(images: Sequence, cameras: Sequence[str]) -> dict:
    """GeneratePlan goal images → {camera: RGB array}; unnamed images get `goal_image_<i>`."""
    if cameras and len(cameras) != len(images):
        raise ValueError(f"image_cameras has {len(cameras)} names for {len(images)} images")
    out = {}
    for i, img in enumerate(images):
        arr = image_to_numpy(img)
        if arr.ndim != 3:
            raise ValueError(f"goal image {i} has encoding {img.encoding}: planning needs a colour image")
        out[cameras[i] if cameras else f"goal_image_{i}"] = np.ascontiguousarray(arr)
    return out
