"""Launch-file tests need the real `launch`/`launch_ros` (not on PyPI).

scripts/setup_env.sh installs them from ../shared/vendor/ros2 when the team's ../shared is present
(CI); a user's fresh clone without it skips these tests with that reason. Where ../shared is present
and they are still missing, the setup is broken: under scripts/run_tests.sh that is an error.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_TOOL = REPO.parent / "shared" / "tools" / "install_ros2_launch.sh"

# Looked up, not imported: importing `launch` reconfigures Python logging for the whole pytest process;
# the launch files only ever run in their own processes here.
missing = [m for m in ("launch", "launch_ros", "launch_testing", "composition_interfaces")
           if importlib.util.find_spec(m) is None]
if missing:
    if not SHARED_TOOL.is_file():
        pytest.skip(f"real ros2 launch not installed ({missing}); it comes from ../shared/tools/install_ros2_launch.sh, "
                    f"absent in this checkout", allow_module_level=True)
    msg = f"ros2 launch libraries missing ({missing}) although {SHARED_TOOL} exists: re-run scripts/setup_env.sh"
    if os.environ.get("EMU_ROS_REQUIRE_ROS") == "1":
        raise RuntimeError(msg)
    pytest.skip(msg, allow_module_level=True)
