"""Where the trainer's token samples come from: a LeRobot v3.0 dataset, or a synthetic task named explicitly.

``--data PATH`` reads a local LeRobot dataset, segments its episodes into steps and builds the official
``vla`` samples (images tokenized through the on-disk cache). ``--data synthetic:move-block`` is the
move-the-block task with known answers (``emu_ros.model.synthetic_task``), for tests and benchmarks
only; it is never a default, and the run records which data it trained on.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from .samples import IGNORE_INDEX, ImageTokenCache, SampleBuilder, SampleConfig, TokenSample, pack_samples, \
    vision_tokenizer_id
from .segment import SegmentConfig, segment_dataset

log = logging.getLogger(__name__)

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_TASKS = ("move-block",)


@dataclass
class SyntheticConfig:
    """Size of a synthetic task's data (``--data synthetic:NAME`` only)."""

    examples: int = 2000
    """Training examples."""
    eval_examples: int = 32
    """Held-out examples (scored by loss)."""


@dataclass
class DataBundle:
    """Token samples for training and held-out evaluation, and what they came from."""

    train: list[TokenSample]
    eval: list[TokenSample]
    pad_id: int
    first_visual_id: int
    source: str
    train_episodes: list[int] = field(default_factory=list)
    eval_episodes: list[int] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A hash of every training and held-out token row: ranks and resumed runs must agree on it."""
        h = hashlib.sha1()
        for s in self.train + self.eval:
            h.update(repr((s.input_ids, s.labels, s.uncond.input_ids if s.uncond else None)).encode())
        return h.hexdigest()[:16]

    def token_ids(self) -> set[int]:
        """Every id the samples use (the rows of a compact training vocabulary)."""
        used: set[int] = set()
        for s in self.train + self.eval:
            used.update(s.input_ids)
            if s.uncond is not None:
                used.update(s.uncond.input_ids)
        return used


def split_episodes(indices: list[int], fraction: float, explicit: list[int] | None) -> tuple[list[int], list[int]]:
    """(train, held-out) episodes: explicit list, else the last ceil(fraction * N) episodes (at least one)."""
    if explicit is not None:
        unknown = sorted(set(explicit) - set(indices))
        if unknown:
            raise ValueError(f"eval_episodes {unknown} not in the dataset (episodes {indices[:10]}...)")
        held = [i for i in indices if i in set(explicit)]
    elif fraction > 0 and len(indices) > 1:
        held = indices[-max(1, math.ceil(fraction * len(indices))):]
    else:
        held = []
    train = [i for i in indices if i not in set(held)]
    if not train:
        raise ValueError(f"no training episodes left after holding out {held}")
    return train, held


def check_data_source(data: str) -> None:
    """Fail before anything loads when ``--data`` names nothing usable."""
    if not data:
        raise ValueError("--data is required: a LeRobot v3.0 dataset root, or synthetic:move-block for tests")
    if data.startswith(SYNTHETIC_PREFIX):
        name = data[len(SYNTHETIC_PREFIX):]
        if name not in SYNTHETIC_TASKS:
            raise ValueError(f"--data {data}: unknown synthetic task {name!r}; known: {list(SYNTHETIC_TASKS)}")
        return
    if not Path(data).is_dir():
        raise FileNotFoundError(f"--data {data}: not a directory (a LeRobot v3.0 dataset root with meta/info.json)")


def prepare_lerobot(data: str, samples: SampleConfig, segment: SegmentConfig, eval_fraction: float,
                    eval_episodes: list[int] | None, pack: bool, cache_dir: Path, lm_config, model_dir: Path,
                    vq_dir: Path, out: Path) -> DataBundle:
    """Read, segment, split by episode and tokenize (images through the on-disk cache)."""
    from emu_ros.model import load_tokenizer, load_vision_tokenizer

    from .dataset import LeRobotDatasetReader

    reader = LeRobotDatasetReader(data, cameras=samples.cameras)
    episodes = segment_dataset(reader, segment)
    (out / "segments.json").write_text(json.dumps([e.to_dict() for e in episodes], indent=1), encoding="utf-8")
    train_ids, eval_ids = split_episodes(reader.episode_indices, eval_fraction, eval_episodes)
    tok = load_tokenizer(model_dir)
    vq = load_vision_tokenizer(vq_dir)
    area = samples.image_area or lm_config.image_area
    cache = ImageTokenCache(cache_dir, reader, vq, area, vision_tokenizer_id(vq_dir))
    builder = SampleBuilder(tok, cache, samples)
    by_id = {e.episode_index: e for e in episodes}
    train = builder.build([by_id[i] for i in train_ids])
    held = builder.build([by_id[i] for i in eval_ids]) if eval_ids else []
    log.info("samples: %d train (%d episodes), %d eval (%d episodes); image tokens cached %d, computed %d",
             len(train), len(train_ids), len(held), len(eval_ids), cache.hits, cache.misses)
    if pack:
        train = pack_samples(train, samples.max_length)
    return DataBundle(train, held, tok.token_id("PAD"), tok.first_visual_id, f"lerobot:{Path(data).resolve()}",
                      train_ids, eval_ids)


def prepare_synthetic(data: str, synthetic: SyntheticConfig, seed: int, model_dir: Path) -> DataBundle:
    """The named synthetic task's examples as token samples (loss on the answer; uncond twins kept)."""
    from emu_ros.model import load_tokenizer
    from emu_ros.model.synthetic_task import MoveTask

    tok = load_tokenizer(model_dir)
    task = MoveTask(tok)
    train = [_token_sample(ex, i) for i, ex in enumerate(task.examples(synthetic.examples, seed))]
    held_seed = 7_777_777 + seed        # a separate stream: no held-out example is a training one by seed
    held = [_token_sample(ex, i) for i, ex in enumerate(task.examples(synthetic.eval_examples, held_seed))]
    log.info("synthetic %s: %d train, %d eval examples", data, len(train), len(held))
    return DataBundle(train, held, tok.token_id("PAD"), tok.first_visual_id, data)


