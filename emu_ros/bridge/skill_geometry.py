"""Skill geometry and defaults: the numbers a skill uses when neither the step nor the task says
otherwise, the error a skill raises, and tool-frame helpers shared by every skill family."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from emu_ros.core.kinematics import axis_angle_matrix, rotation_error


@dataclass(frozen=True)
class SkillDefaults:
    """Geometry and timing used when neither the step nor the task says otherwise (metres, seconds)."""

    approach_height: float = 0.07  # tool point above the object's top face before descending
    grasp_offset_z: float = 0.002  # tool point above the object's centre when closing (grasp depth)
    object_half_height: float = 0.02
    grasp_symmetry: int = 2  # 4: a cube may be gripped across either pair of faces
    lift_height: float = 0.08
    meet_point: tuple = (0.0, 0.5, 0.25)  # where a handed-over object is presented
    handover_depth: float = 0.016  # how much of the exposed object the receiving fingers cover
    handover_min_gap: float = 0.006  # receiving fingertips stay this far from the giver's
    pregrasp_distance: float = 0.08
    insert_speed: float = 0.18  # m/s on the final straight approach of a handover / insertion
    linear_speed: float = 0.6  # m/s cap on any Cartesian segment
    waypoint_spacing: float = 0.02  # m between IK waypoints on straight segments
    retreat: float = 0.10
    retreat_toward_base: bool = False  # after a place: back toward the arm's base as well as up
    place_height: float = 0.0  # object centre above the place target when opening
    lift_orient: str = "toward"  # at a lift target: "toward" = fingers point across the table, "keep" = as grasped
    insert_depth: float = 0.09  # held object's centre this far from the target's centre at the end of an insert
    pre_insert: float = 0.05  # extra distance of the aligned pre-insert pose
    align_iterations: int = 2  # measure-and-correct passes at the pre-insert pose
    object_half_length: float = 0.0  # held object's half length along its insertion axis
    push_distance: float = 0.08
    pusher_half_width: float = 0.01  # half thickness of the closed fingers along a push
    wipe_width: float = 0.10
    wipe_strokes: int = 3
    surface_z: float = 0.0
    speed_scale: float = 1.0  # >1 slows every motion down
    gripper_open: float = 1.0
    gripper_closed: float = 0.0
    close_settle_s: float = 0.0
    # pinch grasp of thin objects (skills_pinch): only for objects whose task parameters say pinch: true
    pinch: bool = False
    pinch_height: float = 0.004  # fingertip centre above the surface when the pinch closes
    pinch_inset: float = 0.03  # pinch point this far in from the object's end
    pinch_tilt: float = 0.3  # rad the fingers lean toward the object's middle (wrist trailing)
    pinch_descent: float = 0.03  # the last metres of the descent go at pinch_speed
    pinch_speed: float = 0.04  # m/s


class SkillError(RuntimeError):
    """A skill cannot be carried out (unknown object, unreachable pose); the text says why."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def unit(v: Sequence[float]) -> np.ndarray:
    """v scaled to length 1 (a zero vector stays zero)."""
    v = np.asarray(v, float)
    n = np.linalg.norm(v)
    return v / n if n > 1e-12 else v


def frame(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Rotation whose columns are the tool axes: x along the fingers, y the closing axis (orthogonalised)."""
    x = unit(x)
    y = np.asarray(y, float) - np.dot(y, x) * x
    if np.linalg.norm(y) < 1e-6:
        y = np.cross(x, [0.0, 0.0, 1.0]) if abs(x[2]) < 0.9 else np.cross(x, [0.0, 1.0, 0.0])
    y = unit(y)
    return np.column_stack([x, y, np.cross(x, y)])


def slerp_rotation(R0: np.ndarray, R1: np.ndarray, a: float) -> np.ndarray:
    """The rotation a fraction `a` of the way from R0 to R1 (about the one axis between them)."""
    w = rotation_error(R0, R1)  # world-frame rotation vector R0 -> R1
    ang = float(np.linalg.norm(w))
    if ang < 1e-9:
        return R1.copy()
    return axis_angle_matrix(w / ang, a * ang) @ R0
