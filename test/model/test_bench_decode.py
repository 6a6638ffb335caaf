"""The decode benchmark runs end to end on the tiny config and writes the documented JSON keys."""

import json

import pytest

from emu_ros.bench.decode import main
from emu_ros.model import write_random_checkpoint


def test_tiny_benchmark_json(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--config", "tiny", "--device", "cpu", "--dtype", "float32", "--tokens", "3", "--warmup", "1",
                 "--prompt-len", "16", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in ("ms_per_token", "tokens_per_s", "device", "dtype", "batch", "tokens"):
        assert key in data
    assert data["batch"] == 2 and data["tokens"] == 3 and data["ms_per_token"] > 0


def test_full_config_count_and_cpu_refusal(capsys, monkeypatch):
    monkeypatch.setattr("emu_ros.bench.decode._host_ram_bytes", lambda: 16 * 2**30)   # any host: refuse
    assert main(["--config", "full", "--device", "meta", "--count-only"]) == 0
    assert "34,103,460,864" in capsys.readouterr().out
    assert main(["--config", "full", "--device", "cpu"]) == 2
    assert "refusing" in capsys.readouterr().err


def test_full_random_checkpoint_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("emu_ros.model.random_checkpoint._host_ram_bytes", lambda: 16 * 2**30)
    with pytest.raises(ValueError, match="does not fit"):
        write_random_checkpoint(tmp_path, "full")
