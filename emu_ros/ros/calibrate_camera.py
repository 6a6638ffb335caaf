"""`emu-ros calibrate-camera`: where a fixed camera sits in the robot base frame, from a marker on a gripper.

    emu-ros calibrate-camera --profile aloha --camera cam_high --arm right_arm \\
        --marker-id 0 --marker-size 0.03 --marker-offset X Y Z [--dictionary DICT_4X4_50] [--poses 8] [--auto]

Fix a printed ArUco marker flat on the arm's gripper and measure where the centre of its black
square is in the tool frame (the profile chain's tool point, after `tool_xyz`; metres): that is
`--marker-offset`. With the robot's bringup and the camera driver running, move the arm (teleop,
or torque off and by hand) to `--poses` poses where the camera sees the marker, spread over the
workspace and in depth, and hold each still. Each pose pairs the marker centre seen in the camera's
optical frame (newest colour image, intrinsics from the camera's CameraInfo) with the same centre in
the base frame (forward kinematics of the arm's measured joints plus the offset). A least-squares
fit of the pairs is the camera's `to_base`, printed as the profile line to paste; the residual says
how far to trust it: a few mm is good, over 5 mm the offset or marker size is wrong or the camera moved.

A pose is sampled on Enter, or with --auto whenever the arm has been still for 0.5 s with the
marker in view and at least 3 cm from the previous sample. Ctrl-C stops early and fits what was
recorded (4 poses at least).
"""
from __future__ import annotations

import argparse
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState

from emu_ros.core.kinematics import SerialChain
from emu_ros.core.perception_spec import MARKER_DICTIONARIES
from emu_ros.core.profile import RobotProfile, load_profile
from emu_ros.perception.calibration import (MIN_POINTS, CalibrationFit, camera_to_base_from_sightings,
                                           format_profile_lines)
from emu_ros.perception.geometry import CameraIntrinsics
from emu_ros.perception.markers import SCORE_HALF_PX, MarkerDetector
from emu_ros.ros.camera_intake import CAMERA_QOS
from emu_ros.ros.conversions import from_time
from emu_ros.ros.image_conversion import ImageConversionError, image_to_numpy
from emu_ros.ros.node_utils import background_node

#: the arm must have been still this long (s) before a pose counts: image and joints then show one pose
STILL_S = 0.5
#: "still": the marker's FK position wanders less than this (m); above a servo's encoder noise at full reach
STILL_TOLERANCE_M = 0.002
#: a new pose must put the marker this far (m) from the previous sample: a repeat adds nothing to the fit
MIN_MOVE_M = 0.03
#: joint states older than this (s) mean the driver stopped: FK of the last one may not be where the arm is
JOINT_MAX_AGE_S = 0.5
#: rms residual (m) above which the result is flagged: a few mm is what marker + FK noise give
WARN_RMS_M = 0.005
#: a sighting whose corners the fitted pose misses by more than this (px RMS) is a partly hidden or
#: blurred marker; its centre is not to be trusted (the detector's score 0.5)
MAX_REPROJECTION_PX = SCORE_HALF_PX


def arm_state_topics(profile: RobotProfile, arm: str) -> tuple:
    """The JointState topic(s) that carry `arm`'s joints for the profile's adapter (as its adapter reads them)."""
    s = profile.adapter_settings
    if profile.adapter == "interbotix":
        robot = ((s.get("arms") or {}).get(arm) or {}).get("robot_name")
        if robot:
            return (f"/{robot}/joint_states",)
    return tuple(s.get("joint_state_topics") or [s.get("joint_state_topic", "/joint_states")])


