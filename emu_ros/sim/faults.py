"""Seeded fault injection for the simulated ALOHA: the failures re-planning must recover from.

Kinds (each fires once per episode, at a chosen step or a seeded random eligible step):
- ``missed_grasp``: 3 ticks after the gripper starts closing, the object is teleported 7 cm along
  the finger-closing direction (±2 cm across) onto the table: the gripper closes on nothing.
  Eligible: the first grasp of each object (a grasp from the table).
- ``slip``: during a transport step, once the object is in the air, it drops out of the gripper
  onto the table below.
- ``abort``: the arm controller aborts the step's next trajectory half-way (ABORTED, -4).
- ``camera_dropout``: every camera returns nothing for `dropout_s` seconds from the step's start.

clear_table's own (each tied to one object):
- ``missed_napkin``: as the pinch closes, the napkin slides 7 cm aside along the closing axis, to
  the side with more free table (it keeps its yaw and lies flat): the fingers close beside it.
  Eligible: the napkin's first pinch.
- ``napkin_slip``: while the napkin is carried to the bin, once it is in the air, it slips out and
  lands flat on the table in front of the bin.
- ``knocked_cup``: as the fingers close around the cup, they knock it over: it lies on its side
  9 cm further on, its axis about along the arm's reach. Eligible: the cup's first grasp.

Faults act on the simulator (ground truth) because that is where the world is; the step monitor
must notice them only through robot signals.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from emu_ros.core.kinematics import yaw_from_rotation
from emu_ros.core.protocols import SkillCall
from emu_ros.sim.aloha_env import AlohaSim, SimImageSource
from emu_ros.sim.clear_table import CUP_RADIUS, REST_Z
from emu_ros.sim.perception import GroundTruthPerception

log = logging.getLogger(__name__)

FAULT_KINDS = ("none", "missed_grasp", "slip", "abort", "camera_dropout", "missed_napkin", "napkin_slip",
               "knocked_cup")
#: Skills a fault may hit.
ELIGIBLE = {
    "missed_grasp": ("grasp", "pinch"),
    "slip": ("lift",),
    "abort": ("reach", "grasp", "pinch", "lift", "place", "release", "insert", "push", "wipe"),
    "camera_dropout": None,  # any step
    "missed_napkin": ("pinch", "grasp"),
    "napkin_slip": ("place", "lift"),
    "knocked_cup": ("grasp",),
}
#: Faults that hit one object only (the step's object must resolve to it).
FAULT_OBJECT = {"missed_napkin": "napkin", "napkin_slip": "napkin", "knocked_cup": "cup"}
#: Faults that strike as the gripper closes (the first grasp of their object); the others strike in transport.
CLOSING_FAULTS = ("missed_grasp", "missed_napkin", "knocked_cup")
TRANSPORT_FAULTS = ("slip", "napkin_slip")


@dataclass(frozen=True)
class FaultSpec:
    """`step`: 0-based index into the task's step list, "random" (seeded), or None = first eligible."""

    kind: str = "none"
    step: Union[int, str, None] = None
    seed: int = 0
    dropout_s: float = 1.0
    displacement: float = 0.07

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r} (known: {FAULT_KINDS})")


@dataclass
class FaultRecord:
    kind: str
    step_index: int
    step_text: str
    fired: bool = False
    sim_time: float = 0.0
    detail: str = ""


