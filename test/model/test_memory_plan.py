"""The computed memory plan: parameter count of the real config, and the arithmetic of each part."""
from __future__ import annotations

import pytest

from emu_ros.model.configuration_emu3 import preset_config
from emu_ros.model.memory_plan import StepShape, image_tokens, parameter_count, plan_step


def test_full_config_is_34b_and_its_weights_are_bf16_sized():
    c = preset_config("full")
    linear, other = parameter_count(c)
    assert 34.0e9 < linear + other < 34.3e9  # the published 34.1B
    plan = plan_step(c)
    assert plan.weights_gib == pytest.approx((linear + other) * 2 / 1024 ** 3)
    assert plan.kv_cache_gib == pytest.approx(2 * 64 * 2 * 8 * 128 * plan.seq_len * 2 / 1024 ** 3)


def test_count_matches_the_built_tiny_model():
    torch = pytest.importorskip("torch")
    from emu_ros.model.modeling_emu3 import Emu3ForCausalLM

    c = preset_config("tiny")
    with torch.device("meta"):
        m = Emu3ForCausalLM(c)
    assert sum(parameter_count(c)) == sum(p.numel() for p in m.parameters())


def test_image_tokens_and_the_options_move_the_plan_the_right_way():
    # 640x480 at 512x512 px: 28 x 37 tokens (+ end of line per row, + markers)
    assert image_tokens(480, 640, 512 * 512) == 28 * (37 + 1) + 8
    c = preset_config("full")
    whole, one_view = plan_step(c), plan_step(c, StepShape(views=1))
    assert one_view.kv_cache_gib < whole.kv_cache_gib / 2 and one_view.activations_gib < whole.activations_gib / 2
    assert plan_step(c, quantize="int8").weights_gib < 0.6 * whole.weights_gib
    assert plan_step(c, quantize="nf4").weights_gib < plan_step(c, quantize="int8").weights_gib
    two, four = plan_step(c, devices=2), plan_step(c, devices=4)
    assert whole.per_device_gib == pytest.approx(whole.total_gib, rel=1e-3)
    assert whole.total_gib / 2 < two.per_device_gib < whole.total_gib * 0.6
    assert sum(four.layer_counts) == 64 and four.layer_counts[0] < four.layer_counts[1]  # the ends hold the tables
    assert whole.fits(79.2) and not whole.fits(72.0)
    with pytest.raises(ValueError, match="quantize must be one of"):
        plan_step(c, quantize="int4")
