"""Pinhole maths, transforms and depth decoding of emu_ros.perception (no ROS, no simulator)."""
from __future__ import annotations

import numpy as np
import pytest

from emu_ros.core.kinematics import rpy_to_matrix
from emu_ros.perception.geometry import CameraIntrinsics, RigidTransform, matrix_to_rpy, quat_to_matrix
from emu_ros.perception.rgbd import DepthError, RGBDFrame, depth_to_metres


def test_backproject_inverts_project():
    K = CameraIntrinsics(fx=600, fy=610, cx=319.5, cy=239.5, width=640, height=480)
    p = np.array([[0.1, -0.05, 0.7], [-0.2, 0.1, 1.3]])
    uv = K.project(p)
    back = K.backproject(uv[:, 0], uv[:, 1], p[:, 2])
    np.testing.assert_allclose(back, p, atol=1e-12)
    # the principal point is the optical axis
    np.testing.assert_allclose(K.backproject(319.5, 239.5, 2.0), [0, 0, 2.0])


def test_scaled_intrinsics_keep_the_ray_of_a_pixel_edge():
    K = CameraIntrinsics.from_fovy(78.0, 640, 480)
    half = K.scaled(320, 240)
    # the image corner (pixel edge at -0.5) maps to the same ray at both resolutions
    a = K.backproject(-0.5, -0.5, 1.0)
    b = half.backproject(-0.5, -0.5, 1.0)
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert half.fx == pytest.approx(K.fx / 2)


def test_intrinsics_from_camera_info_k_and_bad_values():
    K = CameraIntrinsics.from_k([615.0, 0, 320.1, 0, 615.5, 241.2, 0, 0, 1], 640, 480)
    assert (K.fx, K.fy, K.cx, K.cy) == (615.0, 615.5, 320.1, 241.2)
    with pytest.raises(ValueError, match="fx, fy"):
        CameraIntrinsics.from_k([0.0] * 9, 640, 480)  # an uncalibrated CameraInfo
    with pytest.raises(ValueError, match="9 values"):
        CameraIntrinsics.from_k([1.0] * 4, 640, 480)


def test_rigid_transform_forms_agree():
    rpy = (0.3, -0.4, 2.0)
    T = RigidTransform.from_mapping({"xyz": [0.1, 0.5, 0.8], "rpy": list(rpy)})
    np.testing.assert_allclose(matrix_to_rpy(T.rotation), rpy, atol=1e-12)
    # the same rotation as a quaternion (x, y, z, w) from the matrix
    R = rpy_to_matrix(rpy)
    w = np.sqrt(1 + np.trace(R)) / 2
    q = [(R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w), w]
    np.testing.assert_allclose(quat_to_matrix(q), R, atol=1e-12)
    Tq = RigidTransform.from_mapping({"xyz": [0.1, 0.5, 0.8], "quat_xyzw": q})
    p = np.array([[0.2, 0.0, 0.5]])
    np.testing.assert_allclose(Tq.apply(p), T.apply(p), atol=1e-12)
    np.testing.assert_allclose(T.inverse().apply(T.apply(p)), p, atol=1e-12)
    np.testing.assert_allclose(T.compose(T.inverse()).translation, 0, atol=1e-12)
    back = RigidTransform.from_mapping(T.as_mapping())
    np.testing.assert_allclose(back.apply(p), T.apply(p), atol=1e-4)


@pytest.mark.parametrize("bad", [{"xyz": [0, 0, 0]}, {"xyz": [0, 0], "rpy": [0, 0, 0]},
                                 {"xyz": [0, 0, 0], "rpy": [0, 0, 0], "quat_xyzw": [0, 0, 0, 1]},
                                 {"xyz": [0, 0, 0], "quat_xyzw": [0, 0, 0, 2]}])
def test_rigid_transform_rejects_bad_profile_entries(bad):
    with pytest.raises(ValueError):
        RigidTransform.from_mapping(bad, "cameras[0].to_base")


def test_depth_decoding_units_and_invalid_readings():
    mm = np.array([[0, 500], [1234, 65535]], np.uint16)
    z = depth_to_metres(mm, "16UC1")
    assert np.isnan(z[0, 0])  # 0 = no reading
    np.testing.assert_allclose(z[0, 1], 0.5)
    np.testing.assert_allclose(z[1, 0], 1.234)
    m = np.array([[np.nan, 0.75], [np.inf, -1.0]], np.float32)
    z = depth_to_metres(m, "32FC1")
    assert np.isnan(z[0, 0]) and np.isnan(z[1, 0]) and np.isnan(z[1, 1]) and z[0, 1] == pytest.approx(0.75)
    with pytest.raises(DepthError, match="'rgb8' is not a depth format"):
        depth_to_metres(mm, "rgb8")
    with pytest.raises(DepthError, match="single-channel"):
        depth_to_metres(np.zeros((2, 2, 3)), "32FC1")


def test_frame_refuses_unaligned_depth():
    K = CameraIntrinsics.from_fovy(60, 8, 6)
    with pytest.raises(DepthError, match="not aligned"):
        RGBDFrame("cam", np.zeros((6, 8, 3), np.uint8), np.zeros((3, 4), np.float32), K, RigidTransform.identity())
