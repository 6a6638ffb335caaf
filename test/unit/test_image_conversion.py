"""Our sensor_msgs/Image ↔ numpy conversion (no cv_bridge), on duck-typed messages: no ROS needed."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from emu_ros.ros.image_conversion import ImageConversionError, image_to_numpy, numpy_to_image


@dataclass
class _Header:
    stamp: object = None
    frame_id: str = ""


@dataclass
class Msg:
    height: int = 0
    width: int = 0
    encoding: str = ""
    is_bigendian: int = 0
    step: int = 0
    data: bytes = b""
    header: _Header = field(default_factory=_Header)


RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 255, (6, 5, 3), dtype=np.uint8)


def pack(arr: np.ndarray, encoding: str, pad: int = 0, big: bool = False) -> Msg:
    h, w = arr.shape[:2]
    row = arr.reshape(h, -1)
    if arr.dtype == np.uint16:
        row = arr.astype(">u2" if big else "<u2").view(np.uint8).reshape(h, -1)
    padded = np.concatenate([row, np.full((h, pad), 77, np.uint8)], axis=1)
    return Msg(height=h, width=w, encoding=encoding, is_bigendian=int(big), step=padded.shape[1], data=padded.tobytes())


@pytest.mark.parametrize("pad", [0, 3, 16])
def test_colour_encodings_decode_to_rgb(pad):
    assert (image_to_numpy(pack(RGB, "rgb8", pad)) == RGB).all()
    assert (image_to_numpy(pack(RGB[:, :, ::-1].copy(), "bgr8", pad)) == RGB).all()
    rgba = np.concatenate([RGB, np.full((6, 5, 1), 9, np.uint8)], axis=2)
    assert (image_to_numpy(pack(rgba, "rgba8", pad)) == RGB).all()
    bgra = np.concatenate([RGB[:, :, ::-1], np.full((6, 5, 1), 9, np.uint8)], axis=2)
    assert (image_to_numpy(pack(bgra.copy(), "bgra8", pad)) == RGB).all()


def test_mono_and_depth():
    mono = RGB[:, :, 0].copy()
    out = image_to_numpy(pack(mono, "mono8", 2))
    assert out.shape == (6, 5, 3) and (out[:, :, 1] == mono).all()
    depth = RNG.integers(0, 65535, (6, 5), dtype=np.uint16)
    for big in (False, True):
        d = image_to_numpy(pack(depth, "16UC1", 4, big=big))
        assert d.dtype == np.uint16 and (d == depth).all()


@pytest.mark.parametrize("stride", [2, 3])
def test_stride_downsamples_while_decoding(stride):
    """The intake's per-camera downsample: every stride-th row/column, padding and channel order honoured."""
    assert (image_to_numpy(pack(RGB, "rgb8", 3), stride=stride) == RGB[::stride, ::stride]).all()
    assert (image_to_numpy(pack(RGB[:, :, ::-1].copy(), "bgr8", 5), stride=stride) == RGB[::stride, ::stride]).all()
    out = image_to_numpy(pack(RGB, "rgb8"), stride=stride)
    assert out.flags["C_CONTIGUOUS"] and out.shape == RGB[::stride, ::stride].shape
    depth = RNG.integers(0, 65535, (6, 5), dtype=np.uint16)
    assert (image_to_numpy(pack(depth, "16UC1", 4), stride=stride) == depth[::stride, ::stride]).all()
    with pytest.raises(ImageConversionError, match="stride must be >= 1"):
        image_to_numpy(pack(RGB, "rgb8"), stride=0)


def test_decoded_array_is_an_independent_copy():
    msg = pack(RGB, "rgb8")
    out = image_to_numpy(msg)
    out[:] = 0
    assert (image_to_numpy(msg) == RGB).all()


@pytest.mark.parametrize("mutate, match", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported image encoding"),
    (lambda m: setattr(m, "data", m.data[:10]), "expected"),
    (lambda m: setattr(m, "step", 3), "step"),
    (lambda m: (setattr(m, "height", 100000), setattr(m, "width", 100000)), "limit"),
    (lambda m: setattr(m, "width", 0), "empty"),
])
def test_bad_messages_are_clear_errors(mutate, match):
    msg = pack(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(ImageConversionError, match=match):
        image_to_numpy(msg)


def test_encode_round_trip_and_errors():
    for enc in ("rgb8", "bgr8"):
        msg = numpy_to_image(RGB, enc, msg_cls=Msg)
        assert msg.step == 15 and (image_to_numpy(msg) == RGB).all()
    depth = RNG.integers(0, 65535, (6, 5), dtype=np.uint16)
    assert (image_to_numpy(numpy_to_image(depth, "16UC1", msg_cls=Msg)) == depth).all()
    with pytest.raises(ImageConversionError):
        numpy_to_image(RGB.astype(np.float32), "rgb8", msg_cls=Msg)
    with pytest.raises(ImageConversionError):
        numpy_to_image(RGB, "jpeg", msg_cls=Msg)
