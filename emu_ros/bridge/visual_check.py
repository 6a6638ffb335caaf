"""Visual check: does the camera view after a step look like the step's predicted image?

The measure (`HistSSIMJudge`, method ``hist_ssim``) works on the profile's region of interest of
both images, resized to the same small grid, in pure numpy:

* colour: chromaticity-histogram intersection (r, g = R/sum, G/sum, `bins`² cells; brightness
  invariant) per tile of a `tiles` grid, the worst tile counted — robust to small shifts and
  lighting, yet a small object missing from (or added to) its tile lowers it;
* structural similarity (SSIM, Wang et al. 2004, 7×7 box windows, grey levels) on the downsampled
  grid, clipped to [0, 1] — sensitive to layout (where things are), tolerant of brightness changes;
* optionally, when the frame from *before* the step is known, change agreement: the correlation of
  where the scene changed in reality (|after − before|) with where the prediction says it changes
  (|predicted − before|). A missed grasp leaves the cube where it was, so the observed change map
  misses the predicted one even when most of the scene matches.

score = weighted mean of the available terms (weights renormalised when change agreement is
missing); the step passes when score ≥ threshold. The threshold is calibrated on recorded success
and failure frames with `calibrate_threshold`, which reports precision and recall (success = the
positive class). Generated images and real views differ in style, so a threshold that is not
calibrated for the robot and camera is a guess: the profile's default (0.5) is only a start.

Measured on the simulated ALOHA cube transfer (cam_high, 40 seeds, reference step images; success
= the view after the step, failure = the view when the step did nothing; calibrated on seeds 0-19,
tested on 20-39): with the before-frame, threshold 0.71-0.85, precision 1.00 / recall 1.00 both
when the step images come from the same seed and from another seed; without the before-frame and
step images from another seed, 0.80 / 0.84. The profile default 0.5 passes every frame there:
calibrate before relying on the check.

Limitation: when the scene already looked like the prediction *before* the step, "nothing
changed" scores low on the change term; set `w_change=0` where steps often repeat a finished state.

`StepJudge` is the seam for other judges (a learned success classifier, a VLM).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VisualVerdict:
    """A judge's answer: score (higher = more alike), the threshold used, pass/fail and the terms."""

    score: float
    threshold: float
    passed: bool
    details: dict = field(default_factory=dict)


@runtime_checkable
class StepJudge(Protocol):
    """Judges whether a step succeeded from camera images (plug in a learned judge here)."""

    name: str

    def judge(self, text: str, predicted: np.ndarray, observed: np.ndarray,
              before: Optional[np.ndarray] = None) -> VisualVerdict:
        """Compare the view after a step (and before it, if known) with the step's predicted image."""
        ...


