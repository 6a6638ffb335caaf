"""Shared fixtures for finetune_embodied tests: small LeRobot v3.0 datasets written with our writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finetune_embodied.writer import ALOHA_JOINT_NAMES, LeRobotDatasetWriter

H, W = 32, 48
LENGTHS = (20, 23, 18)


def frame_value(episode: int, frame: int) -> int:
    """Gray level drawn into frame `frame` of `episode`; tests decode it back to locate frames exactly."""
    return (episode * 70 + frame * 9) % 200 + 20


def write_demo_dataset(root: Path, lengths=LENGTHS, subtasks: bool = True, episodes_per_file: int | None = 2) -> Path:
    """Three episodes, two cameras, 14-d state/action; episode e frame i is a flat image of frame_value(e, i)."""
    w = LeRobotDatasetWriter.create(root, fps=50, robot_type="aloha", episodes_per_file=episodes_per_file,
                                    features={
                                        "observation.images.top": {"dtype": "video", "shape": (H, W, 3)},
                                        "observation.images.left_wrist": {"dtype": "video", "shape": (H, W, 3)},
                                        "observation.state": {"dtype": "float32", "shape": (14,),
                                                              "names": ALOHA_JOINT_NAMES},
                                        "action": {"dtype": "float32", "shape": (14,), "names": ALOHA_JOINT_NAMES}})
    for e, n in enumerate(lengths):
        for i in range(n):
            img = np.full((H, W, 3), frame_value(e, i), np.uint8)
            w.add_frame({"observation.images.top": img, "observation.images.left_wrist": 255 - img,
                         "observation.state": np.full(14, e * 1000 + i, np.float32),
                         "action": np.full(14, -i, np.float32), "task": f"task {e % 2}"})
        w.save_episode(subtasks=[(0, f"reach {e}"), (n // 2, f"grasp {e}")] if subtasks else None)
    w.finalize()
    return root


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only dataset shared by tests that do not modify it."""
    return write_demo_dataset(tmp_path_factory.mktemp("ds") / "demo")


@pytest.fixture(scope="session")
def make_dataset():
    """The dataset factory itself, for tests that need a private (mutable) copy or other lengths."""
    return write_demo_dataset


@pytest.fixture(scope="session")
def pixel_of():
    """frame_value(episode, frame): the gray level drawn into that frame by write_demo_dataset."""
    return frame_value


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Emu3.5 checkpoint in the official layout (Emu3.5/ + Emu3.5-VisionTokenizer/)."""
    from emu_ros.model import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)
