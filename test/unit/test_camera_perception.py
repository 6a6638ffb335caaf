"""CameraPerception on synthetic RGB-D frames (test/helpers/synthetic_rgbd.py): ray-cast boxes on a table.

Exact geometry (the top face and the table are intersected per pixel), so the estimate can be
checked against the true pose; and the refusals — out of view, wrong size, no depth, no camera —
are PerceptionErrors with their codes, never a guess.
"""
from __future__ import annotations

import numpy as np
import pytest

from emu_ros.core.perception_spec import ObjectSpec, PerceptionSpec
from emu_ros.core.protocols import CameraUnavailable, PerceptionError
from emu_ros.perception.camera_perception import CameraPerception, size_agreement
from emu_ros.perception.rgbd import RGBDFrame
from synthetic_rgbd import scene

CUBE = ObjectSpec(name="box", aliases=("red cube", "cube"), size=(0.04, 0.04, 0.04), colour=(255, 0, 0))
SOCKET = ObjectSpec(name="socket", aliases=("blue socket",), size=(0.12, 0.04, 0.04), colour=(0, 0, 255))


class Frames:
    """An RGBDSource that returns fixed frames (or raises what a missing camera raises)."""

    def __init__(self, frame=None, error: str = ""):
        self.frame, self.error = frame, error

    def rgbd(self, cameras):
        if self.error:
            raise CameraUnavailable(self.error)
        return {"cam_high": self.frame}


def perception(frame, **kw) -> CameraPerception:
    spec = PerceptionSpec(detector="colour", cameras=("cam_high",), objects=(CUBE, SOCKET), **kw)
    return CameraPerception(spec, Frames(frame))


@pytest.mark.parametrize("centre,yaw", [((0.05, 0.02, 0.02), 0.0), ((-0.12, 0.09, 0.02), 0.5),
                                        ((0.2, -0.1, 0.02), -0.3)])
def test_cube_position_and_yaw_from_its_top_face(centre, yaw):
    frame = scene([(centre, CUBE.size, yaw, (230, 20, 20))])
    est = perception(frame).locate("the red cube")
    assert est.name == "box" and est.source == "camera-colour:cam_high"
    np.testing.assert_allclose(est.position, centre, atol=0.002)  # 1 px is ~1.5 mm at 0.76 m
    d = (est.yaw - yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4  # a square top: yaw mod 90 degrees
    assert abs(d) < np.radians(3)
    assert est.confidence > 0.9


def test_two_objects_of_different_colour_and_an_elongated_one():
    frame = scene([((0.05, 0.0, 0.02), CUBE.size, 0.0, (255, 0, 0)),
                   ((-0.1, 0.05, 0.02), SOCKET.size, 0.4, (0, 0, 230))])
    p = perception(frame)
    sock = p.locate("blue socket")
    np.testing.assert_allclose(sock.position, (-0.1, 0.05, 0.02), atol=0.002)
    d = (sock.yaw - 0.4 + np.pi / 2) % np.pi - np.pi / 2  # the long axis: known mod 180 degrees
    assert abs(d) < np.radians(2)
    np.testing.assert_allclose(p.locate("cube").position, (0.05, 0.0, 0.02), atol=0.002)


def test_out_of_view_is_object_not_found():
    frame = scene([((0.05, 0.0, 0.02), CUBE.size, 0.0, (255, 0, 0))])
    with pytest.raises(PerceptionError, match="socket is not in view") as e:
        perception(frame).locate("the blue socket")
    assert e.value.code == "object_not_found"


def test_a_blob_of_the_wrong_size_is_refused_not_used():
    # a red thing 16 cm long where a 4 cm cube is expected: seen, but not the cube
    frame = scene([((0.05, 0.0, 0.02), (0.16, 0.16, 0.04), 0.0, (255, 0, 0))])
    with pytest.raises(PerceptionError, match=r"seen with confidence 0\.[0-4]\d < min_confidence 0.50") as e:
        perception(frame).locate("cube")
    assert e.value.code == "low_confidence"
    assert "size 0." in str(e.value)  # the factor that refused it is named


def test_no_depth_on_the_object_is_refused():
    frame = scene([((0.05, 0.0, 0.02), CUBE.size, 0.0, (255, 0, 0))])
    depth = frame.depth.copy()
    depth[frame.rgb[..., 0] > 200] = np.nan  # e.g. a shiny surface the sensor cannot read
    blind = RGBDFrame(frame.camera, frame.rgb, depth, frame.intrinsics, frame.T_base_camera)
    with pytest.raises(PerceptionError, match="with a depth reading") as e:
        perception(blind).locate("cube")
    assert e.value.code == "object_not_found"


def test_unknown_object_is_none_and_missing_camera_is_an_error():
    frame = scene([((0.05, 0.0, 0.02), CUBE.size, 0.0, (255, 0, 0))])
    assert perception(frame).locate("the giraffe") is None
    spec = PerceptionSpec(detector="colour", cameras=("cam_high",), objects=(CUBE,))
    with pytest.raises(PerceptionError, match="no depth image received") as e:
        CameraPerception(spec, Frames(error="camera 'cam_high': no depth image received on /d")).locate("cube")
    assert e.value.code == "camera_unavailable"


def test_size_agreement_bounds():
    assert size_agreement(0.04, 0.04) == 1.0
    assert size_agreement(0.06, 0.04) == 1.0  # within the slack (occlusion, tilt)
    assert 0.0 < size_agreement(0.09, 0.04) < 1.0
    assert size_agreement(0.2, 0.04) == 0.0 and size_agreement(0.0, 0.04) == 0.0
