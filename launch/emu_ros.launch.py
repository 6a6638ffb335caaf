"""Start emu_guidance (lifecycle: configured and activated here) and emu_bridge for one robot profile.

    ros2 launch emu_ros emu_ros.launch.py profile:=aloha backend:=emu35 model_dir:=/data/Emu3.5 \
        vq_dir:=/data/Emu3.5-VisionTokenizer dida_dir:=/data/Emu3.5-DiDA use_rviz:=true

Robot-specific entry points (aloha.launch.py, agibot.launch.py, sim.launch.py) include this file.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from emu_ros.ros.launch_actions import optional_rviz, refuse_unusable_profile


def generate_launch_description():
    share = FindPackageShare("emu_ros")
    args = [
        DeclareLaunchArgument("profile", default_value="aloha", description="robot profile (config/robots/<name>.yaml)"),
        DeclareLaunchArgument("backend", default_value="scripted", description="world model: scripted | emu35"),
        DeclareLaunchArgument("model_dir", default_value="", description="Emu3.5 model directory"),
        DeclareLaunchArgument("vq_dir", default_value="", description="Emu3.5-VisionTokenizer directory"),
        DeclareLaunchArgument("dida_dir", default_value="", description="DiDA-adapted weights directory"),
        DeclareLaunchArgument("decoder", default_value="auto",
                              description="image decoder: auto (dida when the weights carry dida_config.json) | ar | dida"),
        DeclareLaunchArgument("device", default_value="cuda", description="torch device for emu35"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "emu_ros.yaml"]),
                              description="node parameters"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="start rviz2 with rviz/steps.rviz"),
    ]
    params_file = LaunchConfiguration("params_file")
    profile = LaunchConfiguration("profile")
    guidance = LifecycleNode(
        package="emu_ros", executable="emu_guidance", name="emu_guidance", namespace="", output="screen",
        parameters=[params_file, {
            "profile": profile,
            "backend": LaunchConfiguration("backend"),
            "model_dir": LaunchConfiguration("model_dir"),
            "vq_dir": LaunchConfiguration("vq_dir"),
            "dida_dir": LaunchConfiguration("dida_dir"),
            "decoder": LaunchConfiguration("decoder"),
            "device": LaunchConfiguration("device"),
        }],
    )
    bridge = Node(package="emu_ros", executable="emu_bridge", name="emu_bridge", output="screen",
                  parameters=[params_file, {"profile": profile}])
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(guidance),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=guidance, goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(guidance),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    # rviz2 is optional: without it, use_rviz:=true warns and the robot nodes still run
    rviz = optional_rviz(PathJoinSubstitution([share, "rviz", "steps.rviz"]))
    return LaunchDescription(args + [refuse_unusable_profile(), guidance, bridge, activate, configure, rviz])
