"""Camera intake for both nodes: camera messages wait in the DDS reader until a planner asks.

Why this shape (measured: `python -m emu_ros.bench.camera_overhead`, results/ has the JSON): the
planner reads only the newest frame per camera, and only when it plans or checks a step. Taking every
30 Hz frame through an executor callback — even one that only stores a reference — halved the tiny
model's sustained decode rate on a 2-core machine (63 -> 32 step images in 60 s, four cameras) and
still let frames go 0.5 s stale: rclpy's executor runs its Python machinery per message and competes
with the generation thread for the GIL. So camera subscriptions are in a `PulledGroup`, a
callback group no executor ever runs: the executor does not even wait on them, and the reader keeps
only the newest sample (CAMERA_QOS: keep-last 1, best effort). When an observation is requested the
CameraHub calls the subscription's take (one message per camera, deserialised then, converted once).
Per frame, no Python runs at all; staleness is judged by the header stamp (core/camera_hub.py).

A camera whose messages are bad (encoding, size, a depth image on a colour topic, an absurd header)
is reported by name with the reason when an observation is requested; nothing raises into a node.
"""
from __future__ import annotations

import functools
import time
from typing import Iterable, Optional

from rclpy.callback_groups import CallbackGroup
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image

from emu_ros.core.camera_hub import CameraHub, TakenMessage
from emu_ros.core.profile import CameraSpec
from emu_ros.ros.conversions import from_time
from emu_ros.ros.image_conversion import ImageConversionError, image_to_numpy

# "Latest frame" camera QoS: keep-last depth 1, best effort. The planner only ever reads the newest
# frame, so a deeper queue (qos_profile_sensor_data keeps 5) just delivers frames that are already
# superseded; best effort matches camera drivers and never blocks them on a slow reader.
CAMERA_QOS = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=1, reliability=QoSReliabilityPolicy.BEST_EFFORT)


def colour_image(msg, stride: int = 1):
    """Converter run by the CameraHub at observe time (once per message): sensor_msgs/Image -> uint8 RGB."""
    try:
        arr = image_to_numpy(msg, stride=stride)
    except ImageConversionError as e:
        raise ValueError(str(e)) from e
    if arr.ndim != 3:
        raise ValueError(f"{msg.encoding} is not a colour image")
    return arr


def camera_converter(cam: CameraSpec):
    """The converter the hub runs for `cam`'s messages: RGB, downsampled by the profile's `downsample`."""
    return functools.partial(colour_image, stride=cam.downsample) if cam.downsample > 1 else colour_image


def node_camera_hub(node, cameras: Iterable[CameraSpec], required: Iterable[str]) -> CameraHub:
    """A CameraHub whose stamps are judged on the node's clock (ROS time; sim time under use_sim_time)."""
    cams = tuple(cameras)
    return CameraHub([c.name for c in cams], {c.name: c.max_age_s for c in cams}, required=list(required),
                     stamp_clock=lambda: node.get_clock().now().nanoseconds * 1e-9)


class PulledGroup(CallbackGroup):
    """A callback group whose entities no executor runs or waits on: their messages are taken on demand.

    rclpy executors only wait on entities whose group `can_execute`; returning False keeps the camera
    readers out of every wait set, so a frame arriving costs the executor nothing.
    """

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        """Never reached: no execution of these entities ever begins."""


def never_called(msg) -> None:
    """The callback of a pulled subscription (a PulledGroup's): no executor ever runs it."""
    raise RuntimeError("pulled subscriptions are taken on demand, never run by an executor")


def take_message(sub) -> Optional[tuple]:
    """(message, rmw message info or None) of the oldest waiting message of a pulled subscription,
    or None: the subscription handle's take, as rclpy's executors do."""
    with sub.handle:
        got = sub.handle.take_message(sub.msg_type, sub.raw)
    if got is None:
        return None
    return got if isinstance(got, tuple) else (got, None)


def take_latest(node, sub, camera: str, hub: CameraHub) -> Optional[TakenMessage]:
    """Take the newest waiting message of `sub` (None if none), with its stamp and how long it waited.

    Bad headers are reported to the hub.
    """
    try:
        got = take_message(sub)
    except Exception as e:  # noqa: BLE001 - a failed take (shutting down, rmw error) is "no frame", reported
        hub.report_error(camera, f"take failed: {e}")
        return None
    if got is None:
        return None
    msg, info = got
    try:
        stamp = from_time(msg.header.stamp)
    except (ValueError, AttributeError, TypeError) as e:
        hub.report_error(camera, f"bad header: {e}")
        node.get_logger().warning(f"dropped frame from {camera}: bad header: {e}", throttle_duration_sec=5.0)
        return None
    waited = 0.0
    received_ns = info.get("received_timestamp") if isinstance(info, dict) else None
    if received_ns:  # system clock at arrival in this process (rmw message info)
        waited = max(0.0, time.time() - received_ns * 1e-9)
    return TakenMessage(msg, stamp, waited)


def subscribe_cameras(node, hub: CameraHub, cameras: Iterable[CameraSpec]) -> list:
    """One CAMERA_QOS subscription per camera in a PulledGroup, registered as the hub's pull source.

    Each camera's `downsample` applies at conversion. Returns the subscriptions (destroy them, then
    call `hub.clear_sources()`, to stop).
    """
    group = PulledGroup()
    subs = []
    for cam in cameras:
        sub = node.create_subscription(Image, cam.topic, never_called, CAMERA_QOS, callback_group=group)
        hub.add_source(cam.name, functools.partial(take_latest, node, sub, cam.name, hub), camera_converter(cam))
        subs.append(sub)
    return subs
