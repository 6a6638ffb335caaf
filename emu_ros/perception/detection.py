"""What a detector returns: candidate pixels (or a marker pose) for one object in one image, and
the protocol every detector (colour, markers, OWLv2) implements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from emu_ros.core.perception_spec import ObjectSpec


@dataclass(frozen=True)
class Detection:
    """One candidate for one object in one image.

    `mask` marks its pixels (colour blobs, detector boxes); a marker detection also carries the
    marker's pose in the camera's optical frame (`marker_rotation`, `marker_translation`), from
    which the object pose follows without depth.
    """

    obj: str
    score: float
    source: str
    mask: np.ndarray
    marker_rotation: Optional[np.ndarray] = None
    marker_translation: Optional[np.ndarray] = None

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray, obj: ObjectSpec, camera_matrix: np.ndarray) -> Sequence[Detection]: ...
