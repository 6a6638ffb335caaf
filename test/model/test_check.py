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
