"""Interleaved Emu3.5 training sequences from segmented episodes: prompt with the current view -> steps.

One sample, in the official template (emu35-facts §6.1, §3) with the question written exactly as the guidance
engine writes it at inference (``emu_ros.guidance.prompting.build_question``)::

    <|extra_203|>You are a helpful assistant for vla task. USER: {question}{current view(s)} ASSISTANT: <|extra_100|>
    Step 1: {text}\\n{keyframe image} Step 2: {text}\\n{keyframe image} ... <|extra_101|><|extra_204|>

Only the answer (after ``<|extra_100|>``) is trained on (labels = -100 on the prompt). Besides the full episode,
every later start is a sample too (paper §4.1.2: sequences may start mid-trajectory): the prompt then shows the
key frame after step j and lists steps 1..j as done, the answer holds steps j+1..N.

Images are tokenized once with the vision tokenizer and cached on disk (``ImageTokenCache``): the key covers the
dataset, camera, frame, image area and the tokenizer weights, so a cache can be shared across runs.
Length limits drop trailing steps (never the first) and report samples that still do not fit; ``pack_samples``
fills rows of ``max_length`` with whole samples.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dataset import LeRobotDatasetReader
from .segment import EpisodeSteps, Step

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
# Batch keys shared by the data pipeline and the training loop (rule: batch keys are constants).
INPUT_IDS = "input_ids"
LABELS = "labels"


class SampleError(ValueError):
    """No usable training sample could be built; the message says which limit to change."""


@dataclass
class SampleConfig:
    """How segmented episodes become token sequences."""

    task_type: str = "vla"
    """Official template task name (vla = embodied manipulation)."""
    cameras: list[str] | None = None
    """Cameras shown in the prompt (current view); the first one also gives the step key frames. None = first."""
    image_area: int | None = None
    """Pixel area each image is resized to (official smart_resize); None = the LM config's image_area."""
    max_length: int = 4096
    """Longest sequence in tokens; trailing steps are dropped to fit."""
    mid_trajectory_starts: bool = True
    """Also train on samples that start after step j with steps 1..j given as done."""
    step_prefix: str = "Step {n}: "
    """Header before each step text (the guidance parser accepts it)."""
    steps_hint: bool = False
    """Append "Please provide N steps for the task." to the question (official howto convention)."""
    history_dropout: float = 0.0
    """Share of mid-trajectory starts given without their history (the task alone), so the model learns to read
    progress from the view, as when a task is started again after a cancel (deterministic per episode and step)."""
    done_samples: bool = False
    """Also train the start after the last step, answered with no step (a finished task is planned as done)."""


@dataclass
class TokenSample:
    """One training sequence with its loss mask and where each step's text sits (for step accuracy)."""

    input_ids: list[int]
    labels: list[int]
    episode_index: int
    first_step: int
    text_spans: list[tuple[int, int]] = field(default_factory=list)
    """[start, end) token positions of each step text in input_ids (the tokens that must be predicted)."""
    uncond: TokenSample | None = None
    """The same answer after the official unconditional prompt (trained in its place with probability
    cond_dropout, so classifier-free guidance has an unconditional branch to use); None = none."""

    def __len__(self) -> int:
        return len(self.input_ids)


def _fingerprint(*parts: object) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()[:16]


class ImageTokenCache:
    """Vision-tokenizer codes of dataset frames, computed once and kept as .npy files.

    Key = (dataset root + info.json + episodes table size, camera, episode, frame, image area, tokenizer weights
    fingerprint): any change to one of them gives a different file, never a stale one.
    """

    def __init__(self, cache_dir: str | Path, reader: LeRobotDatasetReader, vision_tokenizer, image_area: int,
                 tokenizer_id: str) -> None:
        self.reader = reader
        self.vq = vision_tokenizer
        self.image_area = int(image_area)
        info = (reader.root / "meta" / "info.json").read_bytes()
        ds_key = _fingerprint(str(reader.root.resolve()), info, [(e.episode_index, e.length) for e in reader.episodes])
        self.dir = Path(cache_dir) / f"{ds_key}-{_fingerprint(tokenizer_id, self.image_area)}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _path(self, camera: str, episode: int, frame: int) -> Path:
        return self.dir / camera / f"ep{episode:06d}_f{frame:06d}.npy"

    def codes(self, camera: str, episode: int, frames: Sequence[int]) -> list[np.ndarray]:
        """[h, w] code grids for frames of one episode/camera (decoding + tokenizing only the missing ones)."""
        from emu_ros.model import resize_to_area

        out: dict[int, np.ndarray] = {}
        todo = []
        for f in frames:
            path = self._path(camera, episode, f)
            if path.is_file():
                out[f] = np.load(path)
                self.hits += 1
            else:
                todo.append(f)
        if todo:
            import torch

            pixels = self.reader.frames(episode, camera, todo)
            resized = np.stack([resize_to_area(p, self.image_area) for p in pixels])
            with torch.no_grad():
                codes = self.vq.encode(resized).cpu().numpy().astype(np.int32)
            for f, c in zip(todo, codes):
                path = self._path(camera, episode, f)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, c)
                out[f] = c
                self.misses += 1
        return [out[f] for f in frames]


