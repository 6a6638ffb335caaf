"""ProfileSkillExecutor: skills (reach, grasp, lift, place, release, push, wipe, open, close, ...) as joint goals.

A skill turns one mapped step ("grasp the red cube with the right gripper") into a few Cartesian
poses for the arm's tool point (fingertip centre), solves them with the profile's serial chain
(damped least squares, several candidate tool rotations to stay off the flipped-wrist branch),
densifies straight-line segments into joint waypoints (so the tool moves on a line, not on a
joint-space arc that could sweep through the object), times them by each joint's max_velocity and
a Cartesian speed cap, and sends them to the RobotAdapter with the gripper goals in between.

Nothing here is robot specific: arms, chains, grippers and limits come from the RobotProfile;
object positions come from a Perception (a detector on a robot, a labelled oracle in simulation);
geometry (approach height, grasp depth, handover meet point, ...) comes from SkillCall.params,
then from a per-task section, then from `SkillDefaults`.

The executor records what should hold afterwards (`expect_holding`, `expect_released`,
`joint_targets`) for the step monitor, which checks it against measured joint states only.

The executor is assembled from one part per job: `motion.ArmMotion` (IK, timing, goals),
`skill_geometry` (defaults, tool frames), and the skill families in `skills_gripper`,
`skills_pick_place`, `skills_pinch` (thin objects), `handover` and `skills_contact`.
`SKILL_HANDLERS` below is the one table of skill name -> method.
"""
from __future__ import annotations

import logging
import re
from dataclasses import fields
from typing import Any, Callable, Mapping, Optional

import numpy as np

from emu_ros.bridge.handover import HandoverSkills
from emu_ros.bridge.motion import ArmMotion
from emu_ros.bridge.skill_geometry import SkillDefaults, SkillError, frame
from emu_ros.bridge.skills_contact import ContactSkills
from emu_ros.bridge.skills_gripper import GripperSkills
from emu_ros.bridge.skills_pick_place import PickPlaceSkills
from emu_ros.bridge.skills_pinch import PinchSkills
from emu_ros.core.kinematics import SerialChain, yaw_from_rotation
from emu_ros.core.profile import ArmSpec, RobotProfile
from emu_ros.core.protocols import ObjectEstimate, Perception, PerceptionError, RobotAdapter, SkillCall, SkillExecution
from emu_ros.core.types import CancelToken

log = logging.getLogger(__name__)

__all__ = ["SKILLS", "SKILL_HANDLERS", "ProfileSkillExecutor", "SkillDefaults", "SkillError", "frame"]

#: skill name -> the method that carries it out (self, call, execution, cancel)
SKILL_HANDLERS: dict[str, Callable] = {
    "reach": PickPlaceSkills._skill_reach,
    "grasp": PickPlaceSkills._skill_grasp,
    "pinch": PinchSkills._skill_pinch,
    "lift": PickPlaceSkills._skill_lift,
    "place": PickPlaceSkills._skill_place,
    "release": GripperSkills._skill_release,
    "open": GripperSkills._skill_open,
    "close": GripperSkills._skill_close,
    "home": GripperSkills._skill_home,
    "push": ContactSkills._skill_push,
    "wipe": ContactSkills._skill_wipe,
    "insert": ContactSkills._skill_insert,
    "handover": HandoverSkills._skill_handover,
}
SKILLS = tuple(SKILL_HANDLERS)


