"""`emu-ros run`: the emu_guidance and emu_bridge nodes in one process, without the `launch` package.

For machines without a full ROS install (the PyPI wheels have no `launch`) and for tests. It reads
the same parameter files as the launch files and configures + activates the guidance node itself:

    emu-ros run --profile aloha --backend emu35 --model-dir /data/Emu3.5 --vq-dir /data/Emu3.5-VisionTokenizer
    emu-ros run --profile sim_aloha --sim-task transfer_cube --sim-fault missed_grasp   # the shipped world model plans
    emu-ros run --profile sim_aloha --backend scripted                                  # the labelled reference

With a simulated profile (adapter kind `sim`) it also builds the MuJoCo ALOHA in-process: the arms
behind the bridge's adapter, the cameras published on the real topics, `/joint_states` for rviz, and
`/sim_aloha/reset` (std_srvs/srv/Trigger: a fresh scene on the next seed, refused while a task runs).
Then send a goal: `ros2 action send_goal /emu_bridge/execute_task emu_ros/action/ExecuteTask
"{instruction: 'transfer the cube', max_replans: -1}" --feedback` (or use emu_ros.client.EmuClient).
"""
from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

import rclpy
from rclpy.parameter import Parameter

from emu_ros.core.profile import config_dir
from emu_ros.ros.bridge_node import BridgeNode
from emu_ros.ros.dds import use_large_image_profile
from emu_ros.ros.guidance_node import GuidanceNode
from emu_ros.ros.node_utils import spin_nodes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emu-ros run", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="aloha", help="robot profile name (config/robots) or YAML path")
    p.add_argument("--backend", default=None, help="scripted | emu35 | sim-world-model | auto (default: simulated "
                   "profiles auto = the shipped simulator world model for the tasks it was trained on, else the "
                   "labelled scripted reference; other profiles: from the params file, else scripted)")
    p.add_argument("--model-dir", default=None, help="Emu3.5 model directory")
    p.add_argument("--vq-dir", default=None, help="Emu3.5-VisionTokenizer directory")
    p.add_argument("--dida-dir", default=None, help="DiDA-adapted weights directory")
    p.add_argument("--decoder", default=None, choices=["ar", "dida"], help="image decoder for emu35")
    p.add_argument("--device", default=None, help="torch device for emu35 (cuda, cpu)")
    p.add_argument("--sim-task", default="transfer_cube", help="simulated profiles: transfer_cube | insertion | clear_table")
    p.add_argument("--sim-seed", type=int, default=0, help="simulated profiles: scene seed")
    p.add_argument("--sim-fault", default="none", help="simulated profiles: none | missed_grasp | slip | abort | camera_dropout | missed_napkin | napkin_slip | knocked_cup")
    p.add_argument("--sim-out", default="~/.ros/emu_ros/sim", help="simulated profiles: where reference step images go")
    p.add_argument("--params-file", action="append", default=None,
                   help="ROS parameter YAML (repeatable; default: the package's config/emu_ros.yaml)")
    return p


def overrides(args: argparse.Namespace) -> list:
    """Command-line values that override the parameter files (only those given)."""
    out = [Parameter("profile", value=args.profile)]
    for name, value in (("backend", args.backend), ("model_dir", args.model_dir), ("vq_dir", args.vq_dir),
                        ("dida_dir", args.dida_dir), ("decoder", args.decoder), ("device", args.device)):
        if value is not None:
            out.append(Parameter(name, value=value))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, ros_args = build_parser().parse_known_args(argv)
    files = args.params_file or [str(config_dir() / "emu_ros.yaml")]
    dds = use_large_image_profile()  # before rclpy.init: the participant reads it when created
    rclpy.init(args=["emu-ros-run", *ros_args, "--ros-args", *sum((["--params-file", f] for f in files), [])])
    from pathlib import Path

    from emu_ros.core.profile import load_profile

    profile = load_profile(args.profile)
    if profile.adapter == "sim" and args.backend in (None, "auto"):
        from emu_ros.guidance.backends.sim_world_model import resolve_planner

        planner, why = resolve_planner("auto", args.sim_task)
        args.backend = "sim-world-model" if planner == "world-model" else "scripted"
        if why:
            logging.getLogger("emu_ros.run").warning(why)
    extra_nodes, bridge_kw, guidance_params, session = [], {}, overrides(args), None
    if profile.adapter == "sim":
        from emu_ros.ros.sim_nodes import SimCameraPublisher, SimSession

        session = SimSession.create(args.sim_task, args.sim_seed, Path(args.sim_out).expanduser(), fault=args.sim_fault)
        bridge_kw = dict(adapter=session.world.adapter, perception=session.world.perception,
                         skill_executor=session.executor)
        guidance_params.append(Parameter("task_dir", value=str(session.task_dir)))
        nodes: dict = {}

        def reset() -> tuple:
            bridge_node = nodes.get("bridge")
            if bridge_node is None:
                return False, "emu_bridge is not up yet"
            if bridge_node.runner is not None:
                return False, "a task is running: cancel it first (the scene is not reset under a moving arm)"
            return session.next_episode()

        extra_nodes.append(SimCameraPublisher(session.world, reset=reset))
    guidance = GuidanceNode(parameter_overrides=guidance_params)
    guidance.get_logger().info(dds)
    try:
        bridge = BridgeNode(parameter_overrides=[Parameter("profile", value=args.profile)], **bridge_kw)
    except Exception as e:  # noqa: BLE001 - bad profile/adapter: say why, exit cleanly
        guidance.get_logger().fatal(f"emu_bridge cannot start: {e}")
        for n in [guidance, *extra_nodes]:
            n.destroy_node()
        rclpy.try_shutdown()
        return 1
    if session is not None:
        nodes["bridge"] = bridge

    def bring_up() -> None:
        if guidance.trigger_configure().name != "SUCCESS" or guidance.trigger_activate().name != "SUCCESS":
            guidance.get_logger().error("emu_guidance did not come up (see the errors above); the bridge keeps running")

    try:
        return spin_nodes([guidance, bridge, *extra_nodes], threads=6, after=bring_up)
    finally:
        if not bridge.stop(10.0):
            logging.getLogger("emu_ros.run").warning("a task was still running after 10 s at shutdown")
        if session is not None:
            session.close()
