"""The `clear_table` scene: the gym-aloha bimanual ViperX cell with a (pink) napkin, a (blue) cup,
a (green) spoon and a (yellow) sponge to be put into a bin: the product card's table-clearing
example, in simulation.

Why the napkin is a thin articulated body and not a MuJoCo flex cloth: a paper napkin folded into
a 20 x 5 cm strip (the way it lies beside a plate) is two hinged panels, 6 mm thick, 10 g. That
keeps what matters for the task — it is flat and light, it has to be pinched at its end with the fingertips
almost on the table, and when it is lifted by one end the other half hangs and swings — at the
cost of two bodies and one hinge. A flexcomp cloth of the same size costs 3-9x the physics time per
control tick (measured by `python -m emu_ros.bench.napkin_models`), and the whole 12-step episode
has to stay well under a minute of wall time on two CPU cores.

Success is scored from the simulator state only: an object counts as cleared when its centre is
inside the bin's inner volume. The dm_control reward is that count (0..4), so `max_reward` and
`reward` behave like gym-aloha's for the other tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

#: Movable bodies in qpos order after the 16 robot dofs (napkin: free joint + one hinge).
OBJECTS = ("napkin", "cup", "spoon", "sponge")

#: The bin: a fixed open box behind the middle of the table, reachable by both arms.
BIN_CENTER = (0.0, 0.70)
BIN_INNER_HALF = (0.10, 0.08)  # inner half extents in x, y (m)
BIN_WALL_HEIGHT = 0.06
BIN_WALL = 0.006  # wall thickness

NAPKIN_HALF = (0.05, 0.025, 0.003)  # one panel's half extents: two panels make a 20 x 5 cm strip
CUP_RADIUS, CUP_HALF_HEIGHT = 0.026, 0.04
SPOON_HALF = (0.07, 0.011, 0.006)
SPONGE_HALF = (0.035, 0.025, 0.02)

#: Rest height of each object's body origin on the table (fault injection puts objects back here).
REST_Z = {"napkin": NAPKIN_HALF[2], "cup": CUP_HALF_HEIGHT, "spoon": SPOON_HALF[2], "sponge": SPONGE_HALF[2]}


@dataclass(frozen=True)
class Layout:
    """Seeded start poses: (x, y, yaw) per object."""

    poses: dict

    def qpos(self) -> np.ndarray:
        """The object block of qpos: per free joint xyz + quat (wxyz); the napkin hinge angle after its free joint."""
        out = []
        for name in OBJECTS:
            x, y, yaw = self.poses[name]
            out += [x, y, REST_Z[name] + 0.002, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
            if name == "napkin":
                out.append(0.0)
        return np.asarray(out, float)


#: Where each object starts (x range, y range, yaw range): napkin and spoon on the right arm's side,
#: cup and sponge on the left's, all in front of the bin and apart from each other.
START_REGIONS = {
    "napkin": ((0.08, 0.18), (0.38, 0.45), (-0.35, 0.35)),
    "spoon": ((0.15, 0.24), (0.52, 0.57), (-0.4, 0.4)),
    "cup": ((-0.20, -0.10), (0.38, 0.46), (0.0, 0.0)),
    "sponge": ((-0.24, -0.15), (0.52, 0.57), (-0.4, 0.4)),
}


def sample_layout(seed: Optional[int]) -> Layout:
    """Object poses for a seed (numpy's seeded generator; seed None = a random scene)."""
    rng = np.random.default_rng(seed)
    poses = {}
    for name in OBJECTS:
        (x0, x1), (y0, y1), (a0, a1) = START_REGIONS[name]
        poses[name] = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)), float(rng.uniform(a0, a1)))
    return Layout(poses)


def in_bin(position) -> bool:
    """Whether a body centre lies inside the bin's inner volume (the success region)."""
    x, y, z = (float(v) for v in position)
    return (abs(x - BIN_CENTER[0]) <= BIN_INNER_HALF[0] and abs(y - BIN_CENTER[1]) <= BIN_INNER_HALF[1]
            and z <= BIN_WALL_HEIGHT + 0.05)  # resting on what is already inside counts; held above it does not


def _box_inertial(mass: float, half, pos=(0.0, 0.0, 0.0)) -> str:
    """An explicit <inertial> (gym-aloha's compiler takes inertia from geoms of groups 4-5 only)."""
    a, b, c = (2 * float(v) for v in half)
    d = (mass * (b * b + c * c) / 12, mass * (a * a + c * c) / 12, mass * (a * a + b * b) / 12)
    return (f'<inertial pos="{pos[0]:.4f} {pos[1]:.4f} {pos[2]:.4f}" mass="{mass}" '
            f'diaginertia="{d[0]:.3e} {d[1]:.3e} {d[2]:.3e}"/>')


def _free_body(name: str, pos: str, mass: float, half, shape: str, rgb: str, contact: str) -> str:
    """A rigid object on a free joint (`pos` until the layout places it at reset)."""
    return (f'<body name="{name}" pos="{pos}"><freejoint name="{name}_joint"/>{_box_inertial(mass, half)}'
            f'<geom name="{name}" {shape} {contact} friction="1 0.005 0.0001" rgba="{rgb} 1"/></body>')


