"""The simulated bimanual ALOHA: gym-aloha's TransferCube / Insertion physics without per-step rendering.

gym-aloha's own env renders three 640x480 cameras on every step (~160 ms); a closed loop at 50 Hz
cannot afford that. `AlohaSim` builds the same dm_control environment with an observation that is
only the joint vector, and renders a camera only when someone asks for it (a subscribed topic, a
step check, a storyboard). Camera names are the real ALOHA profile's (`cam_high`, ...), mapped to
the MJCF cameras. The task's own reward is recorded every tick, for scoring only.

Thread safety: every access to physics goes through `AlohaSim.lock` (re-entrant), so a ROS camera
publisher thread can render while an adapter thread steps.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from emu_ros.core.protocols import CameraUnavailable
from emu_ros.core.types import CameraFrame, Observation

log = logging.getLogger(__name__)

#: Real ALOHA camera name -> MJCF camera in the gym-aloha scene.
CAMERA_MAP = {
    "cam_high": "top",
    "cam_low": "angle",
    "cam_left_wrist": "left_wrist",
    "cam_right_wrist": "right_wrist",
    "cam_front_close": "front_close",
}

CONTROL_DT = 0.02  # s, gym-aloha control period (50 Hz, 10 physics substeps)

# gym-aloha's gripper normalisation (finger slide qpos <-> 0 closed .. 1 open)
GRIPPER_OPEN = 0.05800
GRIPPER_CLOSE = 0.01844


def normalize_gripper(qpos: float) -> float:
    return (float(qpos) - GRIPPER_CLOSE) / (GRIPPER_OPEN - GRIPPER_CLOSE)


@dataclass(frozen=True)
class TaskSpec:
    """One gym-aloha scene: MJCF file, task class name, objects (MJCF body -> free-joint qpos start)."""

    name: str
    xml: str
    task_class: str
    objects: tuple  # names of the movable bodies, in qpos order after the 16 robot dofs


TASKS = {
    "transfer_cube": TaskSpec("transfer_cube", "bimanual_viperx_transfer_cube.xml", "TransferCubeTask", ("box",)),
    "insertion": TaskSpec("insertion", "bimanual_viperx_insertion.xml", "InsertionTask", ("peg", "socket")),
    # our scene (emu_ros.sim.clear_table), built from gym-aloha's arms and table
    "clear_table": TaskSpec("clear_table", "", "ClearTableTask", ("napkin", "cup", "spoon", "sponge")),
}


def _headless_task(base_cls):
    """The gym-aloha task with an observation that renders nothing (the reason for this module)."""

    class Headless(base_cls):  # type: ignore[misc, valid-type]
        def get_observation(self, physics):  # noqa: D401 - dm_control hook
            return {"qpos": self.get_qpos(physics)}

    Headless.__name__ = f"Headless{base_cls.__name__}"
    return Headless


def sample_initial_pose(task: str, seed: Optional[int]) -> np.ndarray:
    """The object pose(s) gym-aloha's `AlohaEnv.reset(seed)` would draw for this seed (clear_table: our layout)."""
    from gym_aloha.utils import sample_box_pose, sample_insertion_pose

    if task == "clear_table":
        from emu_ros.sim.clear_table import sample_layout

        return sample_layout(seed).qpos()
    if task == "transfer_cube":
        return np.asarray(sample_box_pose(seed), float)
    return np.concatenate(sample_insertion_pose(seed)).astype(float)


