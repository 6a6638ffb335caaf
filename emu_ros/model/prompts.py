"""Official Emu3.5 prompt templates (baaivision/Emu3.5 configs/*.py) and their CFG counterparts.

Conditional::

    <|extra_203|>You are a helpful assistant for {task} task.{extra} USER: {question}{images} ASSISTANT: <|extra_100|>

x2i puts the images before the question (``USER: {images}{question}``). ``extra`` is
" Please generate a response with interleaved text and images." for howto only. The
unconditional prompt (``unconditional_type="no_text"``) drops the task and all text but keeps the
same input images: ``...assistant. USER: {images} ASSISTANT: <|extra_100|>``; with no images the
two spaces around the empty user turn remain.
"""

from __future__ import annotations

TASKS = ("t2i", "x2i", "howto", "story", "explore", "vla")
HOWTO_EXTRA = " Please generate a response with interleaved text and images."
BOS = "<|extra_203|>"
BSS = "<|extra_100|>"


def _check_task(task: str) -> str:
    task = task.lower()
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; official task types are {TASKS}")
    return task


def build_prompt(task: str, question: str, image_strings: list[str] | tuple[str, ...] = ()) -> str:
    """Conditional prompt for a task, with the image strings of the reference images (if any)."""
    task = _check_task(task)
    extra = HOWTO_EXTRA if task == "howto" else ""
    images = "".join(image_strings)
    if images and task == "x2i":
        user = f"{images}{question}"
    else:
        user = f"{question}{images}"
    return f"{BOS}You are a helpful assistant for {task} task.{extra} USER: {user} ASSISTANT: {BSS}"


def build_unconditional_prompt(image_strings: list[str] | tuple[str, ...] = ()) -> str:
    """Unconditional (CFG negative) prompt: no task, no text, the same reference images."""
    return f"{BOS}You are a helpful assistant. USER: {''.join(image_strings)} ASSISTANT: {BSS}"
