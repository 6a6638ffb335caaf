"""Robot profiles: cameras, arms (kinematic chains), grippers, adapter settings and tolerances.

A profile is one YAML file in `config/robots/` (aloha.yaml, agibot_a2.yaml, sim_aloha.yaml). It is
loaded into frozen dataclasses and validated once, so a typo fails at start-up with the file and
field named rather than mid-task on the robot.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from emu_ros.core.kinematics import ChainSpec, JointSpec
from emu_ros.core.perception_spec import ObjectSpec, PerceptionSpec

ADAPTER_KINDS = ("follow_joint_trajectory", "interbotix", "aimdk", "sim")


class ProfileError(ValueError):
    """A robot profile is missing, unreadable or inconsistent; the message names file and field."""


@dataclass(frozen=True)
class CameraSpec:
    name: str
    topic: str
    width: int = 640
    height: int = 480
    #: A frame older than this (s) counts as stale: the engine refuses to plan from it.
    max_age_s: float = 1.0
    required: bool = True
    #: Keep every n-th row/column when the frame is decoded (1 = full size). The model resizes to its
    #: own image area anyway; downsampling at intake means the frame is never copied at full size.
    downsample: int = 1
    #: Aligned depth (REP 118: 32FC1 m or 16UC1 mm) and the colour stream's CameraInfo, for camera
    #: perception; RealSense: /cam_*/camera/aligned_depth_to_color/image_raw, /cam_*/camera/color/camera_info.
    depth_topic: str = ""
    info_topic: str = ""
    #: Where the camera's optical frame is in the base frame: {xyz: [m], rpy: [rad]} or {xyz, quat_xyzw}
    #: (`emu-ros calibrate-camera` prints it). Needed for camera perception; a fixed mount only.
    to_base: Optional[Mapping] = None

    def __post_init__(self):
        if self.to_base is not None:
            tb = self.to_base
            if not isinstance(tb, Mapping) or set(tb) not in ({"xyz", "rpy"}, {"xyz", "quat_xyzw"}):
                raise ValueError(f"camera {self.name!r}: to_base must be {{xyz: [x, y, z], rpy: [r, p, y]}} "
                                 f"or {{xyz, quat_xyzw}}, got {tb!r}")
            rot = "rpy" if "rpy" in tb else "quat_xyzw"
            _floats(tb["xyz"], 3, f"camera {self.name!r}.to_base.xyz")
            _floats(tb[rot], 3 if rot == "rpy" else 4, f"camera {self.name!r}.to_base.{rot}")
        if not isinstance(self.downsample, int) or isinstance(self.downsample, bool) or self.downsample < 1:
            raise ValueError(f"camera {self.name!r}: downsample must be an integer >= 1, got {self.downsample!r}")
        if not float(self.max_age_s) > 0:
            raise ValueError(f"camera {self.name!r}: max_age_s must be > 0, got {self.max_age_s!r}")


@dataclass(frozen=True)
class GripperSpec:
    """A gripper as its joint reports it. Positions and thresholds are in the joint's own units.

    The adapters report the gripper in JointState under `joint` as an *opening* (0 closed .. 1 open,
    from `closed_position`/`open_position`); the monitor compares openings with the thresholds'
    openings. Thresholds are written in joint units so they can be read off `/joint_states`
    (`emu-ros calibrate-gripper` prints them) and are checked against the declared range at load.
    """
    name: str
    #: Name of the gripper's opening in the JointState the adapter reports.
    joint: str
    #: Joint the robot publishes on /joint_states (e.g. Interbotix `left_finger`); default: `joint`.
    hardware_joint: str = ""
    #: The joint's reading fully closed on nothing and fully open (its own units; may be descending).
    closed_position: float = 0.0
    open_position: float = 1.0
    #: Unit of positions and thresholds, for messages ("m", "rad"; "" = already an opening 0..1).
    unit: str = ""
    #: Below this a closed gripper holds nothing (missed grasp, slip).
    empty_below: float = 0.15
    #: Above this a "closed" gripper is still open (it never closed: a fault).
    closed_above: float = 0.9
    #: Above this the gripper counts as open after a release (the object was let go).
    released_above: float = 0.8
    #: Command values the adapter sends for fully closed and fully open (robot units).
    closed_command: float = 0.0
    open_command: float = 1.0

    def __post_init__(self):
        if not self.hardware_joint:
            object.__setattr__(self, "hardware_joint", self.joint)
        lo, hi = sorted((float(self.closed_position), float(self.open_position)))
        if lo == hi:
            raise ValueError(f"gripper {self.name!r}: closed_position and open_position are both {lo}")
        for field_name in ("empty_below", "closed_above", "released_above"):
            v = float(getattr(self, field_name))
            if not lo <= v <= hi:
                raise ValueError(f"gripper {self.name!r}: {field_name} {v} is outside the joint's range [{lo}, {hi}]"
                                 f"{' ' + self.unit if self.unit else ''} (closed_position..open_position); "
                                 f"thresholds are in the joint's own units")
        if not self.opening(self.empty_below) < self.opening(self.closed_above):
            raise ValueError(f"gripper {self.name!r}: empty_below must be closer to closed_position than closed_above")

    def opening(self, position: float) -> float:
        """Joint reading -> opening (0 closed .. 1 open)."""
        return (float(position) - self.closed_position) / (self.open_position - self.closed_position)

    def position(self, opening: float) -> float:
        """Opening -> joint reading, for messages in the robot's units."""
        return self.closed_position + float(opening) * (self.open_position - self.closed_position)

    def describe(self, opening: float) -> str:
        """An opening as the robot reports it, e.g. "0.0215 m (opening 0.08)" or "opening 0.08"."""
        if not self.unit:
            return f"opening {opening:.2f}"
        return f"{self.position(opening):.4g} {self.unit} (opening {opening:.2f})"

    def threshold(self, field_name: str) -> str:
        """A threshold with its field name, in the profile's units: "empty_below 0.0263 m"."""
        v = float(getattr(self, field_name))
        return f"{field_name} {v:.4g} {self.unit}" if self.unit else f"{field_name} {v:.2f}"


