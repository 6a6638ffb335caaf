"""Shared fixtures for the simulated ALOHA tests (MuJoCo on CPU, no rendering unless a test asks)."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("gym_aloha")
pytest.importorskip("dm_control")


@pytest.fixture(scope="module")
def profile():
    from emu_ros.core.profile import load_profile

    return load_profile("sim_aloha")


@pytest.fixture()
def cube_world(profile):
    """A transfer-cube sim at seed 0 with adapter, oracle and skill executor."""
    from emu_ros.bridge.skills import ProfileSkillExecutor
    from emu_ros.sim.adapter import SimRobotAdapter
    from emu_ros.sim.aloha_env import AlohaSim
    from emu_ros.sim.perception import GroundTruthPerception
    from emu_ros.sim.tasks import task_def

    sim = AlohaSim("transfer_cube")
    sim.reset(0)
    adapter = SimRobotAdapter(sim, profile)
    adapter.hold(0.4)  # the cube is spawned 3 cm above the table: let it land first
    perception = GroundTruthPerception(sim)
    executor = ProfileSkillExecutor(profile, adapter, perception, task_def("transfer_cube").skill_params)
    return sim, adapter, perception, executor
