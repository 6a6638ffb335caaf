"""dida_train under torchrun (2 CPU processes, gloo): DDP and FSDP2 both train and save a loadable directory."""

import os
import subprocess
import sys

import pytest
import torch

from emu_ros.model import load_lm
from emu_ros.model.dida import load_dida_config


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torchrun_two_processes(ckpt_root, tmp_path, mode):
    out = tmp_path / mode
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "emu_ros.model.dida_train", "--model-dir", str(ckpt_root / "Emu3.5"), "--out", str(out),
           "--data", "synthetic", "--synthetic-examples", "8", "--steps", "2", "--batch-size", "1",
           "--device", "cpu", "--threads", "1", "--save-dtype", "float32", "--loss-vocab", "data"]
    if mode == "fsdp":
        cmd.append("--fsdp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_dida_config(out)
    assert cfg.training["batch_size"] == 2
    lm = load_lm(out, dtype=torch.float32)
    base = load_lm(ckpt_root / "Emu3.5", dtype=torch.float32)
    assert not torch.equal(lm.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    mask_row = 151643       # the compact vocabulary's trained rows were written back (the mask id is one of them)
    assert not torch.equal(lm.model.embed_tokens.weight[mask_row], base.model.embed_tokens.weight[mask_row])
