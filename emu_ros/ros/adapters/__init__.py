"""ROS robot adapters, chosen by the profile's `adapter.kind`."""
from __future__ import annotations

from rclpy.node import Node

from emu_ros.core.profile import RobotProfile
from emu_ros.ros.adapters.base import AdapterConfigError


def make_adapter(node: Node, profile: RobotProfile):
    """The RobotAdapter for `profile` on `node` (its clients/publishers are created on that node)."""
    kind = profile.adapter
    if kind == "follow_joint_trajectory":
        from emu_ros.ros.adapters.follow_joint_trajectory import FollowJointTrajectoryAdapter

        return FollowJointTrajectoryAdapter(node, profile)
    if kind == "interbotix":
        from emu_ros.ros.adapters.streaming import InterbotixAdapter

        return InterbotixAdapter(node, profile)
    if kind == "aimdk":
        from emu_ros.ros.adapters.streaming import AimdkAdapter

        return AimdkAdapter(node, profile)
    raise AdapterConfigError(f"profile {profile.name!r}: adapter kind {kind!r} has no ROS adapter "
                             "(the simulator's adapter is created by `emu-ros demo` / emu_ros.sim)")


__all__ = ["make_adapter", "AdapterConfigError"]
