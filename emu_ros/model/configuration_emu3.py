"""Typed configuration of the Emu3.5 decoder LM, read from the official ``config.json``.

Field names and defaults follow the official ``Emu3Config`` (baaivision/Emu3.5,
src/emu3p5/configuration_emu3.py), so an official ``config.json`` parses unchanged. Keys that
transformers writes for every model are accepted silently; any other unknown key is kept in
``unknown_keys`` and reported, never dropped without a word.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config.json (or config dict) that the runtime cannot use; the message names the field."""


# Keys transformers' PretrainedConfig writes into every config.json; they carry no architecture.
_HF_BOOKKEEPING_KEYS = frozenset({
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "auto_map",
    "_name_or_path", "_attn_implementation", "_attn_implementation_autoset", "output_attentions",
    "output_hidden_states", "return_dict", "is_decoder", "is_encoder_decoder", "add_cross_attention",
    "tie_encoder_decoder", "torchscript", "use_bfloat16", "problem_type", "id2label", "label2id",
    "chunk_size_feed_forward", "pruned_heads", "tokenizer_class", "prefix", "sep_token_id",
    "decoder_start_token_id", "task_specific_params", "finetuning_task", "cross_attention_hidden_size",
})


@dataclass
class Emu3Config:
    """Architecture and special-token ids of the Emu3.5 LM (defaults = official Emu3Config)."""

    vocab_size: int = 184622               # official code default (Emu3 v1); Emu3.5 ships 282926
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 8    # None -> num_attention_heads (plain MHA)
    head_dim: int = 128                    # explicit: q width = heads*head_dim may differ from hidden
    hidden_act: str = "silu"
    max_position_embeddings: int = 9216
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    use_cache: bool = True
    pad_token_id: int = 151643
    bos_token_id: int = 151849
    eos_token_id: int = 151850
    img_token_id: int = 151851
    boi_token_id: int = 151852
    eoi_token_id: int = 151853
    eol_token_id: int = 151846
    eof_token_id: int = 151847
    image_area: int = 720 * 720            # carried by the config, unused by the official runtime
    pretraining_tp: int = 1                # only changes how the official code slices matmuls
    tie_word_embeddings: bool = False
    rope_theta: float = 1_000_000.0
    rope_scaling: dict[str, Any] | None = None
    attention_dropout: float = 0.1         # no effect at inference
    attention_bias: bool = False           # read by the official vLLM port; the HF file has no bias
    torch_dtype: str | None = None         # the dtype the checkpoint was saved in (bookkeeping)
    unknown_keys: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self.validate()

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "Emu3Config":
        """Build from a config dict; unknown keys are kept in ``unknown_keys`` and logged."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"unknown_keys"}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "dtype" in data and "torch_dtype" not in data:   # transformers 5 renamed the key
            kwargs["torch_dtype"] = data["dtype"]
        unknown = {k: v for k, v in data.items() if k not in known and k not in _HF_BOOKKEEPING_KEYS}
        if unknown:
            log.warning("%s: unknown keys kept but unused: %s", source, sorted(unknown))
        try:
            return cls(**kwargs, unknown_keys=unknown)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "Emu3Config":
        """Read an official ``config.json`` (a file, or a model directory that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path}: config.json not found; point at the Emu3.5 model directory "
                              "(the one holding config.json and the safetensors shards)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The config as written to config.json (official keys plus model_type/architectures)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("unknown_keys", "attention_bias", "torch_dtype")}
        out["architectures"] = ["Emu3ForCausalLM"]
        out["model_type"] = "Emu3"
        if self.torch_dtype is not None:
            out["torch_dtype"] = self.torch_dtype
        out.update(self.unknown_keys)
        return out

    def save(self, path: str | Path) -> None:
        """Write config.json."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    # ---------------------------------------------------------------- checks
    def validate(self) -> None:
        """Raise ConfigError naming the first field that cannot describe a working model."""
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"field '{name}' must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"field 'num_attention_heads' ({self.num_attention_heads}) must be a multiple "
                              f"of 'num_key_value_heads' ({self.num_key_value_heads}) for grouped-query attention")
        if self.head_dim % 2:
            raise ConfigError(f"field 'head_dim' must be even for rotate-half RoPE, got {self.head_dim}")
        if self.hidden_act not in ("silu", "swish"):
            raise ConfigError(f"field 'hidden_act' must be 'silu' (SwiGLU), got {self.hidden_act!r}")
        for name in ("rms_norm_eps", "rope_theta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"field '{name}' must be a positive number, got {value!r}")
        if self.tie_word_embeddings:
            raise ConfigError("field 'tie_word_embeddings' is true, but Emu3.5 has a separate lm_head; "
                              "this runtime supports only untied embeddings")
        if self.attention_bias:
            raise ConfigError("field 'attention_bias' is true, but Emu3.5 attention has no biases")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("type", self.rope_scaling.get("rope_type")) \
                if isinstance(self.rope_scaling, dict) else None
            if kind not in ("linear", "default"):
                raise ConfigError(f"field 'rope_scaling' = {self.rope_scaling!r} is not supported "
                                  "(only null or {'type': 'linear', 'factor': f})")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "img_token_id", "boi_token_id",
                     "eoi_token_id", "eol_token_id", "eof_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ConfigError(f"field '{name}' = {value!r} is outside the vocabulary [0, {self.vocab_size})")

    # ---------------------------------------------------------------- derived
    @property
    def rope_linear_factor(self) -> float:
        """Position divisor of linear RoPE scaling (1.0 when unscaled)."""
        if self.rope_scaling and self.rope_scaling.get("type", self.rope_scaling.get("rope_type")) == "linear":
            return float(self.rope_scaling["factor"])
        return 1.0

    @property
    def first_visual_token_id(self) -> int:
        """Id of visual code 0: visual tokens follow the last special token (BOV = EOI + 1)."""
        return self.eoi_token_id + 1

    @property
    def codebook_size(self) -> int:
        """Number of visual codes the vocabulary holds."""
        return self.vocab_size - self.first_visual_token_id

    def num_parameters(self) -> int:
        """Exact parameter count implied by the config (no model needed)."""
        h, q, kv = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_key_value_heads * self.head_dim
        per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size + 2 * h + 2 * self.head_dim
        return self.num_hidden_layers * per_layer + 2 * self.vocab_size * h + h


# Presets used by write_random_checkpoint and the benchmark; models/tiny/*.json mirror "tiny".
# "full" = the published Emu3.5 architecture (paper Table 1 + reference/emu35-facts.md §1.1).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=151854 + 1024, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096,
                 rms_norm_eps=1e-6, rope_theta=1_000_000.0, image_area=64 * 64, torch_dtype="bfloat16"),
    "full": dict(vocab_size=282926, hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
                 num_attention_heads=64, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                 rms_norm_eps=1e-5, rope_theta=1_000_000.0, image_area=518400, torch_dtype="bfloat16"),
}


def preset_config(name: str) -> Emu3Config:
    """A named preset ('tiny' or 'full') as an Emu3Config."""
    if name not in PRESETS:
        raise ConfigError(f"unknown config preset {name!r}; choose one of {sorted(PRESETS)}")
    return Emu3Config.from_dict(dict(PRESETS[name]), source=f"preset {name!r}")
