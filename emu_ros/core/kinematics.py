"""Serial-chain kinematics from a robot profile: forward kinematics, Jacobian and damped-least-squares IK.

Skills turn "grasp the cube at (x, y, z)" into joint targets with this, so the bridge needs no
MoveIt or KDL on the robot. The chain is described URDF-style in the profile (per joint: origin
xyz/rpy relative to the previous joint frame, axis, type, limits) plus a tool offset from the last
joint frame to the fingertip centre. All numpy; solving one pose takes ~1 ms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


def rpy_to_matrix(rpy: Sequence[float]) -> np.ndarray:
    """Rotation matrix of fixed-axis roll/pitch/yaw (URDF convention: R = Rz(y) Ry(p) Rx(r))."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation about a unit axis."""
    x, y, z = axis
    c, s = np.cos(angle), np.sin(angle)
    C = 1.0 - c
    return np.array([
        [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
        [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
        [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
    ])


def rotation_error(R_current: np.ndarray, R_target: np.ndarray) -> np.ndarray:
    """World-frame rotation vector taking R_current to R_target (small-angle accurate, exact angle)."""
    R = R_target @ R_current.T
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    angle = np.arccos(cos)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if angle < 1e-9:
        return 0.5 * v
    if np.pi - angle < 1e-6:  # 180°: axis from the symmetric part
        w, V = np.linalg.eigh((R + np.eye(3)) / 2.0)
        return V[:, np.argmax(w)] * angle
    return v * (angle / (2.0 * np.sin(angle)))


def yaw_from_rotation(R: np.ndarray) -> float:
    """Yaw of an object about world z, taken from whichever body axis is most horizontal.

    A cube knocked over lies on another face, so its x axis may point up; a horizontal axis still
    gives the yaw of its vertical faces (mod pi/2 for a cube).
    """
    tilt = np.abs(R[2, :])
    # x when it is (about) as horizontal as the best: a flat object lying on its largest face has two
    # horizontal axes, and its yaw must be that of its length (x), not whichever one rounding favours
    k = 0 if tilt[0] <= tilt.min() + 0.05 else int(np.argmin(tilt))
    a = R[:, k]
    return float(np.arctan2(a[1], a[0]))


@dataclass(frozen=True)
class JointSpec:
    """One joint, URDF style: its frame sits at `origin_xyz/rpy` in the previous frame."""

    name: str
    origin_xyz: tuple = (0.0, 0.0, 0.0)
    origin_rpy: tuple = (0.0, 0.0, 0.0)
    axis: tuple = (0.0, 0.0, 1.0)
    kind: str = "revolute"  # or "prismatic"
    lower: float = -np.pi
    upper: float = np.pi
    max_velocity: float = 2.0  # rad/s (or m/s) used to time trajectories


@dataclass(frozen=True)
class ChainSpec:
    """A serial arm: base pose in the world frame, joints in order, tool (fingertip) offset."""

    name: str
    joints: tuple  # of JointSpec
    base_xyz: tuple = (0.0, 0.0, 0.0)
    base_rpy: tuple = (0.0, 0.0, 0.0)
    tool_xyz: tuple = (0.0, 0.0, 0.0)

    @property
    def joint_names(self) -> tuple:
        return tuple(j.name for j in self.joints)


@dataclass(frozen=True)
class IKResult:
    q: np.ndarray
    position_error: float  # m
    rotation_error: float  # rad
    ok: bool
    iterations: int


class SerialChain:
    """FK / Jacobian / IK for one ChainSpec. Stateless apart from cached constant transforms."""

    def __init__(self, spec: ChainSpec):
        if not spec.joints:
            raise ValueError(f"chain {spec.name!r} has no joints")
        self.spec = spec
        self._origins = [(np.asarray(j.origin_xyz, float), rpy_to_matrix(j.origin_rpy)) for j in spec.joints]
        self._axes = []
        for j in spec.joints:
            a = np.asarray(j.axis, float)
            n = np.linalg.norm(a)
            if n < 1e-9:
                raise ValueError(f"joint {j.name!r}: zero axis")
            self._axes.append(a / n)
        self._base_p = np.asarray(spec.base_xyz, float)
        self._base_R = rpy_to_matrix(spec.base_rpy)
        self._tool = np.asarray(spec.tool_xyz, float)
        self.lower = np.array([j.lower for j in spec.joints])
        self.upper = np.array([j.upper for j in spec.joints])

    @property
    def n(self) -> int:
        return len(self.spec.joints)

    def _frames(self, q: np.ndarray):
        """World position/rotation of every joint frame (after its motion) and the joint axes in world."""
        p, R = self._base_p.copy(), self._base_R.copy()
        origins, axes = [], []
        for (o_p, o_R), axis, joint, qi in zip(self._origins, self._axes, self.spec.joints, q):
            p = p + R @ o_p
            R = R @ o_R
            w_axis = R @ axis
            origins.append(p.copy())
            axes.append(w_axis)
            if joint.kind == "prismatic":
                p = p + w_axis * qi
            else:
                R = R @ axis_angle_matrix(axis, qi)
        return p, R, origins, axes

    def fk(self, q: Sequence[float]) -> tuple:
        """Tool position (3,) and rotation (3, 3) in the world frame."""
        q = np.asarray(q, float)
        if q.shape != (self.n,):
            raise ValueError(f"chain {self.spec.name!r} expects {self.n} joint values, got {q.shape}")
        p, R, _, _ = self._frames(q)
        return p + R @ self._tool, R

    def jacobian(self, q: Sequence[float]) -> np.ndarray:
        """Geometric Jacobian [6, n] of the tool point (rows: linear xyz, angular xyz)."""
        q = np.asarray(q, float)
        p, R, origins, axes = self._frames(q)
        tip = p + R @ self._tool
        J = np.zeros((6, self.n))
        for i, (o, a, joint) in enumerate(zip(origins, axes, self.spec.joints)):
            if joint.kind == "prismatic":
                J[:3, i] = a
            else:
                J[:3, i] = np.cross(a, tip - o)
                J[3:, i] = a
        return J

    def ik(self, position: Sequence[float], rotation: Optional[np.ndarray] = None, q0: Optional[Sequence[float]] = None,
           iterations: int = 200, damping: float = 0.02, rotation_weight: float = 0.3,
           position_tol: float = 1e-3, rotation_tol: float = 0.02) -> IKResult:
        """Damped least squares toward a tool pose; joint limits are enforced by clipping each step."""
        target_p = np.asarray(position, float)
        q = np.clip(np.asarray(q0 if q0 is not None else np.zeros(self.n), float), self.lower, self.upper)
        rows = slice(0, 6) if rotation is not None else slice(0, 3)
        it = 0
        for it in range(1, iterations + 1):
            p, R = self.fk(q)
            err = np.zeros(6)
            err[:3] = target_p - p
            if rotation is not None:
                err[3:] = rotation_weight * rotation_error(R, rotation)
            e = err[rows]
            if np.linalg.norm(err[:3]) < position_tol and (rotation is None or np.linalg.norm(err[3:]) / rotation_weight < rotation_tol):
                break
            J = self.jacobian(q)
            if rotation is not None:
                J[3:] *= rotation_weight
            Jr = J[rows]
            dq = Jr.T @ np.linalg.solve(Jr @ Jr.T + damping ** 2 * np.eye(Jr.shape[0]), e)
            step = np.max(np.abs(dq))
            if step > 0.5:  # keep steps small so the solver stays on one branch
                dq *= 0.5 / step
            q = np.clip(q + dq, self.lower, self.upper)
        p, R = self.fk(q)
        pos_err = float(np.linalg.norm(target_p - p))
        rot_err = float(np.linalg.norm(rotation_error(R, rotation))) if rotation is not None else 0.0
        ok = pos_err < max(position_tol * 5, 5e-3) and (rotation is None or rot_err < max(rotation_tol * 5, 0.1))
        return IKResult(q=q, position_error=pos_err, rotation_error=rot_err, ok=ok, iterations=it)

    def ik_best(self, position: Sequence[float], rotations: Sequence[np.ndarray], q0: Sequence[float],
                **kw) -> IKResult:
        """Solve for several acceptable tool rotations (e.g. the two symmetric grasp yaws) and keep the
        one that is reachable with the least motion: avoids the flipped-wrist branch at the joint limits."""
        best = None
        for R in rotations:
            res = self.ik(position, R, q0, **kw)
            score = (not res.ok, res.position_error + 0.05 * res.rotation_error
                     + 0.01 * float(np.linalg.norm(res.q - np.asarray(q0))))
            if best is None or score < best[0]:
                best = (score, res)
        return best[1]