@dataclass(frozen=True)
class ArmSpec:
    name: str
    chain: Optional[ChainSpec]
    joint_names: tuple
    gripper: Optional[str] = None
    #: Joint names on the robot side (e.g. Interbotix `waist`), same order; defaults to joint_names.
    hardware_joint_names: tuple = ()
    home: tuple = ()
    #: Named joint-space poses usable by skills without IK (e.g. "stow").
    poses: Mapping[str, tuple] = field(default_factory=dict)


@dataclass(frozen=True)
class Tolerances:
    joint_goal: float = 0.05  # rad: final joint error accepted by the step monitor
    step_timeout_s: float = 60.0
    motion_timeout_s: float = 20.0
    gripper_timeout_s: float = 5.0
    settle_s: float = 0.3


@dataclass(frozen=True)
class VisualCheckSpec:
    camera: str
    #: Region of interest as fractions of the image (x0, y0, x1, y1).
    roi: tuple = (0.0, 0.0, 1.0, 1.0)
    #: Similarity below which the observed view does not match the predicted step image.
    threshold: float = 0.5
    method: str = "hist_ssim"


@dataclass(frozen=True)
class RobotProfile:
    name: str
    adapter: str
    adapter_settings: Mapping[str, Any]
    cameras: tuple
    arms: tuple
    grippers: tuple
    tolerances: Tolerances
    visual_check: VisualCheckSpec
    frame_id: str = "world"
    description: str = ""
    source_path: str = ""
    #: camera perception settings and the scene's objects; None = the profile declares none
    perception: Optional[PerceptionSpec] = None

    def camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"profile {self.name!r} has no camera {name!r} (cameras: {[c.name for c in self.cameras]})")

    def arm(self, name: str) -> ArmSpec:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"profile {self.name!r} has no arm {name!r} (arms: {[a.name for a in self.arms]})")

    def gripper(self, name: str) -> GripperSpec:
        for g in self.grippers:
            if g.name == name:
                return g
        raise KeyError(f"profile {self.name!r} has no gripper {name!r} (grippers: {[g.name for g in self.grippers]})")

    @property
    def camera_names(self) -> tuple:
        return tuple(c.name for c in self.cameras)


