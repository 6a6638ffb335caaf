"""Emu3.5 runtime (ROS-free): config, decoder LM, loading, tokenizers, prompts, generation.

Public API (kept stable for the guidance engine and outside checks)::

    load_lm(model_dir, device="cpu", dtype=torch.bfloat16) -> Emu3ForCausalLM   # model(input_ids) -> logits
    load_vision_tokenizer(tokenizer_dir, device="cpu", dtype=torch.float32) -> IBQ  # encode / decode
    load_tokenizer(model_dir) -> Emu3Tokenizer
    write_random_checkpoint(out_dir, config="tiny", seed=0) -> Path
    Emu35Runtime(model_dir, vq_dir, device, dtype).generate_interleaved(prompt_text, images, task, ...)
    Emu35Runtime(adapted_dir, ..., decoder="dida")      # parallel images (dida_config.json required)
    DiDAImageDecoder.from_model_dir(adapted_dir)         # generate(..., image_decoder=...)
"""

import importlib.abc
import importlib.util
import sys

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
    """Register Emu3.5 with transformers' Auto classes now; False when transformers is not installed."""
    try:
        from . import hf  # noqa: F401  (registers on import)
    except ImportError:
        return False
    return True


class _RegisterOnTransformersImport(importlib.abc.MetaPathFinder):
    """Registers the Auto classes right after ``transformers`` is imported, so that importing
    emu_ros.model stays fast (transformers takes seconds to import) and users need no extra call."""

    def find_spec(self, name, path, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_then_register(module):
                run(module)
                register_transformers()
            spec.loader.exec_module = exec_then_register
        return spec


if "transformers" in sys.modules:
    register_transformers()
elif not any(isinstance(f, _RegisterOnTransformersImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnTransformersImport())
