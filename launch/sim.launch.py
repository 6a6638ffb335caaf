"""The simulated ALOHA with the real nodes: `ros2 launch emu_ros sim.launch.py [use_rviz:=true]`.

The simulator's adapter is an in-process object, so the nodes run in one process (`emu-ros run
--profile sim_aloha`), which also publishes the simulated cameras on the real ALOHA topics.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from emu_ros.ros.launch_actions import optional_rviz


def generate_launch_description():
    share = FindPackageShare("emu_ros")
    return LaunchDescription([
        DeclareLaunchArgument("task", default_value="transfer_cube", description="sim task: transfer_cube | insertion | clear_table"),
        DeclareLaunchArgument("seed", default_value="0", description="scene seed"),
        DeclareLaunchArgument("fault", default_value="none", description="injected fault: none | missed_grasp | slip | abort | camera_dropout | missed_napkin | napkin_slip | knocked_cup"),
        DeclareLaunchArgument("planner", default_value="auto",
                              description="auto (the shipped simulator world model for the tasks it was trained on) | "
                                          "sim-world-model | scripted (the labelled reference)"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="start rviz2 with rviz/steps.rviz"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "emu_ros.yaml"]),
                              description="node parameters (emu_guidance, emu_bridge sections)"),
        # No `name=` here: it would remap every node of the process (emu_guidance, emu_bridge, the
        # simulated cameras) to one name; the nodes name themselves.
        Node(package="emu_ros", executable="emu-ros", output="screen",
             arguments=["run", "--profile", "sim_aloha", "--sim-task", LaunchConfiguration("task"),
                        "--sim-seed", LaunchConfiguration("seed"), "--sim-fault", LaunchConfiguration("fault"),
                        "--backend", LaunchConfiguration("planner"),
                        "--params-file", LaunchConfiguration("params_file")]),
        optional_rviz(PathJoinSubstitution([share, "rviz", "steps.rviz"])),
    ])
