"""Training loop: loss falls, checkpoints load with load_lm, exact resume, LoRA merge, objectives, config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from finetune_embodied.checkpoint import latest_checkpoint
from finetune_embodied.config import ConfigError, from_dict, parse_config
from finetune_embodied.data import split_episodes
from finetune_embodied.lora import LoraConfig, apply_lora, merged_state_dict
from finetune_embodied.train import TrainConfig, Trainer, lr_lambda


def _cfg(dataset: Path, ckpt: Path, out: Path, **kw) -> TrainConfig:
    base = {"data": str(dataset), "model_dir": str(ckpt / "Emu3.5"), "output_dir": str(out), "steps": 4,
            "batch_size": 1, "eval_every": 100, "save_every": 2, "keep_checkpoints": 0, "bf16": False,
            "param_dtype": "float32",
            "optim": {"lr": 3e-3, "warmup_steps": 1}, "samples": {"image_area": 32 * 48}}
    base.update(kw)
    return from_dict(TrainConfig, base)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from emu_ros.model import load_lm

    return load_lm(path / "Emu3.5", dtype=torch.float32).state_dict()


def test_short_finetune_then_interrupted_run_resumes_to_the_same_weights(demo_dataset, tiny_checkpoint,
                                                                         tmp_path) -> None:
    summary = Trainer(_cfg(demo_dataset, tiny_checkpoint, tmp_path / "a")).run()
    assert summary["step"] == 4
    assert summary["last_train_loss"] < summary["first_train_loss"]
    assert summary["last_eval"]["loss"] < summary["first_eval"]["loss"]
    final = latest_checkpoint(tmp_path / "a")
    assert final.name == "step_000004"
    reference = _weights(final)           # loads with emu_ros.model.load_lm (official layout)
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") >= 6
    assert (tmp_path / "a" / "train_config.yaml").is_file()

    # "crash" after step 3 (last checkpoint at step 2), then run the same command again
    Trainer(_cfg(demo_dataset, tiny_checkpoint, tmp_path / "b", stop_after=3)).run()
    assert latest_checkpoint(tmp_path / "b").name == "step_000002"
    resumed = Trainer(_cfg(demo_dataset, tiny_checkpoint, tmp_path / "b"))
    assert resumed.step == 2 and resumed.resume_from.name == "step_000002"
    assert resumed.run()["step"] == 4
    again = _weights(latest_checkpoint(tmp_path / "b"))
    assert again.keys() == reference.keys()
    for k in reference:
        torch.testing.assert_close(again[k], reference[k], rtol=0, atol=1e-6, msg=k)


def test_lora_merges_into_official_keys(tiny_checkpoint) -> None:
    from emu_ros.model import load_lm

    model = load_lm(tiny_checkpoint / "Emu3.5", dtype=torch.float32)
    official = set(model.state_dict())
    ids = torch.randint(0, 1000, (1, 12))
    replaced = apply_lora(model, LoraConfig(enabled=True, rank=4))
    assert len(replaced) == 7 * model.config.num_hidden_layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.05)          # a trained adapter
        out = model(ids)
    merged = merged_state_dict(model)
    assert set(merged) == official
    plain = load_lm(tiny_checkpoint / "Emu3.5", dtype=torch.float32)
    plain.load_state_dict(merged)
    with torch.no_grad():
        torch.testing.assert_close(plain(ids), out, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(load_lm(tiny_checkpoint / "Emu3.5", dtype=torch.float32)(ids), out, atol=1e-4)


def test_lora_run_saves_loadable_merged_checkpoint(demo_dataset, tiny_checkpoint, tmp_path) -> None:
    cfg = _cfg(demo_dataset, tiny_checkpoint, tmp_path / "lora", steps=2,
               lora={"enabled": True, "rank": 4}, gradient_checkpointing=True)
    summary = Trainer(cfg).run()
    assert summary["step"] == 2
    before = _weights(tiny_checkpoint)
    after = _weights(latest_checkpoint(tmp_path / "lora"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(k.split(".")[-2].endswith("_proj") for k in changed)  # only adapted projections


def test_dida_objective_trains(demo_dataset, tiny_checkpoint, tmp_path) -> None:
    """--objective dida (emu_ros.model.dida_objective.DiDAObjective) saves weights + dida_config.json."""
    from emu_ros.model.dida import load_dida_config

    cfg = _cfg(demo_dataset, tiny_checkpoint, tmp_path / "dida", steps=2, objective="dida",
               dida={"noise": "mask", "visual_weight": 0.5})
    summary = Trainer(cfg).run()
    assert summary["step"] == 2 and np.isfinite(summary["last_train_loss"])
    lm_dir = latest_checkpoint(tmp_path / "dida") / "Emu3.5"
    assert load_dida_config(lm_dir).noise == "mask"
    _weights(latest_checkpoint(tmp_path / "dida"))


def test_schedule_and_split() -> None:
    lrs = [lr_lambda(s, total=20, warmup=4, min_ratio=0.1) for s in range(21)]
    assert lrs[0] < lrs[3] < lrs[4] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert split_episodes(list(range(10)), 0.2, None) == (list(range(8)), [8, 9])
    assert split_episodes([0, 1, 2], 0.2, [0]) == ([1, 2], [0])
    with pytest.raises(ValueError, match="not in the dataset"):
        split_episodes([0, 1], 0.2, [5])


def test_config_yaml_then_flags(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("data: /d\nsteps: 7\noptim:\n  lr: 0.5\nlora:\n  enabled: true\n")
    cfg = parse_config(TrainConfig, ["--config", str(path), "--optim.lr", "0.25", "--eval_episodes", "1", "2",
                                     "--segment.gripper_columns", "{left: 6, right: 13}"], "")
    assert (cfg.data, cfg.steps, cfg.optim.lr, cfg.lora.enabled) == ("/d", 7, 0.25, True)
    assert cfg.eval_episodes == [1, 2] and cfg.segment.gripper_columns == {"left": 6, "right": 13}
    with pytest.raises(ConfigError, match="optim.lrr"):
        from_dict(TrainConfig, {"optim": {"lrr": 1}})
    with pytest.raises(ValueError, match="objective"):
        from_dict(TrainConfig, {"objective": "diffusion"})
    assert np.isclose(from_dict(TrainConfig, {"optim": {"betas": "[0.8, 0.9]"}}).optim.betas, [0.8, 0.9]).all()


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(demo_dataset, tiny_checkpoint, tmp_path) -> None:
    """Two ranks with gloo (the multi-GPU code path minus NCCL/FSDP): trains, rank 0 saves a loadable checkpoint."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "finetune_embodied.train", "--data", str(demo_dataset), "--param_dtype", "float32",
           "--model_dir", str(tiny_checkpoint / "Emu3.5"), "--output_dir", str(out), "--steps", "2",
           "--batch_size", "1", "--save_every", "2", "--eval_every", "2", "--bf16", "false",
           "--samples.image_area", "1536", "--distributed.backend", "gloo", "--distributed.fsdp", "false"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert latest_checkpoint(out).name == "step_000002"
    trained, base = _weights(latest_checkpoint(out)), _weights(tiny_checkpoint)
    assert any(not torch.equal(trained[k], base[k]) for k in base)


