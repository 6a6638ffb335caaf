"""Shared fixtures: one tiny random checkpoint (official layout) per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emu_ros.model import SpecialIds, load_lm, load_tokenizer, load_vision_tokenizer, write_random_checkpoint


@pytest.fixture(autouse=True)
def _one_cpu_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy host each parallel op can stall
    waiting for a descheduled worker (measured: 40 ms vs 3.6 ms per decode step)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ckpt_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt"), "tiny", seed=0)


@pytest.fixture(scope="session")
def lm_dir(ckpt_root: Path) -> Path:
    return ckpt_root / "Emu3.5"


@pytest.fixture(scope="session")
def vq_dir(ckpt_root: Path) -> Path:
    return ckpt_root / "Emu3.5-VisionTokenizer"


@pytest.fixture(scope="session")
def lm32(lm_dir: Path):
    return load_lm(lm_dir, dtype=torch.float32)


@pytest.fixture(scope="session")
def tok(lm_dir: Path):
    return load_tokenizer(lm_dir)


@pytest.fixture(scope="session")
def vq(vq_dir: Path):
    return load_vision_tokenizer(vq_dir)


@pytest.fixture(scope="session")
def ids(tok):
    """The special token ids of the tiny checkpoint's tokenizer."""
    return SpecialIds.from_tokenizer(tok)
