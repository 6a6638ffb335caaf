"""emu_ros on the agibot robot: `ros2 launch emu_ros agibot.launch.py backend:=emu35 model_dir:=... vq_dir:=...`."""
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    # Every other argument (backend, model_dir, vq_dir, dida_dir, decoder, device, use_rviz) passes through.
    return LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("emu_ros"), "launch", "emu_ros.launch.py"])),
        launch_arguments={"profile": "agibot_a2"}.items())])
