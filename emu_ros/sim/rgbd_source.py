"""The simulator as a calibrated RGB-D camera rig: colour + depth rendered by MuJoCo, exact
intrinsics (from the camera's field of view) and extrinsics (from the camera's pose), so camera
perception runs on rendered frames exactly as on a RealSense stream with a perfect calibration.

Frames are cached per physics state (`AlohaSim.state_version`): skills ask for several objects between two motions and
the scene has not moved.
"""
from __future__ import annotations

import threading
from typing import Optional, Sequence

import numpy as np

from emu_ros.perception.geometry import CameraIntrinsics, RigidTransform
from emu_ros.perception.rgbd import RGBDFrame
from emu_ros.core.protocols import CameraUnavailable
from emu_ros.sim.aloha_env import AlohaSim, SimImageSource

#: MuJoCo cameras look along -z with y up; the optical frame looks along +z with y down
MJ_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


class SimRGBDSource:
    """`RGBDSource` over the simulator's cameras."""

    def __init__(self, sim: AlohaSim, size: tuple = (480, 640), images: Optional[SimImageSource] = None):
        """`images`: the colour source whose injected dropouts (fault `camera_dropout`) apply here too."""
        self.sim = sim
        self.images = images
        self.size = (int(size[0]), int(size[1]))
        self._cache: dict = {}
        self._lock = threading.Lock()

    def frame(self, camera: str) -> RGBDFrame:
        if self.images is not None and self.images.unavailable(camera):
            raise CameraUnavailable(f"no frames from camera {camera!r} (dropout)")
        key = (camera, self.sim.state_version)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        h, w = self.size
        rgb, depth, fovy, pos, xmat = self.sim.render_rgbd(camera, h, w)
        f = RGBDFrame(camera=camera, rgb=rgb, depth=depth, intrinsics=CameraIntrinsics.from_fovy(fovy, w, h),
                      T_base_camera=RigidTransform(xmat @ MJ_TO_OPTICAL, pos), stamp=self.sim.time)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[1] == key[1]}
            self._cache[key] = f
        return f

    def rgbd(self, cameras: Optional[Sequence[str]] = None) -> dict:
        return {c: self.frame(c) for c in (cameras or ("cam_high",))}
