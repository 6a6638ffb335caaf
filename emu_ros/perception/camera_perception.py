"""CameraPerception: object positions in the base frame from the robot's own RGB-D cameras.

For each camera in the profile's `perception.cameras` the detector proposes candidates; each becomes
a 3-D estimate from the aligned depth, and the most confident one wins. A marker detection gives the
pose directly (solvePnP). A pixel mask (colour blob, detector box) gives the points it covers; the
object's centre is taken from its *top surface* — the points within a few millimetres of the highest
one — because that is the part a camera above a table sees whole: x, y = the centroid of the top
surface, z = its height minus half the object's height, yaw = the orientation of its minimum-area
rectangle (mod pi/2 for square footprints, as skills expect).

Confidence = detector score × depth coverage × size agreement (the seen footprint against the
object's declared size). Below `min_confidence`, or nothing seen, `locate` raises PerceptionError:
a step failure that re-plans, never a guess.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from emu_ros.core.perception_spec import ObjectSpec, PerceptionSpec
from emu_ros.core.protocols import CameraUnavailable, ObjectEstimate, PerceptionError
from emu_ros.perception.detection import Detection, Detector
from emu_ros.perception.detectors import make_detector
from emu_ros.perception.rgbd import RGBDFrame, RGBDSource

log = logging.getLogger(__name__)

#: points this close (m) below the highest point count as the top surface
TOP_BAND_M = 0.006
#: a footprint this many times too large or too small still counts as "the right size"
SIZE_SLACK = 1.6


@dataclass(frozen=True)
class Estimate:
    """One candidate's 3-D reading, with the factors of its confidence (kept for logs and benchmarks)."""

    position: np.ndarray
    yaw: float
    confidence: float
    camera: str
    detector_score: float
    coverage: float
    size_score: float
    footprint: tuple  # seen (long, short) side of the top surface, m

    def describe(self) -> str:
        return (f"{self.camera}: confidence {self.confidence:.2f} (detector {self.detector_score:.2f}, depth coverage "
                f"{self.coverage:.2f}, size {self.size_score:.2f}; footprint {self.footprint[0] * 100:.1f}x"
                f"{self.footprint[1] * 100:.1f} cm)")


def size_agreement(seen: float, expected: float) -> float:
    """1 within a factor SIZE_SLACK of the expected length, falling to 0 at twice that factor."""
    if seen <= 0 or expected <= 0:
        return 0.0
    excess = abs(np.log(seen / expected)) - np.log(SIZE_SLACK)
    return float(np.clip(1.0 - excess / np.log(2.0), 0.0, 1.0))


def estimate_from_mask(frame: RGBDFrame, det: Detection, obj: ObjectSpec) -> tuple:
    """(Estimate or None, reason) for a mask detection."""
    import cv2

    pts = frame.points(det.mask)
    if det.pixels == 0 or len(pts) < 6:
        return None, f"{frame.camera}: {det.pixels} px seen but only {len(pts)} with a depth reading"
    coverage = len(pts) / det.pixels
    # drop points far from the bulk (a mask edge that caught the table or a finger)
    med = np.median(pts, axis=0)
    reach = 0.75 * float(np.linalg.norm(obj.size))
    pts = pts[np.linalg.norm(pts - med, axis=1) <= reach]
    if len(pts) < 6:
        return None, f"{frame.camera}: the depth points do not form one object"
    z_top = float(np.percentile(pts[:, 2], 95))
    # the whole band, even for a thin object (a 6 mm napkin): it is never perfectly flat, and its two
    # halves may sit a hair apart in height
    band = pts[pts[:, 2] >= z_top - TOP_BAND_M]
    xy = band[:, :2].mean(axis=0)
    (_, _), (w, h), angle = cv2.minAreaRect(band[:, :2].astype(np.float32))
    long_side, short_side = max(w, h), min(w, h)
    yaw = float(np.radians(angle if w >= h else angle + 90.0))
    yaw = float(np.arctan2(np.sin(yaw), np.cos(yaw)))
    exp_long = max(obj.size[0], obj.size[1])
    # the top surface is not the whole object when it is tilted or partly hidden: judge the longest
    # seen extent against the object's, which both occlusion and tilt only shorten a little
    score = size_agreement(long_side, exp_long)
    conf = float(det.score * min(1.0, coverage / 0.5) * score)
    pos = np.array([xy[0], xy[1], z_top - obj.size[2] / 2])
    return Estimate(pos, yaw, conf, frame.camera, det.score, coverage, score, (long_side, short_side)), ""