def vision_tokenizer_id(vq_dir: str | Path) -> str:
    """A fingerprint of the vision tokenizer weights (size + mtime + head bytes; cheap for multi-GB files)."""
    path = Path(vq_dir) / "model.ckpt"
    stat = path.stat()
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    return _fingerprint(str(path.resolve()), stat.st_size, stat.st_mtime_ns, head)


class SampleBuilder:
    """Turns EpisodeSteps into TokenSamples with one text tokenizer and one image-token cache."""

    def __init__(self, tokenizer, cache: ImageTokenCache, config: SampleConfig) -> None:
        from emu_ros.model import build_prompt

        self.tok = tokenizer
        self.cache = cache
        self.config = config
        self._build_prompt = build_prompt
        self.cameras = config.cameras or [cache.reader.camera_keys[0]]
        self.skipped: list[str] = []

    def _image_ids(self, codes: np.ndarray) -> list[int]:
        from emu_ros.model import image_token_ids

        return image_token_ids(codes, self.tok)

    def _question(self, task: str, before: list[Step], n_remaining: int) -> str:
        """The engine's own question (build_question) for a start after the attempts `before`: finished steps
        as done, the latest attempt that did not finish as the failure it was (annotated outcome)."""
        from emu_ros.guidance.prompting import build_question
        from emu_ros.core.types import PlanRequest

        return build_question(PlanRequest(task=task, history=step_history(before)),
                              steps_hint=n_remaining if self.config.steps_hint else None)

    def episode_samples(self, episode: EpisodeSteps) -> list[TokenSample]:
        """All samples of one episode (full + mid-trajectory starts), each fitted to max_length.

        A start after attempt j shows the key frame of attempt j (the scene then), gives attempts 1..j as history
        (or, for a `history_dropout` share, no history: the task alone, as after a cancel) and answers the
        finished attempts from j+1 on; attempts that did not finish are never in an answer, so a failure state
        is answered by its recovery. With `done_samples` the start after the last step answers no step at all."""
        steps = episode.steps
        if not steps:
            raise SampleError(f"episode {episode.episode_index} has no steps")
        cfg = self.config
        primary = self.cameras[0]
        key_frames = [s.keyframe for s in steps]
        step_codes = self.cache.codes(primary, episode.episode_index, key_frames)
        last = len(steps) + (1 if cfg.done_samples else 0)
        starts = range(last) if cfg.mid_trajectory_starts else range(1)
        # the view before attempt j+1: frame 0 for j = 0, else the key frame of attempt j
        views = {cam: self.cache.codes(cam, episode.episode_index,
                                       [0] + key_frames if cfg.mid_trajectory_starts else [0])
                 for cam in self.cameras}
        out = []
        for j in starts:
            answer = [(s, c) for s, c in zip(steps[j:], step_codes[j:]) if not s.outcome]
            if not answer and j < len(steps):
                continue
            forget = j > 0 and _unit(episode.episode_index, j) < cfg.history_dropout
            sample = self._sample(episode, j, [views[c][j] for c in self.cameras], answer, forget)
            if sample is not None:
                out.append(sample)
        return out

    def _sample(self, episode: EpisodeSteps, j: int, view_codes: list[np.ndarray],
                answer: list[tuple[Step, np.ndarray]], forget: bool = False) -> TokenSample | None:
        cfg = self.config
        before = [] if forget else episode.steps[:j]
        question = self._question(episode.task, before, len(answer))
        prompt = self.tok.encode(self._build_prompt(cfg.task_type, question))
        # the prompt template puts the images right after the question: splice their ids before " ASSISTANT:"
        tail = self.tok.encode(" ASSISTANT: <|extra_100|>")
        if prompt[-len(tail):] != tail:
            raise SampleError("prompt template changed: it no longer ends with ' ASSISTANT: <|extra_100|>'")
        images = [i for codes in view_codes for i in self._image_ids(codes)]
        prompt = prompt[:-len(tail)] + images + tail
        ids, labels, spans = list(prompt), [IGNORE_INDEX] * len(prompt), []
        end_ids = [self.tok.token_id("ESS"), self.tok.token_id("EOS")]
        first = sum(1 for s in before if not s.outcome) + 1
        for n, (step, codes) in enumerate(answer, start=first):
            header = self.tok.encode(("" if n == first else " ") + cfg.step_prefix.format(n=n))
            text = self.tok.encode(step.text + "\n")
            block = header + text + self._image_ids(codes)
            if len(ids) + len(block) + len(end_ids) > cfg.max_length:
                break
            spans.append((len(ids) + len(header), len(ids) + len(header) + len(text) - 1))  # text without "\n"
            ids += block
            labels += block
        if answer and not spans:
            self.skipped.append(f"episode {episode.episode_index} from step {j + 1}: prompt + one step need more "
                                f"than max_length={cfg.max_length} tokens")
            return None
        ids += end_ids
        labels += end_ids
        return TokenSample(ids, labels, episode.episode_index, j, spans)

    def build(self, episodes: Sequence[EpisodeSteps]) -> list[TokenSample]:
        """Samples of many episodes; raises SampleError when none fit (never an empty training set)."""
        samples = [s for ep in episodes for s in self.episode_samples(ep)]
        if self.skipped:
            log.warning("%d samples skipped, e.g. %s", len(self.skipped), self.skipped[0])
        if not samples:
            raise SampleError(f"no sample fits max_length={self.config.max_length} "
                              f"({len(self.skipped)} skipped: {self.skipped[:2]}); raise max_length or lower "
                              "image_area")
        return samples


