"""MarkerDetector on synthetic images (test/helpers/marker_images.py): a real ArUco marker warped into a textured
background with the homography of a known pose, so the recovered pose can be compared with the truth."""
from __future__ import annotations

import numpy as np
import pytest

from emu_ros.core.perception_spec import ObjectSpec, PerceptionSpec
from emu_ros.perception.detectors import make_detector
from emu_ros.perception.markers import MarkerDetector, marker_object_points, reprojection_score
from marker_images import CAM, background, facing_camera, render, rotation_error_deg

POSES = [
    (0.03, (0.45, -0.1, 0.2), np.array([0.02, -0.01, 0.50])),
    (0.03, (-0.3, 0.5, -1.0), np.array([-0.06, 0.04, 0.55])),
    (0.05, (0.6, 0.3, 2.5), np.array([0.10, 0.05, 0.48])),
]


@pytest.mark.parametrize("size, rpy, t", POSES)
def test_pose_recovered(size, rpy, t):
    R = facing_camera(rpy)
    rgb = render([(7, R, t)], size)
    dets = MarkerDetector("DICT_4X4_50", size).detect(rgb, ObjectSpec("box", marker_id=7), CAM.matrix)
    assert len(dets) == 1
    d = dets[0]
    t_err = np.linalg.norm(d.marker_translation - t)
    r_err = rotation_error_deg(d.marker_rotation, R)
    assert t_err < 0.005, f"translation error {t_err * 1000:.2f} mm"
    assert r_err < 3.0, f"rotation error {r_err:.2f} deg"
    assert d.source == "aruco" and d.obj == "box"
    assert 0.8 < d.score <= 1.0
    # the mask is the marker's quadrilateral: its area and centre match the projected square
    quad = CAM.project(marker_object_points(size) @ R.T + t)
    (ax, ay), (bx, by) = quad[2] - quad[0], quad[3] - quad[1]
    area = 0.5 * abs(ax * by - ay * bx)
    assert d.mask.shape == (CAM.height, CAM.width) and d.mask.dtype == bool
    assert abs(d.pixels - area) < 0.1 * area
    v, u = np.nonzero(d.mask)
    assert np.linalg.norm([u.mean() - quad[:, 0].mean(), v.mean() - quad[:, 1].mean()]) < 1.5


def test_corners_follow_opencv_pixel_centres():
    """A frontal marker centred on the principal point: corners exactly where the pinhole puts them
    (catches a half-pixel convention slip, e.g. the AprilTag refinement's (0.5, 0.5) centres)."""
    t = np.array([0.0, 0.0, 0.5])
    R = facing_camera((0.0, 0.0, 0.0))
    s = MarkerDetector().sightings(render([(7, R, t)], 0.03), CAM.matrix)[7]
    quad = CAM.project(marker_object_points(0.03) @ R.T + t)
    np.testing.assert_allclose(s.corners, quad, atol=0.05)


def test_random_poses_within_tolerance():
    """3 cm markers 0.4-0.6 m away, tilted up to ~45 degrees, any in-plane turn."""
    rng = np.random.default_rng(1)
    t_err, r_err = [], []
    for k in range(12):
        R = facing_camera(tuple(rng.uniform([-0.8, -0.8, -3.1], [0.8, 0.8, 3.1])))
        t = np.array([*rng.uniform(-0.1, 0.1, 2), rng.uniform(0.4, 0.6)])
        [d] = MarkerDetector().detect(render([(7, R, t)], 0.03, seed=k), ObjectSpec("box", marker_id=7), CAM.matrix)
        t_err.append(np.linalg.norm(d.marker_translation - t))
        r_err.append(rotation_error_deg(d.marker_rotation, R))
    assert max(t_err) < 0.005 and np.median(t_err) < 0.0015, f"translation errors (mm) {np.round(t_err, 4) * 1000}"
    assert max(r_err) < 3.0 and np.median(r_err) < 1.0, f"rotation errors (deg) {np.round(r_err, 2)}"


def test_other_id_ignored_and_sightings_by_id():
    t1, t2 = np.array([-0.08, 0.0, 0.5]), np.array([0.08, 0.02, 0.5])
    rgb = render([(3, facing_camera((0.2, 0, 0)), t1), (11, facing_camera((0, 0.3, 0.5)), t2)], 0.04)
    det = MarkerDetector(marker_size=0.04)
    assert det.detect(rgb, ObjectSpec("box", marker_id=5), CAM.matrix) == []
    [d] = det.detect(rgb, ObjectSpec("box", marker_id=11), CAM.matrix)
    assert np.linalg.norm(d.marker_translation - t2) < 0.005
    seen = det.sightings(rgb, CAM.matrix)
    assert sorted(seen) == [3, 11]
    assert np.linalg.norm(seen[3].translation - t1) < 0.005
    assert seen[3].corners.shape == (4, 2) and seen[3].reprojection_px < 0.5


def test_no_marker_gives_nothing():
    rgb = np.repeat(background(3)[..., None], 3, axis=2)
    det = MarkerDetector()
    assert det.detect(rgb, ObjectSpec("box", marker_id=7), CAM.matrix) == []
    assert det.sightings(rgb, CAM.matrix) == {}


def test_marker_size_scales_translation():
    """A wrong printed size scales the distance, not the direction: the size must be right."""
    t = np.array([0.0, 0.02, 0.5])
    rgb = render([(7, facing_camera((0.3, 0, 0)), t)], 0.03)
    [d] = MarkerDetector(marker_size=0.06).detect(rgb, ObjectSpec("box", marker_id=7), CAM.matrix)
    np.testing.assert_allclose(d.marker_translation, 2 * t, atol=0.01)


def test_apriltag_dictionary():
    t = np.array([0.01, 0.0, 0.45])
    R = facing_camera((0.3, 0.2, 0.4))
    rgb = render([(4, R, t)], 0.04, dictionary="DICT_APRILTAG_36h11")
    [d] = MarkerDetector("DICT_APRILTAG_36h11", 0.04).detect(rgb, ObjectSpec("tag", marker_id=4), CAM.matrix)
    assert np.linalg.norm(d.marker_translation - t) < 0.005
    assert rotation_error_deg(d.marker_rotation, R) < 3.0


def test_score_falls_with_reprojection_error():
    assert reprojection_score(0.0) == 1.0
    assert reprojection_score(2.0) == pytest.approx(0.5)
    assert reprojection_score(1.0) > reprojection_score(3.0) > reprojection_score(10.0) > 0


def test_refusals():
    with pytest.raises(ValueError, match="DICT_9X9"):
        MarkerDetector("DICT_9X9_50")
    with pytest.raises(ValueError, match="marker_size"):
        MarkerDetector(marker_size=0)
    with pytest.raises(ValueError, match="marker_id"):
        MarkerDetector().detect(np.zeros((48, 64, 3), np.uint8), ObjectSpec("box"), CAM.matrix)


def test_make_detector_builds_marker_detector():
    spec = PerceptionSpec(detector="aruco", marker_dictionary="DICT_5X5_100", marker_size=0.05,
                          objects=(ObjectSpec("box", marker_id=1),))
    det = make_detector(spec)
    assert isinstance(det, MarkerDetector) and det.marker_size == 0.05 and det.dictionary == "DICT_5X5_100"
