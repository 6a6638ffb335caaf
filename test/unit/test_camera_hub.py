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