class AlohaSim:
    """gym-aloha physics for one task, stepped explicitly, with on-demand offscreen rendering."""

    def __init__(self, task: str = "transfer_cube", image_size: tuple = (480, 640), shadows: bool = False):
        if task not in TASKS:
            raise ValueError(f"unknown sim task {task!r} (known: {sorted(TASKS)})")
        os.environ.setdefault("MUJOCO_GL", "egl")
        from dm_control import mujoco as dm_mujoco
        from dm_control.rl import control
        from gym_aloha import constants
        from gym_aloha.tasks import sim as aloha_tasks

        self.spec = TASKS[task]
        self.task_name = task
        self.image_size = tuple(image_size)
        #: Shadows and reflections cost ~4x render time on CPU (llvmpipe); off unless asked for.
        self.shadows = bool(shadows)
        self._aloha_tasks = aloha_tasks
        self._PhysicsError = control.PhysicsError
        if task == "clear_table":
            from emu_ros.sim import clear_table

            self.physics = clear_table.build_physics()
            self.task = _headless_task(clear_table.clear_table_task_class())()
        else:
            self.physics = dm_mujoco.Physics.from_xml_path(str(constants.ASSETS_DIR / self.spec.xml))
            self.task = _headless_task(getattr(aloha_tasks, self.spec.task_class))()
        self.env = control.Environment(self.physics, self.task, time_limit=float("inf"), control_timestep=CONTROL_DT,
                                       n_sub_steps=None, flat_observation=False)
        self.lock = threading.RLock()
        self.model = self.physics.model.ptr
        self.data = self.physics.data.ptr
        self.action = np.zeros(14)
        self.seed: Optional[int] = None
        self.ticks = 0
        #: Bumped by every change of the physics state (tick, reset, teleport): a cache key for renders.
        self.state_version = 0
        self.reward = 0.0
        self.max_reward = 0.0
        self.physics_error = ""
        self._renderer = None  # the one thread that renders (created on first use)
        self._closed = False  # after close() nothing renders again (no new GL context at shutdown)
        self._close_registered = False
        #: Called under the lock after every control tick with (sim); fault injection hooks in here.
        self.tick_hooks: list = []

    # ------------------------------------------------------------------ episode
    def reset(self, seed: Optional[int] = None, settle_s: float = 0.0) -> None:
        """Seeded reset, exactly like gym-aloha's `AlohaEnv.reset(seed)` (objects drawn from the seed).

        gym-aloha spawns objects a few cm above the table; `settle_s` lets them land (arms holding
        their start pose) so the first look at the scene sees them at rest, as a robot would.
        """
        with self.lock:
            self.seed = seed
            self._aloha_tasks.BOX_POSE[0] = sample_initial_pose(self.task_name, seed)
            self.env.reset()
            q = self.task.get_qpos(self.physics)
            self.action = np.asarray(q, float).copy()
            self.ticks = 0
            self.state_version += 1
            self.reward = 0.0
            self.max_reward = 0.0
            self.physics_error = ""
            for _ in range(int(round(settle_s / CONTROL_DT))):
                self.step()

    @property
    def time(self) -> float:
        """Simulated seconds since reset."""
        return self.ticks * CONTROL_DT

    def step(self, action: Optional[Sequence[float]] = None) -> float:
        """One 50 Hz control tick with the 14-d gym-aloha action (absolute joints + normalised grippers).

        Raises the simulator's PhysicsError (after recording it) when MuJoCo diverges.
        """
        with self.lock:
            if action is not None:
                self.action = np.asarray(action, float).copy()
            try:
                ts = self.env.step(self.action)
            except self._PhysicsError as e:
                self.physics_error = str(e)
                log.warning("physics error at tick %d: %s", self.ticks, e)
                raise
            self.ticks += 1
            self.state_version += 1
            self.reward = float(ts.reward or 0.0)
            self.max_reward = max(self.max_reward, self.reward)
            for hook in list(self.tick_hooks):
                hook(self)
            return self.reward

    # ------------------------------------------------------------------ state
    def qpos14(self) -> np.ndarray:
        """[left 6 joints, left gripper 0..1, right 6 joints, right gripper 0..1] as measured."""
        with self.lock:
            return np.asarray(self.task.get_qpos(self.physics), float)

    def qvel14(self) -> np.ndarray:
        with self.lock:
            return np.asarray(self.task.get_qvel(self.physics), float)

    def body_pose(self, body: str) -> tuple:
        """World position (3,) and rotation (3, 3) of an MJCF body."""
        with self.lock:
            bid = self.model.body(body).id
            return self.data.xpos[bid].copy(), self.data.xmat[bid].reshape(3, 3).copy()

    def object_qpos_adr(self, body: str) -> int:
        """qpos address of a movable body's free joint (xyz + quat wxyz)."""
        with self.lock:
            jid = self.model.body(body).jntadr[0]
            return int(self.model.jnt_qposadr[jid])

    def set_object_pose(self, body: str, position: Sequence[float], quat: Optional[Sequence[float]] = None) -> None:
        """Teleport a movable object (fault injection only) and zero its velocity; joints inside it (the
        napkin's fold) go back to 0, so it lands unfolded."""
        import mujoco

        with self.lock:
            adr = self.object_qpos_adr(body)
            self.data.qpos[adr:adr + 3] = position
            if quat is not None:
                self.data.qpos[adr + 3:adr + 7] = quat
            bid = self.model.body(body).id
            jid = self.model.body(body).jntadr[0]
            vadr = int(self.model.jnt_dofadr[jid])
            self.data.qvel[vadr:vadr + 6] = 0.0
            for j in range(self.model.njnt):
                if j != jid and self.model.body_rootid[self.model.jnt_bodyid[j]] == bid:
                    self.data.qpos[self.model.jnt_qposadr[j]] = 0.0
                    self.data.qvel[self.model.jnt_dofadr[j]] = 0.0
            mujoco.mj_forward(self.model, self.data)
            self.state_version += 1

    def contacts(self) -> set:
        """Set of (geom1, geom2) name pairs in contact now."""
        with self.lock:
            out = set()
            for c in self.data.contact[: self.data.ncon]:
                out.add((self.model.geom(c.geom1).name, self.model.geom(c.geom2).name))
            return out

    # ------------------------------------------------------------------ cameras
    def render(self, camera: str, height: Optional[int] = None, width: Optional[int] = None) -> np.ndarray:
        """Render one camera (profile name like `cam_high`, or an MJCF camera name) as uint8 RGB."""
        mj_cam = CAMERA_MAP.get(camera, camera)
        h = int(height or self.image_size[0])
        w = int(width or self.image_size[1])
        try:
            self.model.camera(mj_cam)
        except KeyError:
            raise CameraUnavailable(f"sim has no camera {camera!r} (known: {sorted(CAMERA_MAP)})") from None
        with self.lock:  # the physics state must not change while the frame is drawn
            # dm_control binds its GL context to the first thread that renders; a single render
            # thread lets any thread (camera publisher, step monitor, storyboard) ask for frames
            fut = self._render_pool().submit(self.physics.render, height=h, width=w, camera_id=mj_cam,
                                             scene_callback=self._scene_flags)
            img = np.ascontiguousarray(fut.result())
            if not self._close_registered:
                # registered after dm_control's own exit hook, so it runs first (LIFO) and frees the
                # GL context on the thread where it is current
                import atexit

                atexit.register(self.close)
                self._close_registered = True
            return img

    def render_rgbd(self, camera: str, height: Optional[int] = None, width: Optional[int] = None) -> tuple:
        """(rgb uint8, depth float32 m with NaN beyond the scene, fovy deg, camera position, camera xmat)
        of one camera at one physics instant: what a calibrated RGB-D camera would report."""
        mj_cam = CAMERA_MAP.get(camera, camera)
        h = int(height or self.image_size[0])
        w = int(width or self.image_size[1])
        try:
            cam = self.model.camera(mj_cam)
        except KeyError:
            raise CameraUnavailable(f"sim has no camera {camera!r} (known: {sorted(CAMERA_MAP)})") from None
        with self.lock:
            pool = self._render_pool()
            rgb = pool.submit(self.physics.render, height=h, width=w, camera_id=mj_cam,
                              scene_callback=self._scene_flags).result()
            depth = pool.submit(self.physics.render, height=h, width=w, camera_id=mj_cam, depth=True).result()
            pos = self.data.cam_xpos[cam.id].copy()
            xmat = self.data.cam_xmat[cam.id].reshape(3, 3).copy()
        depth = np.asarray(depth, np.float32).copy()
        far = float(self.model.vis.map.zfar * self.model.stat.extent)
        depth[depth >= 0.99 * far] = np.nan  # nothing there (the sky of the scene), as a sensor's 0
        return np.ascontiguousarray(rgb), depth, float(self.model.cam_fovy[cam.id]), pos, xmat

    def close(self) -> None:
        """Free the rendering context on the render thread and stop that thread (idempotent); a task
        thread still asking for frames afterwards gets CameraUnavailable, not a new GL context."""
        self._closed = True
        pool, self._renderer = self._renderer, None
        if pool is None:
            return
        try:
            pool.submit(self.physics._free_rendering_contexts).result(timeout=10)
        except Exception as e:  # noqa: BLE001 - best effort at shutdown
            log.debug("freeing the render context failed: %s", e)
        pool.shutdown()

    def _render_pool(self) -> "_RenderThread":
        if self._closed:
            raise CameraUnavailable("the simulator is closed: no more frames")
        if self._renderer is None:
            self._renderer = _RenderThread()
        return self._renderer

    def _scene_flags(self, physics, scene) -> None:
        import mujoco

        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(self.shadows)
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(self.shadows)


