"""GroundTruthPerception: a LABELLED ground-truth oracle for object poses in the simulator, and
PerceptionAudit, which scores camera perception against it.

Skills need to know where an object is; on a robot that comes from a detector or a learned policy.
In simulation this oracle reads the object's pose straight from MuJoCo. It is marked
`ground_truth = True` and named "sim-ground-truth-oracle" so no log or report can mistake it for
perception, and the step monitor never uses it (it judges from robot signals only).
"""
from __future__ import annotations

import logging
import re
from typing import Optional

import numpy as np

from emu_ros.core.kinematics import yaw_from_rotation
from emu_ros.core.protocols import ObjectEstimate, PerceptionError
from emu_ros.sim.aloha_env import AlohaSim

log = logging.getLogger(__name__)

#: Words a step may use for an object -> MJCF body, per task.
ALIASES = {
    "transfer_cube": {"box": ("red cube", "cube", "red box", "box", "red block", "block", "red_box", "object")},
    "insertion": {"peg": ("red peg", "peg", "red_peg", "red stick", "stick"),
                  "socket": ("blue socket", "socket", "blue_socket", "blue box", "tube", "hole")},
    "clear_table": {"napkin": ("napkin", "paper napkin", "pink napkin", "paper towel", "tissue", "serviette"),
                    "cup": ("cup", "blue cup", "mug", "glass"),
                    "spoon": ("spoon", "green spoon", "utensil", "cutlery", "fork"),
                    "sponge": ("sponge", "yellow sponge")},
}


class GroundTruthPerception:
    """Perception protocol backed by simulator state: ground truth, for simulation only."""

    name = "sim-ground-truth-oracle"
    ground_truth = True

    def __init__(self, sim: AlohaSim):
        self.sim = sim
        self.aliases = ALIASES.get(sim.task_name, {})

    def resolve(self, obj: str) -> Optional[str]:
        """Map a phrase ("the red cube") to a body name, or None."""
        text = re.sub(r"\b(the|a|an)\b", " ", obj.lower()).strip()
        text = re.sub(r"\s+", " ", text)
        best = None
        for body, names in self.aliases.items():
            for n in names:
                if n == text or re.search(rf"\b{re.escape(n)}\b", text):
                    if best is None or len(n) > best[0]:
                        best = (len(n), body)
        return best[1] if best else None

    def locate(self, obj: str) -> Optional[ObjectEstimate]:
        body = self.resolve(obj)
        if body is None:
            log.debug("oracle: no object matches %r", obj)
            return None
        p, R = self.sim.body_pose(body)
        yaw = yaw_from_rotation(R)
        if self._is_cylinder(body) and abs(R[2, 2]) < 0.5:
            # a cylinder on its side (a knocked-over cup): the yaw of its axis, as a camera sees its length,
            # so a grasp closes across it
            yaw = float(np.arctan2(R[1, 2], R[0, 2]))
        return ObjectEstimate(name=body, position=tuple(float(x) for x in p), yaw=yaw, confidence=1.0,
                              source=self.name)

    def _is_cylinder(self, body: str) -> bool:
        import mujoco

        m = self.sim.model
        b = m.body(body)
        geoms = range(b.geomadr[0], b.geomadr[0] + b.geomnum[0])
        return any(m.geom_type[g] == mujoco.mjtGeom.mjGEOM_CYLINDER for g in geoms)

    def rotation(self, obj: str) -> Optional[np.ndarray]:
        """Full orientation (oracle only; skills use `locate().yaw`)."""
        body = self.resolve(obj)
        return None if body is None else self.sim.body_pose(body)[1]


class PerceptionAudit:
    """Wraps a (camera) Perception and scores each answer against the simulator's truth.

    For the accuracy table only: answers pass through unchanged, failures are re-raised; the truth is
    read after the fact and never reaches a skill.
    """

    ground_truth = False

    def __init__(self, inner, sim: AlohaSim):
        self.inner = inner
        self.name = inner.name
        self.oracle = GroundTruthPerception(sim)
        #: (object, error vector m, |yaw error| rad mod pi/2, confidence)
        self.errors: list = []
        #: (object, failure code)
        self.failures: list = []

    def resolve(self, phrase: str):
        """The inner perception's reading of a phrase (which catalogued object it names)."""
        return self.inner.resolve(phrase)

    def locate(self, obj: str) -> Optional[ObjectEstimate]:
        try:
            est = self.inner.locate(obj)
        except PerceptionError as e:
            self.failures.append((obj, e.code))
            raise
        if est is not None:
            truth = self.oracle.locate(est.name)
            if truth is not None:
                d = (est.yaw - truth.yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
                self.errors.append((est.name, np.subtract(est.position, truth.position), abs(float(d)),
                                    est.confidence))
        return est

    def reset(self) -> None:
        self.errors.clear()
        self.failures.clear()


def error_table(errors: list) -> dict:
    """Per object: count, mean/max position error (mm), mean |xy| and |z| error, mean yaw error (deg)."""
    out = {}
    for name in sorted({e[0] for e in errors}):
        v = np.array([e[1] for e in errors if e[0] == name]) * 1000.0
        yaw = np.degrees([e[2] for e in errors if e[0] == name])
        n = np.linalg.norm(v, axis=1)
        out[name] = {"n": int(len(v)), "mean_mm": round(float(n.mean()), 2), "max_mm": round(float(n.max()), 2),
                     "p95_mm": round(float(np.percentile(n, 95)), 2),
                     "mean_xy_mm": round(float(np.linalg.norm(v[:, :2], axis=1).mean()), 2),
                     "mean_abs_z_mm": round(float(np.abs(v[:, 2]).mean()), 2),
                     "mean_yaw_deg": round(float(yaw.mean()), 2)}
    return out
