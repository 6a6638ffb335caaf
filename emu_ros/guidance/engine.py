"""GuidanceEngine: task + current camera views + history → a validated Plan, streamed step by step.

The engine is the stateful wrapper around a `WorldModel` backend (STYLE rule 9): it takes the
observation from an `ImageSource` (never plans blind: a missing or stale camera is a
PlanningError naming it), keeps the per-task history of finished and failed steps that re-plan
prompts describe, validates what the backend yields, and turns every backend failure — an
exception, malformed items, no usable step — into one typed `PlanningError` whose message says
what happened. Backends may yield finished `PlanStep`s or raw interleaved output (text chunks and
images); raw output goes through the robust `StepParser`.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from emu_ros.core.protocols import CameraUnavailable, ImageSource
from emu_ros.guidance.parser import OutputEnd, StepParser, normalize_text
from emu_ros.core.types import (Cancelled, CancelToken, HistoryEntry, OutcomeStatus, Plan, PlanningError,
                                    PlanRequest, PlanStep, StepOutcome, WorldModel)

log = logging.getLogger(__name__)

StepCallback = Callable[[PlanStep], None]


@dataclass(frozen=True)
class EngineConfig:
    """How the engine asks for and accepts plans."""

    #: Longest plan accepted; further steps are dropped with a note (a re-plan picks them up).
    max_steps: int = 12
    #: Cameras whose frames go into the prompt; None = whatever the ImageSource gives.
    cameras: Optional[tuple] = None
    #: Refuse to plan without camera views (True on a robot; tests and text-only runs may relax it).
    require_observation: bool = True
    #: Drop a final step that lost its image because the output was cut (the others had images).
    drop_truncated_tail: bool = True

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"EngineConfig.max_steps must be >= 1, got {self.max_steps}")


class GuidanceEngine:
    """Plans tasks with one WorldModel; thread-safe for one plan at a time plus `cancel` from any thread."""

    def __init__(self, world_model: WorldModel, image_source: Optional[ImageSource] = None,
                 config: Optional[EngineConfig] = None):
        if not hasattr(world_model, "plan"):
            raise TypeError(f"world_model {world_model!r} has no plan(request, cancel) method (see guidance.types.WorldModel)")
        self.world_model = world_model
        self.image_source = image_source
        self.config = config or EngineConfig()
        self._histories: Dict[str, List[HistoryEntry]] = {}
        self._lock = threading.Lock()
        self._active: Optional[CancelToken] = None

    @property
    def source(self) -> str:
        """The backend's name, as it appears in every step's `source` field."""
        return str(getattr(self.world_model, "name", type(self.world_model).__name__))

    # ---- history ---------------------------------------------------------------------------
    def history(self, task: str) -> List[HistoryEntry]:
        """What has been tried for `task` so far (a copy)."""
        with self._lock:
            return list(self._histories.get(task, ()))

    def record(self, task: str, outcome: StepOutcome) -> None:
        """Append a step outcome to the task's history (re-plan prompts describe it)."""
        entry = HistoryEntry(text=outcome.text, status=outcome.status, reason=outcome.reason)
        with self._lock:
            self._histories.setdefault(task, []).append(entry)

    def reset(self, task: Optional[str] = None) -> None:
        """Forget the history of one task, or of all tasks."""
        with self._lock:
            if task is None:
                self._histories.clear()
            else:
                self._histories.pop(task, None)

    def cancel(self, reason: str = "canceled") -> None:
        """Stop the plan being generated now (if any); `plan` then raises Cancelled."""
        with self._lock:
            token = self._active
        if token is not None:
            token.cancel(reason)

    # ---- planning --------------------------------------------------------------------------
    def plan(self, task: str, history: Optional[Sequence[HistoryEntry]] = None, revision: int = 0,
             on_step: Optional[StepCallback] = None, cancel: Optional[CancelToken] = None,
             max_steps: Optional[int] = None) -> Plan:
        """Generate a plan for `task` from the current views.

        `history` (if given) replaces the stored history of the task. Each accepted step is passed
        to `on_step` as soon as it is complete. Raises PlanningError (with the reason) or Cancelled.
        """
        task = (task or "").strip()
        if not task:
            raise PlanningError("empty task instruction: give the task as text, e.g. 'fold the t-shirt'")
        if history is not None:
            with self._lock:
                self._histories[task] = list(history)
        limit = int(max_steps or self.config.max_steps)
        request = PlanRequest(task=task, observation=self._observe(), history=tuple(self.history(task)),
                              max_steps=limit, revision=revision)
        token = CancelToken()
        with self._lock:
            self._active = token
        watcher = _link(cancel, token)
        t0 = time.monotonic()
        try:
            steps, notes, cut_reason = self._collect(request, token, on_step, limit)
        finally:
            watcher.set()
            with self._lock:
                self._active = None
        plan = Plan(task=task, steps=steps, plan_id=uuid.uuid4().hex[:12], revision=revision, source=self.source,
                    notes=tuple(notes), complete=not cut_reason, cut_reason=cut_reason)
        log.info("plan r%d for %r from %s: %d steps in %.2f s%s%s", revision, task, self.source, len(steps),
                 time.monotonic() - t0, f", CUT ({cut_reason}): more steps may follow" if cut_reason else "",
                 f" (notes: {'; '.join(notes)})" if notes else "")
        return plan

    def _observe(self):
        if self.image_source is None:
            if self.config.require_observation:
                raise PlanningError("no image source: the engine refuses to plan blind "
                                    "(pass an ImageSource, or EngineConfig(require_observation=False) for text-only planning)")
            return None
        try:
            return self.image_source.observe(self.config.cameras)
        except CameraUnavailable as e:
            if self.config.require_observation:
                raise PlanningError(f"cannot plan without camera views: {e}") from e
            log.warning("planning without camera views: %s", e)
            return None
        except Exception as e:  # noqa: BLE001 - a broken image source is a planning failure, not a crash
            raise PlanningError(f"image source failed: {type(e).__name__}: {e}") from e

    def _collect(self, request: PlanRequest, token: CancelToken, on_step: Optional[StepCallback],
                 limit: int) -> tuple:
        """Run the backend, validating/parsing what it yields; returns (steps, notes, cut reason or "")."""
        source = self.source
        parser = StepParser(source=source)
        raw: List[PlanStep] = []
        notes: List[str] = []
        accepted: List[PlanStep] = []
        overflow = False

        def accept(candidates: List[PlanStep]) -> None:
            nonlocal overflow
            for step in candidates:
                raw.append(step)
                if not step.text:
                    notes.append(f"dropped a step without text ({', '.join(step.notes) or 'no notes'})")
                    continue
                if len(accepted) >= limit:
                    overflow = True
                    continue
                step = replace(step, index=len(accepted), source=step.source or source)
                accepted.append(step)
                if on_step is not None:
                    try:
                        on_step(step)
                    except Exception:  # noqa: BLE001 - a listener must not break planning
                        log.exception("on_step callback failed for step %d", step.index)

        truncated = False
        ended = False  # the backend said its output finished of itself (an OutputEnd, not cut)
        try:
            stream = self.world_model.plan(request, token)
            for item in stream:
                if token.cancelled:
                    break
                if isinstance(item, OutputEnd):
                    ended = not item.truncated
                if isinstance(item, PlanStep):
                    accept([_checked_step(item, notes)])
                elif len(accepted) >= limit and isinstance(item, str) and item.strip():
                    overflow = True  # the model starts another step: stop now, not after generating it
                else:
                    accept(parser.feed(item))
                if overflow:
                    token.cancel("max_steps reached")
                    break
        except Cancelled:
            truncated = True
        except PlanningError:
            raise
        except Exception as e:  # noqa: BLE001 - every backend failure becomes a PlanningError
            log.exception("world model %s raised", source)
            raise PlanningError(f"world model {source!r} failed: {type(e).__name__}: {e}") from e
        if token.cancelled and token.reason != "max_steps reached":
            raise Cancelled(f"planning canceled ({token.reason})")
        accept(parser.finish(truncated=truncated))
        notes.extend(parser.notes)
        if overflow:
            notes.append(f"plan longer than max_steps={limit}: kept the first {limit} steps")
        if parser.truncated and self.config.drop_truncated_tail and accepted and accepted[-1].image is None \
                and any(s.image is not None for s in accepted[:-1]):
            dropped = accepted.pop()
            notes.append(f"dropped the last step {dropped.text!r}: the output was cut before its image")
        if not accepted and not raw and ended and not parser.cut and not truncated and not parser.notes:
            # The output ended of itself before any step: the model sees nothing left to do in the current view.
            notes.append("the world model planned no steps: it sees the task as done in the current view")
            return [], notes, ""
        if not accepted:
            what = f"{len(raw)} unusable item(s)" if raw else "no steps"
            detail = "; ".join(notes) or "empty output"
            raise PlanningError(f"world model {source!r} returned {what} for task {request.task!r}: {detail}")
        cut_reason = ""
        if parser.cut:
            cut_reason = f"the output was cut ({parser.cut_reason}) after {len(accepted)} step(s)"
        elif overflow:
            cut_reason = f"the plan was longer than max_steps={limit}"
        return accepted, notes, cut_reason