def crop_roi(image: np.ndarray, roi: Sequence[float]) -> np.ndarray:
    """Crop a fractional ROI (x0, y0, x1, y1); always at least one pixel."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in roi)
    c0, c1 = int(np.floor(x0 * w)), max(int(np.ceil(x1 * w)), int(np.floor(x0 * w)) + 1)
    r0, r1 = int(np.floor(y0 * h)), max(int(np.ceil(y1 * h)), int(np.floor(y0 * h)) + 1)
    return image[r0:min(r1, h), c0:min(c1, w)]


def resize_area(image: np.ndarray, size: tuple) -> np.ndarray:
    """Area-average resize to (rows, cols) as float64; upsamples by repetition when needed."""
    img = np.asarray(image, dtype=np.float64)
    rows, cols = size
    if img.shape[0] < rows:
        img = np.repeat(img, int(np.ceil(rows / img.shape[0])), axis=0)
    if img.shape[1] < cols:
        img = np.repeat(img, int(np.ceil(cols / img.shape[1])), axis=1)
    re_ = np.linspace(0, img.shape[0], rows + 1).astype(int)
    ce = np.linspace(0, img.shape[1], cols + 1).astype(int)
    s = np.add.reduceat(img, re_[:-1], axis=0)
    s = np.add.reduceat(s, ce[:-1], axis=1)
    counts = np.outer(np.diff(re_), np.diff(ce))
    return s / (counts[..., None] if s.ndim == 3 else counts)


def histogram_intersection(a: np.ndarray, b: np.ndarray, bins: int = 8) -> float:
    """Intersection in [0, 1] of normalised chromaticity histograms (r, g = R/sum, G/sum).

    Chromaticity ignores brightness, so a camera's gain or the lighting of a generated image
    does not move pixels between bins the way raw RGB histograms do.
    """
    def hist(x: np.ndarray) -> np.ndarray:
        x = x.reshape(-1, 3).astype(np.float64) + 1.0
        total = x.sum(axis=1)
        r = np.clip((x[:, 0] / total * bins).astype(int), 0, bins - 1)
        g = np.clip((x[:, 1] / total * bins).astype(int), 0, bins - 1)
        h = np.bincount(r * bins + g, minlength=bins * bins).astype(np.float64)
        return h / max(h.sum(), 1.0)
    return float(np.minimum(hist(a), hist(b)).sum())


def tiled_histogram_similarity(a: np.ndarray, b: np.ndarray, tiles: tuple = (4, 4), bins: int = 8) -> float:
    """The worst tile's histogram intersection over a grid of tiles.

    A whole-image histogram hardly changes when a small object is somewhere else; the tile where it
    should be (or where it wrongly is) does. Tiles are large enough to tolerate a few cells of shift.
    """
    rows, cols = a.shape[:2]
    ty, tx = max(1, min(tiles[0], rows)), max(1, min(tiles[1], cols))
    ys = np.linspace(0, rows, ty + 1).astype(int)
    xs = np.linspace(0, cols, tx + 1).astype(int)
    return min(histogram_intersection(a[ys[i]:ys[i + 1], xs[j]:xs[j + 1]], b[ys[i]:ys[i + 1], xs[j]:xs[j + 1]], bins)
               for i in range(ty) for j in range(tx))


def _box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over every k×k window (valid positions only) via an integral image."""
    c = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean SSIM of two grey images in 0..255 (box windows; constants from Wang et al. 2004)."""
    k = min(window, a.shape[0], a.shape[1])
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ma, mb = _box_mean(a, k), _box_mean(b, k)
    va = _box_mean(a * a, k) - ma * ma
    vb = _box_mean(b * b, k) - mb * mb
    cov = _box_mean(a * b, k) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s.mean())


#: ITU-R BT.601 luma weights: RGB -> grey for SSIM.
GREY = np.array([0.299, 0.587, 0.114])


def grey_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two RGB images (same size) on their grey levels."""
    return ssim(np.asarray(a, dtype=np.float64) @ GREY, np.asarray(b, dtype=np.float64) @ GREY)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8-range images (inf when identical)."""
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def change_agreement(predicted: np.ndarray, observed: np.ndarray, before: np.ndarray) -> float:
    """Agreement in [0, 1] between where the scene changed and where the prediction says it changes.

    Cosine similarity of the two per-cell change magnitudes; 1.0 when neither image changed.
    """
    dp = np.abs(predicted - before).sum(axis=2).ravel()
    do = np.abs(observed - before).sum(axis=2).ravel()
    # Ignore changes below ~4 grey levels per channel (sensor noise, codec differences).
    dp = np.where(dp > 12.0, dp, 0.0)
    do = np.where(do > 12.0, do, 0.0)
    na, nb = np.linalg.norm(dp), np.linalg.norm(do)
    if na < 1e-9 and nb < 1e-9:
        return 1.0
    if na < 1e-9 or nb < 1e-9:
        return 0.0
    return float(np.clip(dp @ do / (na * nb), 0.0, 1.0))


@dataclass(frozen=True)
class HistSSIMJudge:
    """The default documented measure (see the module docstring); configurable and immutable."""

    roi: tuple = (0.0, 0.0, 1.0, 1.0)
    threshold: float = 0.5
    #: Grid the ROI is resized to before comparing (rows, cols): small = tolerant of small shifts.
    size: tuple = (48, 64)
    bins: int = 8
    #: Tile grid (rows, cols) of the colour term; (1, 1) = one whole-ROI histogram.
    tiles: tuple = (4, 4)
    w_hist: float = 0.3
    w_ssim: float = 0.4
    w_change: float = 0.3
    name: str = "hist_ssim"

    def __post_init__(self) -> None:
        if min(self.w_hist, self.w_ssim, self.w_change) < 0 or self.w_hist + self.w_ssim <= 0:
            raise ValueError(f"visual check weights must be >= 0 with w_hist + w_ssim > 0, got "
                             f"{self.w_hist}, {self.w_ssim}, {self.w_change}")
        if not 2 <= self.bins <= 64:
            raise ValueError(f"visual check bins must be in 2..64, got {self.bins}")

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """ROI crop + resize to the comparison grid (float RGB)."""
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        return resize_area(crop_roi(img[:, :, :3], self.roi), self.size)

    def score(self, predicted: np.ndarray, observed: np.ndarray, before: Optional[np.ndarray] = None) -> tuple:
        """(score, terms): the weighted similarity in [0, 1] and each term."""
        p, o = self.prepare(predicted), self.prepare(observed)
        terms = {"hist": tiled_histogram_similarity(p, o, self.tiles, self.bins),
                 "ssim": max(0.0, grey_ssim(p, o))}
        weights = {"hist": self.w_hist, "ssim": self.w_ssim}
        if before is not None and self.w_change > 0:
            terms["change"] = change_agreement(p, o, self.prepare(before))
            weights["change"] = self.w_change
        total = sum(weights.values())
        return float(sum(terms[k] * weights[k] for k in terms) / total), terms

    def judge(self, text: str, predicted: np.ndarray, observed: np.ndarray,
              before: Optional[np.ndarray] = None) -> VisualVerdict:
        """Pass/fail of one step by comparing the observed view with the predicted one."""
        s, terms = self.score(predicted, observed, before)
        return VisualVerdict(score=s, threshold=self.threshold, passed=s >= self.threshold,
                             details={"method": self.name, **{k: round(v, 4) for k, v in terms.items()}})

    def with_threshold(self, threshold: float) -> "HistSSIMJudge":
        """A copy with another threshold (e.g. from `calibrate_threshold`)."""
        from dataclasses import replace

        return replace(self, threshold=float(threshold))


def judge_from_profile(spec) -> HistSSIMJudge:
    """The judge a robot profile's `visual_check` section describes (roi, threshold, method)."""
    if spec.method != "hist_ssim":
        raise ValueError(f"visual_check.method {spec.method!r} is not built in (only 'hist_ssim'); "
                         "pass your own StepJudge to the StepMonitor instead")
    return HistSSIMJudge(roi=tuple(spec.roi), threshold=float(spec.threshold))


