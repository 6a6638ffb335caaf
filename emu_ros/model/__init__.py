"""Emu3.5 runtime (ROS-free): config, decoder LM, loading, tokenizers, prompts, generation.

Public API (kept stable for the guidance engine and outside checks)::

    load_lm(model_dir, device="cpu", dtype=torch.bfloat16) -> Emu3ForCausalLM   # model(input_ids) -> logits
    load_lm(model_dir, "cuda", quantize="int8" | "nf4")   # weight-only decoder Linears (quantization.py)
    load_vision_tokenizer(tokenizer_dir, device="cpu", dtype=torch.float32) -> IBQ  # encode / decode
    load_tokenizer(model_dir) -> Emu3Tokenizer
    write_random_checkpoint(out_dir, config="tiny", seed=0) -> Path
    Emu35Runtime(model_dir, vq_dir, device, dtype).generate_interleaved(prompt_text, images, task, ...)
    Emu35Runtime(adapted_dir, ..., decoder="dida")      # parallel images (dida_config.json required)
    DiDAImageDecoder.from_model_dir(adapted_dir)         # generate(..., image_decoder=...)
"""

from .configuration_emu3 import PRESETS, ConfigError, Emu3Config, preset_config
from .dida import DiDAAdaptationRequired, DiDAConfig, DiDAError, DiDAImageDecoder, load_dida_config
from .generation import (ARImageDecoder, DecodeSession, GenerationConfig, GenerationResult, ImageDecoder,
                         ModeState, SamplingParams, SpecialIds, cfg_logprobs, filter_logits, generate, sample,
                         task_config)
from .loading import CheckpointError, load_lm
from .modeling_emu3 import Emu3ForCausalLM, KVCache
from .prompts import TASKS, build_prompt, build_unconditional_prompt
from .random_checkpoint import write_random_checkpoint
from .runtime import Emu35Runtime, InterleavedOutput
from .sequence import ImageBlock, Segment, image_string, image_token_ids, parse_image_block, parse_interleaved
from .tokenizer import Emu3Tokenizer, TokenizerError, load_tokenizer
from .vision_tokenizer import IBQ, IBQConfig, VisionTokenizerError, load_vision_tokenizer, resize_to_area

__all__ = [
    "ARImageDecoder", "CheckpointError", "ConfigError", "DecodeSession", "DiDAAdaptationRequired", "DiDAConfig",
    "DiDAError", "DiDAImageDecoder", "Emu35Runtime", "Emu3Config",
    "Emu3ForCausalLM", "Emu3Tokenizer", "GenerationConfig", "GenerationResult", "IBQ", "IBQConfig",
    "ImageBlock", "ImageDecoder", "InterleavedOutput", "KVCache", "ModeState", "PRESETS", "SamplingParams",
    "Segment", "SpecialIds", "TASKS", "TokenizerError", "VisionTokenizerError", "build_prompt",
    "build_unconditional_prompt", "cfg_logprobs", "filter_logits", "generate", "image_string", "image_token_ids",
    "load_dida_config", "load_lm", "load_tokenizer", "load_vision_tokenizer", "parse_image_block", "parse_interleaved",
    "preset_config", "register_transformers", "resize_to_area", "sample", "task_config", "write_random_checkpoint",
]


def register_transformers() -> bool:
    """Register Emu3.5 with transformers' Auto classes (``import emu_ros.model.hf`` does the same).

    An explicit call rather than an import hook: importing emu_ros.model never touches transformers
    (it takes seconds to import). Returns False when transformers is not installed."""
    try:
        from . import hf  # noqa: F401  (AutoConfig/AutoModelForCausalLM.register at import of hf)
    except ImportError:
        return False
    return True