class ProfileSkillExecutor(ArmMotion, GripperSkills, PickPlaceSkills, PinchSkills, HandoverSkills, ContactSkills):
    """SkillExecutor for any profile whose arms have kinematic chains."""

    def __init__(self, profile: RobotProfile, adapter: RobotAdapter, perception: Optional[Perception] = None,
                 task_params: Optional[Mapping[str, Any]] = None):
        self.profile = profile
        self.adapter = adapter
        self.perception = perception
        self.task_params = dict(task_params or {})
        self.chains = {a.name: SerialChain(a.chain) for a in profile.arms if a.chain is not None}
        #: gripper -> object it was last seen closing on (robot-side belief, cleared on release/open)
        self.holding: dict = {}
        #: why there is no perception (said in the no_perception failure)
        self.no_perception_reason = ""
        #: gripper -> (object, position in the tool frame, rotation in the tool frame) from the grasp:
        #: with camera perception a held object is tracked by the arm's kinematics (see `_held`)
        self.held_in_tool: dict = {}

    # ================================================================== entry point
    def execute(self, call: SkillCall, cancel: Optional[CancelToken] = None) -> SkillExecution:
        ex = SkillExecution(call=call)
        skill = (call.skill or "").lower()
        handler = SKILL_HANDLERS.get(skill)
        if handler is None:
            ex.error, ex.error_code = f"skill {call.skill!r} is not supported (supported: {', '.join(SKILLS)})", "unsupported_skill"
            return ex
        try:
            handler(self, call, ex, cancel)
        except SkillError as e:
            ex.error, ex.error_code = str(e), e.code
            log.warning("skill %s failed: %s", skill, e)
        except PerceptionError as e:  # the object is not seen well enough: fail the step, never guess
            ex.error, ex.error_code = f"perception {self.perception.name!r}: {e}", e.code
            log.warning("skill %s failed: %s", skill, ex.error)
        return ex

    def reset(self) -> None:
        """Forget beliefs about held objects (new episode)."""
        self.holding.clear()
        self.held_in_tool.clear()

    # ================================================================== parameters and lookups
    def param(self, call: SkillCall, name: str, obj_body: Optional[str] = None) -> Any:
        if name in call.params:
            return call.params[name]
        objs = self.task_params.get("objects") or {}
        if obj_body and name in (objs.get(obj_body) or {}):
            return objs[obj_body][name]
        skill_sec = (self.task_params.get("skills") or {}).get(call.skill) or {}
        if name in skill_sec:
            return skill_sec[name]
        if name in self.task_params:
            return self.task_params[name]
        return getattr(SkillDefaults, name) if name in {f.name for f in fields(SkillDefaults)} else None

    def _arm(self, call: SkillCall) -> ArmSpec:
        if not call.arm and call.obj and self.perception is not None:
            est = self.measure(call.obj, "to find the arm holding it")  # no arm named: the arm holding the object
            for a in self.profile.arms:
                if est is not None and a.gripper and self.holding.get(a.gripper) == est.name and a.name in self.chains:
                    return a
        if not call.arm:
            if len(self.chains) == 1:
                return self.profile.arm(next(iter(self.chains)))
            raise SkillError(f"step {call.text!r} does not say which arm (arms: {sorted(self.chains)})", "no_arm")
        key = call.arm.lower()
        for a in self.profile.arms:
            side = a.name.split("_")[0]
            if key in (a.name, side, f"{side} arm", f"{side} gripper", f"{side} hand") or key == (a.gripper or ""):
                if a.name not in self.chains:
                    raise SkillError(f"arm {a.name!r} has no kinematic chain in profile {self.profile.name!r}", "no_chain")
                return a
        raise SkillError(f"unknown arm {call.arm!r} (arms: {[a.name for a in self.profile.arms]})", "unknown_arm")

    def _locate(self, obj: Optional[str], what: str = "object") -> tuple:
        if not obj:
            raise SkillError(f"the step names no {what}", "no_object")
        if self.perception is None:
            why = f": {self.no_perception_reason}" if self.no_perception_reason else ""
            raise SkillError(f"no perception to locate {obj!r}{why}", "no_perception")
        held = self._held(obj)
        if held is not None:
            return held
        est = self.perception.locate(obj)
        if est is None:
            raise SkillError(f"{what} {obj!r} not found by perception {self.perception.name!r}", "object_not_found")
        return np.asarray(est.position, float), float(est.yaw), est.name

    def measure(self, obj: str, why: str) -> Optional[ObjectEstimate]:
        """An optional measurement (the held object's offset in the hand): None, logged, when
        perception cannot give it; the caller then goes on without it, as it says."""
        if self.perception is None:
            return None
        held = self._held(obj)
        if held is not None:
            return ObjectEstimate(name=held[2], position=tuple(held[0]), yaw=held[1], source="kinematics (held)")
        try:
            return self.perception.locate(obj)
        except PerceptionError as e:
            log.info("no measurement of %r %s: %s", obj, why, e)
            return None

    def remember_grasp(self, arm: ArmSpec, body: str, pos: np.ndarray, yaw: float) -> None:
        """After closing on `body` (estimated at `pos`, `yaw` before the grasp): its pose in the tool
        frame. The fingers centre the object on the closing axis, so that offset is taken as 0."""
        p, R = self._tool(arm)
        offset = R.T @ (np.asarray(pos, float) - p)
        offset[1] = 0.0
        c, s_ = np.cos(yaw), np.sin(yaw)
        self.held_in_tool[arm.gripper] = (body, offset, R.T @ np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]]))

    def _held(self, obj: str) -> Optional[tuple]:
        """(position, yaw, body) of an object a gripper holds now, from that arm's kinematics and the pose
        recorded at the grasp; None when not held (or the gripper's opening says it holds nothing).

        Only for camera perception: a camera sees an object in a hand partly hidden by the fingers
        (centroids off by 1-3 cm measured), while the arm knows where its hand is to a millimetre. The
        ground-truth oracle is always asked (it is exact).
        """
        if self.perception is None or getattr(self.perception, "ground_truth", False):
            return None
        key = obj.lower()
        for a in self.profile.arms:
            rec = self.held_in_tool.get(a.gripper or "")
            if rec is None or self.holding.get(a.gripper) != rec[0] or a.name not in self.chains:
                continue
            body = rec[0]
            if key != body.lower() and not self._names(obj, body):
                continue
            if not self._holds_something(a.gripper):
                return None  # slipped or missed: the camera must find it again
            p, R = self._tool(a)
            return p + R @ rec[1], yaw_from_rotation(R @ rec[2]), body
        return None

    def _names(self, phrase: str, body: str) -> bool:
        """Whether `phrase` ("the red cube") names `body` for the perception in use."""
        resolve = getattr(self.perception, "resolve", None)
        if resolve is None:
            return False
        hit = resolve(phrase)
        return getattr(hit, "name", hit) == body

    def _location(self, call: SkillCall, loc: Optional[str]) -> Optional[np.ndarray]:
        """A named place (task `locations`, built-in handover/meet point) or an object used as a location."""
        if not loc:
            return None
        key = loc.lower()
        named = dict(self.param(call, "locations") or {})
        for name, xyz in named.items():
            if name.lower() in key or key in name.lower():
                return np.asarray(xyz, float)
        if re.search(r"handover|hand-over|meet|middle|cent(er|re)", key):
            return np.asarray(self.param(call, "meet_point"), float)
        if self.perception is not None:
            est = self.perception.locate(loc)
            if est is not None:
                return np.asarray(est.position, float)
        raise SkillError(f"location {loc!r} is unknown (named: {sorted(named)}, or an object perception can find)",
                         "location_not_found")
