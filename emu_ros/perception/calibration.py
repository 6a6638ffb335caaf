"""Camera-to-base calibration from marker sightings: the rigid transform that best maps points seen
by the camera onto the same points known in the robot base frame.

The use: a marker fixed on a gripper, the arm moved to several poses. At each pose the camera gives
the marker centre in its optical frame (`MarkerDetector.sightings`) and forward kinematics plus the
marker's offset in the tool frame gives it in the base frame. Least squares over the pairs gives
T_base_camera; the residual says how far to trust it (and catches a wrong offset or a bad pose).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emu_ros.perception.geometry import RigidTransform

#: fewest point pairs accepted: 3 determine a rotation exactly, a 4th leaves a residual to check
MIN_POINTS = 4
#: points whose second principal spread is below this fraction of the first are "collinear":
#: the rotation about that line is then set by noise alone
MIN_SPREAD_RATIO = 0.02


@dataclass(frozen=True)
class CalibrationFit:
    """A fitted transform (maps src into dst) and how well it reproduces the pairs (metres)."""

    transform: RigidTransform
    rms_m: float
    max_m: float
    residuals: np.ndarray
    n: int


def _as_points(p: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(p, float)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"{name} must be [N, 3] points, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _check_spread(p: np.ndarray, name: str) -> None:
    """Refuse points that cannot fix a rotation: all at one place, or along one line."""
    spread = np.linalg.svd(p - p.mean(axis=0), compute_uv=False) / np.sqrt(len(p))  # RMS along principal axes
    if spread[0] < 1e-6:
        raise ValueError(f"{name}: all {len(p)} points are at the same place; move the marker between poses")
    if spread[1] < MIN_SPREAD_RATIO * spread[0]:
        raise ValueError(f"{name}: the {len(p)} points are (nearly) collinear (spread {spread[0] * 1000:.1f} mm "
                         f"along one line, {spread[1] * 1000:.2f} mm across it); the rotation about that line "
                         f"is undetermined; add poses off the line")


def _kabsch(src: np.ndarray, dst: np.ndarray) -> RigidTransform:
    """Least-squares rotation and translation (no scale), forced to det +1 (no reflection)."""
    cs, cd = src.mean(axis=0), dst.mean(axis=0)
    U, _, Vt = np.linalg.svd((src - cs).T @ (dst - cd))
    d = np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    return RigidTransform(R, cd - R @ cs)


def _fit(src: np.ndarray, dst: np.ndarray, src_name: str, dst_name: str) -> CalibrationFit:
    src, dst = _as_points(src, src_name), _as_points(dst, dst_name)
    if len(src) != len(dst):
        raise ValueError(f"{src_name} has {len(src)} points but {dst_name} has {len(dst)}; they must pair up")
    if len(src) < MIN_POINTS:
        raise ValueError(f"need at least {MIN_POINTS} point pairs for a rigid fit with a residual, got {len(src)}")
    _check_spread(src, src_name)
    _check_spread(dst, dst_name)
    T = _kabsch(src, dst)
    r = np.linalg.norm(T.apply(src) - dst, axis=1)
    return CalibrationFit(T, float(np.sqrt(np.mean(r ** 2))), float(r.max()), r, len(r))


def fit_rigid(src: np.ndarray, dst: np.ndarray) -> CalibrationFit:
    """The rigid transform T minimising sum |T(src_i) - dst_i|^2 (Kabsch), with its residuals.

    Raises ValueError for fewer than 4 pairs, mismatched or non-finite input, or points that are
    coincident or nearly collinear (in either set).
    """
    return _fit(src, dst, "src", "dst")


def camera_to_base_from_sightings(marker_in_camera: np.ndarray, marker_in_base: np.ndarray) -> CalibrationFit:
    """T_base_camera from marker centres seen in the camera optical frame and known in the base frame."""
    return _fit(marker_in_camera, marker_in_base, "marker_in_camera", "marker_in_base")


def _flow_list(values: list) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def format_profile_lines(camera: str, fit: CalibrationFit) -> str:
    """The YAML to paste into the profile's camera entry (`cameras: - name: <camera>`), with a
    comment giving the residual so the user can judge it before trusting it."""
    m = fit.transform.as_mapping()
    return (f"# {camera}: camera-to-base from {fit.n} poses, residual rms {fit.rms_m * 1000:.1f} mm, "
            f"max {fit.max_m * 1000:.1f} mm\n"
            f"to_base: {{xyz: {_flow_list(m['xyz'])}, rpy: {_flow_list(m['rpy'])}}}\n")
