"""Acceptance on the simulator dataset (slow): fine-tune a tiny model end to end, then plan with it.

Records 4 scripted transfer episodes from emu_ros.sim, fine-tunes a random tiny checkpoint for 100 steps on CPU,
and checks: training loss falls, held-out step-text accuracy beats the untrained model's, the checkpoint loads
with load_lm, and the guidance engine (Emu35WorldModel) plans with it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from finetune_embodied.checkpoint import latest_checkpoint
from finetune_embodied.config import from_dict
from finetune_embodied.dataset import LeRobotDatasetReader
from finetune_embodied.train import TrainConfig, Trainer

pytestmark = [pytest.mark.slow, pytest.mark.sim, pytest.mark.timeout(1200)]


def test_sim_dataset_finetune_then_plan(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pytest.importorskip("gym_aloha")
    import torch

    from emu_ros.guidance.backends.emu35 import Emu35WorldModel
    from emu_ros.guidance.engine import GuidanceEngine
    from emu_ros.core.types import CameraFrame, Observation, PlanningError
    from emu_ros.model import load_lm
    from finetune_embodied.make_sim_dataset import SimDatasetConfig, build_dataset

    root = build_dataset(SimDatasetConfig(out=str(tmp_path / "sim"), episodes_per_task=4, record_every=10,
                                          height=64, width=64))
    cfg = from_dict(TrainConfig, {
        "data": str(root), "model_dir": str(tiny_checkpoint / "Emu3.5"), "output_dir": str(tmp_path / "ft"),
        "param_dtype": "float32", "steps": 100, "batch_size": 2, "eval_every": 50, "save_every": 50, "eval_episodes": [3], "bf16": False,
        "optim": {"lr": 3e-3, "warmup_steps": 5}})
    summary = Trainer(cfg).run()
    assert summary["last_train_loss"] < 0.5 * summary["first_train_loss"]
    first, last = summary["first_eval"], summary["last_eval"]
    assert last["loss"] < first["loss"]
    assert last["token_acc"] > first["token_acc"] + 0.3
    ckpt = latest_checkpoint(tmp_path / "ft") / "Emu3.5"
    load_lm(ckpt, dtype=torch.float32)

    view = LeRobotDatasetReader(root).frames(3, "cam_high", [0])[0]

    class Camera:
        def observe(self, cameras=None):
            return Observation(frames={"cam_high": CameraFrame("cam_high", view, time.time())})

    def plan_words(model_dir: Path) -> tuple[int, float]:
        """(number of steps, fraction of plan words that occur in the dataset's step texts)."""
        model = Emu35WorldModel(model_dir=str(model_dir), vq_dir=str(tiny_checkpoint / "Emu3.5-VisionTokenizer"),
                                dtype="float32", image_area=4096, generation={"max_new_tokens": 300, "seed": 0})
        try:
            plan = GuidanceEngine(model, Camera()).plan("transfer the cube")
        except PlanningError:
            return 0, 0.0
        assert plan.source == "emu35-ar" and len(plan.steps) <= 12
        words = [w for s in plan.steps for w in re.findall(r"[a-z]+", s.text.lower())]
        return len(plan.steps), sum(w in vocabulary for w in words) / max(1, len(words))

    vocabulary = {w for s in json.loads((tmp_path / "ft" / "segments.json").read_text())
                  for step in s["steps"] for w in re.findall(r"[a-z]+", step["text"].lower())}
    n_trained, trained = plan_words(ckpt)
    _, untrained = plan_words(tiny_checkpoint / "Emu3.5")
    assert n_trained >= 1
    assert trained > untrained + 0.2, (trained, untrained)
