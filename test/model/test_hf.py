"""transformers Auto-class registration (optional dependency): same weights, same logits, a training loss."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import emu_ros.model.hf  # noqa: E402,F401  (registers the Auto classes, explicitly)
from emu_ros.model import load_lm  # noqa: E402


def test_auto_classes_return_our_model(lm_dir):
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(lm_dir)
    assert type(cfg).__name__ == "Emu3HFConfig" and cfg.hidden_size == 64 and cfg.rms_norm_eps == 1e-6
    model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    assert type(model).__name__ == "Emu3HFForCausalLM"
    ours = load_lm(lm_dir, dtype=torch.float32)
    ids = torch.randint(0, 152000, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ours(ids))
    runtime = model.to_runtime()
    with torch.no_grad():
        torch.testing.assert_close(runtime(ids), ours(ids))


def test_padding_mask_and_loss(lm_dir):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    ids = torch.randint(0, 152000, (1, 10))
    padded = torch.cat([torch.full((1, 3), 151643), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 10, dtype=torch.long)], 1)
    with torch.no_grad():
        plain = model(ids).logits
        left = model(padded, attention_mask=mask).logits[:, 3:]
    # left padding hidden by the mask: the same keys are visible, only RoPE positions shift by 3 (relative)
    torch.testing.assert_close(left, plain, atol=1e-4, rtol=1e-4)
    out = model(ids, labels=ids)
    assert out.loss is not None and torch.isfinite(out.loss)