def _checked_step(step: PlanStep, notes: List[str]) -> PlanStep:
    """Normalise a backend-built PlanStep (text whitespace, image layout) without trusting it."""
    text = normalize_text(step.text) if isinstance(step.text, str) else ""
    image = step.image
    if image is not None and not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                                  and image.shape[2] == 3):
        from emu_ros.guidance.parser import as_rgb_image

        image = as_rgb_image(image)
        if image is None:
            notes.append(f"step {text!r}: dropped an invalid image")
    return replace(step, text=text, image=image)


def _link(parent: Optional[CancelToken], child: CancelToken) -> threading.Event:
    """Forward `parent` cancellation to `child` until the returned event is set."""
    stop = threading.Event()
    if parent is None:
        return stop
    if parent.cancelled:
        child.cancel(parent.reason)
        return stop

    def watch() -> None:
        while not stop.is_set():
            if parent.wait(0.05):
                child.cancel(parent.reason)
                return

    threading.Thread(target=watch, name="engine-cancel-link", daemon=True).start()
    return stop


def outcome_history(outcomes: Sequence[StepOutcome]) -> List[HistoryEntry]:
    """HistoryEntries for a list of outcomes (what a re-plan request carries)."""
    return [HistoryEntry(text=o.text, status=o.status, reason=o.reason) for o in outcomes
            if o.status is not OutcomeStatus.CANCELED]
