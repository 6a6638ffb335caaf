"""Plans as the runner consumes them: whole (guidance mode `plan`) or streaming (`pipelined`).

In `pipelined` mode the planner runs in a background thread and each step is handed to the runner
the moment the world model finishes it, so the arm executes step k while step k+1 is generated; a
step that arrives while the arm is idle starts at once. `PlanStream.step(i)` blocks only until step
i exists (or the plan ended without it).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, List, Optional

from emu_ros.core.types import Cancelled, CancelToken, Plan, PlanStep


class ChildToken(CancelToken):
    """Cancelled by itself or with its parent (the task's token)."""

    def __init__(self, parent: CancelToken):
        super().__init__()
        self._parent = parent

    @property
    def cancelled(self) -> bool:
        if not self._event.is_set() and self._parent.cancelled:
            self.cancel(self._parent.reason or "canceled")
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not self.cancelled:
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._event.wait(min(left, 0.05))
        return True


class ReadyPlan:
    """A plan that is complete before its first step runs (mode `plan`, or a reviewed plan)."""

    def __init__(self, plan: Plan):
        self._plan = plan

    def step(self, index: int, cancel: CancelToken) -> Optional[PlanStep]:
        return self._plan.steps[index] if index < len(self._plan.steps) else None

    def plan(self) -> Plan:
        return self._plan

    def count(self) -> Optional[int]:
        return len(self._plan.steps)

    def stop(self) -> None:
        """Nothing to stop: a ready plan has no generation running behind it."""


class PlanStream:
    """A plan generated in a background thread by `request(on_step, cancel) -> Plan`.

    The planner's exceptions (PlanningError, the runner's abort, Cancelled) are raised to the caller
    of `step`/`plan` when it needs what the planner could not give.
    """

    def __init__(self, request: Callable[[Callable[[PlanStep], None], CancelToken], Plan], parent: CancelToken):
        self._cond = threading.Condition()
        self._steps: List[PlanStep] = []
        self._plan: Optional[Plan] = None
        self._error: Optional[BaseException] = None
        self._done = False
        self.token = ChildToken(parent)
        self._request = request
        self._thread = threading.Thread(target=self._work, name="emu-plan-stream", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            plan = self._request(self._on_step, self.token)
            with self._cond:
                self._plan = plan
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            with self._cond:
                self._error = e
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _on_step(self, step: PlanStep) -> None:
        with self._cond:
            self._steps.append(step)
            self._cond.notify_all()

    def step(self, index: int, cancel: CancelToken) -> Optional[PlanStep]:
        """Step `index` as soon as it exists; None when the finished plan has no such step."""
        with self._cond:
            while True:
                if self._done:
                    if self._plan is not None:
                        steps = self._plan.steps
                        return steps[index] if index < len(steps) else None
                    raise self._error
                if index < len(self._steps):
                    return self._steps[index]
                if cancel.cancelled:
                    raise Cancelled(cancel.reason or "canceled")
                self._cond.wait(0.05)

    def plan(self) -> Plan:
        """The finished plan (blocks until the planner returns)."""
        with self._cond:
            while not self._done:
                self._cond.wait(0.05)
            if self._plan is None:
                raise self._error
            return self._plan

    def count(self) -> Optional[int]:
        """Number of steps if the plan is finished, else None (still streaming)."""
        with self._cond:
            return len(self._plan.steps) if self._plan is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the generation (a re-plan supersedes it, or the task ended) and wait for the thread."""
        if not self._done:
            self.token.cancel("plan superseded")
        self._thread.join(timeout)