class FaultInjector:
    """Arms a fault when its target step starts; ticks hook into the simulator."""

    def __init__(self, spec: FaultSpec, sim: AlohaSim, adapter, images: Optional[SimImageSource],
                 calls: Sequence[Optional[SkillCall]]):
        self.spec = spec
        self.sim = sim
        self.adapter = adapter
        self.images = images
        self.oracle = GroundTruthPerception(sim)  # ground truth: the fault acts on the world
        self.rng = np.random.default_rng(spec.seed)
        self.record: Optional[FaultRecord] = None
        self._armed: Optional[dict] = None
        self.target = self._choose(calls)
        if self.target is not None:
            c = calls[self.target]
            self.record = FaultRecord(spec.kind, self.target, c.text if c else "")
        if self._hook not in sim.tick_hooks:
            sim.tick_hooks.append(self._hook)

    def close(self) -> None:
        if self._hook in self.sim.tick_hooks:
            self.sim.tick_hooks.remove(self._hook)

    @property
    def fired(self) -> bool:
        return bool(self.record and self.record.fired)

    def _choose(self, calls: Sequence[Optional[SkillCall]]) -> Optional[int]:
        if self.spec.kind == "none":
            return None
        skills = ELIGIBLE[self.spec.kind]
        eligible = [i for i, c in enumerate(calls) if c is not None and (skills is None or c.skill in skills)]
        target_body = FAULT_OBJECT.get(self.spec.kind)
        if target_body is not None:
            eligible = [i for i in eligible if calls[i].obj and self.oracle.resolve(calls[i].obj) == target_body]
        if self.spec.kind in CLOSING_FAULTS:
            # only the first grasp of each object (from the table): a receiving grasp in a handover
            # touches the object before the fingers close, and the simulator has already scored it
            seen, first = set(), []
            for i in eligible:
                key = (calls[i].obj or "").lower()
                if key not in seen:
                    first.append(i)
                    seen.add(key)
            eligible = first
        if isinstance(self.spec.step, int):
            if not 0 <= self.spec.step < len(calls):
                raise ValueError(f"fault step {self.spec.step} outside the task's {len(calls)} steps")
            return self.spec.step
        if not eligible:
            raise ValueError(f"no step of this task is eligible for fault {self.spec.kind!r}")
        if self.spec.step == "random":
            return int(self.rng.choice(eligible))
        return eligible[0]

    # ------------------------------------------------------------------ step events
    def is_fault_step(self, step_text: str) -> bool:
        """Whether `step_text` is the step this fault targets (case and spacing aside)."""
        if self.record is None:
            return False
        return " ".join(step_text.lower().split()) == " ".join(self.record.step_text.lower().split())

    def on_step_start(self, step_text: str, call: Optional[SkillCall]) -> None:
        """Called by the harness before each step; arms the fault the first time its step runs."""
        if self.record is None or self.record.fired or self._armed is not None:
            return
        if not self.is_fault_step(step_text):
            return
        kind = self.spec.kind
        side = "left" if call and call.arm and "left" in call.arm else "right"
        if kind == "abort":
            group = f"{side}_arm"
            self.adapter.inject_abort(group)
            self._fire(f"next {group} trajectory aborts half-way")
        elif kind == "camera_dropout":
            if self.images is not None:
                self.images.dropout(None, self.spec.dropout_s)
            self._fire(f"all cameras silent for {self.spec.dropout_s:.1f} s")
        else:
            body = self.oracle.resolve(call.obj) if call and call.obj else None
            self._armed = {"side": side, "body": body or self.sim.spec.objects[0], "start": self.sim.ticks,
                           "closing": 0}

    def _fire(self, detail: str) -> None:
        assert self.record is not None
        self.record.fired = True
        self.record.sim_time = self.sim.time
        self.record.detail = detail
        log.info("fault %s injected at step %d (%s): %s", self.spec.kind, self.record.step_index + 1,
                 self.record.step_text, detail)

    # ------------------------------------------------------------------ tick hook
    def _hook(self, sim: AlohaSim) -> None:
        a = self._armed
        if a is None:
            return
        gi = 6 if a["side"] == "left" else 13
        if self.spec.kind in CLOSING_FAULTS:
            if sim.action[gi] < 0.5 and sim.qpos14()[gi] > 0.5:  # commanded closed, fingers still open
                a["closing"] += 1
            if a["closing"] >= 3:
                self._knock_over(a) if self.spec.kind == "knocked_cup" else self._teleport_aside(a)
        elif self.spec.kind in TRANSPORT_FAULTS:
            pos, _ = sim.body_pose(a["body"])
            if sim.ticks - a["start"] >= 15 and pos[2] > 0.08:
                self._drop(a)

    def _rest_z(self, body: str) -> float:
        return {"box": 0.021, "peg": 0.011, "socket": 0.023, **REST_Z}.get(body, 0.03)

    def _lying_flat(self, body: str) -> tuple:
        """The body's orientation with only its yaw kept (wxyz): a napkin stays the way round it was."""
        if body != "napkin":
            return (1.0, 0.0, 0.0, 0.0)
        yaw = yaw_from_rotation(self.sim.body_pose(body)[1])
        return (float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2)))

    def _knock_over(self, a: dict) -> None:
        """The closing fingers knock the cup over: it lies on its side further along the reach."""
        body = a["body"]
        pos, _ = self.sim.body_pose(body)
        base = np.array([-0.469, 0.5]) if a["side"] == "left" else np.array([0.469, 0.5])
        reach = pos[:2] - base
        axis_yaw = float(np.arctan2(reach[1], reach[0]) + self.rng.uniform(-0.4, 0.4))
        new = pos.copy()
        # far enough along that the lying cup (8 cm long) clears the closing fingers: a teleport into them
        # would fling it off the table
        new[:2] = pos[:2] + 0.09 * np.array([np.cos(axis_yaw), np.sin(axis_yaw)])
        new[2] = CUP_RADIUS + 0.001
        # the cylinder's axis (body z) horizontal along axis_yaw: yaw about z, then 90 deg about the new y
        cy, sy = np.cos(axis_yaw / 2), np.sin(axis_yaw / 2)
        c4, s4 = np.cos(np.pi / 4), np.sin(np.pi / 4)
        quat = (cy * c4, -sy * s4, cy * s4, sy * c4)  # q_yaw * q_pitch(+90 deg), wxyz
        self.sim.set_object_pose(body, new, quat)
        self._armed = None
        self._fire(f"{body} knocked over at ({pos[0]:.3f}, {pos[1]:.3f}) as the {a['side']} gripper closed; it lies "
                   f"at ({new[0]:.3f}, {new[1]:.3f}), axis yaw {axis_yaw:.2f} rad")

    def _teleport_aside(self, a: dict) -> None:
        """The object jumps away along the closing axis: the fingers close on nothing."""
        body = a["body"]
        pos, _ = self.sim.body_pose(body)
        _, Rg = self.sim.body_pose(f"vx300s_{a['side']}/gripper_link")
        d = np.array([Rg[0, 1], Rg[1, 1], 0.0])
        if np.linalg.norm(d) < 0.3:
            d = np.array([Rg[0, 2], Rg[1, 2], 0.0])
        d /= np.linalg.norm(d)
        sign = 1.0 if self.rng.random() < 0.5 else -1.0
        if self.sim.task_name == "clear_table":  # a cluttered table: it slides toward the free side
            sign = max((sign, -sign), key=lambda sg: self._clearance(body, pos + sg * self.spec.displacement * d))
        new = pos + sign * self.spec.displacement * d
        if not (0.33 <= new[1] <= 0.67):
            new = pos - sign * self.spec.displacement * d
        side = np.array([-d[1], d[0], 0.0]) * self.rng.uniform(-0.02, 0.02)
        new = new + side
        new[2] = self._rest_z(body) if pos[2] < 0.06 else self._rest_z(body)
        new[0] = float(np.clip(new[0], -0.25, 0.25))
        new[1] = float(np.clip(new[1], 0.33, 0.67))
        if self.sim.task_name == "clear_table":  # on the free table in front, clear of the spoon and the bin
            new[1] = float(min(new[1], 0.47))
        self.sim.set_object_pose(body, new, self._lying_flat(body))
        self._armed = None
        self._fire(f"{body} moved from ({pos[0]:.3f}, {pos[1]:.3f}) to ({new[0]:.3f}, {new[1]:.3f}) as the "
                   f"{a['side']} gripper closed")

    def _clearance(self, body: str, position) -> float:
        """Distance (xy) from `position` to the nearest other movable object's centre."""
        others = [o for o in self.sim.spec.objects if o != body]
        return min(float(np.linalg.norm(self.sim.body_pose(o)[0][:2] - np.asarray(position)[:2])) for o in others)

    def _drop(self, a: dict) -> None:
        """The object slips out of the gripper and lands on the table below it."""
        body = a["body"]
        pos, _ = self.sim.body_pose(body)
        y_max = 0.47 if self.sim.task_name == "clear_table" else 0.62  # clear_table: in front, clear of spoon and bin
        new = np.array([np.clip(pos[0], -0.05, 0.22), np.clip(pos[1], 0.38, y_max), self._rest_z(body)])
        self.sim.set_object_pose(body, new, self._lying_flat(body))
        self._armed = None
        self._fire(f"{body} slipped out at z={pos[2]:.3f} and landed at ({new[0]:.3f}, {new[1]:.3f})")


class FaultAwareExecutor:
    """A SkillExecutor wrapper that tells the injector which step starts (for runners that own the loop).

    Wrap the skill executor with it wherever the TaskRunner (or the ROS bridge node) runs the steps:
    the injector then arms its fault when the target step's text begins. Everything else is
    delegated to the wrapped executor.
    """

    def __init__(self, inner, injector: FaultInjector):
        self.inner = inner
        self.injector = injector

    def execute(self, call: SkillCall, cancel=None):
        self.injector.on_step_start(call.text, call)
        return self.inner.execute(call, cancel)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
