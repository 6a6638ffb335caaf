"""ColourDetector: hue blobs, for simple scenes and the simulator."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from emu_ros.core.perception_spec import ObjectSpec
from emu_ros.perception.detection import Detection


def hue_saturation(rgb: Sequence[float]) -> tuple:
    """(hue in degrees 0..360, saturation 0..1) of one RGB colour (0..255)."""
    r, g, b = (float(v) / 255.0 for v in rgb)
    mx, mn = max(r, g, b), min(r, g, b)
    if mx == mn:
        return 0.0, 0.0
    d = mx - mn
    if mx == r:
        h = ((g - b) / d) % 6
    elif mx == g:
        h = (b - r) / d + 2
    else:
        h = (r - g) / d + 4
    return 60.0 * h, d / mx


class ColourDetector:
    """Pixels whose hue is within `hue_tolerance` of the object's colour (saturated, not dark),
    grouped into connected blobs, largest first.

    Hue rather than RGB distance: the shaded side of a red cube is dark red, still red. Greys (arms,
    table, shadows) have no hue and never match. Two objects of one colour in view are two blobs; the
    estimator keeps the blob whose 3-D size fits the object asked for.
    """

    name = "colour"

    def __init__(self, min_pixels: int = 12, min_saturation: float = 0.45, min_value: float = 0.12,
                 max_candidates: int = 4):
        self.min_pixels = int(min_pixels)
        self.min_saturation = float(min_saturation)
        self.min_value = float(min_value)
        self.max_candidates = int(max_candidates)

    def mask(self, rgb: np.ndarray, obj: ObjectSpec) -> np.ndarray:
        import cv2

        if obj.colour is None:
            raise ValueError(f"object {obj.name!r} has no colour for the colour detector (profile perception.objects)")
        hsv = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2HSV_FULL)  # H 0..255
        hue = hsv[..., 0].astype(np.float32) * (360.0 / 256.0)
        target, _ = hue_saturation(obj.colour)
        dh = np.abs(hue - target)
        dh = np.minimum(dh, 360.0 - dh)
        return ((dh <= obj.hue_tolerance) & (hsv[..., 1] >= self.min_saturation * 255)
                & (hsv[..., 2] >= self.min_value * 255))

    def detect(self, rgb: np.ndarray, obj: ObjectSpec, camera_matrix: np.ndarray) -> list:
        import cv2

        m = self.mask(rgb, obj).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        blobs = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
        out = []
        for i in blobs[: self.max_candidates]:
            area = int(stats[i, cv2.CC_STAT_AREA])
            if area < self.min_pixels:
                break
            # a blob's own score says only that the colour is there; the size check comes with depth
            out.append(Detection(obj=obj.name, score=1.0, source=self.name, mask=labels == i))
        return out
