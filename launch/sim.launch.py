"""The simulated ALOHA with the real nodes: `ros2 launch emu_ros sim.launch.py [use_rviz:=true]`.

The simulator's adapter is an in-process object, so the nodes run in one process (`emu-ros run
--profile sim_aloha`), which also publishes the simulated cameras on the real ALOHA topics.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("emu_ros")
    return LaunchDescription([
        DeclareLaunchArgument("task", default_value="transfer_cube", description="sim task: transfer_cube | insertion"),
        DeclareLaunchArgument("seed", default_value="0", description="scene seed"),
        DeclareLaunchArgument("fault", default_value="none", description="injected fault: none | missed_grasp | slip | abort | camera_dropout"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="start rviz2 with rviz/steps.rviz"),
        Node(package="emu_ros", executable="emu-ros", name="emu_sim", output="screen",
             arguments=["run", "--profile", "sim_aloha", "--sim-task", LaunchConfiguration("task"),
                        "--sim-seed", LaunchConfiguration("seed"), "--sim-fault", LaunchConfiguration("fault"),
                        "--params-file", PathJoinSubstitution([share, "config", "emu_ros.yaml"])]),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="log",
             arguments=["-d", PathJoinSubstitution([share, "rviz", "steps.rviz"])],
             condition=IfCondition(LaunchConfiguration("use_rviz"))),
    ])
