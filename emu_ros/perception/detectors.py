"""`make_detector`: the detector a profile's `perception.detector` names (colour in `colour`,
ArUco/AprilTag in `markers`, OWLv2 in `open_vocab`). Each returns candidate `Detection`s; the
estimator (`camera_perception`) turns them into 3-D estimates and keeps the one whose size fits."""
from __future__ import annotations

from emu_ros.core.perception_spec import PerceptionSpec
from emu_ros.perception.colour import ColourDetector
from emu_ros.perception.detection import Detector


def make_detector(spec: PerceptionSpec) -> Detector:
    """The detector the profile names. OWLv2 loads its weights from `detector_dir` (never downloads)."""
    if spec.detector == "colour":
        return ColourDetector()
    if spec.detector == "aruco":
        from emu_ros.perception.markers import MarkerDetector

        return MarkerDetector(spec.marker_dictionary, spec.marker_size)
    if spec.detector == "owlv2":
        from emu_ros.perception.open_vocab import Owlv2Detector

        return Owlv2Detector(spec.detector_dir, threshold=spec.detector_threshold)
    raise ValueError(f"unknown detector {spec.detector!r}")
