"""Rigid fits for camera-to-base calibration: recovery of a known transform, refusals of point sets
that cannot fix one, and the profile YAML round trip."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from emu_ros.core.kinematics import rpy_to_matrix
from emu_ros.perception.calibration import camera_to_base_from_sightings, fit_rigid, format_profile_lines
from emu_ros.perception.geometry import RigidTransform


def random_transform(rng: np.random.Generator) -> RigidTransform:
    return RigidTransform(rpy_to_matrix(rng.uniform(-np.pi, np.pi, 3) * [1, 0.45, 1]), rng.uniform(-0.8, 0.8, 3))


def angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R_a.T @ R_b) - 1) / 2, -1.0, 1.0))))


def test_recovers_known_transform_from_noisy_pairs():
    rng = np.random.default_rng(4)
    T = random_transform(rng)
    src = rng.uniform([-0.2, -0.2, 0.3], [0.2, 0.2, 0.7], (8, 3))  # marker centres 0.3-0.7 m in front
    noise = rng.normal(0, 0.001 / np.sqrt(3), (8, 3))  # 1 mm RMS in 3-D
    fit = fit_rigid(src, T.apply(src) + noise)
    assert fit.n == 8 and fit.residuals.shape == (8,)
    assert 0.0005 < fit.rms_m < 0.0015, fit.rms_m  # 6 of 24 coordinates absorbed by the fit: ~0.87 mm expected
    assert fit.max_m >= fit.rms_m and fit.max_m == pytest.approx(fit.residuals.max())
    assert angle_deg(fit.transform.rotation, T.rotation) < 0.5
    assert np.linalg.norm(fit.transform.translation - T.translation) < 0.003
    assert np.linalg.det(fit.transform.rotation) == pytest.approx(1.0)


def test_exact_pairs_fit_exactly_including_coplanar():
    rng = np.random.default_rng(5)
    T = random_transform(rng)
    src = np.column_stack([rng.uniform(-0.3, 0.3, (6, 2)), np.zeros(6)])  # all in one plane: still determined
    fit = fit_rigid(src, T.apply(src))
    assert fit.rms_m < 1e-9
    np.testing.assert_allclose(fit.transform.rotation, T.rotation, atol=1e-9)
    np.testing.assert_allclose(fit.transform.translation, T.translation, atol=1e-9)


def test_mirrored_points_give_a_rotation_not_a_reflection():
    rng = np.random.default_rng(6)
    src = rng.uniform(-0.3, 0.3, (10, 3))
    fit = fit_rigid(src, src * [1, 1, -1])
    assert np.linalg.det(fit.transform.rotation) == pytest.approx(1.0)
    assert fit.rms_m > 0.01  # a mirror image is no rigid motion: the residual says so


def test_refuses_too_few_points():
    p = np.array([[0.0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]])
    with pytest.raises(ValueError, match="at least 4 point pairs.*got 3"):
        fit_rigid(p, p)


def test_refuses_collinear_points():
    rng = np.random.default_rng(7)
    line = np.outer(np.linspace(0, 0.4, 6), [0.3, 0.5, 0.8]) + rng.normal(0, 1e-5, (6, 3))
    with pytest.raises(ValueError, match="src: .*collinear"):
        fit_rigid(line, line + 0.1)
    good = rng.uniform(-0.3, 0.3, (6, 3))
    with pytest.raises(ValueError, match="marker_in_base: .*collinear"):
        camera_to_base_from_sightings(good, line)


def test_refuses_coincident_mismatched_and_bad_input():
    with pytest.raises(ValueError, match="same place"):
        fit_rigid(np.ones((5, 3)), np.ones((5, 3)))
    good = np.random.default_rng(8).uniform(-0.3, 0.3, (6, 3))
    with pytest.raises(ValueError, match="6 points but dst has 5"):
        fit_rigid(good, good[:5])
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        fit_rigid(good[:, :2], good[:, :2])
    bad = good.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_rigid(good, bad)


def test_camera_to_base_direction():
    """The fit maps camera points into the base frame: T_base_camera, not its inverse."""
    rng = np.random.default_rng(9)
    T_base_camera = RigidTransform(rpy_to_matrix([-2.2, 0.1, 1.4]), np.array([0.35, -0.1, 0.6]))
    in_base = rng.uniform([0.1, -0.3, 0.05], [0.5, 0.3, 0.4], (7, 3))  # gripper marker at 7 arm poses
    in_camera = T_base_camera.inverse().apply(in_base)
    fit = camera_to_base_from_sightings(in_camera, in_base)
    np.testing.assert_allclose(fit.transform.apply(in_camera), in_base, atol=1e-9)
    np.testing.assert_allclose(fit.transform.translation, T_base_camera.translation, atol=1e-9)


def test_profile_lines_round_trip():
    rng = np.random.default_rng(10)
    T = random_transform(rng)
    src = rng.uniform(-0.3, 0.3, (9, 3))
    fit = fit_rigid(src, T.apply(src) + rng.normal(0, 0.0008, (9, 3)))
    text = format_profile_lines("cam_high", fit)
    comment = text.splitlines()[0]
    assert comment.startswith("# cam_high") and "9 poses" in comment
    assert f"rms {fit.rms_m * 1000:.1f} mm" in comment and f"max {fit.max_m * 1000:.1f} mm" in comment
    parsed = yaml.safe_load(text)
    assert set(parsed) == {"to_base"} and set(parsed["to_base"]) == {"xyz", "rpy"}
    back = RigidTransform.from_mapping(parsed["to_base"])
    np.testing.assert_allclose(back.translation, fit.transform.translation, atol=1e-5)
    assert angle_deg(back.rotation, fit.transform.rotation) < 0.002
