"""Headless closed-loop episode on the simulated ALOHA: plan -> skills -> step check -> re-plan.

One seeded episode: the scripted reference planner gives the steps, the SkillMapper maps each
text to a skill, the ProfileSkillExecutor sends arm/gripper goals to the SimRobotAdapter, and a
step check decides from robot-side signals only (goal results, measured gripper openings, joint
tolerance, camera availability) whether the step finished. An unfinished step triggers a re-plan
from the current camera view with the failure in the history (bounded by `max_replans`); with
re-planning off the episode stops at the failed step. The simulator's reward is read only at the
end, for scoring.

Two loops share the setup: the standalone harness here (its own step check, kept for the
oracle-level eval) and `run_episode(..., use_runner=True)`, which drives the same seeded episode
through the bridge's TaskRunner + StepMonitor + GuidanceEngine (what `emu-ros eval --runner` and
the ROS nodes run).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from emu_ros.core.profile import RobotProfile, load_profile
from emu_ros.core.protocols import CameraUnavailable, SkillExecution
from emu_ros.core.types import HistoryEntry, Observation, OutcomeStatus, PlanningError, PlanRequest
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
    max_step_runs: int = 25
    camera: str = "cam_high"
    #: Small renders keep the per-step camera check cheap on CPU (~10 ms).
    camera_size: tuple = (96, 128)
    camera_wait_s: float = 0.3  # a step check waits this long for a frame before calling the step unverified
    replan_camera_wait_s: float = 5.0  # re-planning waits this long for the cameras before giving up
    step_images: bool = False  # render a reference episode at plan time for per-step images
    settle_s: Optional[float] = None  # sim time between a skill's last goal and the check (None = profile)
    out_dir: Optional[str] = None
    profile: str = "sim_aloha"
    #: TaskRunner only: guidance mode (plan | stepwise | pipelined) and a planner that needs this long per step
    #: (a stand-in for the world model's generation time, e.g. ~2 s per DiDA step).
    guidance_mode: str = "plan"
    planner_step_delay_s: float = 0.0


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
    stopped: str  # "done" | "failed_step" | "replan_budget" | "camera" | "planning_error" | "step_budget"
    failed_step: str = ""
    fault_fired: bool = False
    fault_step: int = -1
    fault_detected: bool = False
    sim_time: float = 0.0
    wall_s: float = 0.0
    backend: str = ""
    perception: str = ""
    retries: int = 0  # same-step retries (TaskRunner only)
    runner_status: str = ""  # TaskRunner result status (TaskRunner only)
    first_motion_s: Optional[float] = None  # TaskRunner only: task start -> first step started (wall s)
    steps: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def robot_signal_check(profile: RobotProfile, ex: SkillExecution, positions: dict) -> tuple:
    """(status, code, reason) for an executed skill, from robot-side signals only.

    - a skill error or any goal that did not succeed -> FAILED (the result code says why);
    - a gripper that should hold but is closed on nothing (opening < empty_below) or did not close
      (opening >= closed_above) -> UNFINISHED;
    - a gripper that should be open but is not (opening < released_above) -> UNFINISHED;
    - an arm joint further than the profile's joint tolerance from its target -> UNFINISHED.
    """
    if ex.error:
        return OutcomeStatus.FAILED, ex.error_code or "skill_error", ex.error
    for goal, res in ex.goals:
        if not res.ok:
            what = getattr(goal, "group", None) or getattr(goal, "gripper", "?")
            return OutcomeStatus.FAILED, res.status.value, f"{what} goal {res.status.value}: {res.message}"
    for g in ex.expect_holding:
        spec = profile.gripper(g)
        x = positions.get(spec.joint, float("nan"))
        if not x >= spec.opening(spec.empty_below):
            return (OutcomeStatus.UNFINISHED, "gripper_empty",
                    f"{g} closed on nothing ({spec.describe(x)} < {spec.threshold('empty_below')})")
        if x >= spec.opening(spec.closed_above):
            return OutcomeStatus.UNFINISHED, "gripper_open", f"{g} did not close (opening {x:.2f})"
    for g in ex.expect_released:
        spec = profile.gripper(g)
        x = positions.get(spec.joint, float("nan"))
        if not x >= spec.opening(spec.released_above):
            return OutcomeStatus.UNFINISHED, "not_released", f"{g} still closed (opening {x:.2f})"
    tol = profile.tolerances.joint_goal
    errs = {j: abs(positions.get(j, np.nan) - q) for j, q in ex.joint_targets.items()}
    bad = {j: e for j, e in errs.items() if not e <= tol}
    if bad:
        j = max(bad, key=bad.get)
        return OutcomeStatus.UNFINISHED, "joint_tolerance", f"{j} is {bad[j]:.3f} rad from its target (> {tol})"
    return OutcomeStatus.FINISHED, "", ""


def lost_holds(profile: RobotProfile, standing: dict, positions: dict) -> list:
    """[(gripper, step text)] of grippers that a finished step left holding but that are empty now.

    Ordered by the step order in `standing` (earliest first). Robot signals only: the opening.
    """
    out = []
    for g, text in standing.items():
        spec = profile.gripper(g)
        if not positions.get(spec.joint, float("nan")) >= spec.opening(spec.empty_below):
            out.append((g, text))
    return out


def _observe(images: SimImageSource, camera: str, wait_s: float) -> Optional[Observation]:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return images.observe([camera])
        except CameraUnavailable as e:
            if time.monotonic() >= deadline:
                log.info("camera unavailable after %.1f s: %s", wait_s, e)
                return None
            time.sleep(0.05)


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


def _prepare(cfg: EpisodeConfig, world: Optional[SimWorld]) -> tuple:
    """World reset to the seed, task, labelled scripted planner, mapped step calls and fault injector."""
    from emu_ros.guidance.backends.scripted import ScriptedWorldModel

    world = world or SimWorld(cfg.task, cfg.profile, cfg.camera_size)
    world.reset(cfg.seed)
    tdef = task_def(cfg.task)
    plan_file = task_file(cfg.task)
    if cfg.step_images:
        out = Path(cfg.out_dir or ".") / f"reference_seed{cfg.seed}"
        plan_file = write_reference_plan(cfg.task, cfg.seed, out, camera=cfg.camera)
    planner = ScriptedWorldModel(task_files=[plan_file], step_delay_s=cfg.planner_step_delay_s)
    calls = [world.mapper.map(s.text).call for s in planner.find(tdef.instruction).steps]
    injector = FaultInjector(cfg.fault, world.sim, world.adapter, world.images, calls)
    return world, tdef, planner, calls, injector


def run_episode(cfg: EpisodeConfig, world: Optional[SimWorld] = None) -> EpisodeResult:
    """Run one seeded episode with the standalone loop; see the module docstring."""
    t0 = time.monotonic()
    world, tdef, planner, calls, injector = _prepare(cfg, world)
    res = EpisodeResult(task=cfg.task, seed=cfg.seed, fault=cfg.fault.kind, replan=cfg.replan, success=False,
                        max_reward=0.0, replans=0, step_runs=0, stopped="done", backend=planner.name,
                        perception=world.perception.name, fault_step=injector.target if injector.target is not None else -1)
    settle = world.profile.tolerances.settle_s if cfg.settle_s is None else cfg.settle_s
    history: list = []
    standing: dict = {}  # gripper -> text of the finished step that made it hold something
    try:
        obs = _observe(world.images, cfg.camera, cfg.replan_camera_wait_s)
        steps = list(planner.plan(PlanRequest(task=tdef.instruction, observation=obs, history=())))
        i = 0
        while i < len(steps):
            if res.step_runs >= cfg.max_step_runs:
                res.stopped = "step_budget"
                break
            step = steps[i]
            ts = time.monotonic()
            m = world.mapper.map(step.text)
            injector.on_step_start(step.text, m.call if m.mapped else None)
            res.step_runs += 1
            if not m.mapped:
                status, code, reason, skill = OutcomeStatus.FAILED, "unmapped", m.reason, ""
            else:
                ex = world.executor.execute(m.call)
                world.adapter.hold(settle)  # let grippers finish closing and the arm come to rest
                status, code, reason = robot_signal_check(world.profile, ex, world.adapter.joint_state().positions)
                skill = m.call.skill
                if status is OutcomeStatus.FINISHED and _observe(world.images, cfg.camera, cfg.camera_wait_s) is None:
                    status, code, reason = (OutcomeStatus.UNFINISHED, "camera_unavailable",
                                            f"no {cfg.camera} frame to verify the step")
            res.steps.append(StepRecord(res.step_runs, res.replans, step.text, skill, status.value, code, reason,
                                        world.sim.time, time.monotonic() - ts))
            history.append(HistoryEntry(step.text, status, reason))
            if status is OutcomeStatus.FINISHED:
                if m.mapped:
                    for g in ex.expect_released:
                        standing.pop(g, None)
                    for g in ex.expect_holding:
                        standing.setdefault(g, step.text)
                i += 1
                continue
            lost = lost_holds(world.profile, standing, world.adapter.joint_state().positions)
            if lost:  # an earlier step's result is gone too: report it, so the re-plan goes back to it
                g, text = lost[0]
                history.append(HistoryEntry(text, OutcomeStatus.UNFINISHED,
                                            f"{g} no longer holds the object it grasped in this step"))
                for g2, _ in lost:
                    standing.pop(g2, None)
            log.info("seed %d step %r %s: %s", cfg.seed, step.text, status.value, reason)
            if not res.fault_detected and _fault_step_judged(injector, [res.steps[-1]]):
                res.fault_detected = True
            if not cfg.replan:
                res.stopped, res.failed_step = "failed_step", step.text
                break
            if res.replans >= cfg.max_replans:
                res.stopped, res.failed_step = "replan_budget", step.text
                break
            obs = _observe(world.images, cfg.camera, cfg.replan_camera_wait_s)
            if obs is None:
                res.stopped, res.failed_step = "camera", step.text
                break
            res.replans += 1
            steps = list(planner.plan(PlanRequest(task=tdef.instruction, observation=obs, history=tuple(history),
                                                  revision=res.replans)))
            i = 0
    except PlanningError as e:
        res.stopped, res.failed_step = "planning_error", str(e)
    finally:
        injector.close()
    sc = score(world.sim)  # ground truth, scoring only
    res.success, res.max_reward = sc.success, sc.max_reward
    res.fault_fired = injector.fired
    res.sim_time = world.sim.time
    res.wall_s = time.monotonic() - t0
    return res


def _fault_step_judged(injector: FaultInjector, outcomes) -> bool:
    """Whether the step the fault struck was judged unfinished or failed (not merely some later step)."""
    rec = injector.record
    if not injector.fired or rec is None:
        return False
    key = " ".join(rec.step_text.lower().split())
    return any(OutcomeStatus(o.status) is not OutcomeStatus.FINISHED and " ".join(o.text.lower().split()) == key
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


def run_episode_with_runner(cfg: EpisodeConfig, world: Optional[SimWorld] = None, log_dir: Optional[Path] = None,
                            listeners: tuple = ()) -> EpisodeResult:
    """The same seeded episode driven by the bridge's TaskRunner + StepMonitor + GuidanceEngine.

    The runner retries a FAILED step (`max_retries`) before re-planning and judges with its own
    StepMonitor (robot signals + visual check against the step image when one is given).
    """
    from emu_ros.bridge.monitor import StepMonitor
    from emu_ros.bridge.runner import RunnerConfig, TaskRunner
    from emu_ros.guidance.engine import EngineConfig, GuidanceEngine

    t0 = time.monotonic()
    world, tdef, backend, calls, injector = _prepare(cfg, world)
    engine = GuidanceEngine(backend, world.images, EngineConfig(cameras=(cfg.camera,)))
    settle = world.profile.tolerances.settle_s if cfg.settle_s is None else cfg.settle_s
    executor = _SimSettle(FaultAwareExecutor(world.executor, injector), world.adapter, settle)
    runner = TaskRunner(engine, world.mapper, executor, world.adapter,
                        StepMonitor(world.profile), image_source=world.images,
                        config=RunnerConfig(max_replans=cfg.max_replans if cfg.replan else 0, settle_s=0.0,
                                            planning_attempts=3, planning_retry_delay_s=0.5,
                                            log_images=log_dir is not None, guidance_mode=cfg.guidance_mode),
                        log_root=log_dir)
    for fn in listeners:
        runner.add_listener(fn)
    try:
        tr = runner.run(tdef.instruction, log_dir=log_dir)
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
    res.runner_status, res.retries, res.first_motion_s = tr.status, tr.retries, tr.first_motion_s
    return res
