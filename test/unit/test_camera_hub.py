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
                    required=["cam_high"], clock=clock, stamp_clock=clock)
    with pytest.raises(CameraUnavailable, match="cam_high: no frame received"):
        hub.observe()
    hub.update("cam_high", img(1))
    hub.update("cam_high", img(2))
    obs = hub.observe()
    assert set(obs.frames) == {"cam_high"} and obs.frames["cam_high"].image[0, 0, 0] == 2  # optional camera absent
    clock.t += 0.6
    with pytest.raises(CameraUnavailable, match=r"cam_high: last frame 0\.60 s old by its header stamp > 0\.50 s"):
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
    hub = CameraHub(["cam_high"], clock=clock, stamp_clock=lambda: 14.5)
    conv = CountingConverter()
    for v in range(5):
        hub.update_raw("cam_high", v, stamp=10.0 + v, converter=conv)
    assert conv.calls == 0  # the callback did no conversion
    a = hub.observe()
    b = hub.observe()
    assert conv.calls == 1  # only the latest, once, cached
    assert a.frames["cam_high"].image[0, 0, 0] == 4 and a.frames["cam_high"].stamp == 14.0
    assert b.frames["cam_high"] is a.frames["cam_high"]


def test_stale_frame_refused_by_its_stamp_even_when_it_just_arrived():
    clock = Clock()
    hub = CameraHub(["cam_high"], max_age_s=0.5, clock=clock, stamp_clock=clock)
    conv = CountingConverter()
    hub.update_raw("cam_high", 1, stamp=clock.t - 0.8, converter=conv)  # captured 0.8 s ago, delivered now
    with pytest.raises(CameraUnavailable, match=r"cam_high: last frame 0\.80 s old by its header stamp > 0\.50 s"):
        hub.observe()
    hub.update_raw("cam_high", 2, stamp=clock.t - 0.1, converter=conv)
    assert hub.observe().frames["cam_high"].image[0, 0, 0] == 2
    clock.t += 0.6  # no newer message: the same frame is now 0.7 s old by its stamp
    st = hub.status()[0]
    assert st.stale and st.judged_by == "stamp" and st.age_s == pytest.approx(0.7)
    with pytest.raises(CameraUnavailable, match=r"0\.70 s old by its header stamp"):
        hub.observe()


def test_unstamped_frame_judged_by_arrival_and_future_stamp_refused():
    clock = Clock()
    hub = CameraHub(["cam_high"], max_age_s=0.5, clock=clock, stamp_clock=clock)
    conv = CountingConverter()
    hub.update_raw("cam_high", 1, stamp=0.0, converter=conv)  # a driver that leaves the stamp at zero
    assert hub.observe().frames["cam_high"].image[0, 0, 0] == 1
    assert hub.status()[0].judged_by == "arrival"
    clock.t += 0.6
    with pytest.raises(CameraUnavailable, match=r"\(unstamped\) arrived 0\.60 s ago"):
        hub.observe()
    hub.update_raw("cam_high", 2, stamp=clock.t + 3.0, converter=conv)  # camera clock 3 s ahead
    with pytest.raises(CameraUnavailable, match="3.00 s in the future.*not synchronised"):
        hub.observe()


def test_bad_latest_falls_back_to_good_only_while_fresh():
    """Rule: a bad newest message never refreshes a camera. The last good frame is used only while it
    is itself fresh by its own stamp; after that the camera is refused with the bad message's reason."""
    clock = Clock()
    hub = CameraHub(["cam_high"], max_age_s=0.5, clock=clock, stamp_clock=clock)
    conv = CountingConverter()
    hub.update_raw("cam_high", 7, stamp=clock.t, converter=conv)
    hub.observe()
    clock.t += 0.3
    hub.update_raw("cam_high", "image data too short", stamp=clock.t, converter=conv)
    obs = hub.observe()  # the good frame is 0.3 s old: still usable
    assert obs.frames["cam_high"].image[0, 0, 0] == 7
    clock.t += 0.3  # the good frame is now 0.6 s old; the bad (fresher) message must not make it look fresh
    with pytest.raises(CameraUnavailable, match="cam_high: last frame 0.60 s old.*image data too short"):
        hub.observe()


def test_bad_only_camera_reported_by_name_and_reason():
    clock = Clock()
    hub = CameraHub(["cam_high", "cam_left_wrist"], clock=clock, stamp_clock=lambda: 2.0)
    conv = CountingConverter()
    hub.update_raw("cam_high", 1, stamp=1.0, converter=conv)
    hub.update_raw("cam_left_wrist", "unsupported image encoding 'yuv422'", stamp=1.0, converter=conv)
    with pytest.raises(CameraUnavailable, match="cam_left_wrist: no good frame received; last message dropped: "
                                                "unsupported image encoding 'yuv422'"):
        hub.observe()
    hub.update_raw("cam_left_wrist", 2, stamp=2.0, converter=conv)
    assert set(hub.observe().frames) == {"cam_high", "cam_left_wrist"}


def test_pull_source_is_taken_once_per_observe_and_each_message_once():
    """A pull source runs only when someone observes; None keeps the previous frame; a message converts once."""
    from emu_ros.core.camera_hub import TakenMessage

    clock = Clock()
    queue = []  # what the "subscription" holds: the test pushes, the hub takes
    takes = []
    conv = CountingConverter()

    def take():
        takes.append(clock.t)
        return queue.pop() if queue else None

    hub = CameraHub(["cam_high"], max_age_s=0.5, clock=clock, stamp_clock=clock)
    hub.add_source("cam_high", take, conv)
    queue.append(TakenMessage(raw=7, stamp=clock.t))
    assert takes == [] and conv.calls == 0  # nothing runs before an observation is asked for
    assert hub.observe().frames["cam_high"].image[0, 0, 0] == 7
    assert len(takes) == 1 and conv.calls == 1
    clock.t += 0.2
    assert hub.observe().frames["cam_high"].image[0, 0, 0] == 7  # nothing new: the cached frame, no conversion
    assert len(takes) == 2 and conv.calls == 1
    clock.t += 0.4  # 0.6 s after its stamp: stale, and a pull with nothing new does not refresh it
    with pytest.raises(CameraUnavailable, match="0.60 s old by its header stamp"):
        hub.observe()
    # a message that waited 0.3 s in the subscription before the take is dated by when it arrived
    queue.append(TakenMessage(raw=9, stamp=0.0, waited_s=0.3))
    st = hub.status()[0]
    assert st.judged_by == "arrival" and st.age_s == pytest.approx(0.3) and st.received == 2
    assert st.delivery_s is None  # unstamped: no capture time to measure delivery from
    clock.t += 1.0
    queue.append(TakenMessage(raw=10, stamp=clock.t - 0.25, waited_s=0.1))  # captured 0.25 s ago, arrived 0.1 s ago
    assert hub.status(pull=False)[0].received == 2 and queue, "pull=False takes nothing"
    st = hub.status()[0]
    assert st.judged_by == "stamp" and st.age_s == pytest.approx(0.25) and st.delivery_s == pytest.approx(0.15)
    hub.clear_sources()
    queue.append(TakenMessage(raw=11, stamp=clock.t))
    hub.observe()
    assert queue, "a cleared source is never called again"
