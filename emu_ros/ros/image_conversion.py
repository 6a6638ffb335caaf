"""sensor_msgs/Image ↔ numpy without cv_bridge (not installable from wheels; absent on some robots).

Decoding honours `step` (row padding), `is_bigendian` and the encoding; the world model wants RGB,
so colour encodings are returned as uint8 RGB [H, W, 3]. Depth (16UC1) is returned as uint16 [H, W].
Anything else is an ImageConversionError naming the encoding — never a silently wrong picture.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

#: encoding → (channels, numpy dtype, channel order to RGB or None for single-channel)
_ENCODINGS = {
    "rgb8": (3, np.uint8, (0, 1, 2)),
    "bgr8": (3, np.uint8, (2, 1, 0)),
    "rgba8": (4, np.uint8, (0, 1, 2)),
    "bgra8": (4, np.uint8, (2, 1, 0)),
    "mono8": (1, np.uint8, None),
    "8uc1": (1, np.uint8, None),
    "16uc1": (1, np.uint16, None),
    "mono16": (1, np.uint16, None),
}
SUPPORTED_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "16UC1")
#: Refuse absurd sizes before allocating (a corrupt header must not take the node down).
MAX_PIXELS = 8192 * 8192


class ImageConversionError(ValueError):
    """The message cannot be decoded as an image of a supported encoding and consistent size."""


def _layout(msg: Any) -> tuple:
    enc = str(msg.encoding).lower()
    if enc not in _ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {msg.encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"empty image {w}x{h}")
    if h * w > MAX_PIXELS:
        raise ImageConversionError(f"image {w}x{h} exceeds the {MAX_PIXELS}-pixel limit")
    channels, dtype, order = _ENCODINGS[enc]
    row_bytes = w * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ImageConversionError(f"step {step} < {row_bytes} bytes needed for {w} px of {msg.encoding}")
    if len(msg.data) < step * h:
        raise ImageConversionError(f"data has {len(msg.data)} bytes, expected {step * h} ({h} rows × step {step})")
    return enc, h, w, step, channels, dtype, order, row_bytes


def image_to_numpy(msg: Any, stride: int = 1) -> np.ndarray:
    """Decode to RGB uint8 [H, W, 3] (colour and mono8) or uint16 [H, W] (16UC1/mono16). Copies the data.

    `stride` > 1 keeps every stride-th row and column (nearest-neighbour downsampling) while decoding,
    so the one copy made is already the small image: the model resizes to its own area anyway, and a
    640x480 frame is never copied at full size first.
    """
    if int(stride) < 1:
        raise ImageConversionError(f"stride must be >= 1, got {stride}")
    s = int(stride)
    enc, h, w, step, channels, dtype, order, row_bytes = _layout(msg)
    buf = np.frombuffer(memoryview(msg.data), dtype=np.uint8, count=step * h).reshape(h, step)[:, :row_bytes]
    if dtype == np.uint16:
        big = bool(getattr(msg, "is_bigendian", False))
        arr = np.ascontiguousarray(buf).view(">u2" if big else "<u2").reshape(h, w)[::s, ::s]
        return arr.astype(np.uint16)
    px = buf.reshape(h, w, channels)[::s, ::s]
    oh, ow = px.shape[:2]
    if order is None:
        return np.repeat(px, 3, axis=2) if enc in ("mono8", "8uc1") else px[:, :, 0].copy()
    if order == (0, 1, 2):
        return px[:, :, :3].copy()  # one C-contiguous copy, never a view of the message (~0.1 ms at 640x480)
    # Swapping channels: three strided plane copies beat a reversed-stride copy or fancy indexing.
    out = np.empty((oh, ow, 3), np.uint8)
    for dst, src in enumerate(order):
        out[:, :, dst] = px[:, :, src]
    return out


def numpy_to_image(arr: np.ndarray, encoding: str = "rgb8", stamp: Optional[Any] = None, frame_id: str = "",
                   msg_cls: Optional[type] = None) -> Any:
    """Encode an RGB uint8 [H, W, 3] (or uint16 [H, W] for 16UC1) array as a sensor_msgs/Image."""
    if msg_cls is None:
        from sensor_msgs.msg import Image as msg_cls  # imported lazily: the core must not need ROS
    if not isinstance(arr, np.ndarray):
        raise ImageConversionError(f"expected a numpy array, got {type(arr).__name__}")
    enc = encoding.lower()
    if enc in ("rgb8", "bgr8"):
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ImageConversionError(f"{encoding} needs uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
        data = arr if enc == "rgb8" else arr[:, :, ::-1]
        channels, itemsize = 3, 1
    elif enc == "mono8":
        if arr.dtype != np.uint8 or arr.ndim != 2:
            raise ImageConversionError(f"mono8 needs uint8 [H, W], got {arr.dtype} {arr.shape}")
        data, channels, itemsize = arr, 1, 1
    elif enc == "16uc1":
        if arr.dtype != np.uint16 or arr.ndim != 2:
            raise ImageConversionError(f"16UC1 needs uint16 [H, W], got {arr.dtype} {arr.shape}")
        data, channels, itemsize = arr.astype("<u2"), 1, 2
    else:
        raise ImageConversionError(f"cannot encode {encoding!r} (supported: rgb8, bgr8, mono8, 16UC1)")
    h, w = arr.shape[:2]
    msg = msg_cls()
    msg.height, msg.width = h, w
    msg.encoding = "16UC1" if enc == "16uc1" else enc
    msg.is_bigendian = 0
    msg.step = w * channels * itemsize
    msg.data = np.ascontiguousarray(data).tobytes()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def empty_image(msg_cls: Optional[type] = None) -> Any:
    """An Image with width 0: the documented 'no image' value of PlanStep.image."""
    if msg_cls is None:
        from sensor_msgs.msg import Image as msg_cls
    return msg_cls()
