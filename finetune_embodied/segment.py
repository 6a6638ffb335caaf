"""Split LeRobot episodes into 4-12 steps, each with a short text and the key frame that shows it completed.

Why: Emu3.5's embodied ("vla") task is "instruction -> (subtask text, keyframe of the subtask done) x N" (paper
§4.1.1; BAAI auto-segmented OXE from gripper changes and motion). Most teleoperation data has no step language, so
steps come from, in order of preference:

1. **Annotations** (``LeRobotDatasetReader.step_annotations``): lerobot 0.6 ``language_persistent`` subtasks,
   lerobot 0.4/0.5 ``subtask_index``, AgiBot ``action_text``/``skill``. Used as is (a human said so), except that
   more than ``max_steps`` are merged.
2. **Gripper events** from the gripper columns of ``observation.state`` (else ``action``): every open/close
   transition ends a step when the gripper has settled ("close the left gripper"). Columns are found by feature
   names containing "gripper" (ALOHA ``left_gripper``/``right_gripper``, AgiBot), or configured explicitly.
3. **Joint-velocity pauses** (documented fallback when there is no gripper signal or too few events): the longest
   step is split at its slowest moment until ``min_steps`` is reached ("move the left arm").

The result always has ``min_steps..max_steps`` steps for signal-based segmentation; an episode too short for that
raises ``SegmentationError`` naming the episode (never an empty list).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from .dataset import EpisodeData, LeRobotDatasetReader

log = logging.getLogger(__name__)


class SegmentationError(ValueError):
    """An episode cannot be split into the requested number of steps; the message says why and what to change."""


@dataclass
class SegmentConfig:
    """How episodes are cut into steps."""

    min_steps: int = 4
    """Fewest steps per episode for signal-based segmentation (Emu3.5 eval episodes have 3-13 steps)."""
    max_steps: int = 12
    """Most steps per episode; shorter neighbours are merged beyond this (also for annotations)."""
    use_annotations: bool = True
    """Prefer step language stored in the dataset when present."""
    joint_features: tuple[str, ...] = ("observation.state", "action")
    """Where to read joint positions for velocity pauses and arm motion, first match wins."""
    gripper_features: tuple[str, ...] = ("action", "observation.state")
    """Where to read the gripper signal, first match wins. The commanded gripper (action) closes fully even when
    an object stops the fingers, so it is preferred over the measured state."""
    gripper_columns: dict[str, int] | None = None
    """Explicit {side: column} of the gripper dims (e.g. {"left": 6, "right": 13}); None = find by names."""
    gripper_closed_is_low: bool = True
    """ALOHA grippers are normalised 1=open, 0=closed; set False for signals where larger means closed."""
    min_gripper_move: float = 0.25
    """A gripper move counts as open/close when it spans this fraction of the gripper's range (rejects chatter)."""
    min_gripper_range: float = 1e-3
    """A gripper that moves less than this (absolute units) in an episode is considered idle."""
    min_step_seconds: float = 0.2
    """No step is shorter than this; also the smoothing window of the velocity signal."""
    fallback: str = "pauses"
    """What to do with too few gripper events: "pauses" (split at velocity pauses) or "error"."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got min_steps={self.min_steps}, "
                             f"max_steps={self.max_steps}")
        if self.fallback not in ("pauses", "error"):
            raise ValueError(f"fallback must be 'pauses' or 'error', got {self.fallback!r}")


@dataclass(frozen=True)
class Step:
    """Frames [start, end) of an episode, the step's text, and the key frame (the step completed)."""

    start: int
    end: int
    text: str
    keyframe: int
    source: str
    outcome: str = ""
    """"" = finished (or unknown); else why this attempt did not finish (from the annotations)."""


