"""Emu35Runtime: the high-level object the guidance engine calls (load once, generate many times).

It owns the LM, the text tokenizer and the vision tokenizer, turns camera images into image
strings (official area rule, PIL bicubic), builds the official conditional and unconditional
prompts, runs ``generation.generate`` and returns parsed segments with decoded RGB images.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .generation import (DEFAULT_IMAGE_AREA, IMAGE_AREA, GenerationConfig, GenerationResult, ImageDecoder,
                         SpecialIds, generate, task_config)
from .loading import load_lm, parse_devices
from .prompts import build_prompt, build_unconditional_prompt
from .quantization import check_quantize
from .sequence import Segment, image_string
from .tokenizer import load_tokenizer
from .vision_tokenizer import load_vision_tokenizer, resize_to_area


@dataclass
class InterleavedOutput:
    """Parsed output: segments in order (text, image_cot, global_cot, image, partial_image) and stats."""

    segments: list[Segment]
    tokens: list[int]
    stop_reason: str
    prompt_tokens: int
    seconds: float
    images: list[np.ndarray] = field(default_factory=list)   # decoded uint8 RGB, in order

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments if s.kind == "text")


class Emu35Runtime:
    """Load an Emu3.5 model directory and its vision tokenizer; generate interleaved plans."""

    def __init__(self, model_dir: str | Path, vq_dir: str | Path | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.bfloat16, vq_dtype: torch.dtype = torch.float32,
                 decoder: str = "ar", dida_passes: int | None = None, quantize: str | None = None) -> None:
        """decoder: "ar" (official token-by-token images) or "dida" (parallel passes; needs the model
        directory's dida_config.json written by finetune_embodied.train --objective dida, checked before any weight loads).
        quantize: None, "int8" or "nf4" weight-only decoder Linears (``load_lm``; 34B: ~37 GB int8,
        ~22 GB nf4 + KV cache), checked before any weight loads."""
        model_dir = Path(model_dir)
        check_quantize(quantize)
        if decoder not in ("ar", "dida"):
            raise ValueError(f"decoder must be 'ar' or 'dida', got {decoder!r}")
        self.image_decoder: ImageDecoder | None = None
        if decoder == "dida":
            from .dida import DiDAImageDecoder

            self.image_decoder = DiDAImageDecoder.from_model_dir(model_dir, dida_passes)
        if vq_dir is None:   # the random-checkpoint / models/ convention: a sibling directory
            vq_dir = model_dir.parent / "Emu3.5-VisionTokenizer"
        self.model = load_lm(model_dir, device=device, dtype=dtype, quantize=quantize)
        self.quantize = quantize
        self.tokenizer = load_tokenizer(model_dir)
        self.vq = load_vision_tokenizer(vq_dir, device=parse_devices(device)[0], dtype=vq_dtype)  # beside the embedding
        self.ids = SpecialIds.from_tokenizer(self.tokenizer)
        self._lock = threading.Lock()   # one generation at a time: the KV cache lives in the model
        if self.tokenizer.codebook_size != self.vq.config.n_embed:
            raise ValueError(f"{model_dir} has {self.tokenizer.codebook_size} visual tokens but the vision "
                             f"tokenizer in {vq_dir} has a codebook of {self.vq.config.n_embed}")

    def encode_images(self, images: list[np.ndarray], area: int) -> list[np.ndarray]:
        """Camera images (uint8 HxWx3, any size) -> code grids, after the official area resize."""
        grids = []
        for image in images:
            resized = resize_to_area(np.asarray(image), area)
            grids.append(self.vq.encode(resized[None])[0].cpu().numpy())
        return grids

    def build_prompts(self, prompt_text: str, grids: list[np.ndarray], task: str) -> tuple[list[int], list[int]]:
        """Token ids of the conditional and unconditional prompts."""
        strings = [image_string(g) for g in grids]
        cond = self.tokenizer.encode(build_prompt(task, prompt_text, strings))
        uncond = self.tokenizer.encode(build_unconditional_prompt(strings))
        return cond, uncond

    def generate_interleaved(self, prompt_text: str, images: list[np.ndarray] = (), task: str = "vla",
                             config: GenerationConfig | None = None, image_area: int | None = None,
                             on_text: Callable[[str], None] | None = None,
                             on_image: Callable[[np.ndarray], None] | None = None,
                             cancel: Callable[[], bool] | None = None,
                             image_decoder: ImageDecoder | None = None) -> InterleavedOutput:
        """Generate text and step images for a task; images are decoded to uint8 RGB as they finish.

        With reference images and no explicit ``config.image_size``, the output size is the last
        reference image's token grid (what the official HF runtime does).
        """
        with self._lock:
            return self._generate(prompt_text, list(images), task, config, image_area, on_text, on_image, cancel,
                                  image_decoder)

    def close(self) -> None:
        """Free the KV cache and the weights (e.g. a lifecycle node's on_cleanup)."""
        with self._lock:
            self.model.clear_caches()
            self.model = self.vq = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _generate(self, prompt_text: str, images: list[np.ndarray], task: str, config: GenerationConfig | None,
                  image_area: int | None, on_text: Callable[[str], None] | None,
                  on_image: Callable[[np.ndarray], None] | None, cancel: Callable[[], bool] | None,
                  image_decoder: ImageDecoder | None) -> InterleavedOutput:
        if self.model is None:
            raise RuntimeError("Emu35Runtime was closed; create a new one to generate")
        start = time.perf_counter()
        config = config or task_config(task)
        area = image_area or IMAGE_AREA.get(task, DEFAULT_IMAGE_AREA)
        grids = self.encode_images(images, area)
        if grids and config.image_size is None:
            config = replace(config, image_size=tuple(grids[-1].shape))
        cond, uncond = self.build_prompts(prompt_text, grids, task)
        decoded: list[np.ndarray] = []

        def image_done(grid: np.ndarray) -> None:
            rgb = self.vq.decode(grid[None])[0]
            decoded.append(rgb)
            if on_image is not None:
                on_image(rgb)

        result: GenerationResult = generate(self.model, cond, uncond, config, self.ids, self.tokenizer,
                                            image_decoder=image_decoder or self.image_decoder, on_text=on_text,
                                            on_image=image_done,
                                            cancel=cancel)
        segments = result.segments(self.tokenizer)
        images_iter = iter(decoded)
        for seg in segments:
            if seg.kind == "image":
                seg.image = next(images_iter, None)
        return InterleavedOutput(segments, result.tokens, result.stop_reason, len(cond),
                                 time.perf_counter() - start, decoded)
