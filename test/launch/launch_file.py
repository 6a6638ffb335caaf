"""What `ros2 launch PACKAGE FILE k:=v ...` does (ros2launch is not on PyPI): run FILE from the package's
share/launch through launch.LaunchService, which handles SIGINT/SIGTERM like `ros2 launch`.

    python test/launch/launch_file.py emu_ros sim.launch.py fault:=missed_grasp
"""
from __future__ import annotations

import os
import signal
import sys

from ament_index_python.packages import get_package_share_directory
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource


def main(argv: list) -> int:
    # A shell starts background jobs with SIGINT ignored, and children inherit that: a launch started
    # from one (CI scripts, `nohup ... &`) would never see Ctrl-C. Take SIGINT back, as a terminal's
    # `ros2 launch` has it, so LaunchService's handler can shut the launch down.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    package, file, *rest = argv
    path = os.path.join(get_package_share_directory(package), "launch", file)
    arguments = [tuple(a.split(":=", 1)) for a in rest]
    bad = [a for a in arguments if len(a) != 2]
    if bad:
        print(f"launch arguments must be name:=value, got {bad}", file=sys.stderr)
        return 2
    service = LaunchService(argv=argv)
    service.include_launch_description(
        IncludeLaunchDescription(PythonLaunchDescriptionSource(path), launch_arguments=arguments))
    return service.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