@dataclass
class EpisodeSteps:
    """The segmentation of one episode."""

    episode_index: int
    task: str
    length: int
    method: str
    steps: list[Step]
    signals: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form (used by the preview and the sample cache)."""
        return {"episode_index": self.episode_index, "task": self.task, "length": self.length,
                "method": self.method, "steps": [asdict(s) for s in self.steps]}


# ---------------------------------------------------------------------- signal helpers
def find_gripper_columns(reader: LeRobotDatasetReader, feature: str) -> dict[str, int]:
    """{side: column} of gripper dims of a feature, from its names ("left_gripper" -> "left")."""
    spec = reader.info.features.get(feature)
    if spec is None:
        return {}
    names = spec.names
    if isinstance(names, dict):  # some ports store {"motors": [...]}
        names = next(iter(names.values()), None)
    if isinstance(names, list):
        out = {}
        for col, name in enumerate(names):
            lname = str(name).lower()
            if "gripper" in lname:
                side = "left" if "left" in lname else "right" if "right" in lname else ""
                out[side or f"gripper{col}"] = col
        return out
    if reader.info.robot_type and "aloha" in reader.info.robot_type.lower() and tuple(spec.shape) == (14,):
        return {"left": 6, "right": 13}  # ALOHA layout: 6 joints + gripper per arm
    return {}


def gripper_events(signal: np.ndarray, min_fraction: float, min_range: float,
                   closed_is_low: bool = True) -> list[tuple[int, int, str]]:
    """(start frame, settled frame, "close"|"open") for each significant gripper move of a 1-D signal.

    A move is a run of frames changing in one direction whose total change is at least ``min_fraction`` of the
    signal's range in the episode. Why runs and not thresholds: a gripper closing on an object stops part-way
    (the state never reaches "closed"), and small chatter must not count.
    """
    x = np.asarray(signal, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < min_range or len(x) < 2:
        return []
    z = (x - lo) / (hi - lo)
    if not closed_is_low:
        z = 1.0 - z
    d = np.diff(z)
    direction = np.where(d > 0.005, 1, np.where(d < -0.005, -1, 0))
    runs: list[list[int]] = []  # [sign, first diff index, last diff index]
    for i, sgn in enumerate(direction):
        if sgn == 0:
            continue
        if runs and runs[-1][0] == sgn and i - runs[-1][2] <= 3:  # tolerate a short stall inside one move
            runs[-1][2] = i
        else:
            runs.append([int(sgn), i, i])
    events = []
    for sgn, first, last in runs:
        if abs(z[last + 1] - z[first]) >= min_fraction:
            events.append((first + 1, last + 1, "open" if sgn > 0 else "close"))
    merged: list[tuple[int, int, str]] = []
    for ev in events:  # a move interrupted by a pause is still one open/close
        if merged and merged[-1][2] == ev[2]:
            merged[-1] = (merged[-1][0], ev[1], ev[2])
        else:
            merged.append(ev)
    return merged


def physical_settle(signal: np.ndarray, start: int, window: int) -> int:
    """Frame where a measured gripper stops moving after a command at ``start``.

    The fingers start moving up to ``window`` frames after the command, then move until the change per frame
    drops below 2% of the signal's range (or an object stops them).
    """
    x = np.asarray(signal, dtype=np.float64)
    span = float(x.max() - x.min())
    if span <= 0 or start >= len(x) - 1:
        return start
    moving = np.abs(np.diff(x)) > 0.02 * span          # moving[t]: change from t to t + 1
    t = start
    while t < min(len(moving), start + window) and not moving[t]:
        t += 1
    if t >= len(moving) or not moving[t]:
        return start
    while t < len(moving) and moving[t]:
        t += 1
    return t


def joint_speed(joints: np.ndarray, window: int) -> np.ndarray:
    """Smoothed joint-space speed per frame (L2 norm of the frame-to-frame change, moving average)."""
    q = np.asarray(joints, dtype=np.float64)
    if len(q) < 2:
        return np.zeros(len(q))
    v = np.linalg.norm(np.diff(q, axis=0), axis=1)
    v = np.concatenate([v[:1], v])
    w = max(1, int(window))
    kernel = np.ones(w) / w
    return np.convolve(np.pad(v, (w // 2, w - 1 - w // 2), mode="edge"), kernel, mode="valid")


def _moving_side(joints: np.ndarray, arms: dict[str, list[int]], start: int, end: int) -> str:
    """Which arm moved most in [start, end): "left", "right" or "" (single arm / unknown)."""
    if len(arms) < 2:
        return ""
    travel = {side: float(np.abs(np.diff(joints[start:end, cols], axis=0)).sum()) for side, cols in arms.items()}
    ranked = sorted(travel.items(), key=lambda kv: -kv[1])
    if ranked[1][1] > 0.5 * ranked[0][1]:
        return "both"
    return ranked[0][0]


def _motion_text(side: str) -> str:
    return {"": "move the arm", "both": "move both arms"}.get(side, f"move the {side} arm")


def _gripper_text(kind: str, side: str) -> str:
    who = f"the {side} gripper" if side in ("left", "right") else "the gripper"
    return f"{kind} {who}"


def _pause_frame(speed: np.ndarray) -> int:
    """Index of the middle of the longest near-still run (speed <= 10% of the range above the minimum).

    The middle of the run, not its first frame, so the key frame before the cut shows the arm at rest.
    """
    floor = float(speed.min())
    still = speed <= floor + 0.1 * (float(speed.max()) - floor) + 1e-12
    best_len, best_mid, run_start = 0, int(np.argmin(speed)), None
    for i, flag in enumerate(np.append(still, False)):
        if flag and run_start is None:
            run_start = i
        elif not flag and run_start is not None:
            if i - run_start > best_len:
                best_len, best_mid = i - run_start, (run_start + i - 1) // 2
            run_start = None
    return best_mid


# ---------------------------------------------------------------------- segmentation
class Segmenter:
    """Segments episodes of one dataset with one config (holds the column layout found once)."""

    def __init__(self, reader: LeRobotDatasetReader, config: SegmentConfig | None = None) -> None:
        self.reader = reader
        self.config = config or SegmentConfig()
        info = reader.info.features
        self.feature = next((f for f in self.config.joint_features if f in info), None)
        if self.config.gripper_columns is not None:
            self.gripper_feature = next((f for f in self.config.gripper_features if f in info), None)
            self.grippers = dict(self.config.gripper_columns)
        else:
            found = [(f, find_gripper_columns(reader, f)) for f in self.config.gripper_features if f in info]
            self.gripper_feature, self.grippers = next(((f, g) for f, g in found if g), (None, {}))
        self.arms = self._arm_columns()

    def _arm_columns(self) -> dict[str, list[int]]:
        """Non-gripper joint columns per side (by names when present, else halves split at the grippers)."""
        if self.feature is None:
            return {}
        dim = int(np.prod(self.reader.info.features[self.feature].shape))
        grip = set(find_gripper_columns(self.reader, self.feature).values()) if self.config.gripper_columns is None \
            else set(self.grippers.values())
        names = self.reader.info.features[self.feature].names
        if isinstance(names, list) and len(names) == dim:
            arms: dict[str, list[int]] = {}
            for col, name in enumerate(names):
                if col in grip:
                    continue
                lname = str(name).lower()
                side = "left" if "left" in lname else "right" if "right" in lname else ""
                arms.setdefault(side, []).append(col)
            return arms
        if {"left", "right"} <= set(self.grippers):
            return {"left": [c for c in range(0, self.grippers["left"])],
                    "right": [c for c in range(self.grippers["left"] + 1, self.grippers["right"])]}
        return {"": [c for c in range(dim) if c not in grip]}

    def segment(self, episode_index: int, episode: EpisodeData | None = None) -> EpisodeSteps:
        """Steps of one episode (annotations, else gripper events, else velocity pauses)."""
        cfg = self.config
        ep = episode if episode is not None else self.reader.load_episode(episode_index)
        task = ep.frame_tasks[0] if ep.frame_tasks else ""
        if cfg.use_annotations:
            notes = self.reader.step_annotations(episode_index, ep)
            if notes:
                steps = [Step(n.start, n.end, n.text, n.end - 1, n.source, n.outcome) for n in notes]
                steps = self._merge_to_max(steps)
                return EpisodeSteps(episode_index, task, ep.length, f"annotation:{notes[0].source}", steps)
        if self.feature is None:
            raise SegmentationError(f"episode {episode_index}: no annotations and none of the signal features "
                                    f"{list(cfg.joint_features)} exist in the dataset; add step annotations or "
                                    "set SegmentConfig.joint_features")
        joints = np.asarray(ep[self.feature], dtype=np.float64).reshape(ep.length, -1)
        min_len = max(1, int(round(cfg.min_step_seconds * ep.fps)))
        if ep.length < cfg.min_steps * min_len:
            raise SegmentationError(f"episode {episode_index} has {ep.length} frames, fewer than min_steps "
                                    f"({cfg.min_steps}) x min_step_seconds ({cfg.min_step_seconds}s = {min_len} "
                                    "frames); drop it or lower those settings")
        arm_cols = sorted(c for cols in self.arms.values() for c in cols)
        speed = joint_speed(joints[:, arm_cols] if arm_cols else joints, min_len)
        grip_signal = (np.asarray(ep[self.gripper_feature], dtype=np.float64).reshape(ep.length, -1)
                       if self.gripper_feature else joints)
        steps, method = self._gripper_steps(joints, grip_signal, ep.length, min_len)
        if len(steps) < cfg.min_steps:
            if cfg.fallback == "error":
                raise SegmentationError(
                    f"episode {episode_index}: {len(steps)} gripper steps < min_steps={cfg.min_steps} "
                    f"(gripper columns {self.grippers or 'none found'} in {self.gripper_feature}); set "
                    "SegmentConfig.gripper_columns, or fallback='pauses' to split at joint-velocity pauses")
            try:
                steps = self._split_at_pauses(steps, joints, speed, ep.length, min_len)
            except SegmentationError as exc:
                raise SegmentationError(f"episode {episode_index}: {exc}; lower SegmentConfig.min_step_seconds or "
                                        "min_steps") from None
            method = f"{method}+pauses" if method != "none" else "pauses"
        steps = self._merge_to_max(steps)
        signals = {"speed": speed.tolist()}
        signals.update({f"gripper_{side}": grip_signal[:, col].tolist() for side, col in self.grippers.items()})
        return EpisodeSteps(episode_index, task, ep.length, method, steps, signals)

    def _measured_grippers(self) -> dict[str, int]:
        """Gripper columns of the joint (measured) feature when the events come from another one (the command)."""
        if self.feature is None or self.feature == self.gripper_feature or self.config.gripper_columns is not None:
            return {}
        return {side: col for side, col in find_gripper_columns(self.reader, self.feature).items()
                if side in self.grippers}

    def _gripper_steps(self, joints: np.ndarray, grip_signal: np.ndarray, length: int,
                       min_len: int) -> tuple[list[Step], str]:
        """One step per gripper transition, ending when it settled; the tail joins the last step."""
        cfg = self.config
        measured = self._measured_grippers()
        events = []
        for side, col in self.grippers.items():
            for start, settle, kind in gripper_events(grip_signal[:, col], cfg.min_gripper_move, cfg.min_gripper_range,
                                                      cfg.gripper_closed_is_low):
                if side in measured:  # the key frame must show the fingers at rest, not just the command sent
                    settle = max(settle, physical_settle(joints[:, measured[side]], start, min_len))
                events.append((min(settle, length - 1), kind, side))
        events.sort()
        if not events:
            return [Step(0, length, _motion_text(_moving_side(joints, self.arms, 0, length)), length - 1,
                         "motion")], "none"
        steps: list[Step] = []
        start = 0
        for settle, kind, side in events:
            end = settle + 1
            text = _gripper_text(kind, side)
            if steps and end - start < min_len:  # two events almost together: one step ("close ... and ...")
                prev = steps.pop()
                stop = max(end, prev.end)
                steps.append(Step(prev.start, stop, f"{prev.text} and {text}", stop - 1, "gripper"))
            else:
                steps.append(Step(start, end, text, end - 1, "gripper"))
            start = steps[-1].end
        if length - start >= min_len:
            side = _moving_side(joints, self.arms, start, length)
            steps.append(Step(start, length, _motion_text(side), length - 1, "motion"))
        elif start < length:
            last = steps.pop()
            steps.append(Step(last.start, length, last.text, length - 1, last.source))
        return steps, "gripper"

    def _split_at_pauses(self, steps: list[Step], joints: np.ndarray, speed: np.ndarray, length: int,
                         min_len: int) -> list[Step]:
        """Split the longest splittable step at its slowest frame until min_steps (the documented fallback)."""
        steps = list(steps)
        while len(steps) < self.config.min_steps:
            candidates = [s for s in steps if s.end - s.start >= 2 * min_len]
            if not candidates:
                raise SegmentationError(f"cannot reach {self.config.min_steps} steps of >= {min_len} frames in an "
                                        f"episode of {length} frames")
            target = max(candidates, key=lambda s: s.end - s.start)
            lo, hi = target.start + min_len, target.end - min_len
            cut = lo + _pause_frame(speed[lo:hi + 1])
            side = _moving_side(joints, self.arms, target.start, cut)
            first = Step(target.start, cut, _motion_text(side), cut - 1, "pause")
            second = Step(cut, target.end, target.text, target.keyframe, target.source)
            i = steps.index(target)
            steps[i:i + 1] = [first, second]
        return steps

    def _merge_to_max(self, steps: list[Step]) -> list[Step]:
        """Merge the shortest adjacent pair until at most max_steps remain."""
        steps = list(steps)
        while len(steps) > self.config.max_steps:
            k = min(range(len(steps) - 1), key=lambda i: steps[i + 1].end - steps[i].start)
            a, b = steps[k], steps[k + 1]
            steps[k:k + 2] = [Step(a.start, b.end, f"{a.text} and {b.text}", b.keyframe, a.source, b.outcome)]
        return steps


def segment_dataset(reader: LeRobotDatasetReader, config: SegmentConfig | None = None,
                    episodes: list[int] | None = None) -> list[EpisodeSteps]:
    """Segment many episodes; raises if the result would be empty."""
    seg = Segmenter(reader, config)
    out = [seg.segment(i) for i in (episodes if episodes is not None else reader.episode_indices)]
    if not out:
        raise SegmentationError(f"{reader.root}: no episodes selected")
    return out
