"""Optional transformers (5.x) integration: register Emu3.5 with the Auto classes.

After ``emu_ros.model.register_transformers()`` (or ``import emu_ros.model.hf``), ``AutoConfig.from_pretrained(dir)``
and ``AutoModelForCausalLM.from_pretrained(dir)`` on an official Emu3.5 directory return
``Emu3HFConfig`` / ``Emu3HFForCausalLM``: the same modules and weights as our runtime (the
decoder is our ``Emu3Model``), wrapped as a ``PreTrainedModel`` so bitsandbytes 4/8-bit loading and
accelerate's ``device_map`` work. transformers' own ``generate`` is not supported; use
``emu_ros.model.generate``. Fine-tuning (LoRA included) is ``finetune_embodied.train`` with our one
LoRA (``finetune_embodied.lora``: official tensor names, FSDP2-sharded, rank-independent init), not
PEFT. Our fast path never imports this module's dependency.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_emu3 import Emu3Config
from .modeling_emu3 import Emu3ForCausalLM, Emu3Model

MODEL_TYPE = "Emu3"   # the official config.json's model_type (transformers' built-in "emu3" is Emu3 v1)
_OUR_FIELDS = [f for f in dataclasses.fields(Emu3Config) if f.name not in ("unknown_keys", "torch_dtype")]
_BASE_HANDLED = {"pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings"}


class Emu3HFConfig(PreTrainedConfig):
    """transformers view of the official config.json (same keys and defaults as Emu3Config)."""

    model_type = MODEL_TYPE

    def __init__(self, **kwargs) -> None:
        for f in _OUR_FIELDS:
            if f.name in _BASE_HANDLED:
                continue
            if f.name == "rope_scaling" and isinstance(getattr(PreTrainedConfig, "rope_scaling", None), property):
                # transformers 5 keeps RoPE settings in rope_parameters (rope_scaling is a deprecated alias)
                self.rope_parameters = kwargs.pop("rope_scaling", kwargs.pop("rope_parameters", None))
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            setattr(self, f.name, kwargs.pop(f.name, default))
        for name in _BASE_HANDLED:
            kwargs.setdefault(name, getattr(Emu3Config, name))
        super().__init__(**kwargs)

    def to_emu3_config(self) -> Emu3Config:
        """Our validated dataclass config."""
        data = {f.name: getattr(self, f.name) for f in _OUR_FIELDS if hasattr(self, f.name)}
        return Emu3Config(**data)


class Emu3HFForCausalLM(PreTrainedModel):
    """PreTrainedModel wrapper with the official module tree (``model.*``, ``lm_head``)."""

    config_class = Emu3HFConfig
    base_model_prefix = "model"
    _no_split_modules = ["Emu3DecoderLayer"]       # accelerate keeps a residual block on one device
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]
    supports_gradient_checkpointing = False

    def __init__(self, config: Emu3HFConfig) -> None:
        super().__init__(config)
        self.model = Emu3Model(config.to_emu3_config())
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, std)
        elif isinstance(module, Emu3Model):   # non-persistent RoPE table (meta-initialised by from_pretrained)
            module.inv_freq = _inv_freq_like(module)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, **kwargs) -> CausalLMOutputWithPast:
        """Uncached causal forward; with labels, the shifted cross-entropy (ignore_index -100)."""
        if self.model.inv_freq.device.type == "meta" or self.model.inv_freq.device != input_ids.device:
            self.model.inv_freq = _inv_freq_like(self.model, input_ids.device)
        hidden = self.model(input_ids, attention_mask=attention_mask)
        logits = self.lm_head(hidden.to(self.lm_head.weight.dtype) if hidden.dtype != self.lm_head.weight.dtype
                              else hidden).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                   labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def to_runtime(self) -> Emu3ForCausalLM:
        """Our runtime model sharing these weights (for emu_ros.model.generate after fine-tuning)."""
        runtime = Emu3ForCausalLM.__new__(Emu3ForCausalLM)
        nn.Module.__init__(runtime)
        runtime.config = self.model.config
        runtime.model, runtime.lm_head = self.model, self.lm_head
        runtime.max_batch = runtime.max_seq = 0
        return runtime.eval()


def _inv_freq_like(module: Emu3Model, device: torch.device | None = None) -> torch.Tensor:
    from .modeling_emu3 import rope_inv_freq
    if device is None:
        device = module.embed_tokens.weight.device
        device = torch.device("cpu") if device.type == "meta" else device
    return rope_inv_freq(module.config, device=device)


def register() -> None:
    """Register Emu3HFConfig / Emu3HFForCausalLM with AutoConfig / AutoModelForCausalLM (idempotent)."""
    try:
        AutoConfig.register(MODEL_TYPE, Emu3HFConfig)
    except ValueError:   # already registered (module imported twice)
        pass
    try:
        AutoModelForCausalLM.register(Emu3HFConfig, Emu3HFForCausalLM)
    except ValueError:
        pass


register()