class _RenderThread:
    """One daemon thread that runs every GL call (a concurrent.futures pool would be joined before
    atexit hooks run, leaving the GL context current on a dead thread)."""

    def __init__(self) -> None:
        import queue

        self._q: "queue.Queue" = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="aloha-render", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args, **kwargs):
        from concurrent.futures import Future

        fut: Future = Future()
        self._q.put((fut, fn, args, kwargs))
        return fut

    def shutdown(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            fut, fn, args, kwargs = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)


class SimImageSource:
    """`ImageSource` over the simulator: renders only the cameras asked for, on demand.

    `dropout(cameras, seconds)` makes those cameras return nothing (CameraUnavailable) for a while,
    like a USB camera that disconnects; used by fault injection.
    """

    def __init__(self, sim: AlohaSim, cameras: Sequence[str] = ("cam_high",), size: Optional[tuple] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.sim = sim
        self.cameras = tuple(cameras)
        self.size = size
        self._clock = clock
        self._dropout_until: dict = {}
        self._lock = threading.Lock()
        self.renders = 0

    def dropout(self, cameras: Optional[Sequence[str]], seconds: float) -> None:
        until = self._clock() + float(seconds)
        with self._lock:
            for c in cameras or self.cameras:
                self._dropout_until[c] = until
        log.info("camera dropout of %s for %.2f s", list(cameras or self.cameras), seconds)

    def clear_dropout(self) -> None:
        """Every camera delivers again (a new episode)."""
        with self._lock:
            self._dropout_until.clear()

    def unavailable(self, camera: str) -> bool:
        with self._lock:
            return self._clock() < self._dropout_until.get(camera, -1.0)

    def observe(self, cameras: Optional[Sequence[str]] = None) -> Observation:
        names = tuple(cameras or self.cameras)
        dead = [c for c in names if self.unavailable(c)]
        if dead:
            raise CameraUnavailable(f"no frames from camera(s) {dead} (dropout)")
        h, w = self.size if self.size else (None, None)
        frames = {}
        for c in names:
            img = self.sim.render(c, h, w)
            self.renders += 1
            frames[c] = CameraFrame(camera=c, image=img, stamp=time.time())  # wall time: staleness checks
        return Observation(frames=frames, stamp=time.time())


class SimCameraStreamer:
    """Renders the subscribed cameras at a fixed rate in a background thread and hands frames to a callback.

    For a ROS camera publisher: `callback(frame)` publishes one sensor_msgs/Image. Only cameras in
    `subscribed` are rendered (update it as subscribers come and go); a dropped-out camera simply
    produces no frame, like a disconnected device. Rendering shares the simulator lock with the
    adapter, so each frame is a consistent snapshot between two control ticks.
    """

    def __init__(self, images: SimImageSource, callback: Callable[[CameraFrame], None], rate_hz: float = 10.0,
                 subscribed: Sequence[str] = ("cam_high",)):
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.images = images
        self.callback = callback
        self.period = 1.0 / float(rate_hz)
        self.subscribed = set(subscribed)
        self.frames = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "SimCameraStreamer":
        self._thread = threading.Thread(target=self._loop, name="sim-camera-streamer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            for cam in sorted(self.subscribed):
                try:
                    obs = self.images.observe([cam])
                except CameraUnavailable:
                    continue
                except Exception:  # noqa: BLE001 - a render failure must not kill the stream
                    log.exception("rendering %s failed", cam)
                    continue
                try:
                    self.callback(obs.frames[cam])
                    self.frames += 1
                except Exception:  # noqa: BLE001 - a publisher error must not kill the stream
                    log.exception("camera callback failed for %s", cam)
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay < 0:  # rendering slower than the rate: drop frames, do not accumulate lag
                next_t = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)
