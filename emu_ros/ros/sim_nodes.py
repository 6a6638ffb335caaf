"""The simulated ALOHA as ROS: camera topics and joint states from MuJoCo, and the in-process wiring.

`SimCameraPublisher` renders only the cameras somebody subscribes to, at `rate_hz`, in its own
thread (the simulator never blocks the executor) and publishes them on the profile's real topic
names as rgb8 sensor_msgs/Image, so emu_guidance and emu_bridge cannot tell it from RealSense
drivers. `/joint_states` carries the measured joints (grippers normalised) for rviz. Given a `reset`
callable it also offers `~/reset` (std_srvs/srv/Trigger; `/sim_aloha/reset`): a fresh scene on the next
seed, so a client can start another episode without restarting the process.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from typing import Callable, Optional

from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from emu_ros.core.types import CameraFrame
from emu_ros.ros.image_conversion import numpy_to_image
from emu_ros.sim.aloha_env import SimCameraStreamer


class SimCameraPublisher(Node):
    def __init__(self, world, rate_hz: float = 10.0, image_size: tuple = (240, 320), node_name: str = "sim_aloha",
                 reset: Optional[Callable[[], tuple]] = None):
        """`reset` () -> (success, message) backs the ~/reset service (none without it)."""
        super().__init__(node_name)
        self.world = world
        self.profile = world.profile
        self._pubs = {c.name: self.create_publisher(Image, c.topic, qos_profile_sensor_data) for c in self.profile.cameras}
        self._joints = self.create_publisher(JointState, "/joint_states", 10)
        world.images.size = image_size
        self.streamer = SimCameraStreamer(world.images, self._publish_frame, rate_hz=rate_hz, subscribed=())
        self.create_timer(0.5, self._update_subscriptions)
        self.create_timer(0.1, self._publish_joints)
        self._update_subscriptions()
        self.streamer.start()
        self._reset = reset
        if reset is not None:
            from std_srvs.srv import Trigger

            self.create_service(Trigger, "~/reset", self._on_reset)

    def _on_reset(self, request, response):
        try:
            response.success, response.message = self._reset()
            if response.success:  # answer once the cameras show the new scene: a plan asked right after the
                # reset must not be made from a frame of the old one
                target = self.streamer.frames + 2 * len(self.streamer.subscribed)
                end = time.monotonic() + 3.0
                while self.streamer.frames < target and time.monotonic() < end:
                    time.sleep(0.02)
        except Exception as e:  # noqa: BLE001 - a failed reset is an answer, never a dead node
            self.get_logger().error(f"reset failed: {type(e).__name__}: {e}")
            response.success, response.message = False, f"reset failed: {type(e).__name__}: {e}"
        if response.success:  # (rclpy: one call site, one severity)
            self.get_logger().info(response.message)
        else:
            self.get_logger().warning(response.message)
        return response

    def _update_subscriptions(self) -> None:
        """Render only what is watched: cameras without subscribers cost nothing."""
        self.streamer.subscribed = {name for name, pub in self._pubs.items() if pub.get_subscription_count() > 0}

    def _publish_frame(self, frame: CameraFrame) -> None:
        msg = numpy_to_image(frame.image, "rgb8", stamp=self.get_clock().now().to_msg(), frame_id=f"{frame.camera}_optical")
        self._publish(self._pubs[frame.camera], msg)

    def _publish_joints(self) -> None:
        st = self.world.adapter.joint_state()
        msg = JointState(name=list(st.positions), position=[float(v) for v in st.positions.values()])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publish(self._joints, msg)

    def _publish(self, pub, msg) -> None:
        """Publish unless shutting down: Ctrl-C invalidates the context between our check and the call."""
        if not self.context.ok():
            self.streamer.subscribed = set()  # stop rendering instead of failing every frame
            return
        try:
            pub.publish(msg)
        except Exception:  # noqa: BLE001 - re-raised unless the context went away under us
            if self.context.ok():
                raise
            self.streamer.subscribed = set()

    def destroy_node(self):
        self.streamer.stop()
        return super().destroy_node()


@dataclass
class SimSession:
    """One simulated task ready to run: world reset to `seed`, reference plan, fault injector, executor."""

    world: object
    task_dir: Path
    instruction: str
    executor: object
    injector: object
    skill_params: dict
    task: str = ""
    seed: int = 0
    fault: str = "none"
    fault_step: object = None
    out_dir: Optional[Path] = None  # where the reference plan is rendered (None: the task file, no step images)

    @classmethod
    def create(cls, task: str, seed: int, out_dir: Path, fault: str = "none", fault_step=None,
               realtime_factor: float = 1.0, step_images: bool = True, perception: str = "oracle") -> "SimSession":
        """`perception`: "oracle" (labelled ground truth) or "camera" (camera perception on rendered RGB-D)."""
        from emu_ros.sim.episode import SimWorld
        from emu_ros.sim.faults import FaultAwareExecutor
        from emu_ros.sim.tasks import task_def

        tdef = task_def(task)
        out_dir = Path(out_dir) if step_images else None
        plan_file = _reference_plan(task, seed, out_dir)
        world = SimWorld(task, realtime_factor=realtime_factor, perception=perception)
        world.reset(seed)
        injector = _fault_injector(world, task, plan_file, fault, fault_step, seed)
        return cls(world=world, task_dir=Path(plan_file).parent, instruction=tdef.instruction,
                   executor=FaultAwareExecutor(world.executor, injector), injector=injector,
                   skill_params=tdef.skill_params, task=task, seed=seed, fault=fault, fault_step=fault_step,
                   out_dir=out_dir)

    def next_episode(self) -> tuple:
        """The scene reset to the next seed, the same fault armed for it (and the labelled reference plan
        re-rendered for it). Returns (True, what happened)."""
        seed = self.seed + 1
        plan_file = _reference_plan(self.task, seed, self.out_dir)
        world = self.world
        with world.sim.lock:
            self.injector.close()
            world.reset(seed)
            self.injector = _fault_injector(world, self.task, plan_file, self.fault, self.fault_step, seed)
            self.executor.injector = self.injector
        self.seed = seed
        return True, f"{self.task} scene reset to seed {seed} (fault {self.fault})"

    def close(self) -> None:
        self.injector.close()
        try:
            self.world.sim.close()
        except Exception:  # noqa: BLE001 - closing a renderer twice is harmless
            pass


def _reference_plan(task: str, seed: int, out_dir: Optional[Path]) -> Path:
    """The labelled scripted reference's task file for a seed: with step images rendered from a fault-free run
    into out_dir, else the task's own file."""
    from emu_ros.sim.tasks import task_file, write_reference_plan

    if out_dir is None:
        return task_file(task)
    # a folder per task: the scripted planner loads every task file in the folder, and a shared
    # --sim-out would otherwise offer the reference plan of another scene left by an earlier run
    return write_reference_plan(task, seed, out_dir / "reference_plan" / task)


def _fault_injector(world, task: str, plan_file: Path, fault: str, fault_step, seed: int):
    """The fault armed on the reference plan's steps (where it strikes) for this seed."""
    from emu_ros.guidance.backends.scripted import ScriptedWorldModel
    from emu_ros.sim.faults import FaultInjector, FaultSpec
    from emu_ros.sim.tasks import task_def

    steps = ScriptedWorldModel(task_files=[plan_file]).find(task_def(task).instruction).steps
    calls = [world.mapper.map(s.text).call for s in steps]
    return FaultInjector(FaultSpec(kind=fault, step=fault_step, seed=seed), world.sim, world.adapter, world.images,
                         calls)


def wait_until(pred, timeout: float, period: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(period)
    return bool(pred())
