"""check-model: passes on a good directory, names the problem on bad ones, reads headers only."""

import json
import shutil

import yaml

from emu_ros.model.check import check_model_dir, main


def test_good_directory(ckpt_root, capsys):
    assert main([str(ckpt_root / "Emu3.5")]) == 0
    out = capsys.readouterr().out
    assert "all checks passed" in out and "vision tokenizer" in out and "names and shapes match" in out


def test_problems_are_named(ckpt_root, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(ckpt_root, root)
    lm = root / "Emu3.5"
    shard = sorted(lm.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:4096])
    cfg = json.loads((lm / "config.json").read_text())
    cfg["eos_token_id"] = 151849
    (lm / "config.json").write_text(json.dumps(cfg))
    vq_cfg = yaml.safe_load((root / "Emu3.5-VisionTokenizer" / "config.yaml").read_text())
    vq_cfg["n_embed"] = 2048
    (root / "Emu3.5-VisionTokenizer" / "config.yaml").write_text(yaml.safe_dump(vq_cfg))
    res = check_model_dir(lm)
    text = "\n".join(res.problems)
    assert not res.ok
    assert shard.name in text and "truncated" in text
    assert "eos_token_id=151849" in text
    assert "n_embed=2048" in text
    assert main([str(lm)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_missing_directory_and_tokenizer(tmp_path, ckpt_root):
    assert "not a directory" in check_model_dir(tmp_path / "nope").problems[0]
    lm = tmp_path / "Emu3.5"
    shutil.copytree(ckpt_root / "Emu3.5", lm)
    (lm / "emu3.tiktoken").unlink()
    res = check_model_dir(lm)
    assert any("emu3.tiktoken not found" in p for p in res.problems)


def write_sparse_full_checkpoint(lm_dir, num_shards=15):
    """The full 34B layout with real safetensors headers and sparse (unallocated) data: 68 GB on paper, ~0 on disk."""
    import struct

    from emu_ros.model import preset_config
    from emu_ros.model.loading import expected_shapes
    from emu_ros.model.random_checkpoint import write_tokenizer_files
    cfg = preset_config("full")
    lm_dir.mkdir(parents=True)
    cfg.save(lm_dir / "config.json")
    write_tokenizer_files(lm_dir, cfg.codebook_size)
    shapes = list(expected_shapes(cfg).items())
    per = -(-len(shapes) // num_shards)
    weight_map = {}
    for i in range(num_shards):
        group = shapes[i * per:(i + 1) * per]
        name = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        header, offset = {}, 0
        for tname, shape in group:
            n = 2
            for s in shape:
                n *= s
            header[tname] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
            weight_map[tname] = name
        blob = json.dumps(header).encode()
        with open(lm_dir / name, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(8 + len(blob) + offset)          # sparse: no data blocks written
    (lm_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return cfg


def test_full_size_layout_checks_in_seconds(tmp_path):
    import time
    lm = tmp_path / "Emu3.5"
    write_sparse_full_checkpoint(lm)
    start = time.perf_counter()
    res = check_model_dir(lm)
    seconds = time.perf_counter() - start
    assert res.ok, res.problems
    assert any("707 tensors in 15 file(s)" in p for p in res.passed)
    assert any("34.10B" in p for p in res.passed)
    assert seconds < 30
