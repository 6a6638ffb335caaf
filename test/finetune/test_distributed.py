"""The one trainer under torchrun (2 CPU ranks, gloo, FSDP2): sharded load, DCP checkpoints, exact resume on
2 ranks and on 1 rank, checked against an uninterrupted run (weights, loss curve and optimizer state)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finetune_embodied.checkpoint import STATE_DIR, latest_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _train(ranks: int, out: Path, model_dir: Path, port: int, *extra: str) -> None:
    args = ["-m", "finetune_embodied.train", "--data", "synthetic:move-block", "--model_dir", str(model_dir),
            "--output_dir", str(out), "--steps", "4", "--batch_size", "2", "--save_every", "2",
            "--eval_every", "100", "--keep_checkpoints", "0", "--param_dtype", "float32", "--bf16", "false",
            "--device", "cpu", "--synthetic.examples", "16", "--synthetic.eval_examples", "4",
            "--optim.lr", "3e-3", "--optim.warmup_steps", "1", "--distributed.backend", "gloo", *extra]
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
                "--master_port", str(port)] if ranks > 1 else []
    proc = subprocess.run([sys.executable, *launcher, *args], capture_output=True, text=True, timeout=240,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]


def _losses(run: Path) -> list[tuple[int, str, float]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [(int(r["step"]), r["split"], float(r["loss"])) for r in csv.DictReader(fh)]


def _resume_state(run: Path) -> dict:
    """The step-4 DCP checkpoint as one plain dict (trainable weights and optimizer state, unsharded)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    target = run / "state.pt"
    dcp_to_torch_save(latest_checkpoint(run) / STATE_DIR, target)
    return torch.load(target, weights_only=False)


def _flat(tree, prefix="") -> dict[str, torch.Tensor]:
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}/"))
    elif isinstance(tree, torch.Tensor):
        out[prefix] = tree
    return out


@pytest.mark.parametrize("variant", [
    pytest.param(("ar", ()), id="ar-full"),
    pytest.param(("dida", ("--objective", "dida", "--lora.enabled", "true", "--lora.rank", "4")), id="dida-lora",
                 marks=pytest.mark.slow),
])
def test_resume_on_two_ranks_and_on_one_equals_the_uninterrupted_run(variant, tiny_checkpoint, tmp_path) -> None:
    from emu_ros.model import load_lm
    from emu_ros.model.dida import load_dida_config

    objective, extra = variant
    model_dir = tiny_checkpoint / "Emu3.5"
    port = 29600 + (os.getpid() % 200)
    _train(2, tmp_path / "whole", model_dir, port, *extra)                       # uninterrupted, 4 steps
    _train(2, tmp_path / "cut", model_dir, port + 1, "--stop_after", "2", *extra)  # stops after step 2
    assert latest_checkpoint(tmp_path / "cut").name == "step_000002"
    assert not (latest_checkpoint(tmp_path / "cut") / "Emu3.5").exists()       # exported at the last step only
    shutil.copytree(tmp_path / "cut", tmp_path / "cut_one")
    _train(2, tmp_path / "cut", model_dir, port + 2, *extra)                     # resume on 2 ranks
    _train(1, tmp_path / "cut_one", model_dir, port + 3, *extra)                 # resume on 1 rank

    reference = load_lm(latest_checkpoint(tmp_path / "whole") / "Emu3.5", dtype=torch.float32).state_dict()
    base = load_lm(model_dir, dtype=torch.float32).state_dict()
    assert any(not torch.equal(reference[k], base[k]) for k in reference)
    ref_state = _flat(_resume_state(tmp_path / "whole"))
    assert any("exp_avg_sq" in k for k in ref_state)
    for run in ("cut", "cut_one"):
        got = load_lm(latest_checkpoint(tmp_path / run) / "Emu3.5", dtype=torch.float32).state_dict()
        for k in reference:
            torch.testing.assert_close(got[k], reference[k], rtol=0, atol=1e-6, msg=f"{run}: {k}")
        curve, ref_curve = _losses(tmp_path / run), _losses(tmp_path / "whole")
        assert [c[:2] for c in curve] == [c[:2] for c in ref_curve]
        assert max(abs(a[2] - b[2]) for a, b in zip(curve, ref_curve)) <= 1e-6
        state = _flat(_resume_state(tmp_path / run))
        assert state.keys() == ref_state.keys()
        for k in ref_state:                                                       # optimizer moments included
            torch.testing.assert_close(state[k].float(), ref_state[k].float(), rtol=0, atol=1e-6, msg=f"{run}: {k}")
    if objective == "dida":
        assert load_dida_config(latest_checkpoint(tmp_path / "whole") / "Emu3.5").training["data"] == \
            "synthetic:move-block"
