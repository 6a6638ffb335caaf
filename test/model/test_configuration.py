import json

import pytest

from emu_ros.model import PRESETS, ConfigError, Emu3Config, preset_config


def test_official_defaults_and_unknown_keys(tmp_path, caplog):
    data = {"architectures": ["Emu3ForCausalLM"], "model_type": "Emu3", "hidden_size": 64, "head_dim": 16,
            "num_attention_heads": 4, "num_key_value_heads": 2, "transformers_version": "4.48.2",
            "brand_new_field": 7}
    (tmp_path / "config.json").write_text(json.dumps(data))
    cfg = Emu3Config.from_json(tmp_path)
    assert cfg.rms_norm_eps == 1e-5 and cfg.rope_theta == 1e6 and cfg.max_position_embeddings == 9216
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.boi_token_id, cfg.eoi_token_id, cfg.img_token_id,
            cfg.eol_token_id) == (151849, 151850, 151852, 151853, 151851, 151846)
    assert cfg.unknown_keys == {"brand_new_field": 7}
    assert "brand_new_field" in caplog.text and "transformers_version" not in caplog.text


def test_kv_heads_default_to_heads():
    cfg = Emu3Config(num_attention_heads=8, num_key_value_heads=None, hidden_size=64, head_dim=8)
    assert cfg.num_key_value_heads == 8


@pytest.mark.parametrize("field,value,needle", [
    ("num_attention_heads", 3, "multiple"),
    ("hidden_size", 0, "hidden_size"),
    ("head_dim", 7, "even"),
    ("rms_norm_eps", -1.0, "rms_norm_eps"),
    ("tie_word_embeddings", True, "tie_word_embeddings"),
    ("rope_scaling", {"type": "yarn", "factor": 2}, "rope_scaling"),
    ("hidden_act", "gelu", "hidden_act"),
    ("vocab_size", 1000, "outside the vocabulary"),
])
def test_bad_fields_name_the_field(tmp_path, field, value, needle):
    base = dict(PRESETS["tiny"])
    base[field] = value
    (tmp_path / "config.json").write_text(json.dumps(base))
    with pytest.raises(ConfigError, match=needle) as info:
        Emu3Config.from_json(tmp_path / "config.json")
    assert str(tmp_path) in str(info.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config.json not found"):
        Emu3Config.from_json(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Emu3Config.from_json(tmp_path)


def test_full_preset_parameter_count():
    cfg = preset_config("full")
    assert cfg.num_parameters() == 34_103_460_864          # 34.1B (paper); 68.2 GB in bf16
    assert cfg.codebook_size == 131072 and cfg.first_visual_token_id == 151854


def test_round_trip_to_dict(tmp_path):
    cfg = preset_config("tiny")
    cfg.save(tmp_path / "config.json")
    again = Emu3Config.from_json(tmp_path)
    assert again == cfg


def test_models_tiny_mirrors_preset():
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "models" / "tiny" / "config.json"
    if not path.exists():
        pytest.skip("models/tiny not present")
    assert Emu3Config.from_json(path) == preset_config("tiny")
