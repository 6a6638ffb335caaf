"""Layer split across devices: the grouping, the loader's per-tensor placement, and that a split
model computes exactly what the unsplit one does (on CPU the 'devices' are CPU and meta-free copies,
so this checks the plumbing — tensors follow the layers — not a real multi-GPU transfer)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from emu_ros.model.placement import layer_groups, place_layers, tensor_device  # noqa: E402


def test_groups_are_contiguous_and_follow_the_shares():
    g = layer_groups(64, ["cuda:0", "cuda:1"])
    assert g[:32] == [torch.device("cuda:0")] * 32 and g[32:] == [torch.device("cuda:1")] * 32
    g = layer_groups(64, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"], shares=[0.8, 1, 1, 0.8])
    counts = [g.count(torch.device(f"cuda:{i}")) for i in range(4)]
    assert sum(counts) == 64 and counts[0] < counts[1] and counts[3] < counts[2]
    assert all(g[i].index <= g[i + 1].index for i in range(63))  # contiguous, in order
    assert layer_groups(2, ["cpu"]) == [torch.device("cpu")] * 2
    with pytest.raises(ValueError, match="at most one device per layer"):
        layer_groups(2, ["cuda:0", "cuda:1", "cuda:2"])
    with pytest.raises(ValueError, match="shares must be 2 positive"):
        layer_groups(4, ["cuda:0", "cuda:1"], shares=[1, 0])


def test_checkpoint_tensors_go_to_their_layers_device():
    devs = layer_groups(4, ["cuda:0", "cuda:1"])
    assert tensor_device("model.embed_tokens.weight", devs) == torch.device("cuda:0")
    assert tensor_device("model.layers.1.mlp.up_proj.weight", devs) == torch.device("cuda:0")
    assert tensor_device("model.layers.2.self_attn.q_proj.weight", devs) == torch.device("cuda:1")
    assert tensor_device("model.norm.weight", devs) == torch.device("cuda:1")
    assert tensor_device("lm_head.weight", devs) == torch.device("cuda:1")


def test_split_model_decodes_like_the_whole_one(tmp_path):
    from emu_ros.model import write_random_checkpoint
    from emu_ros.model.loading import load_lm, parse_devices

    assert parse_devices("cuda:0, cuda:1") == [torch.device("cuda:0"), torch.device("cuda:1")]
    write_random_checkpoint(tmp_path, "tiny", seed=3)
    whole = load_lm(tmp_path / "Emu3.5", dtype=torch.float32)
    split = load_lm(tmp_path / "Emu3.5", device="cpu,cpu", dtype=torch.float32)  # two groups, one CPU
    ids = torch.randint(0, 1000, (2, 9))
    for m in (whole, split):
        m.setup_caches(2, 32)
    pos = torch.arange(9).expand(2, 9)
    a = whole(ids, pos, kv_len=9, uniform_len=9)
    b = split(ids, pos, kv_len=9, uniform_len=9)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    nxt = torch.tensor([[5], [7]])
    a = whole(nxt, torch.full((2, 1), 9), kv_len=10, uniform_len=10)
    b = split(nxt, torch.full((2, 1), 9), kv_len=10, uniform_len=10)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    where = place_layers(whole, ["cpu", "cpu"])
    assert len(where) == len(whole.model.layers) and whole.model.layers[0].self_attn.kv_cache is None
