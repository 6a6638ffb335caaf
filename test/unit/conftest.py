"""Fixtures for the ROS-free core tests: the simulated ALOHA profile and the fakes in fakes.py."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from emu_ros.core.profile import load_profile  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def profile():
    return load_profile("sim_aloha")
