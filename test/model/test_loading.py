"""Loading the official layout: round trip, dtype cast, and clear errors for damaged directories."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from emu_ros.model import CheckpointError, ConfigError, load_lm
from emu_ros.model.loading import INDEX_FILE


def copy_lm(lm_dir, tmp_path):
    dst = tmp_path / "Emu3.5"
    shutil.copytree(lm_dir, dst)
    return dst


def test_round_trip_matches_files(lm_dir):
    model = load_lm(lm_dir, dtype=torch.float32)
    weight_map = json.loads((lm_dir / INDEX_FILE).read_text())["weight_map"]
    assert len(set(weight_map.values())) >= 2                       # really sharded
    state = model.state_dict()
    assert set(state) == set(weight_map)
    for file in set(weight_map.values()):
        for name, t in load_file(str(lm_dir / file)).items():
            assert torch.equal(state[name], t.float()), name
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_dtype_cast_on_the_fly(lm_dir):
    model = load_lm(lm_dir, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    logits = model(torch.tensor([[151849, 15, 16]]))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_truncated_shard_names_file(lm_dir, tmp_path):
    d = copy_lm(lm_dir, tmp_path)
    shard = sorted(d.glob("model-*.safetensors"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{shard.name}.*truncated"):
        load_lm(d)


def test_missing_shard_names_file(lm_dir, tmp_path):
    d = copy_lm(lm_dir, tmp_path)
    shard = sorted(d.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        load_lm(d)


def test_missing_unexpected_and_misshaped_listed_together(lm_dir, tmp_path):
    d = copy_lm(lm_dir, tmp_path)
    index = json.loads((d / INDEX_FILE).read_text())
    file = index["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    tensors = load_file(str(d / file))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    tensors["model.layers.1.self_attn.q_norm.weight"] = torch.ones(7, dtype=torch.bfloat16)
    tensors["model.layers.1.extra.weight"] = torch.ones(3, dtype=torch.bfloat16)
    save_file(tensors, str(d / file))
    del index["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    index["weight_map"]["model.layers.1.extra.weight"] = file
    (d / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as info:
        load_lm(d)
    msg = str(info.value)
    assert "1 missing" in msg and "model.layers.1.mlp.up_proj.weight" in msg
    assert "1 unexpected" in msg and "model.layers.1.extra.weight" in msg
    assert "1 mis-shaped" in msg and "q_norm.weight" in msg and "[7]" in msg and "[32]" in msg


def test_index_points_to_wrong_file(lm_dir, tmp_path):
    d = copy_lm(lm_dir, tmp_path)
    index = json.loads((d / INDEX_FILE).read_text())
    files = sorted(set(index["weight_map"].values()))
    index["weight_map"]["lm_head.weight"] = files[0] if index["weight_map"]["lm_head.weight"] != files[0] else files[1]
    (d / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="lm_head.weight: listed in"):
        load_lm(d)


def test_missing_files_and_config(tmp_path, lm_dir):
    with pytest.raises(FileNotFoundError):
        load_lm(tmp_path / "nope")
    d = copy_lm(lm_dir, tmp_path)
    (d / INDEX_FILE).unlink()
    with pytest.raises(CheckpointError, match="neither"):
        load_lm(d)
    (d / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json not found"):
        load_lm(d)


def test_config_disagreeing_with_weights(lm_dir, tmp_path):
    d = copy_lm(lm_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_lm(d)
