"""Pinhole cameras and rigid transforms: the arithmetic between a pixel with a depth and a point in
the robot base frame.

Conventions (REP 103/105): camera points are in the *optical* frame (x right, y down, z forward,
metres), as `sensor_msgs/CameraInfo` and RealSense's `*_optical_frame` use. A `RigidTransform`
`T_base_camera` maps optical-frame points to the base frame: p_base = R @ p_cam + t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from emu_ros.core.kinematics import rpy_to_matrix


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole model of a rectified image (CameraInfo's K; distortion assumed already removed)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0 and self.width > 0 and self.height > 0):
            raise ValueError(f"camera intrinsics need fx, fy, width, height > 0, got {self}")

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> "CameraIntrinsics":
        """From CameraInfo.k (row-major 3x3)."""
        k = [float(v) for v in k]
        if len(k) != 9:
            raise ValueError(f"camera matrix K needs 9 values, got {len(k)}")
        return cls(fx=k[0], fy=k[4], cx=k[2], cy=k[5], width=int(width), height=int(height))

    @classmethod
    def from_fovy(cls, fovy_deg: float, width: int, height: int) -> "CameraIntrinsics":
        """Square pixels with a vertical field of view (MuJoCo cameras), principal point at the centre."""
        f = 0.5 * height / np.tan(np.radians(fovy_deg) / 2)
        return cls(fx=f, fy=f, cx=(width - 1) / 2, cy=(height - 1) / 2, width=int(width), height=int(height))

    def scaled(self, width: int, height: int) -> "CameraIntrinsics":
        """The same camera at another resolution (a downsampled stream)."""
        sx, sy = width / self.width, height / self.height  # pixel centres: (c + 0.5) scales with the edges
        return CameraIntrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
                                int(width), int(height))

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def backproject(self, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Pixels (u right, v down; integers are pixel centres, as in OpenCV) with depth z (m) -> [N, 3] points."""
        u = np.asarray(u, float)
        v = np.asarray(v, float)
        z = np.asarray(z, float)
        return np.stack([(u - self.cx) / self.fx * z, (v - self.cy) / self.fy * z, z], axis=-1)

    def project(self, p: np.ndarray) -> np.ndarray:
        """[N, 3] optical points -> [N, 2] pixel coordinates (u, v), inverse of `backproject`."""
        p = np.atleast_2d(np.asarray(p, float))
        return np.stack([self.fx * p[:, 0] / p[:, 2] + self.cx, self.fy * p[:, 1] / p[:, 2] + self.cy], -1)


@dataclass(frozen=True)
class RigidTransform:
    """A rotation and translation (metres). `apply` maps points of the child frame into the parent."""

    rotation: np.ndarray
    translation: np.ndarray

    def __post_init__(self) -> None:
        R = np.asarray(self.rotation, float)
        t = np.asarray(self.translation, float).reshape(3)
        if R.shape != (3, 3) or not np.allclose(R.T @ R, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
            raise ValueError("RigidTransform.rotation must be a proper 3x3 rotation matrix")
        object.__setattr__(self, "rotation", R)
        object.__setattr__(self, "translation", t)

    @classmethod
    def identity(cls) -> "RigidTransform":
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_mapping(cls, d: Mapping, where: str = "transform") -> "RigidTransform":
        """`{xyz: [x, y, z], rpy: [r, p, y]}` or `{xyz: ..., quat_xyzw: [x, y, z, w]}` (a profile entry)."""
        if not isinstance(d, Mapping) or "xyz" not in d or ("rpy" in d) == ("quat_xyzw" in d):
            raise ValueError(f"{where}: needs xyz and exactly one of rpy or quat_xyzw, got {d!r}")
        xyz = [float(v) for v in d["xyz"]]
        if len(xyz) != 3:
            raise ValueError(f"{where}.xyz: needs 3 values, got {d['xyz']!r}")
        if "rpy" in d:
            rpy = [float(v) for v in d["rpy"]]
            if len(rpy) != 3:
                raise ValueError(f"{where}.rpy: needs 3 values, got {d['rpy']!r}")
            return cls(rpy_to_matrix(rpy), np.array(xyz))
        q = [float(v) for v in d["quat_xyzw"]]
        if len(q) != 4 or not np.isclose(np.linalg.norm(q), 1.0, atol=1e-3):
            raise ValueError(f"{where}.quat_xyzw: needs a unit quaternion [x, y, z, w], got {d['quat_xyzw']!r}")
        return cls(quat_to_matrix(q), np.array(xyz))

    def apply(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p, float) @ self.rotation.T + self.translation

    def inverse(self) -> "RigidTransform":
        return RigidTransform(self.rotation.T, -self.rotation.T @ self.translation)

    def compose(self, other: "RigidTransform") -> "RigidTransform":
        """self ∘ other: first `other`, then `self` (T_a_c = T_a_b.compose(T_b_c))."""
        return RigidTransform(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def as_mapping(self) -> dict:
        """Profile form: xyz + rpy (roll about x, then pitch about y, then yaw about z; extrinsic)."""
        return {"xyz": [round(float(v), 5) for v in self.translation],
                "rpy": [round(float(v), 5) for v in matrix_to_rpy(self.rotation)]}


def quat_to_matrix(q_xyzw: Sequence[float]) -> np.ndarray:
    x, y, z, w = (float(v) for v in q_xyzw)
    n = np.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_rpy(R: np.ndarray) -> np.ndarray:
    """Inverse of `rpy_to_matrix` (R = Rz(yaw) @ Ry(pitch) @ Rx(roll))."""
    R = np.asarray(R, float)
    pitch = np.arcsin(-np.clip(R[2, 0], -1.0, 1.0))
    if abs(np.cos(pitch)) < 1e-9:  # gimbal lock: put everything into yaw
        return np.array([0.0, pitch, np.arctan2(-R[0, 1], R[1, 1])])
    return np.array([np.arctan2(R[2, 1], R[2, 2]), pitch, np.arctan2(R[1, 0], R[0, 0])])
