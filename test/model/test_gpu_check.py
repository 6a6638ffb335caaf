"""The GPU check's code path on the tiny config and the CPU (the figures themselves need a GPU)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")


def test_gpu_check_runs_every_part_on_the_tiny_config(tmp_path):
    from emu_ros.bench.gpu_check import main

    out = tmp_path / "gc.json"
    assert main(["--config", "tiny", "--device", "cpu", "--decode-tokens", "3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["prefill"]["attention_paths"] == {"sdpa_causal": 1}  # one causal forward over both rows
    assert set(r["decode"]["attention_paths"]) == {"sdpa_keymask"}  # CFG rows at different positions
    assert r["decode"]["ms_per_token"] > 0 and r["dida_block_pass"]["s"] > 0
    assert r["decode_int8"]["ms_per_token"] > 0 and r["decode_int8"]["weight_gib"] > 0
    assert "ms_per_token" in r["decode_nf4"] or "bitsandbytes" in r["decode_nf4"]["skipped"]
