"""Aligned depth and camera_info for camera perception, pulled like the colour frames.

Per perception camera the profile names `depth_topic` (REP 118: 32FC1 m or 16UC1 mm, aligned to
the colour image — RealSense `aligned_depth_to_color`), `info_topic` (the colour stream's
CameraInfo) and `to_base` (the optical frame's pose in the base frame). Both topics are subscribed
in a PulledGroup with keep-last-1 QoS: nothing runs per message; when a skill asks for an object the
newest depth and info are taken, and the colour frame comes from the node's CameraHub (same
staleness rule, same downsampling). A colour and a depth frame further apart than `max_skew_s` are
not an aligned pair and are refused.

Everything that can be wrong is a CameraUnavailable naming the camera and what to fix (no depth yet,
wrong encoding, no camera_info, a size mismatch, a missing field in the profile); the node stays up.
"""
from __future__ import annotations

import threading
from typing import Iterable, Optional, Sequence

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from emu_ros.core.camera_hub import CameraHub
from emu_ros.core.profile import CameraSpec, RobotProfile
from emu_ros.core.protocols import CameraUnavailable
from emu_ros.perception.geometry import CameraIntrinsics, RigidTransform
from emu_ros.perception.rgbd import DepthError, RGBDFrame, depth_to_metres
from emu_ros.ros.camera_intake import CAMERA_QOS, PulledGroup, never_called, take_message
from emu_ros.ros.conversions import from_time
from emu_ros.ros.image_conversion import ImageConversionError, image_to_numpy


def depth_image(msg) -> np.ndarray:
    """sensor_msgs/Image (32FC1 metres, 16UC1/mono16 millimetres) -> float32 metres, NaN = no reading."""
    enc = str(msg.encoding)
    if enc.upper() == "32FC1":
        h, w, step = int(msg.height), int(msg.width), int(msg.step)
        if h <= 0 or w <= 0 or step < 4 * w or len(msg.data) < step * h:
            raise DepthError(f"32FC1 depth image {w}x{h} with step {step} has {len(msg.data)} bytes")
        buf = np.frombuffer(memoryview(msg.data), np.uint8, count=step * h).reshape(h, step)[:, :4 * w]
        raw = np.ascontiguousarray(buf).view(">f4" if msg.is_bigendian else "<f4").reshape(h, w)
        return depth_to_metres(raw, "32FC1")
    if enc.upper() not in ("16UC1", "MONO16"):
        raise DepthError(f"depth encoding {enc!r} is not a depth format (expected 32FC1 metres or 16UC1 millimetres, "
                         f"REP 118: is depth_topic the aligned depth stream?)")
    try:
        raw = image_to_numpy(msg)
    except ImageConversionError as e:
        raise DepthError(str(e)) from None
    return depth_to_metres(raw, "16UC1")


def _take_newest(sub):
    """The newest waiting message of a pulled subscription, or None."""
    newest = None
    while (got := take_message(sub)) is not None:
        newest = got[0]
    return newest


