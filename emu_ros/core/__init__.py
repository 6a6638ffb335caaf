"""Core types shared by every layer: observations, plan steps, outcomes, cancel tokens, protocols,
the robot profile and its kinematic chains, the latest-frame camera hub. numpy + pyyaml only; no ROS."""
