"""Visual check: the measure's parts, ROI handling, and calibration that generalises to unseen frames."""
from __future__ import annotations

import numpy as np
import pytest
from fakes import Scene

from emu_ros.bridge.visual_check import (CalibrationSample, HistSSIMJudge, StepJudge, calibrate_threshold, crop_roi,
                                         evaluate_threshold, histogram_intersection, judge_from_profile, resize_area,
                                         ssim)


def test_parts_behave():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 50, 3)).astype(float)
    assert histogram_intersection(a, a) == pytest.approx(1.0)
    assert ssim(a.mean(2), a.mean(2)) == pytest.approx(1.0)
    red, green = np.zeros((4, 4, 3)), np.zeros((4, 4, 3))
    red[..., 0], green[..., 1] = 200.0, 200.0
    assert histogram_intersection(red, green) == 0.0
    assert histogram_intersection(red, red * 0.5) == pytest.approx(1.0)  # brightness does not matter
    assert ssim(a.mean(2), 255 - a.mean(2)) < 0
    r = resize_area(np.arange(16.0).reshape(4, 4), (2, 2))
    assert r.tolist() == [[2.5, 4.5], [10.5, 12.5]]
    assert resize_area(np.ones((3, 5, 3)), (6, 8)).shape == (6, 8, 3)


def test_crop_roi_fractions():
    img = np.zeros((100, 200, 3))
    assert crop_roi(img, (0.25, 0.5, 0.75, 1.0)).shape == (50, 100, 3)
    assert crop_roi(img, (0.5, 0.5, 0.5001, 0.5001)).shape[:2] == (1, 1)


def test_roi_restricts_the_comparison():
    base = Scene(cube_xy=(100, 70)).render()
    moved = Scene(cube_xy=(100, 20)).render()
    full = HistSSIMJudge().score(base, moved)[0]
    left_half = HistSSIMJudge(roi=(0.0, 0.0, 0.5, 1.0)).score(base, moved)[0]
    assert left_half == pytest.approx(1.0) and full < 0.95


def test_protocol_and_profile_factory(profile):
    judge = judge_from_profile(profile.visual_check)
    assert isinstance(judge, StepJudge)
    assert judge.threshold == profile.visual_check.threshold and judge.roi == profile.visual_check.roi
    v = judge.judge("lift the cube", Scene().render(), Scene().render())
    assert v.passed and v.score == pytest.approx(1.0) and v.details["method"] == "hist_ssim"


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="weights"):
        HistSSIMJudge(w_hist=-1)
    with pytest.raises(ValueError, match="bins"):
        HistSSIMJudge(bins=1)


def _episode(seed: int, success: bool) -> CalibrationSample:
    """A toy pick step: the cube starts on the table and should end lifted at the meeting point."""
    rng = np.random.default_rng(seed)
    start = (int(rng.integers(20, 60)), int(rng.integers(25, 75)))
    goal = (int(rng.integers(56, 72)), int(rng.integers(25, 45)))
    before = Scene(cube_xy=start, noise_seed=seed * 3).render()
    predicted = Scene(cube_xy=goal, lifted=True, noise_seed=seed * 3 + 1).render()
    if success:  # the real outcome is close to, not exactly, the prediction
        jitter = rng.integers(-3, 4, 2)
        observed = Scene(cube_xy=(goal[0] + jitter[0], goal[1] + jitter[1]), lifted=True,
                         gripper_xy=(goal[0], goal[1] - 12), noise_seed=seed * 3 + 2).render()
    else:  # missed grasp: the cube stays (or is knocked a little) on the table, the gripper above the goal
        knock = rng.integers(-8, 9, 2) if rng.random() < 0.5 else (0, 0)
        observed = Scene(cube_xy=(start[0] + knock[0], start[1] + knock[1]), gripper_xy=(goal[0], goal[1] - 12),
                         noise_seed=seed * 3 + 2).render()
    gain = rng.uniform(0.9, 1.1)  # lighting differences between the prediction and the camera
    observed = np.clip(observed * gain, 0, 255).astype(np.uint8)
    return CalibrationSample(predicted=predicted, observed=observed, success=success, before=before)


@pytest.mark.parametrize("use_before", [True, False])
def test_calibrated_threshold_separates_unseen_success_and_failure(use_before):
    def samples(seeds):
        out = []
        for s in seeds:
            for ok in (True, False):
                smp = _episode(s, ok)
                out.append(smp if use_before else CalibrationSample(smp.predicted, smp.observed, smp.success))
        return out

    judge = HistSSIMJudge()
    report = calibrate_threshold(judge, samples(range(0, 30)))
    assert report.accuracy >= 0.95
    calibrated = judge.with_threshold(report.threshold)
    held_out = samples(range(1000, 1060))
    scores = [calibrated.score(s.predicted, s.observed, s.before)[0] for s in held_out]
    test = evaluate_threshold(scores, [s.success for s in held_out], calibrated.threshold)
    assert test.precision >= 0.9 and test.recall >= 0.9 and test.failure_recall >= 0.9, test.summary()


def test_calibration_needs_both_classes():
    smp = _episode(0, True)
    with pytest.raises(ValueError, match="success and failure"):
        calibrate_threshold(HistSSIMJudge(), [smp, smp])


def test_evaluate_threshold_counts():
    r = evaluate_threshold([0.9, 0.8, 0.4, 0.3], [True, False, True, False], 0.5)
    assert (r.precision, r.recall, r.failure_recall, r.accuracy) == (0.5, 0.5, 0.5, 0.5)


def test_calibrate_from_a_frames_folder(tmp_path, capsys):
    from PIL import Image

    from emu_ros.bridge.visual_check import load_samples, main

    for seed in range(6):
        for ok in (True, False):
            s = _episode(seed, ok)
            d = tmp_path / ("success" if ok else "failure")
            d.mkdir(exist_ok=True)
            for part in ("predicted", "observed", "before"):
                Image.fromarray(getattr(s, part)).save(d / f"ep{seed}_{part}.png")
    samples = load_samples(tmp_path)
    assert len(samples) == 12 and sum(s.success for s in samples) == 6 and all(s.before is not None for s in samples)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy 1.000" in out and "set visual_check.threshold" in out
    (tmp_path / "success" / "ep0_observed.png").unlink()
    with pytest.raises(FileNotFoundError, match="ep0_observed.png missing"):
        load_samples(tmp_path)