# ---------------------------------------------------------------------- the one trainer: data, objectives, bad input
def _no_weights(monkeypatch) -> None:
    """Fail the test if the trainer gets as far as loading weights."""
    import emu_ros.model

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the bad input was reported")

    monkeypatch.setattr(emu_ros.model, "load_lm", refuse)


def test_synthetic_data_trains_both_objectives_and_records_the_data(tiny_checkpoint, tmp_path) -> None:
    from emu_ros.model.dida import load_dida_config

    common = {"data": "synthetic:move-block", "synthetic": {"examples": 8, "eval_examples": 2},
              "compact_vocab": True}
    ar = Trainer(_cfg(tmp_path, tiny_checkpoint, tmp_path / "ar", steps=3, **common)).run()
    assert ar["step"] == 3 and ar["last_train_loss"] < ar["first_train_loss"]
    dida = Trainer(_cfg(tmp_path, tiny_checkpoint, tmp_path / "dida", steps=2, objective="dida",
                        dida={"noise": "mask"}, passes=3, **common)).run()
    lm_dir = latest_checkpoint(tmp_path / "dida") / "Emu3.5"
    cfg = load_dida_config(lm_dir)
    assert (cfg.noise, cfg.passes, cfg.training["data"], cfg.training["steps"]) == ("mask", 3,
                                                                                       "synthetic:move-block", 2)
    assert np.isfinite(dida["last_train_loss"])
    trained, base = _weights(latest_checkpoint(tmp_path / "dida")), _weights(tiny_checkpoint)
    mask_row = 151643          # the compact vocabulary's rows (the mask id among them) are merged back
    assert not torch.equal(trained["model.embed_tokens.weight"][mask_row], base["model.embed_tokens.weight"][mask_row])