def _labelled(ids: list[int], prompt_len: int) -> list[int]:
    """Labels of a row whose loss starts at prompt_len."""
    return [IGNORE_INDEX] * prompt_len + list(ids[prompt_len:])


def _token_sample(ex, index: int) -> TokenSample:
    uncond = None
    if ex.uncond_ids is not None:
        uncond = TokenSample(list(ex.uncond_ids), _labelled(ex.uncond_ids, ex.uncond_prompt_len), index, 0)
    return TokenSample(list(ex.ids), _labelled(ex.ids, ex.prompt_len), index, 0, uncond=uncond)


def pick_conditioning(samples: list[TokenSample], cond_dropout: float, key: int) -> list[TokenSample]:
    """Each sample, or its unconditional twin with probability ``cond_dropout`` (seeded by ``key``, so a
    micro-batch is the same on any number of ranks)."""
    rng = random.Random(key)
    return [s.uncond if s.uncond is not None and rng.random() < cond_dropout else s for s in samples]


def self_distilled(teacher, samples: list[TokenSample], cfg_scale: float, seed: int) -> list[TokenSample]:
    """Every answer image replaced by the teacher's own sample for the same context (DiDA's data recipe);
    the unconditional twins get the same answers."""
    from emu_ros.model.dida_objective import self_distill
    from emu_ros.model.training_data import TrainExample

    def prompt_len(s: TokenSample) -> int:
        return next(i for i, y in enumerate(s.labels) if y != IGNORE_INDEX)

    examples = [TrainExample(s.input_ids, prompt_len(s), s.uncond.input_ids if s.uncond else None,
                             prompt_len(s.uncond) if s.uncond else None) for s in samples]
    was_training = teacher.training
    teacher.eval()
    out = []
    for s, ex in zip(samples, self_distill(teacher, examples, cfg_scale, seed)):
        uncond = None
        if s.uncond is not None:
            uncond = dataclasses.replace(s.uncond, input_ids=ex.uncond_ids,
                                         labels=_labelled(ex.uncond_ids, ex.uncond_prompt_len))
        out.append(dataclasses.replace(s, input_ids=ex.ids, labels=_labelled(ex.ids, ex.prompt_len), uncond=uncond))
    teacher.train(was_training)
    return out
