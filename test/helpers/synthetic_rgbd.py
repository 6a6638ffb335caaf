"""Synthetic RGB-D frames with exact geometry: boxes on a table seen by a camera looking straight down.

Each pixel's ray is intersected with the table plane (z = 0) and with each box's top face, so a
test knows the true pose of what the frame shows. (Side faces are not drawn: from above they cover
a few pixels; the estimator uses the top surface anyway.)
"""
from __future__ import annotations

import numpy as np

from emu_ros.perception.geometry import CameraIntrinsics, RigidTransform
from emu_ros.perception.rgbd import RGBDFrame

K = CameraIntrinsics(fx=500.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)
# optical z straight down, optical x = base x, optical y = -base y; camera 0.8 m above the table
T_BASE_CAMERA = RigidTransform(np.diag([1.0, -1.0, -1.0]), np.array([0.0, 0.0, 0.8]))
TO_BASE = {"xyz": [0.0, 0.0, 0.8], "rpy": [float(np.pi), 0.0, 0.0]}  # the same transform, profile form
TABLE_GREY = 90


def scene(objects, camera: str = "cam_high") -> RGBDFrame:
    """Grey table plus the top faces of boxes [(centre xyz, size xyz, yaw rad, rgb)]; depth in metres."""
    T = T_BASE_CAMERA
    v, u = np.mgrid[0:K.height, 0:K.width]
    rays = T.rotation @ np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u, float)]).reshape(3, -1)
    o = T.translation[:, None]
    best = (0.0 - o[2]) / rays[2]  # the table plane
    rgb = np.full((3, rays.shape[1]), TABLE_GREY, np.uint8)
    for centre, size, yaw, colour in objects:
        top = centre[2] + size[2] / 2
        t = (top - o[2]) / rays[2]
        p = o + rays * t
        c, s = np.cos(-yaw), np.sin(-yaw)
        dx, dy = p[0] - centre[0], p[1] - centre[1]
        lx, ly = c * dx - s * dy, s * dx + c * dy
        hit = (np.abs(lx) <= size[0] / 2) & (np.abs(ly) <= size[1] / 2) & (t < best)
        best = np.where(hit, t, best)
        rgb[:, hit] = np.array(colour, np.uint8)[:, None]
    z_optical = best * (T.rotation.T @ rays)[2]  # depth along the optical axis
    return RGBDFrame(camera, np.ascontiguousarray(rgb.T.reshape(K.height, K.width, 3)),
                     z_optical.reshape(K.height, K.width).astype(np.float32), K, T)