def pack_samples(samples: Sequence[TokenSample], max_length: int) -> list[TokenSample]:
    """First-fit-decreasing packing of whole samples into rows of at most max_length tokens.

    Samples in one row attend to the earlier samples of the row (the model has no document mask), as in
    pretraining-style packing; the loss still covers each sample's answer only. Off by default in training.
    """
    rows: list[list[TokenSample]] = []
    room: list[int] = []
    for s in sorted(samples, key=len, reverse=True):
        if len(s) > max_length:
            raise SampleError(f"sample of {len(s)} tokens exceeds max_length={max_length}")
        k = next((i for i, r in enumerate(room) if r >= len(s)), None)
        if k is None:
            rows.append([s])
            room.append(max_length - len(s))
        else:
            rows[k].append(s)
            room[k] -= len(s)
    packed = []
    for row in rows:
        ids: list[int] = []
        labels: list[int] = []
        spans: list[tuple[int, int]] = []
        for s in row:
            spans += [(a + len(ids), b + len(ids)) for a, b in s.text_spans]
            ids += s.input_ids
            labels += s.labels
        packed.append(TokenSample(ids, labels, row[0].episode_index, row[0].first_step, spans))
    return packed


def step_history(steps: Sequence[Step]) -> list:
    """HistoryEntry list of annotated attempts: "" outcome = finished, "unfinished: why" / "failed: why" otherwise."""
    from emu_ros.core.types import HistoryEntry, OutcomeStatus

    out = []
    for s in steps:
        if not s.outcome:
            out.append(HistoryEntry(text=s.text, status=OutcomeStatus.FINISHED))
            continue
        kind, _, why = s.outcome.partition(":")
        status = OutcomeStatus.FAILED if kind.strip() == "failed" else OutcomeStatus.UNFINISHED
        out.append(HistoryEntry(text=s.text, status=status, reason=why.strip()))
    return out


def _unit(episode: int, j: int) -> float:
    """A fixed number in [0, 1) per (episode, start): the same samples drop their history on every run."""
    return zlib.crc32(f"{episode}:{j}".encode()) / 2 ** 32


def collate(samples: Sequence[TokenSample], pad_id: int):
    """Right-pad to the longest sample: causal attention never lets real tokens see the padding."""
    import torch

    width = max(len(s) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(samples):
        ids[i, :len(s)] = torch.tensor(s.input_ids)
        labels[i, :len(s)] = torch.tensor(s.labels)
    return {INPUT_IDS: ids, LABELS: labels}
