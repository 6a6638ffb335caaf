"""TaskRunner: plan → for each step: map → execute → check → retry / re-plan, with events and a log.

One `run(task)` is one task (one ExecuteTask goal in the ROS layer). The loop:

    planning → plan_ready → for each step:
        step_started → SkillMapper → SkillExecutor (in a worker thread, bounded by the step
        timeout) → settle → joint state + camera view → StepMonitor
          FINISHED                      → step_finished, next step
          FAILED (retryable), retries left → step_failed (will_retry) and the same step again
          UNFINISHED, unmapped, or FAILED with no retries left
                                        → step_unfinished / step_failed, then `replanning` with the
                                          failure recorded in the history, a new plan from the
                                          current views (at most max_replans), or `aborted`
    all steps finished → done.   cancel at any point → canceled (adapter goals canceled).

A plan whose output was cut (token budget) is not the task: when its steps are done the runner asks
for the rest (`continuing`, at most max_continuations) and never reports it done. With a reviewer,
every new plan waits for a person's approval (`awaiting_approval` → `approved` / `rejected`, a
rejection re-plans with the reason) before it moves the arm. Guidance modes: `plan` executes a
whole plan; `stepwise` asks for one step at a time from the current views, after the previous one
finished; `pipelined` executes each step as it streams in (bridge/plan_stream.py).

Robustness rules: a listener, the planner, the executor, the adapter or the log raising never
crashes the runner — each becomes an outcome, an abort with the message, or a logged warning. The
task log gets every event (JSONL, fsync'd) and a summary.json on every exit path.

Threading: `run` blocks the calling thread; `cancel()` may be called from any thread (the ROS
action server's cancel callback). One runner runs one task at a time; in `pipelined` mode the planner
runs in a second thread and events are serialised.

Size (~670 lines, over the ~600 guideline): the loop, its retry/re-plan/continuation/review rules
and the events they emit are one state machine read top to bottom; the plan sources, the monitor,
the task log and the skills live in their own modules.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Protocol, Sequence

from emu_ros.bridge.monitor import StepMonitor
from emu_ros.bridge.plan_stream import PlanStream, ReadyPlan
from emu_ros.core.protocols import (CameraUnavailable, ImageSource, JointState, PlanReviewer, Review, ReviewTimeout,
                                    RobotAdapter, SkillCall, SkillExecution, SkillExecutor)
from emu_ros.bridge.skill_mapper import SkillMapper
from emu_ros.bridge.task_log import TaskLog
from emu_ros.core.types import (Cancelled, CancelToken, HistoryEntry, Observation, OutcomeStatus, Plan,
                                    PlanningError, PlanStep, StepOutcome)

log = logging.getLogger(__name__)


class EventType(str, enum.Enum):
    """Runner events, in the order they can happen (values are the names in the JSONL log)."""

    PLANNING = "planning"
    STEP_PLANNED = "step_planned"  # a step streamed from the planner before the plan is complete
    PLAN_READY = "plan_ready"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    STEP_UNFINISHED = "step_unfinished"
    STEP_FAILED = "step_failed"
    REPLANNING = "replanning"
    CONTINUING = "continuing"  # the plan was cut by the world model's budget: asking for the remaining steps
    AWAITING_APPROVAL = "awaiting_approval"  # a person reviews the plan before the arm moves for it
    APPROVED = "approved"
    REJECTED = "rejected"  # re-planned with the person's reason
    DONE = "done"
    ABORTED = "aborted"
    CANCELED = "canceled"


TERMINAL = (EventType.DONE, EventType.ABORTED, EventType.CANCELED)
GUIDANCE_MODES = ("plan", "stepwise", "pipelined")


@dataclass(frozen=True)
class RunnerEvent:
    """What listeners receive. `plan` is set on plan_ready; `outcome` on step_* verdicts."""

    type: EventType
    task: str
    run_id: str
    revision: int = 0  # plan revision (0 = first plan; +1 per re-plan)
    replans: int = 0
    step_index: Optional[int] = None
    step_count: int = 0
    step_text: str = ""
    attempt: int = 0  # 0 = first try of this step in this plan, 1 = first retry, ...
    message: str = ""
    will_retry: bool = False
    outcome: Optional[StepOutcome] = None
    plan: Optional[Plan] = None
    step: Optional[PlanStep] = None
    #: On step_started: seconds the arm waited for this step (the first: time to first motion).
    idle_s: Optional[float] = None
    stamp: float = field(default_factory=time.time)


Listener = Callable[[RunnerEvent], None]


class Planner(Protocol):
    """What the runner needs from guidance: GuidanceEngine satisfies it; the ROS bridge wraps ~/generate_plan."""

    def plan(self, task: str, history: Optional[Sequence[HistoryEntry]] = None, revision: int = 0,
             on_step: Optional[Callable[[PlanStep], None]] = None, cancel: Optional[CancelToken] = None,
             max_steps: Optional[int] = None) -> Plan:
        """A plan from the current views given the history; raises PlanningError or Cancelled.

        `max_steps` (stepwise mode only: 1) bounds the steps asked for; a plan that would go on is
        returned with complete=False."""
        ...


@dataclass(frozen=True)
class RunnerConfig:
    """Bounds and timing of one task run."""

    #: Extra attempts of a FAILED step (aborted goal, timeout, tolerance) before re-planning.
    max_retries: int = 1
    #: New plans after the first one; 0 = stop at the first step that is not finished.
    max_replans: int = 3
    #: Requests for the remaining steps when a plan was cut by the world model's budget (not re-plans:
    #: nothing failed). Past this the task aborts; a cut plan is never reported as done.
    max_continuations: int = 8
    #: When every step of a plan finished, ask the world model once more from the current view, as a fresh task,
    #: whether anything is left (a world model that plans a finished scene as zero steps; a plan that missed a
    #: step is then continued instead of reported done). At most max_confirmations such checks per task; off
    #: by default, and never for planners that cannot judge a scene (the scripted reference).
    confirm_done: bool = False
    max_confirmations: int = 2
    #: Attempts to get a plan each time one is needed (a camera may be briefly unavailable).
    planning_attempts: int = 2
    planning_retry_delay_s: float = 0.5
    #: Wait after a step's motion before reading joints and cameras (None = profile's settle_s).
    settle_s: Optional[float] = None
    #: Wall-clock bound of one step's execution (None = profile's step_timeout_s).
    step_timeout_s: Optional[float] = None
    #: How long a canceled/timed-out executor thread gets to return before the runner moves on.
    executor_grace_s: float = 2.0
    #: FAILED codes never retried (retrying the same text cannot help): re-plan at once.
    no_retry_codes: tuple = ("unmapped", "executor_error")
    #: Save step images and camera views as PNG in the task log.
    log_images: bool = True
    #: `plan`: the whole plan, then execute. `stepwise`: one step per request, generated from the current
    #: views after the previous step finished (the model ends the task by ending its output after a
    #: step). `pipelined`: execute each step as soon as the world model has produced it, while the next
    #: ones are generated (a plan review needs the whole plan: reviewed plans run as `plan`).
    guidance_mode: str = "plan"
    #: stepwise: most single-step requests in one task (the world model never ending it is an abort).
    max_stepwise_steps: int = 64

    def __post_init__(self) -> None:
        for name in ("max_retries", "max_replans", "max_continuations", "max_stepwise_steps", "max_confirmations"):
            if getattr(self, name) < 0:
                raise ValueError(f"RunnerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.guidance_mode not in GUIDANCE_MODES:
            raise ValueError(f"RunnerConfig.guidance_mode must be one of {GUIDANCE_MODES}, got {self.guidance_mode!r}")
        if self.planning_attempts < 1:
            raise ValueError(f"RunnerConfig.planning_attempts must be >= 1, got {self.planning_attempts}")


@dataclass
class TaskResult:
    """How a run ended. status: succeeded | aborted | canceled."""

    task: str
    run_id: str
    status: str
    message: str
    steps_done: int
    replans: int
    retries: int
    outcomes: List[StepOutcome]
    history: List[HistoryEntry]
    plans: List[Plan]
    elapsed_s: float
    log_dir: Optional[str] = None
    #: Requests for the remaining steps of plans cut by the world model's budget.
    continuations: int = 0
    #: Seconds from the task's start to its first motion (None: the arm never moved).
    first_motion_s: Optional[float] = None
    guidance_mode: str = "plan"

    @property
    def success(self) -> bool:
        """True when every step finished."""
        return self.status == "succeeded"


class _Abort(Exception):
    """Internal: end the run as aborted with this message."""


class TaskRunner:
    """Executes tasks step by step on one robot; see the module docstring for the loop."""

    def __init__(self, planner: Planner, mapper: SkillMapper, executor: SkillExecutor, adapter: RobotAdapter,
                 monitor: StepMonitor, image_source: Optional[ImageSource] = None,
                 config: Optional[RunnerConfig] = None, log_root: Optional[Path] = None):
        self.planner = planner
        self.mapper = mapper
        self.executor = executor
        self.adapter = adapter
        self.monitor = monitor
        self.image_source = image_source
        self.config = config or RunnerConfig()
        self.log_root = Path(log_root) if log_root is not None else None
        tol = monitor.profile.tolerances
        self.settle_s = float(self.config.settle_s if self.config.settle_s is not None else tol.settle_s)
        self.step_timeout_s = float(self.config.step_timeout_s if self.config.step_timeout_s is not None
                                    else tol.step_timeout_s)
        self._listeners: List[Listener] = []
        self._lock = threading.Lock()
        self._emit_lock = threading.RLock()
        self._token: Optional[CancelToken] = None
        self._running = False
        self._log: Optional[TaskLog] = None

    # ---- public API ------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event)` for every event (from the thread running the task)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling `listener`."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    @property
    def running(self) -> bool:
        """True while `run` is executing a task."""
        return self._running

    def cancel(self, reason: str = "canceled by request") -> bool:
        """Cancel the running task from any thread; False if nothing is running."""
        with self._lock:
            token = self._token
        if token is None:
            return False
        token.cancel(reason)
        return True

    def run(self, task: str, cancel: Optional[CancelToken] = None, log_dir: Optional[Path] = None,
            reviewer: Optional[PlanReviewer] = None) -> TaskResult:
        """Run one task to the end (succeeded, aborted or canceled); never raises for task failures.

        With a `reviewer`, every new plan (the first, each re-plan and continuation) waits for a
        person's approval before any of its steps moves the arm; a rejection re-plans with the reason.
        """
        with self._lock:
            if self._running:
                raise RuntimeError("TaskRunner is already running a task; cancel it or use another runner")
            self._running = True
            self._token = cancel or CancelToken()
        run = _Run(task=task.strip(), run_id=uuid.uuid4().hex[:12], token=self._token, reviewer=reviewer)
        self._log = self._open_log(run, log_dir)
        try:
            return self._run(run)
        finally:
            with self._lock:
                self._running = False
                self._token = None
            self._log = None

    # ---- the loop ----------------------------------------------------------------------------
    def _run(self, run: "_Run") -> TaskResult:
        cfg = self.config
        try:
            if not run.task:
                raise _Abort("empty task instruction")
            run.source = self._plan_source(run, reason="")
            i = 0
            while True:
                step = run.source.step(i, run.token)
                if step is None:
                    plan = run.source.plan()
                    if plan.complete and cfg.confirm_done and plan.steps:
                        self._ask_if_done(run)
                        i = 0
                        continue
                    if plan.complete:
                        break
                    if cfg.guidance_mode == "stepwise":  # the step is done; the world model goes on from here
                        if run.stepwise_requests >= cfg.max_stepwise_steps:
                            raise _Abort(f"stepwise: {run.steps_done} step(s) done in {run.stepwise_requests} "
                                         f"requests and the world model has not ended the task "
                                         f"(max_stepwise_steps={cfg.max_stepwise_steps})")
                        run.source = self._plan_source(run, reason="")
                        i = 0
                        continue
                    # The world model ran out of budget mid-plan: the steps done so far are not the task.
                    # Ask for the rest, with the finished steps in the history; never report it done.
                    if run.continuations >= cfg.max_continuations:
                        raise _Abort(f"the plan was cut ({plan.cut_reason or 'incomplete'}) and is still incomplete "
                                     f"after {run.continuations} continuation(s) (max_continuations="
                                     f"{cfg.max_continuations}); {run.steps_done} step(s) done")
                    run.continuations += 1
                    run.source = self._plan_source(run, reason=plan.cut_reason or "the plan was incomplete",
                                                   continuation=True)
                    i = 0
                    continue
                run.confirming = False
                outcome = self._attempt(run, run.source.count(), step)
                run.idle_since = time.monotonic()
                if outcome.status is OutcomeStatus.FINISHED:
                    run.steps_done += 1
                    i += 1
                    continue
                if outcome.status is OutcomeStatus.CANCELED:
                    raise Cancelled(run.token.reason or outcome.reason or "canceled")
                # FAILED or UNFINISHED, retries spent (or not retryable): re-plan or give up.
                spent = self._replans_spent(run)
                if spent:
                    raise _Abort(f"step {step.index + 1} \"{step.text}\" {outcome.status.value}: {outcome.reason} — {spent}")
                run.source.stop()  # a plan still streaming is superseded
                run.replans += 1
                run.source = self._plan_source(run, reason=f"step \"{step.text}\" {outcome.status.value}: "
                                                           f"{outcome.reason}")
                i = 0
            if run.steps_done == 0:  # a complete plan of no steps (only a first plan may be one)
                message = "no step to do: the world model planned none from the current view (it sees the task done)"
                self._emit(run, EventType.DONE, message=message)
                return self._finish(run, "succeeded", message)
            if run.confirmations:
                message = f"all {run.steps_done} steps finished" + (f" after {run.replans} re-plan(s)" if run.replans
                                                                    else "") \
                    + "; the world model plans nothing more from the current view"
                self._emit(run, EventType.DONE, message=message)
                return self._finish(run, "succeeded", message)
            message = f"all {run.steps_done} steps finished" + (f" after {run.replans} re-plan(s)" if run.replans else "") \
                + (f" and {run.continuations} continuation(s) of cut plans" if run.continuations else "")
            self._emit(run, EventType.DONE, message=message)
            return self._finish(run, "succeeded", message)
        except Cancelled as e:
            return self._cancelled(run, str(e) or "canceled")
        except _Abort as e:
            self._emit(run, EventType.ABORTED, message=str(e))
            return self._finish(run, "aborted", str(e))
        except Exception as e:  # noqa: BLE001 - last line of defence: report, never crash the caller
            log.exception("task runner internal error")
            msg = f"internal error: {type(e).__name__}: {e}"
            self._emit(run, EventType.ABORTED, message=msg)
            return self._finish(run, "aborted", msg)
        finally:
            if run.source is not None:
                run.source.stop()  # no generation keeps running after the task ended

    def _attempt(self, run: "_Run", count: Optional[int], step: PlanStep) -> StepOutcome:
        """Run one step with its retries; returns the final outcome (history and events included).

        `count` = steps in the plan, None while it is still streaming (pipelined)."""
        attempt = 0
        while True:
            if run.token.cancelled:
                raise Cancelled(run.token.reason)
            idle = None
            if run.idle_since is not None:  # the arm waited for the world model (or this is the first motion)
                idle = time.monotonic() - run.idle_since
                run.idle_since = None
            if run.first_motion_s is None:
                run.first_motion_s = time.monotonic() - run.t0
            self._emit(run, EventType.STEP_STARTED, step=step, attempt=attempt, idle_s=idle,
                       message=f"step {step.index + 1}/{count if count is not None else '?'}: {step.text}"
                               + (f" (arm idle {idle:.2f} s before it)" if idle is not None else ""))
            outcome, after = self._execute(run, step)
            run.outcomes.append(outcome)
            if outcome.status is not OutcomeStatus.CANCELED:
                run.history.append(HistoryEntry(text=outcome.text, status=outcome.status, reason=outcome.reason))
            if outcome.status is OutcomeStatus.CANCELED:
                return outcome
            images = {"observed": _frame(after, self.monitor.camera)}
            if outcome.status is OutcomeStatus.FINISHED:
                self._emit(run, EventType.STEP_FINISHED, step=step, attempt=attempt, outcome=outcome, images=images)
                return outcome
            retry = (outcome.status is OutcomeStatus.FAILED and outcome.code not in self.config.no_retry_codes
                     and attempt < self.config.max_retries)
            kind = EventType.STEP_FAILED if outcome.status is OutcomeStatus.FAILED else EventType.STEP_UNFINISHED
            self._emit(run, kind, step=step, attempt=attempt, outcome=outcome, will_retry=retry,
                       message=outcome.reason, images=images)
            if not retry:
                return outcome
            attempt += 1
            run.retries += 1

    def _execute(self, run: "_Run", step: PlanStep) -> tuple:
        """Map, execute (bounded, cancelable), settle, observe, judge → (StepOutcome, observation after)."""
        t0 = time.monotonic()
        mapping = self.mapper.map(step.text)
        if not mapping.mapped:
            return (StepOutcome(step_index=step.index, text=step.text, status=OutcomeStatus.FAILED,
                                reason=f"unmapped step: {mapping.reason}", code="unmapped",
                                details={"matched_skill": mapping.matched_skill}), None)
        before = self._observe()
        execution, code, reason = self._run_executor(run, mapping.call)
        if code:
            status = OutcomeStatus.CANCELED if code == "canceled" else OutcomeStatus.FAILED
            return StepOutcome(step_index=step.index, text=step.text, status=status, reason=reason, code=code,
                               details={"skill": mapping.call.skill}), None
        if self.settle_s > 0 and run.token.wait(self.settle_s):
            return self._canceled_outcome(step, run), None
        state = self._joint_state()
        after = self._observe()
        outcome = self.monitor.evaluate(step, execution, state, after, time.monotonic() - t0, before=before)
        outcome.details.setdefault("call", {"skill": mapping.call.skill, "arm": mapping.call.arm,
                                            "obj": mapping.call.obj, "location": mapping.call.location})
        return outcome, after

    def _run_executor(self, run: "_Run", call: SkillCall) -> tuple:
        """Execute a skill in a worker thread; returns (execution, failure code, reason)."""
        child = CancelToken()
        box: dict = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["execution"] = self.executor.execute(call, child)
            except Cancelled as e:
                box["cancelled"] = str(e)
            except BaseException as e:  # noqa: BLE001 - reported as an outcome
                box["error"] = e
            finally:
                done.set()

        threading.Thread(target=work, name=f"skill-{call.skill}", daemon=True).start()
        deadline = time.monotonic() + self.step_timeout_s
        while not done.wait(0.02):
            if run.token.cancelled:
                self._stop_motion(child, run.token.reason)
                done.wait(self.config.executor_grace_s)
                return None, "canceled", f"canceled during '{call.skill}': {run.token.reason}"
            if time.monotonic() > deadline:
                self._stop_motion(child, "step timeout")
                done.wait(self.config.executor_grace_s)
                return None, "step_timeout", (f"skill '{call.skill}' did not finish within the step timeout "
                                              f"{self.step_timeout_s:.1f} s; goals canceled")
        if run.token.cancelled or "cancelled" in box:
            self._stop_motion(child, run.token.reason or "canceled")
            return None, "canceled", f"canceled during '{call.skill}': {run.token.reason or box.get('cancelled')}"
        if "error" in box:
            e = box["error"]
            log.error("skill executor raised on %s: %s: %s", call.skill, type(e).__name__, e)
            self._stop_motion(child, "executor error")
            return None, "executor_error", f"skill executor raised {type(e).__name__}: {e}"
        execution = box.get("execution")
        if not isinstance(execution, SkillExecution):
            return None, "executor_error", f"skill executor returned {type(execution).__name__}, not a SkillExecution"
        return execution, "", ""

    def _stop_motion(self, child: CancelToken, reason: str) -> None:
        child.cancel(reason)
        try:
            self.adapter.cancel_all()
        except Exception:  # noqa: BLE001 - report, keep going: the run must end cleanly
            log.exception("adapter.cancel_all() failed")

    # ---- planning ----------------------------------------------------------------------------
    def _new_plan(self, run: "_Run", reason: str, continuation: bool = False) -> Plan:
        """A plan to execute: from the planner, and approved by the run's reviewer when it has one."""
        plan = self._request_plan(run, reason, continuation)
        while run.reviewer is not None:
            review = self._review(run, plan)
            if review.approved:
                break
            why = f"the operator rejected the plan: {review.reason or 'no reason given'}"
            spent = self._replans_spent(run)
            if spent:
                raise _Abort(f"{why} — {spent}")
            run.replans += 1
            run.history.append(HistoryEntry(text="the proposed plan", status=OutcomeStatus.UNFINISHED, reason=why))
            plan = self._request_plan(run, why, continuation=False)
        return plan

    def _ask_if_done(self, run: "_Run") -> None:
        """Every step of the plan finished: a new plan from the current view says whether the task is (confirm_done)."""
        if run.confirmations >= self.config.max_confirmations:
            raise _Abort(f"every step finished, yet the world model still plans steps from the current view after "
                         f"{run.confirmations} check(s) (max_confirmations={self.config.max_confirmations}); "
                         f"{run.steps_done} step(s) done, the task is not reported done")
        run.confirmations += 1
        run.confirming = True
        self._emit(run, EventType.CONTINUING, message=f"every step of the plan finished: asking the world model "
                   f"whether anything is left in the current view (check {run.confirmations}/"
                   f"{self.config.max_confirmations})")
        run.source = self._plan_source(run, reason="")

    def _replans_spent(self, run: "_Run") -> str:
        """Why no re-plan is left ("" while one is)."""
        cfg = self.config
        if not cfg.max_replans:
            return "re-planning is off (max_replans=0)"
        if run.replans >= cfg.max_replans:
            return f"re-plan budget exhausted ({run.replans}/{cfg.max_replans} re-plans used)"
        return ""

    def _review(self, run: "_Run", plan: Plan) -> Review:
        self._emit(run, EventType.AWAITING_APPROVAL, plan=plan,
                   message=f"waiting for approval of {len(plan.steps)} step(s) (plan {plan.plan_id})")
        try:
            review = run.reviewer.review(plan, run.token)
        except Cancelled:
            raise
        except ReviewTimeout as e:
            raise _Abort(f"no approval: {e}") from e
        except Exception as e:  # noqa: BLE001 - a broken review channel must not move the arm
            if run.token.cancelled:
                raise Cancelled(run.token.reason) from e
            raise _Abort(f"plan review failed ({type(e).__name__}: {e}); the arm did not move for this plan") from e
        if not isinstance(review, Review):
            raise _Abort(f"plan reviewer returned {type(review).__name__}, not a Review")
        kind = EventType.APPROVED if review.approved else EventType.REJECTED
        self._emit(run, kind, plan=plan, message=review.reason or ("approved" if review.approved else "rejected"))
        return review

    def _plan_source(self, run: "_Run", reason: str, continuation: bool = False):
        """Where the next steps come from: a whole plan, or (pipelined, no review) a plan streaming in."""
        if self.config.guidance_mode == "pipelined" and run.reviewer is None:
            return PlanStream(lambda on_step, token: self._request_plan(run, reason, continuation, on_step, token),
                              run.token)
        return ReadyPlan(self._new_plan(run, reason, continuation))

    def _request_plan(self, run: "_Run", reason: str, continuation: bool = False,
                      on_step: Optional[Callable[[PlanStep], None]] = None,
                      cancel: Optional[CancelToken] = None) -> Plan:
        """Ask the planner (first plan, a re-plan or a continuation, with the history); aborts after
        planning_attempts. `on_step` also receives each streamed step; `cancel` defaults to the task's."""
        cancel = cancel or run.token
        revision = run.replans
        stepwise = self.config.guidance_mode == "stepwise"
        if stepwise:
            run.stepwise_requests += 1
        if continuation:
            self._emit(run, EventType.CONTINUING,
                       message=f"continuation {run.continuations}/{self.config.max_continuations}: {reason}; "
                               f"asking for the remaining steps after {run.steps_done} finished")
        elif revision and reason:  # (a stepwise request for the next step has no reason: nothing failed)
            self._emit(run, EventType.REPLANNING, message=f"re-plan {revision}/{self.config.max_replans}: {reason}")
        errors = []
        for attempt in range(self.config.planning_attempts):
            if cancel.cancelled:
                raise Cancelled(cancel.reason)
            self._emit(run, EventType.PLANNING, attempt=attempt,
                       message=f"planning {run.task!r}" + (f" (revision {revision})" if revision else "")
                               + (f" (stepwise: step {run.steps_done + 1} from the current views)" if stepwise else ""))
            streamed: List[PlanStep] = []

            def planned(step: PlanStep) -> None:
                streamed.append(step)
                self._emit(run, EventType.STEP_PLANNED, step=step, message=step.text)
                if on_step is not None:
                    on_step(step)

            try:
                kw = {"max_steps": 1} if stepwise else {}
                # a done-check asks as a fresh task: the view alone says what is left (a history that began
                # mid-task, after a cancel, is one the world model never saw in training)
                history = [] if run.confirming else list(run.history)
                plan = self.planner.plan(run.task, history=history, revision=revision, on_step=planned,
                                         cancel=cancel, **kw)
                if not isinstance(plan, Plan):
                    raise PlanningError(f"planner returned {type(plan).__name__}, not a Plan")
                if not plan.steps and not (plan.complete and (revision == 0 or run.confirming)):
                    # After a failed step, "nothing left to do" contradicts the step check: ask again.
                    raise PlanningError("planner returned an empty plan" + (" after a failed step" if revision else ""))
                run.plans.append(plan)
                self._emit(run, EventType.PLAN_READY, plan=plan,
                           message=f"{len(plan.steps)} steps from {plan.source or 'unknown source'}"
                                   + ("" if plan.complete else f" (cut: {plan.cut_reason}; more steps will be asked for)"),
                           images={f"step{i + 1}": s.image for i, s in enumerate(plan.steps)})
                return plan
            except Cancelled:
                raise
            except Exception as e:  # noqa: BLE001 - PlanningError or any planner bug
                if cancel.cancelled:
                    raise Cancelled(cancel.reason) from e
                errors.append(f"{type(e).__name__}: {e}" if not isinstance(e, PlanningError) else str(e))
                log.warning("planning attempt %d failed: %s", attempt + 1, errors[-1])
                if on_step is not None and streamed:
                    # Steps already handed out (pipelined) may be running: keep them as a cut plan, so
                    # the runner continues from the history instead of starting a second plan over them.
                    plan = Plan(task=run.task, steps=list(streamed), plan_id=uuid.uuid4().hex[:12], revision=revision,
                                source=streamed[0].source, complete=False,
                                cut_reason=f"planning failed after {len(streamed)} step(s): {errors[-1]}")
                    run.plans.append(plan)
                    self._emit(run, EventType.PLAN_READY, plan=plan, message=f"{len(streamed)} steps (cut: "
                                                                             f"{plan.cut_reason})")
                    return plan
                if attempt + 1 < self.config.planning_attempts and cancel.wait(self.config.planning_retry_delay_s):
                    raise Cancelled(cancel.reason)
        raise _Abort(f"planning failed after {len(errors)} attempt(s): {errors[-1]}")

    # ---- helpers -----------------------------------------------------------------------------
    def _observe(self) -> Optional[Observation]:
        if self.image_source is None:
            return None
        try:
            return self.image_source.observe([self.monitor.camera])
        except CameraUnavailable as e:
            log.warning("no camera view for the visual check: %s", e)
        except Exception:  # noqa: BLE001
            log.exception("image source failed")
        return None

    def _joint_state(self) -> Optional[JointState]:
        try:
            return self.adapter.joint_state()
        except Exception as e:  # noqa: BLE001 - the monitor reports "no joint state"
            log.warning("adapter.joint_state() failed: %s: %s", type(e).__name__, e)
            return None

    @staticmethod
    def _canceled_outcome(step: PlanStep, run: "_Run") -> StepOutcome:
        return StepOutcome(step_index=step.index, text=step.text, status=OutcomeStatus.CANCELED,
                           reason=run.token.reason or "canceled", code="canceled")

    def _cancelled(self, run: "_Run", reason: str) -> TaskResult:
        try:
            self.adapter.cancel_all()
        except Exception:  # noqa: BLE001
            log.exception("adapter.cancel_all() failed during cancel")
        msg = f"canceled: {reason}"
        self._emit(run, EventType.CANCELED, message=msg)
        return self._finish(run, "canceled", msg)

    def _open_log(self, run: "_Run", log_dir: Optional[Path]) -> Optional[TaskLog]:
        try:
            if log_dir is not None:
                return TaskLog(Path(log_dir), run_id=run.run_id)
            if self.log_root is not None:
                return TaskLog.create(self.log_root, run.task or "task", run_id=run.run_id)
        except Exception:  # noqa: BLE001 - a run without a log is better than no run
            log.exception("cannot open the task log; running without one")
        return None

    def _emit(self, run: "_Run", kind: EventType, images: Optional[dict] = None, **kw) -> None:
        # One event at a time: in pipelined mode the planning thread emits beside the task thread, and
        # the log and the listeners must see the same order.
        with self._emit_lock:
            self._emit_locked(run, kind, images, **kw)

    def _emit_locked(self, run: "_Run", kind: EventType, images: Optional[dict] = None, **kw) -> None:
        plan = run.plans[-1] if run.plans else None
        step = kw.get("step")
        event = RunnerEvent(type=kind, task=run.task, run_id=run.run_id, revision=run.replans, replans=run.replans,
                            step_index=step.index if step is not None else None,
                            step_count=len(plan.steps) if plan is not None else 0,
                            step_text=step.text if step is not None else "", **kw)
        if self._log is not None:
            try:
                self._log.write(kind.value, _event_record(event),
                                images=images if self.config.log_images else None)
            except Exception:  # noqa: BLE001 - logging trouble must not stop the robot task
                log.exception("task log write failed for %s", kind.value)
        # warnings: the robot did not do what the plan said (a re-plan always follows an unfinished step)
        level = logging.WARNING if kind in (EventType.STEP_FAILED, EventType.STEP_UNFINISHED, EventType.REPLANNING,
                                            EventType.CONTINUING, EventType.REJECTED, EventType.ABORTED) \
            else logging.INFO
        if kind is not EventType.STEP_PLANNED:
            log.log(level, "[%s] %s %s", run.run_id, kind.value, event.message)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a listener must never break the run
                log.exception("runner listener %r failed on %s", listener, kind.value)

    def _finish(self, run: "_Run", status: str, message: str) -> TaskResult:
        result = TaskResult(task=run.task, run_id=run.run_id, status=status, message=message,
                            steps_done=run.steps_done, replans=run.replans, retries=run.retries,
                            outcomes=list(run.outcomes), history=list(run.history), plans=list(run.plans),
                            elapsed_s=time.monotonic() - run.t0,
                            log_dir=str(self._log.run_dir) if self._log is not None else None,
                            continuations=run.continuations, first_motion_s=run.first_motion_s,
                            guidance_mode=self.config.guidance_mode)
        if self._log is not None:
            try:
                self._log.close(summary=_summary(result))
            except Exception:  # noqa: BLE001
                log.exception("closing the task log failed")
        return result


