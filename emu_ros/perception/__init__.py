"""Perception from the robot's own cameras: object positions in the robot base frame from RGB +
aligned depth + intrinsics + a camera-to-base transform. ROS-free (numpy, OpenCV; transformers only
for the open-vocabulary detector).

- `geometry`: pinhole intrinsics, rigid transforms, depth back-projection.
- `rgbd`: one aligned RGB-D frame with its calibration, the source protocol, depth-encoding decoding.
- `catalogue`: the objects a scene holds (aliases, colour, size, marker) and the perception settings.
- `detection`: the Detection a detector returns, the Detector protocol; `detectors.make_detector`
  builds the profile's: `colour` (hue blobs), `markers` (ArUco/AprilTag), `open_vocab` (OWLv2,
  weights from disk only).
- `camera_perception`: `CameraPerception`, the `Perception` the skills use on a robot.
- `calibration`: camera-to-base transform from marker sightings (least squares, residual).
"""
