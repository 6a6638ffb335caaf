"""Synthetic camera images of real ArUco markers at known poses, for the marker and calibration tests.

A marker from OpenCV's own dictionary is warped into a textured background with the homography of
the pose, rendered at 4x and area-averaged down so its edges are blurred like a real sensor's; the
pose the detector recovers can then be compared with the truth. Shared by test/unit/test_markers.py
and test/ros/test_calibrate_camera.py (which adds this directory to sys.path).
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from emu_ros.core.kinematics import rpy_to_matrix
from emu_ros.perception.geometry import CameraIntrinsics

CAM = CameraIntrinsics(fx=600.0, fy=600.0, cx=319.5, cy=239.5, width=640, height=480)
SUPERSAMPLE = 4  # render at 4x and area-average down: edges blurred like a real sensor's
MARKER_PX = 240  # source marker side (black square), px


def _marker_texture(marker_id: int, dictionary: str) -> tuple:
    """Marker image with a white quiet zone one marker-cell wide, and the pad width in px."""
    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
    img = cv2.aruco.generateImageMarker(d, marker_id, MARKER_PX, borderBits=1)
    pad = MARKER_PX // 6
    return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=255), pad


def _plane_to_texture(size: float, pad: int) -> np.ndarray:
    """Marker-frame (X, Y, 1) -> texture pixel (integer = pixel centre); y up in the marker, down in the image."""
    k = MARKER_PX / size
    return np.array([[k, 0.0, pad - 0.5 + MARKER_PX / 2], [0.0, -k, pad - 0.5 + MARKER_PX / 2], [0.0, 0.0, 1.0]])


def background(seed: int = 0, cam: CameraIntrinsics = CAM) -> np.ndarray:
    """Grey [H, W] smooth noise: texture for the detector to reject, no accidental squares."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(128, 40, (cam.height // 8, cam.width // 8)).clip(0, 255).astype(np.uint8)
    return cv2.resize(noise, (cam.width, cam.height), interpolation=cv2.INTER_CUBIC)


def render(markers: list, size: float, dictionary: str = "DICT_4X4_50", seed: int = 0,
           cam: Optional[CameraIntrinsics] = None) -> np.ndarray:
    """RGB image of `markers` [(id, R, t)] (marker poses in the optical frame) over a grey texture."""
    cam = cam or CAM
    big = cam.scaled(cam.width * SUPERSAMPLE, cam.height * SUPERSAMPLE)
    wh = (big.width, big.height)
    out = cv2.resize(background(seed, cam), wh, interpolation=cv2.INTER_NEAREST).astype(np.float32)
    for marker_id, R, t in markers:
        tex, pad = _marker_texture(marker_id, dictionary)
        H = big.matrix @ np.column_stack([R[:, 0], R[:, 1], t]) @ np.linalg.inv(_plane_to_texture(size, pad))
        warped = cv2.warpPerspective(tex.astype(np.float32), H, wh, flags=cv2.INTER_LINEAR)
        cover = cv2.warpPerspective(np.ones_like(tex, np.float32), H, wh, flags=cv2.INTER_LINEAR)
        out = out * (1 - cover) + warped
    small = cv2.resize(out, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
    return np.repeat(small.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


def rotation_error_deg(R_est: np.ndarray, R_true: np.ndarray) -> float:
    c = (np.trace(R_est.T @ R_true) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def facing_camera(rpy: tuple) -> np.ndarray:
    """A marker facing the camera (its z towards -z_optical, printed upright), then tilted by rpy."""
    face = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # x right, y up, z to the camera
    return face @ rpy_to_matrix(rpy)