@dataclass
class _Run:
    task: str
    run_id: str
    token: CancelToken
    steps_done: int = 0
    replans: int = 0
    continuations: int = 0
    confirmations: int = 0  # confirm_done checks asked
    confirming: bool = False  # the plan being asked for is such a check (zero steps = done)
    stepwise_requests: int = 0
    retries: int = 0
    reviewer: Optional[PlanReviewer] = None
    source: Optional[object] = None  # ReadyPlan | PlanStream: where the next step comes from
    idle_since: Optional[float] = field(default_factory=time.monotonic)  # the arm is waiting since then
    first_motion_s: Optional[float] = None
    outcomes: list = field(default_factory=list)
    history: list = field(default_factory=list)
    plans: list = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)


def _frame(observation: Optional[Observation], camera: str):
    if observation is None or camera not in observation.frames:
        return None
    return observation.frames[camera].image


def _event_record(e: RunnerEvent) -> dict:
    """The JSONL fields of an event (plan and outcome flattened; images go separately)."""
    rec = {"task": e.task, "revision": e.revision, "replans": e.replans, "message": e.message}
    if e.step_index is not None:
        rec.update(step_index=e.step_index, step_count=e.step_count, step_text=e.step_text, attempt=e.attempt)
    if e.type in (EventType.STEP_FAILED, EventType.STEP_UNFINISHED):
        rec["will_retry"] = e.will_retry
    if e.idle_s is not None:
        rec["idle_s"] = round(e.idle_s, 4)
    if e.outcome is not None:
        rec["outcome"] = {"status": e.outcome.status.value, "code": e.outcome.code, "reason": e.outcome.reason,
                          "details": e.outcome.details}
    if e.plan is not None:
        rec["plan"] = {"plan_id": e.plan.plan_id, "revision": e.plan.revision, "source": e.plan.source,
                       "notes": list(e.plan.notes), "complete": e.plan.complete, "cut_reason": e.plan.cut_reason,
                       "steps": [{"index": s.index, "text": s.text, "source": s.source, "notes": list(s.notes),
                                  "has_image": s.image is not None} for s in e.plan.steps]}
    if e.step is not None and e.type is EventType.STEP_PLANNED:
        rec["source"] = e.step.source
        rec["notes"] = list(e.step.notes)
    return rec


def _summary(r: TaskResult) -> dict:
    return {"task": r.task, "status": r.status, "success": r.success, "message": r.message,
            "steps_done": r.steps_done, "replans": r.replans, "continuations": r.continuations, "retries": r.retries,
            "elapsed_s": round(r.elapsed_s, 3), "guidance_mode": r.guidance_mode,
            "first_motion_s": None if r.first_motion_s is None else round(r.first_motion_s, 3),
            "sources": sorted({p.source for p in r.plans}),
            "plans": [{"plan_id": p.plan_id, "revision": p.revision, "source": p.source, "complete": p.complete,
                       "cut_reason": p.cut_reason, "steps": [s.text for s in p.steps]} for p in r.plans],
            "outcomes": [{"step_index": o.step_index, "text": o.text, "status": o.status.value, "code": o.code,
                          "reason": o.reason} for o in r.outcomes]}
