"""The question text of a guidance prompt: task, what has been done, what failed and why.

The official runtime wraps a *question* into its task template (`vla` or `howto`, emu35-facts
§6.1: `... USER: {question}{images} ASSISTANT: <|extra_100|>`); the template itself belongs to the
model runtime (`emu_ros.model`), this module only writes the question. A re-plan must tell the
model that the camera views show the scene *now* and which step was left unfinished, because the
released model was trained on (instruction, keyframe) sequences that may start mid-trajectory
(paper §4.1.2): describing progress as text is the closest match to that training data.
"""
from __future__ import annotations

from typing import Optional, Sequence

from emu_ros.core.types import HistoryEntry, OutcomeStatus, PlanRequest

#: Official task names whose templates fit step-by-step guidance (emu35-facts §6.1, §7).
GUIDANCE_TASKS = ("vla", "howto")


def describe_history(history: Sequence[HistoryEntry], max_entries: int = 12) -> str:
    """History as short sentences: finished steps in order, then the latest failure with its reason."""
    if not history:
        return ""
    done = [h.text for h in history if h.status is OutcomeStatus.FINISHED]
    lines = []
    if done:
        shown = done[-max_entries:]
        skipped = len(done) - len(shown)
        prefix = f"(and {skipped} earlier steps) " if skipped else ""
        lines.append("Steps already done: " + prefix + "; ".join(f"{t.rstrip('.')}" for t in shown) + ".")
    failed = [h for h in history if h.status is not OutcomeStatus.FINISHED]
    if failed:
        last = failed[-1]
        why = f" ({last.reason.rstrip('.')})" if last.reason else ""
        verb = "was not finished" if last.status is OutcomeStatus.UNFINISHED else "failed"
        lines.append(f"The step \"{last.text.rstrip('.')}\" {verb}{why}.")
        if len(failed) > 1:
            lines.append(f"{len(failed) - 1} earlier attempt(s) also failed.")
    return " ".join(lines)


def build_question(request: PlanRequest, steps_hint: Optional[int] = None) -> str:
    """The USER text for a `vla`/`howto` prompt built from a PlanRequest."""
    task = request.task.strip().rstrip(".")
    parts = [f"{task[:1].upper()}{task[1:]}."]
    hist = describe_history(request.history)
    if hist:
        parts.append(hist)
        parts.append("The images show the scene now. Give the remaining steps from here, each a short "
                     "instruction followed by an image of the scene after it.")
    if steps_hint:
        # The official repo comment: appending this sentence controls the number of howto steps.
        parts.append(f"Please provide {int(steps_hint)} steps for the task.")
    return " ".join(parts)
