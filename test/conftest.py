"""Shared pytest setup: the repository root is importable (emu_ros from the source tree; its
`__path__` extension finds the colcon-generated emu_ros.msg / emu_ros.action beside it).

ROS tests (test/ros) are skipped with a reason when the environment was not built; under
scripts/run_tests.sh (EMU_ROS_REQUIRE_ROS=1, as in CI) they error instead, so a broken setup can
never pass as green.
"""
from __future__ import annotations

import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# test/helpers: data builders shared by test directories (synthetic RGB-D scenes, marker images)
sys.path.insert(0, str(ROOT / "test" / "helpers"))
