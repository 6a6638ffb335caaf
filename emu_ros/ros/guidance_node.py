"""emu_guidance: the world model in a lifecycle node behind the `~/generate_plan` action.

configure  load the robot profile and the world-model backend (the heavy load happens here)
activate   subscribe to the profile's cameras, accept `~/generate_plan` goals
deactivate drop the subscriptions, reject goals; cleanup/shutdown also free the model (and GPU memory)

The action server itself lives as long as the node and rejects goals unless the node is active:
destroying an rclpy action server while a multi-threaded executor waits on it kills the executor.

Publishes `~/plan` (reliable + transient local: late rviz/clients get the latest plan),
`~/step_image` and `~/markers`. One plan at a time: a goal arriving while one is generating is
rejected (the model owns the GPU); cancel stops generation between tokens. Generation runs in a
worker thread that the async execute callback awaits, so no executor thread blocks on the model.
"""
from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Optional

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from emu_ros.action import GeneratePlan
from emu_ros.core.profile import config_dir, load_profile
from emu_ros.core.protocols import CameraUnavailable
from emu_ros.guidance.backends import make_world_model
from emu_ros.core.camera_hub import CameraHub
from emu_ros.guidance.engine import EngineConfig, GuidanceEngine
from emu_ros.core.types import Cancelled, CameraFrame, Observation, PlanningError
from emu_ros.msg import Plan as PlanMsg
from emu_ros.ros.camera_intake import node_camera_hub, subscribe_cameras
from emu_ros.ros.dds import use_large_image_profile
from emu_ros.ros.conversions import (history_from_msgs, observation_images_from_msgs, plan_markers,
                                     plan_to_msg, step_to_msg)
from emu_ros.ros.image_conversion import ImageConversionError, numpy_to_image
from emu_ros.ros.log_routing import LogRoute
from emu_ros.ros.node_utils import GOAL_SERVICE_QOS, LATCHED, declare, in_thread, param, spin_nodes


class _GoalImages:
    """ImageSource over the images carried by a GeneratePlan goal."""

    def __init__(self, images: dict):
        self._obs = Observation(frames={c: CameraFrame(c, a, 0.0) for c, a in images.items()})

    def observe(self, cameras=None) -> Observation:
        return self._obs


