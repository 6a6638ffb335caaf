"""Headless closed-loop episode on the simulated ALOHA: plan -> skills -> step check -> re-plan.

One seeded episode runs through the shipped loop: the bridge's TaskRunner + StepMonitor +
GuidanceEngine (what the ROS nodes run), with the shipped simulator world model (`planner="world-model"`:
an Emu3.5-architecture model planning text + step images from the current camera view) or the labelled
scripted reference planner, the
ProfileSkillExecutor on the SimRobotAdapter, and object poses from the labelled oracle or camera
perception. The runner retries a FAILED step (`max_retries`), re-plans from the current camera
view when a step is unfinished (bounded by `max_replans`; 0 with re-planning off) and judges every
step from robot-side signals only. The simulator's state is read only at the end, for scoring.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from emu_ros.core.profile import load_profile
from emu_ros.core.types import OutcomeStatus
from emu_ros.sim.adapter import SimRobotAdapter
from emu_ros.sim.aloha_env import AlohaSim, SimImageSource
from emu_ros.sim.faults import FaultAwareExecutor, FaultInjector, FaultSpec
from emu_ros.sim.perception import ALIASES, GroundTruthPerception, PerceptionAudit
from emu_ros.sim.scoring import score
from emu_ros.sim.tasks import task_def, task_file, write_reference_plan

log = logging.getLogger(__name__)

#: where skills get object poses in a simulated episode
PERCEPTION_KINDS = ("oracle", "camera")


@dataclass
class EpisodeConfig:
    task: str = "transfer_cube"
    seed: int = 0
    fault: FaultSpec = field(default_factory=FaultSpec)
    replan: bool = True
    max_replans: int = 4
    camera: str = "cam_high"
    #: Small renders keep the per-step camera check cheap on CPU (~10 ms).
    camera_size: tuple = (96, 128)
    step_images: bool = False  # render a reference episode at plan time for per-step images
    settle_s: Optional[float] = None  # sim time between a skill's last goal and the check (None = profile)
    out_dir: Optional[str] = None
    profile: str = "sim_aloha"
    #: guidance mode (plan | stepwise | pipelined) and a planner that needs this long per step
    #: (a stand-in for the world model's generation time, e.g. ~2 s per DiDA step).
    guidance_mode: str = "plan"
    planner_step_delay_s: float = 0.0
    #: "world-model" (the shipped simulator world model, or `model_root`) or "scripted" (the labelled reference)
    planner: str = "scripted"
    model_root: Optional[str] = None
    #: the instruction the planner gets (any phrasing for the world model); "" = the task's own
    instruction: str = ""
    #: RunnerConfig.confirm_done (off by default: why in the README, "The simulator world model")
    confirm_done: bool = False


PLANNERS = ("world-model", "scripted")


def make_planner(cfg: EpisodeConfig, plan_file: Optional[Path] = None):
    """The episode's world model: the shipped simulator model (loaded once; pass it to run_episode to reuse it)
    or the labelled scripted reference."""
    from emu_ros.guidance.backends import make_world_model
    from emu_ros.guidance.backends.scripted import ScriptedWorldModel

    if cfg.planner not in PLANNERS:
        raise ValueError(f"planner must be one of {PLANNERS}, got {cfg.planner!r}")
    if cfg.planner == "world-model":
        return make_world_model("sim-world-model", model_root=cfg.model_root)
    return ScriptedWorldModel(task_files=[plan_file or task_file(cfg.task)], step_delay_s=cfg.planner_step_delay_s)


@dataclass
class StepRecord:
    run: int
    revision: int
    text: str
    skill: str
    status: str
    code: str = ""
    reason: str = ""
    sim_time: float = 0.0
    wall_s: float = 0.0


@dataclass
class EpisodeResult:
    task: str
    seed: int
    fault: str
    replan: bool
    success: bool
    max_reward: float
    replans: int
    step_runs: int
    stopped: str  # "done" (every step judged finished) | the runner's status otherwise ("aborted", "canceled")
    failed_step: str = ""
    fault_fired: bool = False
    fault_step: int = -1
    fault_detected: bool = False
    sim_time: float = 0.0
    wall_s: float = 0.0
    backend: str = ""
    perception: str = ""
    retries: int = 0  # same-step retries of FAILED steps
    runner_status: str = ""  # the TaskRunner's result status
    message: str = ""  # the TaskRunner's result message (why it stopped)
    first_motion_s: Optional[float] = None  # task start -> first step started (wall s)
    steps: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class SimWorld:
    """Everything one simulated episode needs, built once and reset per seed (saves ~0.5 s per episode)."""

    def __init__(self, task: str, profile: str = "sim_aloha", camera_size: tuple = (96, 128),
                 realtime_factor: float = 0.0, shadows: bool = False, perception: str = "oracle"):
        """`perception`: "oracle" (labelled ground truth) or "camera" (the profile's camera perception on
        rendered RGB-D frames, audited against the truth for the accuracy table)."""
        from emu_ros.bridge.skill_mapper import SkillMapper
        from emu_ros.bridge.skills import ProfileSkillExecutor

        if perception not in PERCEPTION_KINDS:
            raise ValueError(f"perception must be one of {PERCEPTION_KINDS}, got {perception!r}")
        self.task = task
        self.profile = load_profile(profile)
        from emu_ros.sim.adapter import SimAdapterConfig

        self.sim = AlohaSim(task, shadows=shadows)
        self.adapter = SimRobotAdapter(self.sim, self.profile, SimAdapterConfig(realtime_factor=realtime_factor))
        self.images = SimImageSource(self.sim, size=camera_size)
        self.perception = self._perception(perception)
        self.executor = ProfileSkillExecutor(self.profile, self.adapter, self.perception, task_def(task).skill_params)
        self.mapper = SkillMapper.load()

    def _perception(self, kind: str):
        if kind == "oracle":
            return GroundTruthPerception(self.sim)
        from emu_ros.perception.camera_perception import CameraPerception
        from emu_ros.sim.rgbd_source import SimRGBDSource

        spec = self.profile.perception
        if spec is None:
            raise ValueError(f"profile {self.profile.name!r} has no perception section for --perception camera")
        cam = spec.cameras[0]
        size = (self.profile.camera(cam).height, self.profile.camera(cam).width)
        source = SimRGBDSource(self.sim, size=size, images=self.images)
        return PerceptionAudit(CameraPerception(spec, source, present=tuple(ALIASES[self.task])), self.sim)

    def reset(self, seed: int, settle_s: float = 0.4) -> None:
        self.sim.reset(seed, settle_s=settle_s)
        self.executor.reset()
        self.sim.tick_hooks.clear()
        self.images.clear_dropout()  # a camera dropout is a fault of one episode, not of the next


def _prepare(cfg: EpisodeConfig, world: Optional[SimWorld], planner=None) -> tuple:
    """World reset to the seed, task, planner, the reference plan's step calls (where a fault strikes) and the
    fault injector."""
    from emu_ros.guidance.backends.scripted import ScriptedWorldModel

    world = world or SimWorld(cfg.task, cfg.profile, cfg.camera_size)
    world.reset(cfg.seed)
    tdef = task_def(cfg.task)
    plan_file = task_file(cfg.task)
    if cfg.step_images and cfg.planner == "scripted":
        out = Path(cfg.out_dir or ".") / f"reference_seed{cfg.seed}"
        plan_file = write_reference_plan(cfg.task, cfg.seed, out, camera=cfg.camera)
    if planner is None or cfg.planner == "scripted":
        planner = make_planner(cfg, plan_file)
    # where a fault strikes: the reference plan's steps (the scripted planner's own, else the task file's)
    reference = planner if cfg.planner == "scripted" else ScriptedWorldModel(task_files=[task_file(cfg.task)])
    calls = [world.mapper.map(s.text).call for s in reference.find(tdef.instruction).steps]
    injector = FaultInjector(cfg.fault, world.sim, world.adapter, world.images, calls)
    return world, tdef, planner, calls, injector


def _fault_step_judged(injector: FaultInjector, outcomes) -> bool:
    """Whether the step the fault struck was judged unfinished or failed (not merely some later step)."""
    return injector.fired and any(o.status is not OutcomeStatus.FINISHED and injector.is_fault_step(o.text)
                                  for o in outcomes)


class _SimSettle:
    """Lets sim time pass after each skill: the runner's settle waits wall time, which does not move a
    headless simulator stepped only by goals (with `adapter.start_clock()` this is not needed)."""

    def __init__(self, inner, adapter: SimRobotAdapter, settle_s: float):
        self.inner, self.adapter, self.settle_s = inner, adapter, settle_s

    def execute(self, call, cancel=None):
        ex = self.inner.execute(call, cancel)
        self.adapter.hold(self.settle_s, cancel)
        return ex


def run_episode(cfg: EpisodeConfig, world: Optional[SimWorld] = None, log_dir: Optional[Path] = None,
                listeners: tuple = (), tick_hooks: tuple = (), planner=None) -> EpisodeResult:
    """One seeded episode through the bridge's TaskRunner + StepMonitor + GuidanceEngine (module docstring).

    `listeners` get every runner event (plans, step verdicts); `log_dir` keeps the task log; `tick_hooks`
    are called with the simulator after every control tick of this episode (a dataset recorder); `planner` is
    a loaded world model to reuse (else make_planner builds the one cfg names).
    """
    from emu_ros.bridge.monitor import StepMonitor
    from emu_ros.bridge.runner import RunnerConfig, TaskRunner
    from emu_ros.guidance.engine import EngineConfig, GuidanceEngine

    t0 = time.monotonic()
    world, tdef, backend, calls, injector = _prepare(cfg, world, planner)
    for hook in tick_hooks:
        hook(world.sim)  # the scene before the first step
        world.sim.tick_hooks.append(hook)
    engine = GuidanceEngine(backend, world.images, EngineConfig(cameras=(cfg.camera,)))
    settle = world.profile.tolerances.settle_s if cfg.settle_s is None else cfg.settle_s
    executor = _SimSettle(FaultAwareExecutor(world.executor, injector), world.adapter, settle)
    runner = TaskRunner(engine, world.mapper, executor, world.adapter,
                        StepMonitor(world.profile), image_source=world.images,
                        config=RunnerConfig(max_replans=cfg.max_replans if cfg.replan else 0, settle_s=0.0,
                                            planning_attempts=3, planning_retry_delay_s=0.5,
                                            log_images=log_dir is not None, guidance_mode=cfg.guidance_mode,
                                            confirm_done=cfg.confirm_done),
                        log_root=log_dir)
    for fn in listeners:
        runner.add_listener(fn)
    try:
        tr = runner.run(cfg.instruction or tdef.instruction, log_dir=log_dir)
    finally:
        injector.close()
    sc = score(world.sim)
    failed = [o for o in tr.outcomes if o.status is not OutcomeStatus.FINISHED]
    res = EpisodeResult(task=cfg.task, seed=cfg.seed, fault=cfg.fault.kind, replan=cfg.replan, success=sc.success,
                        max_reward=sc.max_reward, replans=tr.replans, step_runs=len(tr.outcomes),
                        stopped="done" if tr.status == "succeeded" else tr.status,
                        failed_step=failed[-1].text if failed and tr.status != "succeeded" else "",
                        fault_fired=injector.fired, fault_step=injector.target if injector.target is not None else -1,
                        fault_detected=_fault_step_judged(injector, tr.outcomes), sim_time=world.sim.time,
                        wall_s=time.monotonic() - t0, backend=backend.name, perception=world.perception.name,
                        steps=[StepRecord(k + 1, 0, o.text, str(o.details.get("skill", "")), o.status.value, o.code,
                                          o.reason) for k, o in enumerate(tr.outcomes)])
    res.runner_status, res.retries, res.first_motion_s, res.message = tr.status, tr.retries, tr.first_motion_s, tr.message
    return res
