"""The scripted reference planner: a YAML step list per task, labelled "scripted-reference" everywhere.

It stands in for the world model in demos, the simulator evaluation and tests without weights. It
never pretends to be Emu3.5: every step's `source` is ``scripted-reference`` and the log says so.

Task file schema (`config/tasks/<task>.yaml`; one task per file)::

    task: transfer_cube                 # id; also matched against the instruction (required)
    aliases:                            # other instructions that select this file (optional)
      - transfer the cube from the right arm to the left arm
    description: free text              # optional
    steps:                              # required, >= 1
      - id: r_reach                     # optional, default s1, s2, ... (unique)
        text: Move the right gripper above the red cube      # required, non-empty
        image: images/r_reach.png       # optional PNG/JPEG of the scene after the step, relative to this file
        on_failure: r_reach             # optional step id where a re-plan resumes when THIS step was not
                                        # finished (e.g. a missed grasp restarts from the reach); default: itself

Re-plan rule: walking the history in order, each FINISHED entry whose text equals the next step's
text advances a pointer; the plan resumes at that pointer (the first step not yet finished), or
earlier when the latest history entry is a failure of a step that names `on_failure`. So a re-plan
re-issues the failed step (or its recovery point) and everything after it.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np
import yaml

from emu_ros.guidance.parser import normalize_text
from emu_ros.core.types import (Cancelled, CancelToken, HistoryEntry, OutcomeStatus, PlanningError, PlanRequest,
                                    PlanStep)

log = logging.getLogger(__name__)

SOURCE = "scripted-reference"
_TASK_FIELDS = {"task", "aliases", "description", "steps"}
_STEP_FIELDS = {"id", "text", "image", "on_failure"}


class TaskFileError(ValueError):
    """A scripted task file is malformed; the message names the file and field."""


@dataclass(frozen=True)
class ScriptedStep:
    """One step of a task file (image path resolved against the file's folder)."""

    id: str
    text: str
    image_path: Optional[Path] = None
    on_failure: Optional[str] = None


@dataclass
class ScriptedTask:
    """A validated task file; step images are loaded lazily and cached."""

    task: str
    steps: tuple
    aliases: tuple = ()
    description: str = ""
    path: str = ""
    _images: dict = field(default_factory=dict, repr=False)

    def matches(self, instruction: str) -> bool:
        """True if the instruction names this task (id, file stem or an alias; case/space-insensitive)."""
        key = _key(instruction)
        names = {_key(self.task), _key(Path(self.path).stem) if self.path else ""} | {_key(a) for a in self.aliases}
        return key in names - {""}

    def image(self, step: ScriptedStep) -> Optional[np.ndarray]:
        """The step's image as uint8 RGB (loaded once)."""
        if step.image_path is None:
            return None
        if step.id not in self._images:
            from PIL import Image

            with Image.open(step.image_path) as im:
                self._images[step.id] = np.asarray(im.convert("RGB"), dtype=np.uint8)
        return self._images[step.id]

    def resume_index(self, history: Sequence[HistoryEntry]) -> int:
        """Index of the first step to (re-)issue given the history (see the module docstring)."""
        k = 0
        for h in history:
            if h.status is OutcomeStatus.FINISHED and k < len(self.steps) and _key(h.text) == _key(self.steps[k].text):
                k += 1
        failures = [h for h in history if h.status is not OutcomeStatus.CANCELED]
        if failures and failures[-1].status is not OutcomeStatus.FINISHED:
            last = _key(failures[-1].text)
            for j, s in enumerate(self.steps):
                if _key(s.text) == last:
                    target = self.index_of(s.on_failure) if s.on_failure else j
                    k = min(k, target)
                    break
        return k

    def index_of(self, step_id: str) -> int:
        """Position of the step with id `step_id`."""
        for i, s in enumerate(self.steps):
            if s.id == step_id:
                return i
        raise TaskFileError(f"{self.path}: no step with id {step_id!r}")


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", normalize_text(str(text)).lower()).strip()


def load_task_file(path: Path) -> ScriptedTask:
    """Read and validate one task file; image paths must exist."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise TaskFileError(f"{path}: cannot read task file: {e}") from None
    if not isinstance(data, dict):
        raise TaskFileError(f"{path}: a task file must be a mapping with 'task' and 'steps'")
    unknown = set(data) - _TASK_FIELDS
    if unknown:
        raise TaskFileError(f"{path}: unknown field(s) {sorted(unknown)} (known: {sorted(_TASK_FIELDS)})")
    if not str(data.get("task", "")).strip():
        raise TaskFileError(f"{path}: missing 'task' (the task id, e.g. transfer_cube)")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise TaskFileError(f"{path}: 'steps' must be a non-empty list of {{text: ..., image: ...}}")
    steps = []
    for i, s in enumerate(raw_steps):
        where = f"{path}: steps[{i}]"
        if isinstance(s, str):
            s = {"text": s}
        if not isinstance(s, dict):
            raise TaskFileError(f"{where}: expected a mapping or a string, got {type(s).__name__}")
        unknown = set(s) - _STEP_FIELDS
        if unknown:
            raise TaskFileError(f"{where}: unknown field(s) {sorted(unknown)} (known: {sorted(_STEP_FIELDS)})")
        text = normalize_text(str(s.get("text") or ""))
        if not text:
            raise TaskFileError(f"{where}: 'text' is missing or empty")
        img = None
        if s.get("image"):
            img = (path.parent / str(s["image"])).resolve()
            if not img.is_file():
                raise TaskFileError(f"{where}.image: file {img} not found")
        steps.append(ScriptedStep(id=str(s.get("id") or f"s{i + 1}"), text=text, image_path=img,
                                  on_failure=str(s["on_failure"]) if s.get("on_failure") else None))
    ids = [s.id for s in steps]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise TaskFileError(f"{path}: duplicate step id(s) {dup}")
    for s in steps:
        if s.on_failure and s.on_failure not in ids:
            raise TaskFileError(f"{path}: step {s.id!r}.on_failure names unknown step {s.on_failure!r} (ids: {ids})")
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list):
        raise TaskFileError(f"{path}: 'aliases' must be a list of strings")
    return ScriptedTask(task=str(data["task"]).strip(), steps=tuple(steps), aliases=tuple(str(a) for a in aliases),
                        description=str(data.get("description") or ""), path=str(path))


class ScriptedWorldModel:
    """WorldModel backend that replays a task file's steps, resuming after failures (see module doc)."""

    name = SOURCE

    def __init__(self, task_dir: Optional[Path] = None, task_files: Sequence[Path] = (), step_delay_s: float = 0.0):
        if task_dir is None and not task_files:
            from emu_ros.core.profile import config_dir

            task_dir = config_dir() / "tasks"
        self.task_dir = Path(task_dir) if task_dir is not None else None
        self.step_delay_s = float(step_delay_s)
        self.tasks: List[ScriptedTask] = [load_task_file(Path(p)) for p in task_files]
        if self.task_dir is not None:
            if not self.task_dir.is_dir():
                raise TaskFileError(f"scripted planner: task directory {self.task_dir} does not exist")
            self.tasks += [load_task_file(p) for p in sorted(self.task_dir.glob("*.yaml"))]
        log.info("scripted reference planner: %d task(s) %s", len(self.tasks), [t.task for t in self.tasks])

    def find(self, instruction: str) -> ScriptedTask:
        """The task file for an instruction, or a PlanningError listing the scripted tasks."""
        for t in self.tasks:
            if t.matches(instruction):
                return t
        known = [t.task for t in self.tasks]
        raise PlanningError(f"scripted reference planner has no task file for {instruction!r} "
                            f"(scripted tasks: {known}; add config/tasks/<task>.yaml or an alias)")

    def plan(self, request: PlanRequest, cancel: Optional[CancelToken] = None) -> Iterator[PlanStep]:
        """Yield the not-yet-finished steps of the task, each labelled scripted-reference."""
        task = self.find(request.task)
        start = task.resume_index(request.history)
        if start >= len(task.steps):
            raise PlanningError(f"scripted reference planner: every step of {task.task!r} is already finished "
                                "according to the history; nothing left to plan")
        log.info("scripted reference plan for %r (revision %d): steps %d..%d of %d", task.task, request.revision,
                 start + 1, len(task.steps), len(task.steps))
        for n, step in enumerate(task.steps[start:]):
            # past max_steps the next step comes at once: a world model shows that more follows with
            # its next token, not after generating a whole step (stepwise mode asks for one step)
            delay = self.step_delay_s if n < request.max_steps else 0.0
            if cancel is not None and (cancel.cancelled or (delay and cancel.wait(delay))):
                raise Cancelled("scripted planning canceled")
            yield PlanStep(index=n, text=step.text, image=task.image(step), source=SOURCE,
                           notes=(f"scripted step {step.id} from {Path(task.path).name}",))
