"""The training memory plan: parameter counts against real models, the saved activations against autograd,
the 34B verdicts on 80 GB cards, and the CLI."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from emu_ros.model.configuration_emu3 import preset_config
from emu_ros.model.memory_plan import parameter_count
from emu_ros.model.modeling_emu3 import Emu3ForCausalLM, rope_cos_sin
from finetune_embodied.lora import DEFAULT_TARGETS, LoraConfig, apply_lora
from finetune_embodied.memory_plan import (GB, MemoryPlanRefused, TrainShape, available_device_bytes, check_fits,
                                           layer_activation_bytes, main, plan_training, projection_shapes,
                                           shape_from_train_config)

REPO = Path(__file__).resolve().parents[2]
FULL = preset_config("full")
TINY = preset_config("tiny")
CARD = 80 * GB


def test_parameter_counts_match_the_tiny_model_and_the_full_total():
    model = Emu3ForCausalLM(TINY)
    plan = plan_training(TINY, TrainShape())
    assert plan.params_total == plan.params_trainable == sum(p.numel() for p in model.parameters())
    full = plan_training(FULL, TrainShape(ranks=8))
    assert full.params_total == sum(parameter_count(FULL)) == FULL.num_parameters() == 34_103_460_864
    for c in (TINY, FULL):  # the per-projection shapes add up to parameter_count's decoder linears
        assert sum(i * o for i, o in projection_shapes(c).values()) * c.num_hidden_layers == parameter_count(c)[0]


@pytest.mark.parametrize("rank,targets,embeddings", [(4, DEFAULT_TARGETS, False), (2, ("q_proj", "down_proj"), False),
                                                     (3, DEFAULT_TARGETS, True)])
def test_lora_counts_match_apply_lora(rank, targets, embeddings):
    model = Emu3ForCausalLM(TINY)
    apply_lora(model, LoraConfig(enabled=True, rank=rank, targets=list(targets), train_embeddings=embeddings))
    plan = plan_training(TINY, TrainShape(lora_rank=rank, lora_targets=targets, train_embeddings=embeddings))
    assert plan.params_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert plan.params_total == sum(p.numel() for p in model.parameters())


def saved_bytes_per_token(dtype: torch.dtype, autocast: bool, lora_rank: int, t: int = 97) -> float:
    """Bytes per token autograd keeps for one tiny decoder layer (activations only: every kept tensor that has
    a token axis; weights and their autocast casts have none)."""
    torch.manual_seed(0)
    model = Emu3ForCausalLM(TINY).to(dtype)
    if lora_rank:
        apply_lora(model, LoraConfig(enabled=True, rank=lora_rank))
    kept = {}

    def pack(x):
        if t in x.shape:
            kept[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    x = torch.randn(1, t, TINY.hidden_size, dtype=dtype, requires_grad=True)  # a layer past the first
    cos, sin = rope_cos_sin(model.model.inv_freq.float(), torch.arange(t)[None], 1.0, dtype)
    cast = torch.autocast("cpu", torch.bfloat16) if autocast else contextlib.nullcontext()
    with cast, torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        model.model.layers[0](x, cos, sin, None, None, None)
    kept.pop(cos.untyped_storage().data_ptr(), None)
    kept.pop(sin.untyped_storage().data_ptr(), None)
    return sum(kept.values()) / t


@pytest.mark.parametrize("dtype,autocast,lora_rank", [("bfloat16", False, 0), ("float32", True, 0),
                                                      ("float32", False, 0), ("bfloat16", False, 4),
                                                      ("float32", True, 4)])
def test_layer_activations_equal_what_autograd_keeps(dtype, autocast, lora_rank):
    shape = TrainShape(param_dtype=dtype, bf16_autocast=autocast, lora_rank=lora_rank)
    assert layer_activation_bytes(TINY, shape) == saved_bytes_per_token(getattr(torch, dtype), autocast, lora_rank)


def test_full_fine_tune_of_34b_in_bf16_on_8_ranks_is_refused_on_80gb():
    plan = plan_training(FULL, TrainShape(ranks=8, param_dtype="bfloat16", micro_batch=1))
    assert plan.bytes_per_param == pytest.approx(8.0, rel=1e-3)  # bf16 weights + grads + two AdamW moments
    assert plan.weights / GB == pytest.approx(34.1034 * 2 / 8, rel=1e-3)
    assert plan.optimizer == pytest.approx(2 * plan.grads, rel=1e-6)
    with pytest.raises(MemoryPlanRefused) as err:
        check_fits(plan, CARD)
    msg = str(err.value)
    assert msg.startswith("full fine-tune of 34.1B in bf16 on 8 ranks needs ~")
    assert f"~{plan.total / GB:.1f} GB per GPU" in msg and "you have 80.0 GB (90% usable = 72.0 GB)" in msg
    for flag in ("--lora.enabled true", "--gradient_checkpointing true", "--samples.max_length"):
        assert flag in msg
    assert "--param_dtype" not in msg and "--batch_size" not in msg  # already bf16 and 1 sample
    # fp32 masters (FSDP mixed precision, the trainer's default dtype) do not fit even with checkpointing
    master = plan_training(FULL, TrainShape(ranks=8, master_fp32=True, micro_batch=1, gradient_checkpointing=True))
    assert master.bytes_per_param == pytest.approx(16.0, rel=1e-3) and master.total > 0.9 * CARD
    with pytest.raises(MemoryPlanRefused, match="--param_dtype bfloat16"):
        check_fits(master, CARD)


def test_lora_of_34b_on_8_ranks_fits_80gb_with_plausible_figures():
    shape = TrainShape(ranks=8, param_dtype="bfloat16", lora_rank=16, micro_batch=1, gradient_checkpointing=True)
    plan = plan_training(FULL, shape)
    check_fits(plan, CARD)
    adapters = 64 * 16 * sum(i + o for i, o in projection_shapes(FULL).values())
    assert plan.params_trainable == adapters == 134_217_728  # 2.1 M per layer (finetune_embodied/README.md)
    assert (plan.weights * 8 - adapters * 4) / GB == pytest.approx(68.2, abs=0.05)  # the bf16 base, all ranks
    assert plan.weights / GB == pytest.approx(8.5, abs=0.1)
    assert plan.grads == pytest.approx(adapters * 4 / 8, abs=1) and plan.optimizer == 2 * plan.grads
    assert 2 * GB < plan.activations < 10 * GB and 3 * GB < plan.logits < 10 * GB
    assert plan.total < 40 * GB
    assert plan.summary().startswith("LoRA r=16 (0.13B trainable) of 34.1B in bf16 on 8 ranks needs ~")


@pytest.mark.parametrize("lora_rank", [0, 8])
def test_more_ranks_need_fewer_bytes_per_gpu(lora_rank):
    plans = [plan_training(FULL, TrainShape(ranks=r, param_dtype="bfloat16", lora_rank=lora_rank,
                                            gradient_checkpointing=True)) for r in (1, 2, 4, 8, 16, 32)]
    totals = [p.total for p in plans]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == len(totals)
    for p in plans:
        assert p.bytes_per_param == pytest.approx(plans[0].bytes_per_param, rel=1e-6)
        assert p.total == p.weights + p.gathered + p.grads + p.optimizer + p.activations + p.logits


def test_checkpointing_and_dida_change_the_activations_as_expected():
    base = dict(ranks=8, param_dtype="bfloat16", micro_batch=1, seq_len=2048)
    plain = plan_training(FULL, TrainShape(**base))
    ckpt = plan_training(FULL, TrainShape(**base, gradient_checkpointing=True))
    assert ckpt.activations < plain.activations / 10 and ckpt.weights == plain.weights
    # per layer without checkpointing: the full working set of every token
    assert plain.activations > 64 * 2048 * layer_activation_bytes(FULL, TrainShape(**base))
    dida = plan_training(FULL, TrainShape(**base, gradient_checkpointing=True, objective="dida"))
    assert dida.shape.forward_tokens == 3072 and dida.activations > ckpt.activations * 1.5
    assert dida.logits > ckpt.logits  # the noisy copy's codebook logits come on top
    mask = 3072 * 3072 * 3  # the boolean mask plus SDPA's bf16 additive copy for the recomputed layer
    saved = 64 * 1024 * 5120 * 2  # the extra tokens' layer inputs
    assert dida.activations - ckpt.activations >= mask + saved


def test_shape_validation_names_the_field():
    with pytest.raises(ValueError, match="train_embeddings"):
        TrainShape(train_embeddings=True)
    with pytest.raises(ValueError, match="lora_targets"):
        TrainShape(lora_rank=4, lora_targets=("qkv",))
    with pytest.raises(ValueError, match="param_dtype"):
        TrainShape(param_dtype="float16")


def test_shape_from_train_config_reads_the_trainer_fields():
    cfg = SimpleNamespace(param_dtype="float32", bf16=True, batch_size=2, gradient_checkpointing=True,
                          objective="ar", samples=SimpleNamespace(max_length=2048),
                          distributed=SimpleNamespace(fsdp=True),
                          lora=SimpleNamespace(enabled=True, rank=16, targets=["q_proj", "v_proj"],
                                               train_embeddings=False))
    shape = shape_from_train_config(cfg, ranks=8)
    assert (shape.ranks, shape.master_fp32, shape.lora_rank, shape.lora_targets) == (8, True, 16, ("q_proj", "v_proj"))
    assert (shape.seq_len, shape.micro_batch, shape.labeled_tokens) == (2048, 2, 1024)
    cfg.distributed.fsdp = False  # DDP replicates: planned as one rank
    assert shape_from_train_config(cfg, ranks=8).ranks == 1


def test_available_device_bytes(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    one = available_device_bytes("cpu")
    assert one is not None and one > 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert available_device_bytes(torch.device("cpu")) < one / 2
    cuda = available_device_bytes("cuda")
    assert (cuda is None) == (not torch.cuda.is_available())


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["--config", "full", "--ranks", "8", "16", "32", "--mode", "both", "--seq-len", "4096",
                 "--gradient-checkpointing", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [r for r in map(str.split, text.splitlines()) if r[:1] in (["full"], ["lora"]) and r[1].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [(m, r) for m in ("full", "lora") for r in ("8", "16", "32")]
    data = json.loads(out.read_text())
    assert [(p["shape"]["lora_rank"] > 0, p["shape"]["ranks"]) for p in data["plans"]] == \
        [(lora, r) for lora in (False, True) for r in (8, 16, 32)]
    first = data["plans"][0]
    expect = plan_training(FULL, TrainShape(ranks=8, param_dtype="bfloat16", micro_batch=1,
                                            gradient_checkpointing=True))
    assert first["total"] == expect.total and first["summary"] in text
    assert first["params_total"] == 34_103_460_864


def test_cli_runs_as_a_module_in_seconds(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "finetune_embodied.memory_plan", "--config", "tiny", "--ranks", "1",
                           "2", "--mode", "lora", "--objective", "dida", "--json", str(tmp_path / "p.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "LoRA r=8" in proc.stdout and (tmp_path / "p.json").is_file()
