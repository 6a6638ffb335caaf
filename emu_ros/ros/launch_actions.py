"""Launch actions shared by the package's launch files (imported only by them: needs `launch`)."""
from __future__ import annotations

import os

from launch.actions import LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from emu_ros.core.profile import ProfileError, load_profile

TRUE = ("true", "1", "yes", "on")


def _rviz(context, config: str):
    if LaunchConfiguration("use_rviz").perform(context).strip().lower() not in TRUE:
        return []
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        prefix = get_package_prefix("rviz2")
    except PackageNotFoundError:
        prefix = ""
    if not prefix or not os.access(os.path.join(prefix, "lib", "rviz2", "rviz2"), os.X_OK):
        return [LogInfo(msg="use_rviz:=true but rviz2 is not installed (sudo apt install ros-$ROS_DISTRO-rviz2); "
                            "continuing without it")]
    return [Node(package="rviz2", executable="rviz2", name="rviz2", output="log", arguments=["-d", config])]


def optional_rviz(config: str) -> OpaqueFunction:
    """rviz2 with `config` when use_rviz is true; a warning (and everything else still running) without rviz2."""
    return OpaqueFunction(function=_rviz, args=[config])


def _check_profile(context):
    name = LaunchConfiguration("profile").perform(context)
    try:
        profile = load_profile(name)
    except ProfileError as e:
        raise RuntimeError(f"cannot start: {e}") from None
    if profile.adapter == "sim":
        raise RuntimeError(f"profile {name!r} is the simulator, whose adapter lives inside its own process: use "
                           f"`ros2 launch emu_ros sim.launch.py` (or `emu-ros run --profile {name}`)")
    return []


def refuse_unusable_profile() -> OpaqueFunction:
    """Stop the launch, before any node starts, when `profile` is missing, invalid or the simulator's.

    An exception in an OpaqueFunction ends the launch with its message and a non-zero exit; nothing
    after it in the description is started.
    """
    return OpaqueFunction(function=_check_profile)
