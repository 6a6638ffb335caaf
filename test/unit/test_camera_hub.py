"""CameraHub: latest frame per camera, staleness, missing cameras reported by name."""
from __future__ import annotations

import numpy as np
import pytest

from emu_ros.core.protocols import CameraUnavailable
from emu_ros.core.camera_hub import CameraHub


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def img(v=0):
    return np.full((4, 4, 3), v, np.uint8)


def test_latest_frame_and_staleness():
    clock = Clock()
    hub = CameraHub(["cam_high", "cam_left_wrist"], max_age_s={"cam_high": 0.5, "cam_left_wrist": 1.0},
                    required=["cam_high"], clock=clock)
    with pytest.raises(CameraUnavailable, match="cam_high: no frame received"):
        hub.observe()
    hub.update("cam_high", img(1))
    hub.update("cam_high", img(2))
    obs = hub.observe()
    assert set(obs.frames) == {"cam_high"} and obs.frames["cam_high"].image[0, 0, 0] == 2  # optional camera absent
    clock.t += 0.6
    with pytest.raises(CameraUnavailable, match=r"cam_high: last frame 0\.60 s old > 0\.50 s"):
        hub.observe()
    hub.update("cam_left_wrist", img(3))
    with pytest.raises(CameraUnavailable):
        hub.observe(["cam_high", "cam_left_wrist"])  # an explicitly requested camera must be fresh
    assert set(hub.observe(["cam_left_wrist"]).frames) == {"cam_left_wrist"}


def test_errors_are_reported_and_unknown_cameras_rejected():
    hub = CameraHub(["cam_high"], clock=Clock())
    hub.report_error("cam_high", "unsupported image encoding 'yuv422'")
    with pytest.raises(CameraUnavailable, match="yuv422"):
        hub.observe()
    with pytest.raises(KeyError):
        hub.update("cam_nope", img())
    with pytest.raises(CameraUnavailable, match="unknown camera"):
        hub.observe(["cam_nope"])
    with pytest.raises(ValueError):
        CameraHub([])
    with pytest.raises(ValueError):
        hub.update("cam_high", np.zeros((4, 4), np.uint8))  # not RGB
    st = hub.status()[0]
    assert st.camera == "cam_high" and st.received == 0 and st.stale


class CountingConverter:
    def __init__(self):
        self.calls = 0

    def __call__(self, raw):
        self.calls += 1
        if isinstance(raw, str):
            raise ValueError(raw)
        return img(raw)


def test_raw_frame_converted_at_most_once_and_only_on_observe():
    clock = Clock()
    hub = CameraHub(["cam_high"], clock=clock)
    conv = CountingConverter()
    for v in range(5):
        hub.update_raw("cam_high", v, stamp=10.0 + v, converter=conv)
    assert conv.calls == 0  # the callback did no conversion
    a = hub.observe()
    b = hub.observe()
    assert conv.calls == 1  # only the latest, once, cached
    assert a.frames["cam_high"].image[0, 0, 0] == 4 and a.frames["cam_high"].stamp == 14.0
    assert b.frames["cam_high"] is a.frames["cam_high"]


def test_stale_raw_frame_refused():
    clock = Clock()
    hub = CameraHub(["cam_high"], max_age_s=0.5, clock=clock)
    conv = CountingConverter()
    hub.update_raw("cam_high", 1, stamp=1.0, converter=conv)
    clock.t += 0.6
    with pytest.raises(CameraUnavailable, match="cam_high: last frame 0.60 s old"):
        hub.observe()


def test_bad_latest_falls_back_to_good_only_while_fresh():
    clock = Clock()
    hub = CameraHub(["cam_high"], max_age_s=0.5, clock=clock)
    conv = CountingConverter()
    hub.update_raw("cam_high", 7, stamp=1.0, converter=conv)
    hub.observe()
    clock.t += 0.3
    hub.update_raw("cam_high", "image data too short", stamp=1.3, converter=conv)
    obs = hub.observe()  # the good frame is 0.3 s old: still usable
    assert obs.frames["cam_high"].image[0, 0, 0] == 7
    clock.t += 0.3  # the good frame is now 0.6 s old; the bad message must not make it look fresh
    with pytest.raises(CameraUnavailable, match="cam_high: last frame 0.60 s old.*image data too short"):
        hub.observe()


def test_bad_only_camera_reported_by_name_and_reason():
    hub = CameraHub(["cam_high", "cam_left_wrist"], clock=Clock())
    conv = CountingConverter()
    hub.update_raw("cam_high", 1, stamp=1.0, converter=conv)
    hub.update_raw("cam_left_wrist", "unsupported image encoding 'yuv422'", stamp=1.0, converter=conv)
    with pytest.raises(CameraUnavailable, match="cam_left_wrist: no good frame received; last message dropped: "
                                                "unsupported image encoding 'yuv422'"):
        hub.observe()
    hub.update_raw("cam_left_wrist", 2, stamp=2.0, converter=conv)
    assert set(hub.observe().frames) == {"cam_high", "cam_left_wrist"}