def config_dir() -> Path:
    """The package's config/ directory: the source tree, or share/emu_ros/config when installed by colcon."""
    env = os.environ.get("EMU_ROS_CONFIG_DIR")
    if env:
        return Path(env)
    src = Path(__file__).resolve().parents[2] / "config"
    if src.is_dir():
        return src
    try:  # installed with colcon: ament index knows the share directory
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("emu_ros")) / "config"
    except Exception:  # noqa: BLE001 - any failure means "not installed that way"
        raise ProfileError("cannot find emu_ros config/ directory; set EMU_ROS_CONFIG_DIR") from None


def resolve_profile_path(name_or_path: str) -> Path:
    """`aloha` → config/robots/aloha.yaml; a path is taken as it is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return config_dir() / "robots" / f"{name_or_path}.yaml"


def _req(d: Mapping, key: str, where: str) -> Any:
    if not isinstance(d, Mapping) or key not in d:
        raise ProfileError(f"{where}: missing required field {key!r}")
    return d[key]


def _floats(v: Any, n: Optional[int], where: str) -> tuple:
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: expected a list of numbers, got {v!r}") from None
    if n is not None and len(out) != n:
        raise ProfileError(f"{where}: expected {n} numbers, got {len(out)}")
    return out


def _build(cls, data: Mapping, where: str, **fixed):
    """Construct a dataclass from a mapping, reporting unknown keys (typos) instead of ignoring them."""
    known = set(cls.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise ProfileError(f"{where}: unknown field(s) {sorted(unknown)} (known: {sorted(known)})")
    try:
        return cls(**{**data, **fixed})
    except (TypeError, ValueError) as e:
        raise ProfileError(f"{where}: {e}") from None


def _parse_chain(arm: Mapping, where: str) -> Optional[ChainSpec]:
    chain = arm.get("chain")
    if chain is None:
        return None
    joints = []
    for i, j in enumerate(_req(chain, "joints", where + ".chain")):
        jw = f"{where}.chain.joints[{i}]"
        spec = _build(JointSpec, {k: v for k, v in j.items() if k not in ("origin_xyz", "origin_rpy", "axis")}, jw,
                      origin_xyz=_floats(j.get("origin_xyz", (0, 0, 0)), 3, jw + ".origin_xyz"),
                      origin_rpy=_floats(j.get("origin_rpy", (0, 0, 0)), 3, jw + ".origin_rpy"),
                      axis=_floats(j.get("axis", (0, 0, 1)), 3, jw + ".axis"))
        if spec.kind not in ("revolute", "prismatic"):
            raise ProfileError(f"{jw}.kind: {spec.kind!r} is not revolute|prismatic")
        if not spec.lower < spec.upper:
            raise ProfileError(f"{jw}: lower {spec.lower} must be < upper {spec.upper}")
        joints.append(spec)
    return ChainSpec(name=arm["name"], joints=tuple(joints),
                     base_xyz=_floats(chain.get("base_xyz", (0, 0, 0)), 3, where + ".chain.base_xyz"),
                     base_rpy=_floats(chain.get("base_rpy", (0, 0, 0)), 3, where + ".chain.base_rpy"),
                     tool_xyz=_floats(chain.get("tool_xyz", (0, 0, 0)), 3, where + ".chain.tool_xyz"))


def parse_profile(data: Mapping, source: str = "<dict>") -> RobotProfile:
    """Validate a profile mapping (as read from YAML) into a RobotProfile."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{source}: a robot profile must be a mapping, got {type(data).__name__}")
    name = str(_req(data, "name", source))
    adapter = _req(data, "adapter", source)
    kind = _req(adapter, "kind", source + ".adapter")
    if kind not in ADAPTER_KINDS:
        raise ProfileError(f"{source}.adapter.kind: {kind!r} is not one of {ADAPTER_KINDS}")
    cams = tuple(_build(CameraSpec, c, f"{source}.cameras[{i}]") for i, c in enumerate(_req(data, "cameras", source)))
    if not cams:
        raise ProfileError(f"{source}.cameras: at least one camera is required")
    if len({c.name for c in cams}) != len(cams):
        raise ProfileError(f"{source}.cameras: duplicate camera names")
    grippers = tuple(_build(GripperSpec, g, f"{source}.grippers[{i}]") for i, g in enumerate(data.get("grippers", ())))
    arms = []
    for i, a in enumerate(_req(data, "arms", source)):
        w = f"{source}.arms[{i}]"
        chain = _parse_chain(a, w)
        names = tuple(a.get("joint_names") or (chain.joint_names if chain else ()))
        if not names:
            raise ProfileError(f"{w}: needs joint_names or a chain")
        if chain and names != chain.joint_names:
            raise ProfileError(f"{w}: joint_names {names} differ from the chain's {chain.joint_names}")
        fields = {k: v for k, v in a.items() if k not in ("chain", "joint_names", "home", "poses", "hardware_joint_names")}
        arm = _build(ArmSpec, fields, w, chain=chain, joint_names=names,
                     hardware_joint_names=tuple(a.get("hardware_joint_names") or names),
                     home=_floats(a.get("home", [0.0] * len(names)), len(names), w + ".home"),
                     poses={k: _floats(v, len(names), f"{w}.poses.{k}") for k, v in (a.get("poses") or {}).items()})
        if len(arm.hardware_joint_names) != len(names):
            raise ProfileError(f"{w}.hardware_joint_names: {len(arm.hardware_joint_names)} names for {len(names)} joints")
        if arm.gripper and arm.gripper not in {g.name for g in grippers}:
            raise ProfileError(f"{w}.gripper: {arm.gripper!r} is not a declared gripper")
        arms.append(arm)
    vc = dict(data.get("visual_check") or {"camera": cams[0].name})
    if "roi" in vc:
        vc["roi"] = _floats(vc["roi"], 4, source + ".visual_check.roi")
    visual = _build(VisualCheckSpec, vc, source + ".visual_check")
    if visual.camera not in {c.name for c in cams}:
        raise ProfileError(f"{source}.visual_check.camera: {visual.camera!r} is not a declared camera")
    x0, y0, x1, y1 = visual.roi
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ProfileError(f"{source}.visual_check.roi: {visual.roi} must be fractions with x0<x1, y0<y1")
    tol = _build(Tolerances, data.get("tolerances") or {}, source + ".tolerances")
    perception = _parse_perception(data.get("perception"), cams, source + ".perception")
    return RobotProfile(name=name, adapter=kind, adapter_settings={k: v for k, v in adapter.items() if k != "kind"},
                        cameras=cams, arms=tuple(arms), grippers=grippers, tolerances=tol, visual_check=visual,
                        frame_id=str(data.get("frame_id", "world")), description=str(data.get("description", "")),
                        source_path=source, perception=perception)


