"""The Emu3.5 world-model backend: camera views + task + history → interleaved steps from the model.

It wraps `emu_ros.model.Emu35Runtime` (loaded once, in the constructor — the ROS layer calls this
from `on_configure`) and streams what the runtime generates: text chunks (`on_text`) and decoded
step images (`on_image`) are yielded as raw items as soon as they exist, and the engine's
`StepParser` cuts them into steps. Generation runs in a worker thread so the caller's iterator can
stop it (cancel, max_steps) at any time; the runtime polls the cancel callable between tokens.

Prompt: the official `vla` template (or `howto`) from `emu_ros.model.prompts`, whose question is
written by `emu_ros.guidance.prompting.build_question` (task, finished steps, the failed step and
why), with the current camera views as reference images.

Modes: `ar` generates every image token autoregressively (official behaviour; minutes per image
without a GPU). `dida` decodes each image in a few parallel passes (`emu_ros.model.dida`): the runtime
is built with `decoder="dida"` from DiDA-adapted weights (`dida_dir`, else `model_dir`), whose
`dida_config.json` sets the noise type and passes; weights without it fail at construction with a
message naming `python -m finetune_embodied.train --objective dida`. `auto` (the default) picks `dida` when the
weights carry `dida_config.json` and `ar` otherwise, and logs which; the choice is the backend's
`name` (emu35-ar / emu35-dida), so every PlanStep's source says it. An explicit `image_decoder=`
overrides this.

Budget: a predicted step image is generated at `step_image_area` pixels (default 512x512, the area
of the seed article's ~2 s DiDA figure) with the camera's aspect, and unless `max_new_tokens` is given
the token budget is derived per request: steps wanted x (tokens of one step image + text) + slack,
so a 12-step plan is not cut after its first image. A plan that is still cut is marked so by the
engine and continued by the runner.

Camera views: every view the engine passes (its `cameras`, default all fresh required cameras) goes
into the prompt, up to `max_input_images` (default 4: ALOHA's four cameras; each view costs about
`image_area / 256` prompt tokens).
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from emu_ros.guidance.parser import OutputEnd
from emu_ros.guidance.prompting import GUIDANCE_TASKS, build_question
from emu_ros.core.image_grid import image_token_count, token_grid
from emu_ros.core.types import Cancelled, CancelToken, PlanningError, PlanRequest

log = logging.getLogger(__name__)

_DONE = object()
#: Generation stop reasons that mean the output was cut, not finished (emu_ros.model.generation).
TRUNCATING_STOPS = ("max_new_tokens", "cache_full")
#: Default pixel area of predicted step images: 512x512 (the seed article's ~2.2 s per step figure).
STEP_IMAGE_AREA = 512 * 512
#: Budget per step for its text (step header and instruction; generous: a cut is worse than slack).
TEXT_TOKENS_PER_STEP = 96
def step_image_grid(view_shape: Optional[tuple], area: int) -> tuple:
    """(rows, cols) in tokens of a step image of `area` pixels with the camera view's aspect (the
    official rounding, core.image_grid: torch-free, as this module must be)."""
    height, width = (view_shape[0], view_shape[1]) if view_shape else (1, 1)
    return token_grid(height, width, area)


def plan_token_budget(grid: tuple, steps: int, text_per_step: int = TEXT_TOKENS_PER_STEP, slack: int = 256) -> int:
    """Tokens for `steps` steps of text + one image each."""
    return int(steps) * (image_token_count(*grid) + int(text_per_step)) + int(slack)


class Emu35Unavailable(RuntimeError):
    """The Emu3.5 backend cannot be built here (runtime missing, weights missing, no DiDA decoder)."""


def _runtime_class():
    try:
        from emu_ros.model import Emu35Runtime
    except ImportError as e:
        raise Emu35Unavailable(f"the Emu3.5 runtime (emu_ros.model.Emu35Runtime) cannot be imported: {e}; "
                               "install the model extra (pip install -e '.[model]') or use the scripted backend") from e
    return Emu35Runtime


def resolve_decoder(model_dir: Optional[str], dida_dir: Optional[str], runtime: Any = None,
                    image_decoder: Any = None) -> str:
    """`auto`: 'dida' when DiDA-adapted weights are there (a dida_config.json in dida_dir or model_dir,
    or a runtime/decoder that carries one), else 'ar'. Logged, so the choice is never silent."""
    if image_decoder is not None or (runtime is not None and getattr(runtime, "image_decoder", None) is not None):
        log.info("decoder auto -> dida (a DiDA image decoder was given)")
        return "dida"
    for d in (dida_dir, model_dir):
        if d and (Path(d) / "dida_config.json").is_file():
            log.info("decoder auto -> dida (%s has dida_config.json)", d)
            return "dida"
    log.info("decoder auto -> ar (no dida_config.json in %s; DiDA needs adapted weights)",
             " or ".join(str(d) for d in (dida_dir, model_dir) if d) or "the given runtime")
    return "ar"


class Emu35WorldModel:
    """WorldModel backend over an Emu35Runtime. `name` is ``emu35-ar`` or ``emu35-dida``."""

    def __init__(self, model_dir: Optional[str] = None, vq_dir: Optional[str] = None, device: str = "cpu",
                 dtype: str = "bfloat16", mode: str = "auto", task_type: str = "vla",
                 cameras: Optional[Sequence[str]] = None, max_input_images: int = 4,
                 steps_hint: Optional[int] = None, generation: Optional[dict] = None,
                 image_area: Optional[int] = None, image_decoder: Any = None, runtime: Any = None,
                 join_timeout_s: float = 10.0, dida_dir: Optional[str] = None, dida_passes: Optional[int] = None,
                 step_image_area: Optional[int] = STEP_IMAGE_AREA, quantize: Optional[str] = None,
                 view_grid: Optional[Sequence[int]] = None):
        """`device` may name several GPUs ("cuda:0,cuda:1": layers split across them); `quantize` None,
        "int8" or "nf4" loads the decoder layers weight-only quantized (34B on a 48 / 32 GB card).
        `view_grid` (rows, cols): the token grid every camera view must resize to (a small model trained on
        one camera shape); a view of another shape is refused with a message instead of planned blind."""
        mode = mode.lower()
        if mode not in ("auto", "ar", "dida"):
            raise ValueError(f"Emu3.5 mode (decoder) must be 'auto', 'ar' or 'dida', got {mode!r}")
        if mode == "auto":
            mode = resolve_decoder(model_dir, dida_dir, runtime, image_decoder)
        if task_type not in GUIDANCE_TASKS:
            raise ValueError(f"task_type must be one of {GUIDANCE_TASKS} (official templates), got {task_type!r}")
        if mode == "dida" and image_decoder is None and runtime is not None \
                and getattr(runtime, "image_decoder", None) is None:
            raise Emu35Unavailable("mode 'dida' needs a DiDA image decoder: pass a runtime built with "
                                   "decoder='dida', or image_decoder= (an emu_ros.model.ImageDecoder), or model_dir/"
                                   "dida_dir of DiDA-adapted weights; or use mode 'ar'")
        self.name = f"emu35-{mode}"
        self.mode = mode
        self.task_type = task_type
        self.cameras = tuple(cameras) if cameras else None
        self.max_input_images = int(max_input_images)
        self.steps_hint = steps_hint
        self.image_decoder = image_decoder
        #: Pixel area camera views are resized to before encoding (None = the official 518,400).
        self.image_area = image_area
        self.join_timeout_s = float(join_timeout_s)
        #: Pixel area of predicted step images (None = the official behaviour: the last view's grid).
        self.step_image_area = int(step_image_area) if step_image_area else None
        self.view_grid = tuple(int(v) for v in view_grid) if view_grid else None
        generation = dict(generation or {})
        #: max_new_tokens given explicitly is used as is; otherwise derived per request.
        self.fixed_budget = generation.get("max_new_tokens")
        self._config = self._generation_config(generation)
        if runtime is None:
            if mode == "dida" and dida_dir:
                if vq_dir is None and model_dir:   # the adapted LM dir has no sibling tokenizer of its own
                    vq_dir = str(Path(model_dir).parent / "Emu3.5-VisionTokenizer")
                model_dir = dida_dir
            if not model_dir:
                raise Emu35Unavailable("Emu3.5 backend needs model_dir (the downloaded BAAI/Emu3.5 directory; "
                                       "see models/README.md)")
            if not Path(model_dir).is_dir():
                raise Emu35Unavailable(f"Emu3.5 model directory {model_dir} does not exist")
            import torch

            torch_dtype = getattr(torch, str(dtype), None)
            if not isinstance(torch_dtype, torch.dtype):
                raise ValueError(f"dtype {dtype!r} is not a torch dtype name (e.g. bfloat16, float32)")
            log.info("loading Emu3.5 from %s (vision tokenizer %s) on %s/%s", model_dir, vq_dir or "sibling dir",
                     device, dtype)
            extra = {"decoder": "dida", "dida_passes": dida_passes} if mode == "dida" and image_decoder is None else {}
            if quantize:
                extra["quantize"] = quantize
            try:
                runtime = _runtime_class()(model_dir, vq_dir, device=device, dtype=torch_dtype, **extra)
            except RuntimeError as e:
                if type(e).__name__ == "DiDAAdaptationRequired":
                    raise Emu35Unavailable(str(e)) from e
                raise
        self.runtime = runtime

    def _generation_config(self, overrides: dict):
        """The official task settings with user overrides (e.g. max_new_tokens, seed, cfg_scale)."""
        try:
            from emu_ros.model import task_config
        except ImportError as e:
            if overrides:  # settings that cannot be checked or applied are an error, not silently dropped
                raise Emu35Unavailable(f"generation settings {sorted(overrides)} need the Emu3.5 runtime, which "
                                       f"cannot be imported ({e}); install torch or the model extra") from e
            return None
        try:
            from emu_ros.model.generation import GenerationConfig

            known = {f.name for f in fields(GenerationConfig)}
        except ImportError:
            known = set(overrides)
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown generation setting(s) {sorted(unknown)} (known: {sorted(known)})")
        return task_config(self.task_type, **overrides)

    def _request_config(self, request: PlanRequest, images: list):
        """This request's generation settings: the step-image size and, unless fixed, the budget."""
        config = self._config
        if config is None:
            return None
        grid = None
        if self.step_image_area:
            grid = step_image_grid(images[-1].shape if images else None, self.step_image_area)
            config = replace(config, image_size=grid)
        if self.fixed_budget is None and grid is not None:
            config = replace(config, max_new_tokens=plan_token_budget(grid, request.max_steps))
        log.info("%s: step images %s tokens, budget %d tokens for up to %d steps%s", self.name,
                 "x".join(map(str, grid)) if grid else "as the last view", config.max_new_tokens, request.max_steps,
                 "" if self.fixed_budget is None else " (max_new_tokens fixed)")
        return config

    def _images(self, request: PlanRequest) -> list:
        obs = request.observation
        if obs is None:
            return []
        names = [c for c in (self.cameras or tuple(obs.frames)) if c in obs.frames][: self.max_input_images]
        images = [obs.frames[c].image for c in names]
        for name, image in zip(names, images):
            shape = getattr(image, "shape", ())
            if len(shape) != 3 or shape[2] != 3:
                raise PlanningError(f"{self.name}: camera {name} gave a view of shape {list(shape)}, not H x W x 3 RGB")
            if self.view_grid is not None:
                grid = token_grid(shape[0], shape[1], self.image_area or 518400)
                if tuple(grid) != self.view_grid:
                    raise PlanningError(
                        f"{self.name}: camera {name} gave a {shape[0]}x{shape[1]} view, which resizes to a "
                        f"{grid[0]}x{grid[1]} token grid; this model was trained on {self.view_grid[0]}x"
                        f"{self.view_grid[1]} (view_grid in its backend.yaml): give it that camera's aspect "
                        f"({self.view_grid[1]}:{self.view_grid[0]}) or retrain it on yours")
        return images

    def plan(self, request: PlanRequest, cancel: Optional[CancelToken] = None) -> Iterator[Any]:
        """Yield text chunks and step images as generated, then an OutputEnd with the stop reason."""
        question = build_question(request, self.steps_hint)
        images = self._images(request)   # raises PlanningError on a view this model cannot take
        items: "queue.Queue" = queue.Queue()
        stop = threading.Event()

        def stopped() -> bool:
            return stop.is_set() or (cancel is not None and cancel.cancelled)

        config = self._request_config(request, images)

        def work() -> None:
            try:
                out = self.runtime.generate_interleaved(question, images, task=self.task_type, config=config,
                                                        image_area=self.image_area, on_text=items.put,
                                                        on_image=items.put, cancel=stopped,
                                                        image_decoder=self.image_decoder)
                items.put(OutputEnd(reason=str(out.stop_reason),
                                    truncated=str(out.stop_reason) in TRUNCATING_STOPS))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
                items.put(e)
            finally:
                items.put(_DONE)

        log.info("%s: generating %s plan (revision %d, %d image(s)): %s", self.name, self.task_type,
                 request.revision, len(images), question)
        worker = threading.Thread(target=work, name="emu35-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = items.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, (PlanningError, Cancelled)):
                        raise item
                    raise PlanningError(f"{self.name} generation failed: {type(item).__name__}: {item}") from item
                if isinstance(item, OutputEnd) and item.reason == "cancelled" and cancel is not None and cancel.cancelled:
                    raise Cancelled(f"{self.name} generation canceled")
                yield item
        finally:
            stop.set()
            worker.join(self.join_timeout_s)
            if worker.is_alive():
                log.warning("%s: generation thread still running %.0f s after stop", self.name, self.join_timeout_s)