def estimate_from_marker(frame: RGBDFrame, det: Detection, obj: ObjectSpec) -> tuple:
    """(Estimate, "") for a marker detection: the object's centre is `marker_offset` in the marker frame."""
    R_cm, t_cm = det.marker_rotation, det.marker_translation
    p_cam = R_cm @ np.asarray(obj.marker_offset, float) + t_cm
    T = frame.T_base_camera
    pos = T.apply(p_cam)
    R_bm = T.rotation @ R_cm
    yaw = float(np.arctan2(R_bm[1, 0], R_bm[0, 0]))
    return Estimate(pos, yaw, float(det.score), frame.camera, det.score, 1.0, 1.0, (0.0, 0.0)), ""


class CameraPerception:
    """The `Perception` protocol from RGB-D cameras (not ground truth; named after its detector)."""

    ground_truth = False

    def __init__(self, spec: PerceptionSpec, source: RGBDSource, detector: Optional[Detector] = None,
                 present: Optional[Sequence[str]] = None):
        """`present` limits the catalogue to the objects known to be in the scene (a sim task)."""
        self.spec = spec
        self.source = source
        self.detector = detector or make_detector(spec)
        self.present = tuple(present) if present is not None else None
        self.name = f"camera-{self.detector.name}"

    def resolve(self, phrase: str) -> Optional[ObjectSpec]:
        return self.spec.resolve(phrase, self.present)

    def locate(self, obj: str) -> Optional[ObjectEstimate]:
        o = self.resolve(obj)
        if o is None:
            log.debug("%s: no catalogued object matches %r", self.name, obj)
            return None
        try:
            frames = self.source.rgbd(self.spec.cameras)
        except CameraUnavailable as e:
            raise PerceptionError(f"cannot look for the {o.name}: {e}", "camera_unavailable") from None
        best, reasons = self._best(o, frames)
        if best is None:
            raise PerceptionError(f"the {o.name} is not in view of {list(self.spec.cameras)} "
                                  f"({'; '.join(reasons) or 'no detection'})", "object_not_found")
        if best.confidence < self.spec.min_confidence:
            raise PerceptionError(f"the {o.name} was seen with confidence {best.confidence:.2f} < min_confidence "
                                  f"{self.spec.min_confidence:.2f}: {best.describe()}", "low_confidence")
        log.debug("%s located %s at %s: %s", self.name, o.name, np.round(best.position, 4), best.describe())
        return ObjectEstimate(name=o.name, position=tuple(float(v) for v in best.position), yaw=best.yaw,
                              confidence=best.confidence, source=f"{self.name}:{best.camera}")

    def _best(self, o: ObjectSpec, frames) -> tuple:
        best, reasons = None, []
        for cam in self.spec.cameras:
            frame = frames.get(cam)
            if frame is None:
                reasons.append(f"{cam}: no frame")
                continue
            dets = self.detector.detect(frame.rgb, o, frame.intrinsics.matrix)
            if not dets:
                reasons.append(f"{cam}: not detected")
            for det in dets:
                est, why = (estimate_from_marker if det.marker_rotation is not None else estimate_from_mask)(frame, det, o)
                if est is None:
                    reasons.append(why)
                elif best is None or est.confidence > best.confidence:
                    best = est
        return best, reasons