class GuidanceNode(LifecycleNode):
    def __init__(self, node_name: str = "emu_guidance", **kwargs):
        self.engine: Optional[GuidanceEngine] = None  # set before super(): transitions may run early
        self.hub: Optional[CameraHub] = None
        super().__init__(node_name, **kwargs)
        # The engine, parser, backends and model log through Python logging: to /rosout.
        self._log_route = LogRoute(self, ["emu_ros.guidance", "emu_ros.model"])
        declare(self, "profile", "aloha", "Robot profile: a name in config/robots or a YAML path", read_only=True)
        declare(self, "backend", "scripted", "World model: 'scripted' (labelled reference planner), 'emu35' (Emu3.5 "
                "weights in model_dir) or 'sim-world-model' (the shipped simulator model; model_dir: another copy)")
        declare(self, "model_dir", "", "Emu3.5 model directory (config.json, safetensors, emu3.tiktoken)", read_only=True)
        declare(self, "vq_dir", "", "Emu3.5-VisionTokenizer directory (config.yaml, model.ckpt)", read_only=True)
        declare(self, "dida_dir", "", "Directory of DiDA-adapted weights (with dida_config.json); used when decoder=dida", read_only=True)
        declare(self, "decoder", "auto", "Image decoder for emu35: 'auto' (dida when the weights carry "
                "dida_config.json, else ar), 'ar' or 'dida'", read_only=True)
        declare(self, "device", "cuda", "Torch device for emu35 (cuda, cuda:1, cpu), or several (cuda:0,cuda:1): the "
                "decoder layers are split across them (34B bf16 on 2x48 GB or 4x24 GB)", read_only=True)
        declare(self, "dtype", "bfloat16", "Torch dtype for emu35 weights")
        declare(self, "quantize", "", "emu35 weight-only quantization of the decoder layers: '' (none), 'int8' "
                "(34B in ~37 GB) or 'nf4' (~22 GB, needs bitsandbytes)", read_only=True)
        declare(self, "max_new_tokens", 0, "emu35: generation budget per plan (text + image tokens); 0 = derived "
                "from the request (max_steps x tokens of one step image + text)", int_range=(0, 262144))
        declare(self, "step_image_area", 262144, "emu35: pixel area of predicted step images (default 512x512; "
                "0 = the official size, that of the last camera view)", int_range=(0, 4194304))
        declare(self, "image_area", 0, "emu35: pixel area camera views are resized to (0 = the official 518,400)",
                int_range=(0, 4194304))
        declare(self, "seed", -1, "emu35: sampling seed (-1 = a new seed per plan)", int_range=(-1, 2**31 - 1))
        declare(self, "task_dir", "", "Directory of scripted task files (default: the package's config/tasks)")
        declare(self, "max_steps", 12, "Longest plan accepted", int_range=(1, 64))
        declare(self, "plan_cameras", [""], "Cameras whose views go into the prompt (empty: all required cameras)")
        declare(self, "frame_id", "world", "Frame of the step markers in rviz")
        declare(self, "camera_wait_s", 3.0, "How long a plan request waits for fresh frames of missing/stale cameras "
                "before failing (e.g. right after start-up)", float_range=(0.0, 60.0))
        self._busy = threading.Lock()
        self._group = ReentrantCallbackGroup()
        # Cameras are pulled, not spun: their messages wait in the reader (keep-last 1) until the hub
        # takes the newest one for an observation, so 30 Hz frames cost this process no Python at all
        # (emu_ros/ros/camera_intake.py has the measurement behind this).
        self._subs = []
        self._plan_pub = self._image_pub = self._marker_pub = None
        self._active = False
        self._server = ActionServer(self, GeneratePlan, "~/generate_plan", execute_callback=self._execute,
                                    goal_callback=self._on_goal, cancel_callback=lambda _g: CancelResponse.ACCEPT,
                                    callback_group=self._group,
                                    goal_service_qos_profile=GOAL_SERVICE_QOS, cancel_service_qos_profile=GOAL_SERVICE_QOS)

    # ---------------------------------------------------------------------------- lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.profile = load_profile(param(self, "profile"))
            backend = param(self, "backend")
            self.get_logger().info(f"loading world model backend {backend!r} (profile {self.profile.name})")
            model = make_world_model(backend, **self._backend_settings(backend))
        except Exception as e:  # noqa: BLE001 - a bad profile/model leaves the node unconfigured, alive
            self.get_logger().error(f"configure failed: {e}")
            return TransitionCallbackReturn.FAILURE
        cams = [c.name for c in self.profile.cameras]
        self.hub = node_camera_hub(self, self.profile.cameras,
                                   required=[c.name for c in self.profile.cameras if c.required])
        wanted = tuple(c for c in param(self, "plan_cameras") if c) or None
        self.engine = GuidanceEngine(model, self.hub, EngineConfig(max_steps=param(self, "max_steps"), cameras=wanted))
        self._plan_pub = self.create_publisher(PlanMsg, "~/plan", LATCHED)
        self._image_pub = self.create_publisher(Image, "~/step_image", LATCHED)
        self._marker_pub = self.create_publisher(MarkerArray, "~/markers", LATCHED)
        self.get_logger().info(f"configured: planner '{self.engine.source}', cameras {cams}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._subs.extend(subscribe_cameras(self, self.hub, self.profile.cameras))
        self._active = True
        return super().on_activate(state)  # super() activates lifecycle entities (rclpy contract)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._active = False
        if self.engine is not None:
            self.engine.cancel("guidance node deactivated")
        self._close_io()
        return super().on_deactivate(state)

    def destroy_node(self):
        self._log_route.close()
        return super().destroy_node()

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._active = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ---------------------------------------------------------------------------- callbacks
    def _on_goal(self, goal) -> GoalResponse:
        if not self._active or self.engine is None:
            self.get_logger().warning("generate_plan goal rejected: node is not active")
            return GoalResponse.REJECT
        if self._busy.locked():
            self.get_logger().warning("generate_plan goal rejected: a plan is being generated (one at a time)")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    async def _execute(self, handle):
        req = handle.request
        result = GeneratePlan.Result()
        if not self._busy.acquire(blocking=False):
            handle.abort()
            result.message = "busy: another plan is being generated"
            return result
        try:
            outcome = await in_thread(self, lambda: self._plan(handle), name="emu_guidance_plan")
        except BaseException as e:  # noqa: BLE001 - the worker's exception, reported not raised
            outcome = ("error", f"{type(e).__name__}: {e}", None)
        finally:
            self._busy.release()
        kind, message, plan = outcome
        result.message = message
        if kind == "ok":
            result.success, result.plan = True, plan_to_msg(plan, param(self, "frame_id"))
            self._publish_plan(plan)
            handle.succeed()
        elif kind == "canceled" and handle.is_cancel_requested:
            handle.canceled()
        else:
            self.get_logger().error(f"planning {req.instruction!r} failed: {message}")
            handle.abort()
        return result

    def _plan(self, handle) -> tuple:
        """Worker thread: generate, streaming each step as feedback. Returns (kind, message, plan)."""
        req = handle.request
        engine = self.engine
        try:
            if len(req.images):
                images = observation_images_from_msgs(req.images, list(req.image_cameras))
                engine = GuidanceEngine(engine.world_model, _GoalImages(images), engine.config)
            history = history_from_msgs(req.history)
        except (ImageConversionError, ValueError) as e:
            return "error", f"bad goal: {e}", None
        frame = param(self, "frame_id")
        token = _CancelWatch(handle)
        if not len(req.images):
            self._wait_for_cameras(param(self, "camera_wait_s"), token.token)
        try:
            plan = engine.plan(req.instruction, history=history, revision=int(req.revision),
                               on_step=lambda s: handle.publish_feedback(GeneratePlan.Feedback(step=step_to_msg(s, frame))),
                               cancel=token.token, max_steps=int(req.max_steps) or None)
        except Cancelled as e:
            return "canceled", f"canceled: {e}", None
        except PlanningError as e:
            return "error", str(e), None
        except Exception as e:  # noqa: BLE001 - a model crash must not take the node down
            return "error", f"world model raised {type(e).__name__}: {e}", None
        finally:
            token.stop()
        return "ok", f"{len(plan.steps)} steps from {plan.source}", plan

    # ---------------------------------------------------------------------------- helpers
    def _wait_for_cameras(self, timeout: float, cancel) -> None:
        """Give missing or stale cameras a moment (start-up, a driver restart); the engine then decides."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cancel.cancelled:
            try:
                self.hub.observe(self.engine.config.cameras)
                return
            except CameraUnavailable:
                time.sleep(0.05)

    def _publish_plan(self, plan) -> None:
        frame = param(self, "frame_id")
        self._plan_pub.publish(plan_to_msg(plan, frame))
        self._marker_pub.publish(plan_markers(plan, frame, current=0, stamp=self.get_clock().now().to_msg()))
        if plan.steps and plan.steps[0].image is not None:
            self._image_pub.publish(numpy_to_image(plan.steps[0].image, "rgb8", frame_id=frame))

    def _backend_settings(self, backend: str) -> dict:
        if backend.startswith("scripted"):
            task_dir = param(self, "task_dir") or str(config_dir() / "tasks")
            return {"task_dir": Path(task_dir)}
        if backend in ("sim-world-model", "world-model"):  # the shipped simulator model (model_dir: another copy)
            return {"model_root": param(self, "model_dir") or None}
        generation = {"max_new_tokens": param(self, "max_new_tokens")} if param(self, "max_new_tokens") > 0 else {}
        if param(self, "seed") >= 0:
            generation["seed"] = param(self, "seed")
        return {"model_dir": param(self, "model_dir"), "vq_dir": param(self, "vq_dir") or None,
                "dida_dir": param(self, "dida_dir") or None, "mode": param(self, "decoder"),
                "device": param(self, "device"), "dtype": param(self, "dtype"), "quantize": param(self, "quantize") or None,
                "image_area": param(self, "image_area") or None, "generation": generation,
                "step_image_area": param(self, "step_image_area") or None}

    def _close_io(self) -> None:
        if self.hub is not None:
            self.hub.clear_sources()
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []

    def _release(self) -> None:
        """Drop the model (and its GPU memory) and the publishers."""
        self._close_io()
        for pub in (self._plan_pub, self._image_pub, self._marker_pub):
            if pub is not None:
                self.destroy_publisher(pub)
        self._plan_pub = self._image_pub = self._marker_pub = None
        self.engine, self.hub = None, None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


class _CancelWatch:
    """Turns the action's cancel request into a CancelToken the engine understands."""

    def __init__(self, handle, period: float = 0.05):
        from emu_ros.core.types import CancelToken

        self.token = CancelToken()
        self._stop = threading.Event()

        def watch():
            while not self._stop.wait(period):
                if handle.is_cancel_requested or not handle.is_active:
                    self.token.cancel("canceled by the client")
                    return

        threading.Thread(target=watch, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()


def main(args=None) -> int:
    dds = use_large_image_profile()  # before rclpy.init: the participant reads it when created
    rclpy.init(args=args)
    node = GuidanceNode()
    node.get_logger().info(dds)
    return spin_nodes([node])