def test_data_is_required_and_named(tiny_checkpoint, tmp_path) -> None:
    with pytest.raises(ValueError, match="--data is required"):
        Trainer(_cfg(tmp_path, tiny_checkpoint, tmp_path / "x", data=""))
    with pytest.raises(ValueError, match="unknown synthetic task 'blocks'"):
        Trainer(_cfg(tmp_path, tiny_checkpoint, tmp_path / "x", data="synthetic:blocks"))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        Trainer(_cfg(tmp_path / "missing", tiny_checkpoint, tmp_path / "x"))


def test_wrong_dataset_version_fails_before_weights(make_dataset, tiny_checkpoint, tmp_path, monkeypatch) -> None:
    import json

    from finetune_embodied.dataset import CodebaseVersionError

    root = make_dataset(tmp_path / "old")
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    _no_weights(monkeypatch)
    with pytest.raises(CodebaseVersionError, match="v2.1"):
        Trainer(_cfg(root, tiny_checkpoint, tmp_path / "run"))


def test_model_dir_without_index_fails_before_weights(demo_dataset, tiny_checkpoint, tmp_path, monkeypatch) -> None:
    import shutil

    from emu_ros.model.loading import CheckpointError

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, copy)
    (copy / "Emu3.5" / "model.safetensors.index.json").unlink()
    _no_weights(monkeypatch)
    with pytest.raises(CheckpointError, match="model.safetensors.index.json"):
        Trainer(_cfg(demo_dataset, copy, tmp_path / "run"))


def test_resume_dir_of_another_run_is_refused(demo_dataset, tiny_checkpoint, tmp_path, monkeypatch) -> None:
    from finetune_embodied.checkpoint import ResumeError

    Trainer(_cfg(demo_dataset, tiny_checkpoint, tmp_path / "run", steps=2, lora={"enabled": True, "rank": 4})).run()
    _no_weights(monkeypatch)
    with pytest.raises(ResumeError, match="lora"):
        Trainer(_cfg(demo_dataset, tiny_checkpoint, tmp_path / "run", steps=4, lora={"enabled": True, "rank": 8}))
    with pytest.raises(ResumeError, match="objective"):
        Trainer(_cfg(demo_dataset, tiny_checkpoint, tmp_path / "run", steps=4, objective="dida",
                     lora={"enabled": True, "rank": 4}))


def test_ranks_that_disagree_on_the_data_all_stop() -> None:
    import os

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    port = 29800 + os.getpid() % 100
    from rank_agreement import disagreeing_rank

    procs = [ctx.Process(target=disagreeing_rank, args=(r, port, errors)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    got = sorted(errors.get(timeout=5) for _ in range(2))
    assert [r for r, _ in got] == [0, 1]
    assert all("rank 0: fingerprint-0, rank 1: fingerprint-1" in msg for _, msg in got)