class SampleRefused(Exception):
    """A pose that was not recorded; `reason` is a short key (for --auto to print each kind once)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class PoseSample:
    """One recorded pose: the marker centre in both frames (m), the arm's joints, the sighting's fit (px)."""

    marker_in_camera: np.ndarray
    marker_in_base: np.ndarray
    joints: np.ndarray
    reprojection_px: float


@dataclass(frozen=True)
class CameraCalibration:
    """The fitted camera pose and what to tell the user about it."""

    camera: str
    fit: CalibrationFit

    @property
    def profile_lines(self) -> str:
        return format_profile_lines(self.camera, self.fit)

    @property
    def warning(self) -> str:
        """Non-empty when the residual is too large to trust the transform."""
        if self.fit.rms_m <= WARN_RMS_M:
            return ""
        return (f"WARNING: residual rms {self.fit.rms_m * 1000:.1f} mm exceeds {WARN_RMS_M * 1000:.0f} mm: check "
                f"--marker-offset (tool frame, m) and --marker-size, and that {self.camera} and the marker did not "
                f"move during the calibration; do not trust this to_base")

    def report(self) -> str:
        f = self.fit
        worst = int(np.argmax(f.residuals)) + 1
        per = "  ".join(f"{i}: {r * 1000:.1f}" for i, r in enumerate(f.residuals, 1))
        lines = [f"{self.camera} from {f.n} poses: residual rms {f.rms_m * 1000:.1f} mm, max {f.max_m * 1000:.1f} mm "
                 f"(pose {worst})",
                 f"per-pose residuals (mm): {per}"]
        if self.warning:
            lines.append(self.warning)
        lines.append(f"Paste into the profile's {self.camera} entry (cameras: - name: {self.camera}):")
        lines.append(self.profile_lines.rstrip("\n"))
        return "\n".join(lines)


class CameraCalibrator:
    """Pairs marker sightings of one camera with the arm's forward kinematics, pose by pose.

    Subscribes on `node` (spun by the caller) to the camera's colour `topic` and CameraInfo
    (`info_topic`, keep-last 1 best effort: only the newest matters, and it matches reliable and
    best-effort drivers alike) and to the arm's JointState topic(s) (sensor-data QoS, as the
    adapters). Every joint message is turned into the marker centre in the base frame at once, so
    stillness is judged where it matters, at the marker. Images come through a plain callback that
    keeps a reference (decoded only when a pose is sampled): this process does nothing else, so the
    per-frame executor cost that camera_intake's pulled subscriptions avoid does not matter here.
    `try_sample()` records the current pose or says why not; `result()` fits the recorded poses.
    Nothing here reads stdin: main() drives it.

    Args:
        node: the node to subscribe on; the caller spins it.
        profile: the robot profile (camera topics, the arm's chain and its adapter's joint topics).
        camera / arm: names in the profile; the arm needs a `chain`.
        marker_id, marker_size, dictionary: the printed marker (size = black square's side, m).
        marker_offset: the marker centre in the tool frame (m).
        info_topic / joint_topics: override the profile's CameraInfo topic / the adapter's JointState topics.
        still_s, min_move_m: see STILL_S and MIN_MOVE_M.
    """

    def __init__(self, node: Node, profile: RobotProfile, camera: str, arm: str, marker_id: int, marker_size: float,
                 marker_offset: Sequence[float], dictionary: str = "DICT_4X4_50", *, info_topic: Optional[str] = None,
                 joint_topics: Optional[Sequence[str]] = None, still_s: float = STILL_S,
                 min_move_m: float = MIN_MOVE_M):
        self.node = node
        self.cam = profile.camera(camera)
        self.arm = profile.arm(arm)
        if self.arm.chain is None:
            raise ValueError(f"arm {arm!r} has no kinematic chain in the profile ({profile.source_path}): "
                             f"its tool position cannot be computed")
        self.info_topic = info_topic or self.cam.info_topic
        if not self.info_topic:
            raise ValueError(f"camera {camera!r} has no info_topic in the profile (the colour stream's CameraInfo, "
                             f"e.g. /{camera}/camera/color/camera_info); set it there or pass --info-topic")
        self.offset = np.asarray(marker_offset, float).reshape(-1)
        if self.offset.shape != (3,) or not np.all(np.isfinite(self.offset)):
            raise ValueError(f"marker offset must be 3 finite numbers (x y z in the tool frame, m), "
                             f"got {marker_offset!r}")
        self.marker_id = int(marker_id)
        self.detector = MarkerDetector(dictionary, marker_size)
        self.joint_topics = tuple(joint_topics or arm_state_topics(profile, arm))
        self.still_s, self.min_move_m = float(still_s), float(min_move_m)
        self._chain = SerialChain(self.arm.chain)
        # the robot reports hardware names (Interbotix `waist`); a sim or a ros2_control bringup may use the profile's
        self._name_sets = [tuple(self.arm.hardware_joint_names), tuple(self.arm.joint_names)]
        self._lock = threading.Lock()
        self._history: deque = deque()  # (node time s, marker in base [3], joints [n]), the last few seconds
        self._names_seen: set = set()
        self._image: Optional[Image] = None
        self._info: Optional[CameraInfo] = None
        self._warned_distortion = False
        self.samples: list = []
        #: the reason key of the last refusal (None after a recorded pose), for --auto's messages
        self.last_reason: Optional[str] = None
        node.create_subscription(Image, self.cam.topic, self._on_image, CAMERA_QOS)
        node.create_subscription(CameraInfo, self.info_topic, self._on_info, CAMERA_QOS)
        for topic in self.joint_topics:
            node.create_subscription(JointState, topic, self._on_joints, qos_profile_sensor_data)
        node.get_logger().info(f"calibrating {camera} against {arm}: images {self.cam.topic}, CameraInfo "
                               f"{self.info_topic}, joints {', '.join(self.joint_topics)}; marker {self.marker_id} "
                               f"({dictionary}, {self.detector.marker_size * 1000:g} mm) at {self.offset.tolist()} m "
                               f"in the tool frame")

    @property
    def count(self) -> int:
        return len(self.samples)

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Image) -> None:
        with self._lock:
            self._image = msg  # decoded only when a pose is sampled

    def _on_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._info = msg
        if not self._warned_distortion and any(abs(float(v)) > 1e-9 for v in msg.d):
            self._warned_distortion = True
            self.node.get_logger().warning(
                f"CameraInfo on {self.info_topic} has non-zero distortion {list(msg.d)}; images on {self.cam.topic} "
                f"are taken as rectified (K only): use the driver's rectified colour stream")

    def _on_joints(self, msg: JointState) -> None:
        names = list(msg.name)
        q = None
        for wanted in self._name_sets:
            if all(n in names for n in wanted):
                idx = [names.index(n) for n in wanted]
                if max(idx) < len(msg.position):
                    q = np.array([msg.position[i] for i in idx], float)
                break
        now = self._now()
        if q is None:
            with self._lock:
                self._names_seen.update(names)
            return
        pos, rot = self._chain.fk(q)
        marker = pos + rot @ self.offset
        with self._lock:
            self._history.append((now, marker, q))
            while self._history and self._history[0][0] < now - self.still_s - 1.0:
                self._history.popleft()

    # ------------------------------------------------------------------------------- sampling
    def try_sample(self) -> tuple:
        """Record the current pose: (True, what was recorded) or (False, why not, in words for the user)."""
        try:
            sample = self._sample()
        except SampleRefused as e:
            self.last_reason = e.reason
            return False, str(e)
        self.samples.append(sample)
        self.last_reason = None
        c, b = sample.marker_in_camera, sample.marker_in_base
        return True, (f"pose {self.count} recorded: marker {np.linalg.norm(c):.3f} m from {self.cam.name} "
                      f"(reprojection {sample.reprojection_px:.2f} px), at [{b[0]:.3f}, {b[1]:.3f}, {b[2]:.3f}] m "
                      f"in the base frame")

    def _still_since(self, history: list) -> float:
        """Node time since which the marker (by FK) has stayed within STILL_TOLERANCE_M of where it is now."""
        now_p, since = history[-1][1], history[-1][0]
        for t, p, _ in reversed(history):
            if np.linalg.norm(p - now_p) > STILL_TOLERANCE_M:
                break
            since = t
        return since

    def _sample(self) -> PoseSample:
        arm, cam = self.arm.name, self.cam.name
        now = self._now()
        with self._lock:
            history, image, info, seen = list(self._history), self._image, self._info, sorted(self._names_seen)
        # setup problems first: they say what to fix whatever the arm is doing
        if not history:
            raise SampleRefused("no_joints", f"no JointState with {arm}'s joints {list(self._name_sets[0])} on "
                                             f"{', '.join(self.joint_topics)} (joints seen: {seen or 'none'}); is the "
                                             f"bringup running?")
        if now - history[-1][0] > JOINT_MAX_AGE_S:
            raise SampleRefused("stale_joints", f"joint states for {arm} stopped: the last one on "
                                                f"{', '.join(self.joint_topics)} arrived "
                                                f"{now - history[-1][0]:.1f} s ago")
        if info is None:
            raise SampleRefused("no_info", f"no CameraInfo received on {self.info_topic} (is the camera driver "
                                           f"publishing it? --info-topic overrides the profile's info_topic)")
        if image is None:
            raise SampleRefused("no_image", f"no image received on {self.cam.topic} (is the camera driver running?)")
        stamp = from_time(image.header.stamp)
        if now - stamp > self.cam.max_age_s:
            raise SampleRefused("stale_image", f"the newest image on {self.cam.topic} is {now - stamp:.2f} s old "
                                               f"(> max_age_s {self.cam.max_age_s:g} s of {cam}): the stream is stale "
                                               f"or its stamps are not on this clock")
        # then the pose itself
        still_since = self._still_since(history)
        if now - still_since < self.still_s:
            raise SampleRefused("moving", f"{arm} is moving (still for {max(0.0, now - still_since):.1f} s of the "
                                          f"{self.still_s:g} s needed): hold it still")
        if stamp < still_since:
            raise SampleRefused("image_before_rest", f"the newest image on {self.cam.topic} was taken before {arm} "
                                                     f"came to rest: waiting for a newer frame")
        rest = [(p, q) for t, p, q in history if t >= still_since]
        in_base = np.mean([p for p, _ in rest], axis=0)
        joints = np.mean([q for _, q in rest], axis=0)
        if self.samples:
            moved = float(np.linalg.norm(in_base - self.samples[-1].marker_in_base))
            if moved < self.min_move_m:
                raise SampleRefused("too_close", f"the marker is {moved * 1000:.0f} mm from pose {self.count}: move "
                                                 f"{arm} at least {self.min_move_m * 1000:.0f} mm to a new pose")
        # and what the camera sees there
        try:
            rgb = image_to_numpy(image)
        except ImageConversionError as e:
            raise SampleRefused("bad_image", f"{self.cam.topic}: {e}") from None
        if rgb.ndim != 3:
            raise SampleRefused("bad_image", f"{self.cam.topic} carries {image.encoding}, not a colour image")
        if (int(info.width), int(info.height)) != (rgb.shape[1], rgb.shape[0]):
            raise SampleRefused("info_size", f"CameraInfo on {self.info_topic} is for {info.width}x{info.height} but "
                                             f"images on {self.cam.topic} are {rgb.shape[1]}x{rgb.shape[0]}: the "
                                             f"info_topic must be the colour stream's")
        try:
            K = CameraIntrinsics.from_k(info.k, info.width, info.height)
        except ValueError as e:
            raise SampleRefused("bad_info", f"CameraInfo on {self.info_topic} is unusable ({e}): is the camera "
                                            f"calibrated?") from None
        sightings = self.detector.sightings(rgb, K.matrix)
        s = sightings.get(self.marker_id)
        if s is None:
            others = f" (ids seen: {sorted(sightings)}; check --marker-id)" if sightings else ""
            raise SampleRefused("not_seen", f"marker {self.marker_id} ({self.detector.dictionary}) is not in view of "
                                            f"{cam}{others}")
        if s.reprojection_px > MAX_REPROJECTION_PX:
            raise SampleRefused("poor_fit", f"marker {self.marker_id} seen, but its corners fit poorly "
                                            f"({s.reprojection_px:.1f} px > {MAX_REPROJECTION_PX:g} px): partly "
                                            f"hidden, blurred or bent; turn it towards {cam}")
        return PoseSample(np.asarray(s.translation, float), in_base, joints, float(s.reprojection_px))

    def result(self) -> CameraCalibration:
        """Least-squares T_base_camera over the recorded poses; RuntimeError, saying what to do, when unfittable."""
        n = self.count
        if n < MIN_POINTS:
            raise RuntimeError(f"{n} pose(s) recorded: a camera-to-base fit needs at least {MIN_POINTS} "
                               f"(8 or more, spread over the workspace and in depth, give a better one)")
        try:
            fit = camera_to_base_from_sightings(np.array([s.marker_in_camera for s in self.samples]),
                                                np.array([s.marker_in_base for s in self.samples]))
        except ValueError as e:
            raise RuntimeError(f"cannot fit {self.cam.name}'s pose from {n} poses: {e}") from None
        return CameraCalibration(self.cam.name, fit)


#: in --auto, a kind of refusal already printed is printed again after this long (s) at the earliest
REPEAT_S = 5.0


def collect(calibrator: CameraCalibrator, poses: int, auto: bool, prompt: Callable[[str], object] = input,
            out: Callable[[str], object] = print, period_s: float = 0.1) -> None:
    """Sample until `poses` are recorded: on Enter, or (auto) whenever a pose qualifies.

    In auto mode each kind of refusal is printed once per pose (again after REPEAT_S if it persists):
    the arm is "moving" most of the time, and a sentence ten times a second would bury the ones that matter.
    """
    shown: dict = {}  # refusal kind -> when it was last printed, since the last recorded pose
    while calibrator.count < poses:
        if not auto:
            prompt(f"[{calibrator.count + 1}/{poses}] move {calibrator.arm.name} so that {calibrator.cam.name} sees "
                   f"the marker, hold it still, press Enter")
        ok, message = calibrator.try_sample()
        now = time.monotonic()
        if ok:
            out(f"[{calibrator.count}/{poses}] {message}")
            shown.clear()
        elif not auto or now - shown.get(calibrator.last_reason, -REPEAT_S) >= REPEAT_S:
            out(f"  not recorded: {message}")
            shown[calibrator.last_reason] = now
        if auto:
            time.sleep(period_s)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emu-ros calibrate-camera", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[4:]))
    p.add_argument("--profile", default="aloha", help="robot profile name or path (default: aloha)")
    p.add_argument("--camera", required=True, help="camera name in the profile, e.g. cam_high")
    p.add_argument("--arm", required=True, help="arm that carries the marker (needs a chain), e.g. right_arm")
    p.add_argument("--marker-id", type=int, required=True, help="id of the marker on the gripper")
    p.add_argument("--marker-size", type=float, required=True,
                   help="side of the marker's black square, m (measure the print: distances scale with it)")
    p.add_argument("--marker-offset", type=float, nargs=3, required=True, metavar=("X", "Y", "Z"),
                   help="marker centre in the arm's tool frame, m")
    p.add_argument("--dictionary", default="DICT_4X4_50", choices=MARKER_DICTIONARIES, help="marker dictionary")
    p.add_argument("--poses", type=int, default=8, help=f"poses to record (>= {MIN_POINTS}; default 8)")
    p.add_argument("--auto", action="store_true",
                   help=f"sample whenever the arm has been still {STILL_S:g} s with the marker in view, "
                        f"{MIN_MOVE_M * 100:g} cm or more from the last pose (default: on Enter)")
    p.add_argument("--info-topic", default=None, help="CameraInfo topic (default: the camera's info_topic)")
    p.add_argument("--joint-topic", action="append", default=None,
                   help="JointState topic with the arm's joints (default: the profile adapter's; repeatable)")
    return p


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.poses < MIN_POINTS:
        p.error(f"--poses must be at least {MIN_POINTS}")
    try:
        profile = load_profile(args.profile)
    except ValueError as e:
        print(f"calibrate-camera: {e}")
        return 1
    # Ctrl-C stays a KeyboardInterrupt in the main thread, so an early stop can still fit what was recorded
    with background_node("emu_calibrate_camera", signal_handlers=False) as node:
        try:
            cal = CameraCalibrator(node, profile, args.camera, args.arm, args.marker_id, args.marker_size,
                                   args.marker_offset, args.dictionary, info_topic=args.info_topic,
                                   joint_topics=args.joint_topic)
            if args.auto:
                print(f"auto: a pose is recorded whenever {args.arm} has been still {STILL_S:g} s with marker "
                      f"{args.marker_id} in view of {args.camera}, {MIN_MOVE_M * 100:g} cm or more from the last; "
                      f"Ctrl-C stops early")
            try:
                collect(cal, args.poses, args.auto)
            except (KeyboardInterrupt, EOFError):
                print(f"\nstopped after {cal.count} pose(s)")
            print(cal.result().report())
            return 0
        except (RuntimeError, ValueError, KeyError) as e:
            print(f"calibrate-camera: {e}")
            return 1
