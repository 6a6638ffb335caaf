"""One aligned RGB-D frame with its calibration, the protocol that supplies them, depth decoding.

Depth arrives as REP 118 images: `32FC1` in metres or `16UC1` in millimetres (RealSense's
`aligned_depth_to_color`); 0 / NaN / inf mean "no reading". Everything here turns them into float32
metres with NaN where there is no reading, so the estimator has one rule for invalid pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from emu_ros.perception.geometry import CameraIntrinsics, RigidTransform

#: depth encodings we decode -> metres per stored unit
DEPTH_ENCODINGS = {"32FC1": 1.0, "16UC1": 0.001, "mono16": 0.001}


class DepthError(ValueError):
    """A depth image that cannot be used (wrong encoding, wrong size); the message says which and why."""


def depth_to_metres(raw: np.ndarray, encoding: str) -> np.ndarray:
    """Decode a depth image to float32 metres, NaN where the sensor gave no reading."""
    if encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"depth encoding {encoding!r} is not a depth format (expected one of "
                         f"{sorted(DEPTH_ENCODINGS)}; REP 118: 32FC1 metres or 16UC1 millimetres)")
    a = np.asarray(raw)
    if a.ndim != 2:
        raise DepthError(f"depth image must be single-channel [H, W], got shape {a.shape}")
    z = a.astype(np.float32) * np.float32(DEPTH_ENCODINGS[encoding])
    z[~np.isfinite(z) | (z <= 0)] = np.nan
    return z


@dataclass(frozen=True)
class RGBDFrame:
    """An RGB image, the depth aligned to it (float32 metres, NaN = none), and where the camera is.

    `T_base_camera` maps the camera's optical frame into the robot base frame (the profile's
    `frame_id`, the frame the skills plan in).
    """

    camera: str
    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: CameraIntrinsics
    T_base_camera: RigidTransform
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"camera {self.camera!r}: rgb must be [H, W, 3], got {self.rgb.shape}")
        if self.depth.shape != self.rgb.shape[:2]:
            raise DepthError(f"camera {self.camera!r}: depth {self.depth.shape} is not aligned to the colour image "
                             f"{self.rgb.shape[:2]} (subscribe to the aligned_depth_to_color stream)")
        if (self.intrinsics.height, self.intrinsics.width) != self.rgb.shape[:2]:
            raise ValueError(f"camera {self.camera!r}: camera_info is {self.intrinsics.width}x{self.intrinsics.height} "
                             f"but the image is {self.rgb.shape[1]}x{self.rgb.shape[0]}")

    @property
    def origin(self) -> np.ndarray:
        """The camera centre in the base frame."""
        return self.T_base_camera.translation

    def points(self, mask: np.ndarray) -> np.ndarray:
        """Base-frame points [N, 3] of the mask's pixels that have a depth reading."""
        v, u = np.nonzero(mask)
        z = self.depth[v, u]
        ok = np.isfinite(z)
        return self.T_base_camera.apply(self.intrinsics.backproject(u[ok], v[ok], z[ok]))


@runtime_checkable
class RGBDSource(Protocol):
    """The latest aligned RGB-D frame per camera; raises CameraUnavailable (core.protocols) naming
    the camera and what is missing (no frame, stale, no camera_info, bad depth)."""

    def rgbd(self, cameras: Sequence[str]) -> Mapping[str, RGBDFrame]: ...