def scene_xml() -> str:
    """The MJCF of the scene; it includes gym-aloha's table, lights, cameras and both arms."""
    bx, by = BIN_CENTER
    hx, hy = BIN_INNER_HALF
    t, h = BIN_WALL, BIN_WALL_HEIGHT
    n = NAPKIN_HALF
    contact = 'condim="4" solimp="2 1 0.01" solref="0.01 1"'
    walls = "\n".join(
        f'<geom type="box" name="bin_{k}" pos="{px:.4f} {py:.4f} {h / 2:.4f}" size="{sx:.4f} {sy:.4f} {h / 2:.4f}" '
        f'rgba="0.55 0.42 0.25 1"/>'
        for k, px, py, sx, sy in (("w", -hx - t, 0.0, t, hy + 2 * t), ("e", hx + t, 0.0, t, hy + 2 * t),
                                  ("s", 0.0, -hy - t, hx, t), ("n", 0.0, hy + t, hx, t)))
    return f"""<mujoco model="clear_table">
  <include file="scene.xml"/>
  <include file="vx300s_dependencies.xml"/>
  <worldbody>
    <include file="vx300s_left.xml"/>
    <include file="vx300s_right.xml"/>
    <body name="bin" pos="{bx} {by} 0">
      <geom type="box" name="bin_floor" pos="0 0 0.002" size="{hx + 2 * t:.4f} {hy + 2 * t:.4f} 0.002"
            rgba="0.55 0.42 0.25 1"/>
      {walls}
    </body>
    <body name="napkin" pos="0.15 0.44 0.01">
      <freejoint name="napkin_joint"/>
      {_box_inertial(0.005, n, (-n[0], 0, 0))}
      <geom type="box" name="napkin_a" pos="{-n[0]:.4f} 0 0" size="{n[0]} {n[1]} {n[2]}" {contact}
            friction="1.2 0.01 0.001" rgba="0.85 0.12 0.45 1"/>
      <body name="napkin_b" pos="0 0 0">
        {_box_inertial(0.005, n, (n[0], 0, 0))}
        <joint name="napkin_fold" type="hinge" axis="0 1 0" range="-2.6 2.6" stiffness="0.002" damping="0.002"/>
        <geom type="box" name="napkin_b" pos="{n[0]:.4f} 0 0" size="{n[0]} {n[1]} {n[2]}" {contact}
              friction="1.2 0.01 0.001" rgba="0.82 0.11 0.43 1"/>
      </body>
    </body>
    {_free_body("cup", "-0.15 0.46 0.05", 0.08, (CUP_RADIUS, CUP_RADIUS, CUP_HALF_HEIGHT),
                f'type="cylinder" size="{CUP_RADIUS} {CUP_HALF_HEIGHT}"', "0.1 0.45 0.9", contact)}
    {_free_body("spoon", "0.17 0.58 0.02", 0.03, SPOON_HALF, 'type="box" size="{} {} {}"'.format(*SPOON_HALF),
                "0.15 0.7 0.25", contact)}
    {_free_body("sponge", "-0.17 0.58 0.03", 0.02, SPONGE_HALF, 'type="box" size="{} {} {}"'.format(*SPONGE_HALF),
                "1.0 0.85 0.1", contact)}
  </worldbody>
{_actuators()}
</mujoco>
"""


def _actuators() -> str:
    """gym-aloha's <actuator> block (position servos of both arms and fingers), read from its transfer-cube
    scene so both scenes drive the arms identically."""
    import re

    from gym_aloha import constants

    xml = (Path(constants.ASSETS_DIR) / "bimanual_viperx_transfer_cube.xml").read_text()
    m = re.search(r"<actuator>.*?</actuator>", xml, re.S)
    if m is None:
        raise RuntimeError(f"no <actuator> block in gym-aloha's {constants.ASSETS_DIR}/bimanual_viperx_transfer_cube.xml")
    return m.group(0)


def gym_aloha_assets() -> dict:
    """gym-aloha's meshes and included MJCF files, by file name: the assets the scene's <include>s need."""
    from gym_aloha import constants

    return {p.name: p.read_bytes() for p in Path(constants.ASSETS_DIR).iterdir() if p.suffix in (".xml", ".stl")}


def build_physics():
    """dm_control Physics of the scene."""
    from dm_control import mujoco as dm_mujoco

    return dm_mujoco.Physics.from_xml_string(scene_xml(), assets=gym_aloha_assets())


def clear_table_task_class():
    """The dm_control task: gym-aloha's bimanual control, our seeded layout, reward = objects in the bin."""
    from gym_aloha.constants import START_ARM_POSE
    from gym_aloha.tasks import sim as aloha_tasks

    class ClearTableTask(aloha_tasks.BimanualViperXTask):
        def __init__(self, random=None):
            super().__init__(random=random)
            self.max_reward = len(OBJECTS)

        def initialize_episode(self, physics):
            # the object block comes through gym-aloha's BOX_POSE, like its own tasks' (AlohaSim.reset sets
            # it from sample_layout)
            if aloha_tasks.BOX_POSE[0] is None:
                raise RuntimeError("clear_table: no layout set (reset through AlohaSim.reset(seed))")
            with physics.reset_context():
                physics.named.data.qpos[:16] = START_ARM_POSE
                np.copyto(physics.data.ctrl, START_ARM_POSE)
                physics.data.qpos[16:] = aloha_tasks.BOX_POSE[0]
            super(aloha_tasks.BimanualViperXTask, self).initialize_episode(physics)

        def get_reward(self, physics):
            return float(sum(in_bin(physics.named.data.xpos[name]) for name in OBJECTS))

    return ClearTableTask