class RosRGBDSource:
    """`RGBDSource` for a ROS robot: colour from the node's CameraHub, depth and CameraInfo pulled here."""

    def __init__(self, node, profile: RobotProfile, colour: CameraHub, cameras: Sequence[str],
                 max_skew_s: float = 0.05):
        self.node = node
        self.colour = colour
        self.max_skew_s = float(max_skew_s)
        self._lock = threading.Lock()
        self._specs = {c: profile.camera(c) for c in cameras}
        self._subs: dict = {}
        self._info: dict = {}  # camera -> (CameraInfo, arrival time)
        self._depth: dict = {}  # camera -> newest depth msg
        self.problems = {c: self._config_problem(s) for c, s in self._specs.items()}
        group = PulledGroup()
        for cam, spec in self._specs.items():
            if self.problems[cam]:
                node.get_logger().error(f"camera perception: {self.problems[cam]}")
                continue
            self._subs[cam] = (node.create_subscription(Image, spec.depth_topic, never_called, CAMERA_QOS,
                                                        callback_group=group),
                               node.create_subscription(CameraInfo, spec.info_topic, never_called, CAMERA_QOS,
                                                        callback_group=group))

    @staticmethod
    def _config_problem(spec: CameraSpec) -> str:
        missing = [f for f in ("depth_topic", "info_topic", "to_base") if not getattr(spec, f)]
        if not missing:
            return ""
        return (f"camera {spec.name!r} lacks {', '.join(missing)} in the robot profile (cameras[]): depth_topic = the "
                f"aligned depth stream, info_topic = the colour CameraInfo, to_base = from `emu-ros calibrate-camera`")

    def topics(self) -> dict:
        return {c: (s.depth_topic, s.info_topic) for c, s in self._specs.items()}

    def rgbd(self, cameras: Optional[Iterable[str]] = None) -> dict:
        out, errors = {}, []
        for cam in cameras or tuple(self._specs):
            try:
                out[cam] = self._frame(cam)
            except CameraUnavailable as e:
                errors.append(str(e))
        if not out:
            raise CameraUnavailable("; ".join(errors) or "no perception camera configured")
        for e in errors:
            self.node.get_logger().warning(f"camera perception: {e}", throttle_duration_sec=5.0)
        return out

    def _frame(self, cam: str) -> RGBDFrame:
        spec = self._specs.get(cam)
        if spec is None:
            raise CameraUnavailable(f"camera {cam!r} is not a perception camera ({sorted(self._specs)})")
        if self.problems[cam]:
            raise CameraUnavailable(self.problems[cam])
        depth_sub, info_sub = self._subs[cam]
        with self._lock:
            info = _take_newest(info_sub)
            if info is not None:
                self._info[cam] = info
            d = _take_newest(depth_sub)
            if d is not None:
                self._depth[cam] = d
            info, dmsg = self._info.get(cam), self._depth.get(cam)
        if info is None:
            raise CameraUnavailable(f"camera {cam!r}: no CameraInfo received on {spec.info_topic} (is the driver "
                                    f"publishing it?)")
        if dmsg is None:
            raise CameraUnavailable(f"camera {cam!r}: no depth image received on {spec.depth_topic}")
        obs = self.colour.observe([cam])  # raises CameraUnavailable when missing or stale
        rgb_frame = obs.frame(cam)
        d_stamp = from_time(dmsg.header.stamp)
        if abs(d_stamp - rgb_frame.stamp) > self.max_skew_s:
            raise CameraUnavailable(f"camera {cam!r}: depth ({spec.depth_topic}) and colour frames are "
                                    f"{abs(d_stamp - rgb_frame.stamp) * 1000:.0f} ms apart (> {self.max_skew_s * 1000:.0f}"
                                    f" ms): not an aligned pair")
        try:
            depth = depth_image(dmsg)
        except DepthError as e:
            raise CameraUnavailable(f"camera {cam!r}: {spec.depth_topic}: {e}") from None
        try:
            K = CameraIntrinsics.from_k(info.k, info.width, info.height)
        except ValueError as e:
            raise CameraUnavailable(f"camera {cam!r}: {spec.info_topic}: unusable CameraInfo: {e}") from None
        rgb = rgb_frame.image
        if spec.downsample > 1:  # the colour frame was decimated at intake: match depth and intrinsics
            depth = depth[::spec.downsample, ::spec.downsample]
            K = K.scaled(rgb.shape[1], rgb.shape[0])
        if depth.shape != rgb.shape[:2] or (K.height, K.width) != rgb.shape[:2]:
            raise CameraUnavailable(f"camera {cam!r}: colour {rgb.shape[1]}x{rgb.shape[0]}, depth {depth.shape[1]}x"
                                    f"{depth.shape[0]}, camera_info {info.width}x{info.height}: depth must be aligned to "
                                    f"colour (aligned_depth_to_color) and camera_info must be the colour stream's")
        return RGBDFrame(cam, rgb, depth, K, RigidTransform.from_mapping(spec.to_base, f"camera {cam!r}.to_base"),
                         stamp=rgb_frame.stamp)

    def close(self) -> None:
        for subs in self._subs.values():
            for s in subs:
                self.node.destroy_subscription(s)
        self._subs.clear()
