"""What a robot profile says about perception: which detector, which cameras, how sure is sure
enough, and the objects of the scene (their words, colour, size, marker).

Plain data, validated at profile load (`core.profile.parse_profile`) so a typo fails at start-up;
the detectors and the estimator live in `emu_ros.perception`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

DETECTORS = ("colour", "aruco", "owlv2")
MARKER_DICTIONARIES = ("DICT_4X4_50", "DICT_4X4_100", "DICT_5X5_100", "DICT_6X6_250", "DICT_APRILTAG_36h11",
                       "DICT_APRILTAG_25h9", "DICT_APRILTAG_16h5")


@dataclass(frozen=True)
class ObjectSpec:
    """One object the robot may be asked to handle.

    `size` is the object's extent (x, y, z in its own frame, metres): the estimator turns the seen
    top surface into the object's centre with it and checks a blob's size against it. A colour
    detector needs `colour` (RGB 0..255; matched by hue within
    `hue_tolerance` degrees, so shading does not matter); a marker detector `marker_id` (and
    `marker_offset`, the object's centre in the marker's frame); OWLv2 a text `prompt`.
    """

    name: str
    aliases: tuple = ()
    size: tuple = (0.04, 0.04, 0.04)
    colour: Optional[tuple] = None
    hue_tolerance: float = 15.0
    marker_id: Optional[int] = None
    marker_offset: tuple = (0.0, 0.0, 0.0)
    prompt: str = ""

    def __post_init__(self) -> None:
        size = tuple(float(v) for v in self.size)
        if len(size) != 3 or min(size) <= 0:
            raise ValueError(f"object {self.name!r}: size must be 3 positive extents in metres, got {self.size!r}")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "aliases", tuple(str(a).lower() for a in self.aliases))
        if self.colour is not None:
            c = tuple(float(v) for v in self.colour)
            if len(c) != 3 or not all(0 <= v <= 255 for v in c):
                raise ValueError(f"object {self.name!r}: colour must be RGB 0..255, got {self.colour!r}")
            object.__setattr__(self, "colour", c)
        off = tuple(float(v) for v in self.marker_offset)
        if len(off) != 3:
            raise ValueError(f"object {self.name!r}: marker_offset needs 3 values, got {self.marker_offset!r}")
        object.__setattr__(self, "marker_offset", off)

    @property
    def words(self) -> tuple:
        return (self.name.lower().replace("_", " "),) + self.aliases


@dataclass(frozen=True)
class PerceptionSpec:
    """The profile's `perception:` section."""

    detector: str = "colour"
    #: cameras with aligned depth and a fixed `to_base` transform, tried in this order
    cameras: tuple = ("cam_high",)
    #: an estimate below this confidence is refused (a skill failure that re-plans), never used
    min_confidence: float = 0.5
    #: OWLv2: a local directory with the transformers weights (config.json, model.safetensors, processor files)
    detector_dir: str = ""
    #: OWLv2: box score below which a detection is ignored
    detector_threshold: float = 0.1
    #: ArUco/AprilTag: the marker dictionary and the printed side length (m)
    marker_dictionary: str = "DICT_4X4_50"
    marker_size: float = 0.03
    objects: tuple = field(default_factory=tuple)  # of ObjectSpec

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector {self.detector!r} is not one of {DETECTORS}")
        if not 0.0 <= float(self.min_confidence) <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence!r}")
        if self.marker_dictionary not in MARKER_DICTIONARIES:
            raise ValueError(f"marker_dictionary {self.marker_dictionary!r} is not one of {MARKER_DICTIONARIES}")
        if not float(self.marker_size) > 0:
            raise ValueError(f"marker_size must be > 0 m, got {self.marker_size!r}")
        object.__setattr__(self, "cameras", tuple(self.cameras))
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate object names in {names}")
        if self.detector == "colour":
            bad = [o.name for o in self.objects if o.colour is None]
            if bad:
                raise ValueError(f"detector colour needs objects[].colour; missing for {bad}")
        if self.detector == "aruco":
            bad = [o.name for o in self.objects if o.marker_id is None]
            if bad:
                raise ValueError(f"detector aruco needs objects[].marker_id; missing for {bad}")
        if self.detector == "owlv2":
            if not self.detector_dir:
                raise ValueError("detector owlv2 needs detector_dir (a local directory with the OWLv2 weights)")
            bad = [o.name for o in self.objects if not o.prompt]
            if bad:
                raise ValueError(f"detector owlv2 needs objects[].prompt; missing for {bad}")

    def resolve(self, phrase: str, present: Optional[tuple] = None) -> Optional[ObjectSpec]:
        """The object a step's phrase names ("the red cube" -> box): longest matching word wins."""
        text = re.sub(r"\s+", " ", re.sub(r"\b(the|a|an)\b", " ", phrase.lower().replace("_", " "))).strip()
        best = None
        for o in self.objects:
            if present is not None and o.name not in present:
                continue
            for w in o.words:
                if w == text or re.search(rf"\b{re.escape(w)}\b", text):
                    if best is None or len(w) > best[0]:
                        best = (len(w), o)
        return best[1] if best else None