@dataclass(frozen=True)
class CalibrationSample:
    """One labelled frame pair: the predicted step image, the view after it, success or not."""

    predicted: np.ndarray
    observed: np.ndarray
    success: bool
    before: Optional[np.ndarray] = None


@dataclass(frozen=True)
class CalibrationReport:
    """Threshold chosen and how well it separates success (positive) from failure frames."""

    threshold: float
    precision: float  # of "passed": how many were real successes
    recall: float  # of real successes: how many passed
    failure_recall: float  # of real failures: how many were caught (did not pass)
    accuracy: float
    n_success: int
    n_failure: int
    scores: tuple = ()

    def summary(self) -> str:
        """One line with the threshold and every rate."""
        return (f"threshold {self.threshold:.3f}: precision {self.precision:.3f}, recall {self.recall:.3f}, "
                f"failures caught {self.failure_recall:.3f}, accuracy {self.accuracy:.3f} "
                f"({self.n_success} success / {self.n_failure} failure frames)")


def evaluate_threshold(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> CalibrationReport:
    """Precision/recall of `score >= threshold` as the success prediction."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pred = s >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(np.sum(~pred & ~y))
    return CalibrationReport(threshold=float(threshold), precision=tp / max(tp + fp, 1), recall=tp / max(tp + fn, 1),
                             failure_recall=tn / max(tn + fp, 1), accuracy=(tp + tn) / max(len(s), 1),
                             n_success=int(y.sum()), n_failure=int((~y).sum()), scores=tuple(float(v) for v in s))


def calibrate_threshold(judge: HistSSIMJudge, samples: Sequence[CalibrationSample]) -> CalibrationReport:
    """Choose the threshold with the best balanced accuracy on labelled frames (midpoint between scores).

    Needs at least one success and one failure sample. Returns the report; apply it with
    `judge.with_threshold(report.threshold)` and store it in the robot profile's visual_check.threshold.
    """
    labels = [bool(s.success) for s in samples]
    if not any(labels) or all(labels):
        raise ValueError(f"calibration needs success and failure frames; got {sum(labels)} success and "
                         f"{len(labels) - sum(labels)} failure samples")
    scores = [judge.score(s.predicted, s.observed, s.before)[0] for s in samples]
    uniq = np.unique(scores)
    candidates = np.concatenate([[uniq[0] - 1e-6], (uniq[:-1] + uniq[1:]) / 2.0, [uniq[-1] + 1e-6]])
    best, best_key = None, None
    for t in candidates:
        r = evaluate_threshold(scores, labels, float(t))
        key = (0.5 * (r.recall + r.failure_recall), r.precision)
        if best_key is None or key > best_key:
            best, best_key = r, key
    log.info("visual check calibration: %s", best.summary())
    return best


def load_samples(root) -> list:
    """Labelled frame pairs from a folder: `success/` and `failure/`, each holding
    `<name>_predicted.png` + `<name>_observed.png` (+ optional `<name>_before.png`)."""
    from pathlib import Path

    from PIL import Image

    def read(p: "Path") -> np.ndarray:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)

    root = Path(root)
    samples = []
    for label in ("success", "failure"):
        folder = root / label
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} missing: calibration frames go in {root}/success and {root}/failure")
        for pred in sorted(folder.glob("*_predicted.png")):
            stem = pred.name[: -len("_predicted.png")]
            obs = folder / f"{stem}_observed.png"
            if not obs.is_file():
                raise FileNotFoundError(f"{obs} missing (every *_predicted.png needs its *_observed.png)")
            before = folder / f"{stem}_before.png"
            samples.append(CalibrationSample(read(pred), read(obs), label == "success",
                                             read(before) if before.is_file() else None))
    return samples


def main(argv=None) -> int:
    """Calibrate the threshold on recorded frames and print precision/recall.

    Example: python -m emu_ros.bridge.visual_check frames/ --profile aloha
    """
    import argparse

    from emu_ros.core.profile import load_profile

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("frames", help="folder with success/ and failure/ frame pairs (see load_samples)")
    ap.add_argument("--profile", default="sim_aloha", help="robot profile whose visual_check ROI to use")
    args = ap.parse_args(argv)
    judge = judge_from_profile(load_profile(args.profile).visual_check)
    report = calibrate_threshold(judge, load_samples(args.frames))
    print(report.summary())
    print(f"set visual_check.threshold: {report.threshold:.3f} in the {args.profile} profile")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