def _parse_perception(data: Optional[Mapping], cams: tuple, where: str) -> Optional[PerceptionSpec]:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where}: must be a mapping, got {type(data).__name__}")
    objs = data.get("objects") or {}
    if not isinstance(objs, Mapping):
        raise ProfileError(f"{where}.objects: must map object names to their description")
    objects = tuple(_build(ObjectSpec, dict(o or {}), f"{where}.objects.{name}", name=str(name))
                    for name, o in objs.items())
    spec = _build(PerceptionSpec, {k: v for k, v in data.items() if k != "objects"}, where, objects=objects)
    unknown = [c for c in spec.cameras if c not in {c.name for c in cams}]
    if unknown:
        raise ProfileError(f"{where}.cameras: {unknown} are not declared cameras ({[c.name for c in cams]})")
    return spec


def load_profile(name_or_path: str) -> RobotProfile:
    """Load `config/robots/<name>.yaml` (or a path) into a validated RobotProfile."""
    path = resolve_profile_path(name_or_path)
    if not path.is_file():
        avail = sorted(p.stem for p in (config_dir() / "robots").glob("*.yaml")) if (config_dir() / "robots").is_dir() else []
        raise ProfileError(f"robot profile {name_or_path!r} not found at {path} (available: {avail})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: invalid YAML: {e}") from None
    return parse_profile(data, str(path))
