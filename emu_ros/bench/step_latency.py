"""One guidance step, AR vs DiDA image decoding, in the same run: prefill, text, image, vision decode.

A guidance step = prefill of the official ``vla`` prompt (question + the current camera image as
image tokens; cond and uncond CFG rows), ~30 generated text tokens (cond row only, as the official
runtime), then one step image of ``--image`` pixels (32 x 32 tokens at 512) decoded with the AR
decoder and/or ``DiDAImageDecoder`` (K passes + commit), then the vision-tokenizer decode to RGB.
Weights are random (same shapes and kernels as the real ones); ``--config full`` builds the 34B model
directly on the device in bf16 (no download, no host copy). Warm-up: one step with a 4 x 4 image per
decoder, excluded. Every phase is timed between device synchronisations.

Floors (GPU only): text and AR image tokens are weight-bandwidth bound (weights / HBM bandwidth per
forward); a prefill or DiDA pass is compute bound (2 x params x tokens x rows / peak bf16 FLOP/s, or
the weight read if larger). ``floor_step_s`` is the DiDA step's sum; on a CPU it is null.

On a CPU the AR/DiDA ratio is far from a GPU's: a CPU has ~50x fewer FLOPs per byte of memory traffic,
so a pass over 1,056 tokens costs nearly 1,056 single-token steps' compute and parallel passes buy little.

Examples::

    python -m emu_ros.bench.step_latency --config tiny --device cpu --decoder both --json /tmp/step_cpu.json
    python -m emu_ros.bench.step_latency --config full --device cuda --decoder both --image 512 --cfg 3.0 \\
        --json /tmp/step_h100.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from emu_ros.bench.decode import hbm_bandwidth, random_model, sync
from emu_ros.model.configuration_emu3 import preset_config
from emu_ros.model.dida import DiDAConfig, DiDAImageDecoder
from emu_ros.model.generation import (ARImageDecoder, DecodeSession, GenerationConfig, SamplingParams, SpecialIds,
                                      sample)
from emu_ros.model.random_checkpoint import NUM_BPE_RANKS, VQ_PRESETS
from emu_ros.model.vision_tokenizer import IBQ, IBQConfig

log = logging.getLogger(__name__)

# Dense bf16 tensor-core peak by device name (vendor datasheets), FLOP/s.
BF16_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H100": 989e12,
             "A100": 312e12, "L40S": 362e12, "RTX 4090": 165e12}
# The synthetic and the real emu3.tiktoken share GPT-2 byte order: '0'..'9' = 15..24, '*' = 9.
DIGITS = {**{str(d): 15 + d for d in range(10)}, "*": 9}


def bf16_peak(device: torch.device) -> float | None:
    """Datasheet dense bf16 FLOP/s of a CUDA device (None if unknown or not CUDA)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def image_ids(ids: SpecialIds, codes: np.ndarray) -> list[int]:
    """BOI "H*W" IMG rows (EOL between) EOI."""
    h, w = codes.shape
    out = [ids.boi] + ids.header_ids(h, w) + [ids.img]
    for r in range(h):
        out += [ids.first_visual + int(c) for c in codes[r]]
        out.append(ids.eol if r < h - 1 else ids.eoi)
    return out


def build_prompts(ids: SpecialIds, grid: int, question_tokens: int,
                  rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Token ids shaped like the official vla cond/uncond prompts with one camera image of grid x grid tokens."""
    camera = image_ids(ids, rng.integers(0, ids.codebook_size, (grid, grid)))
    text = lambda n: rng.integers(1000, 100000, n).tolist()          # noqa: E731  plain BPE ids
    bos, bss = 151849, 151746
    cond = [bos] + text(12) + text(question_tokens) + camera + text(3) + [bss]
    uncond = [bos] + text(8) + camera + text(3) + [bss]
    return cond, uncond


def one_step(model, vq, ids: SpecialIds, prompts: tuple[list[int], list[int]], decoder, grid: int, text_tokens: int,
             cfg: float, device: torch.device, seed: int) -> dict[str, float]:
    """Time the phases of one guidance step; returns seconds per phase."""
    cond, uncond = prompts
    config = GenerationConfig(cfg_scale=cfg, seed=seed, max_new_tokens=text_tokens + 8 + grid * (grid + 1),
                              image=SamplingParams(10240, 1.0, 1.0))
    times = {}
    sync(device)
    t = time.perf_counter()
    session = DecodeSession(model, cond, uncond if config.use_cfg else None, config, ids)
    sync(device)
    times["prefill_s"] = time.perf_counter() - t
    t = time.perf_counter()
    logits = session.logits
    text = []
    for _ in range(text_tokens):     # text mode: cond row only, visual and special ids excluded (no early EOS)
        token = sample(logits[0, :NUM_BPE_RANKS], config.text, session.generator)
        text.append(token)
        logits = session.feed(token.view(1), 1)
    sync(device)
    times["text_s"] = time.perf_counter() - t
    t = time.perf_counter()
    header = session.tensor([ids.boi] + ids.header_ids(grid, grid) + [ids.img])
    codes = decoder(session, header, grid, grid, None)
    sync(device)
    times["image_s"] = time.perf_counter() - t
    t = time.perf_counter()
    vq.decode(codes[None])
    sync(device)
    times["vision_decode_s"] = time.perf_counter() - t
    times["step_s"] = sum(times.values())
    return times


def floors(n_params: int, weight_bytes: int, prompt_len: int, rows: int, text_tokens: int, grid: int, passes: int,
           device: torch.device) -> dict[str, float] | None:
    """Weight-bandwidth / compute lower bounds of each phase on a known GPU (None elsewhere)."""
    bw, peak = hbm_bandwidth(device), bf16_peak(device)
    if not bw or not peak:
        return None
    read = weight_bytes / bw

    def compute(tokens: int) -> float:
        return max(read, 2 * n_params * tokens * rows / peak)
    block = grid * (grid + 1)
    out = {"prefill_s": compute(prompt_len), "text_s": text_tokens * read, "ar_image_s": (1 + grid * grid) * read,
           "dida_image_s": read + passes * compute(block) + compute(block + 1)}
    out["dida_step_s"] = out["prefill_s"] + out["text_s"] + out["dida_image_s"]
    out["ar_step_s"] = out["prefill_s"] + out["text_s"] + out["ar_image_s"]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emu_ros.bench.step_latency", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="tiny", choices=["tiny", "full"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--decoder", default="both", choices=["ar", "dida", "both"])
    p.add_argument("--image", type=int, default=512, help="step image side in pixels (16 px per token)")
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--passes", type=int, default=4, help="DiDA passes K (quality vs K: emu_ros.bench.dida_quality)")
    p.add_argument("--noise", default="mask", choices=["mask", "uniform"])
    p.add_argument("--text-tokens", type=int, default=30)
    p.add_argument("--question-tokens", type=int, default=30)
    p.add_argument("--dtype", default=None, help="default bfloat16 on cuda, float32 on cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build, warm up, measure one step per decoder; print the breakdown; optionally write JSON."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    config = preset_config(args.config)
    n_params = config.num_parameters()
    weight_bytes = n_params * torch.empty((), dtype=dtype).element_size()
    if device.type == "cpu" and args.config == "full":
        print("refusing: the full config needs ~68 GB of bf16 weights; run it on a GPU (--device cuda)",
              file=sys.stderr)
        return 2
    t = time.perf_counter()
    model = random_model(config, device, dtype)
    torch.manual_seed(0)
    with torch.device(device):
        vq = IBQ(IBQConfig(**VQ_PRESETS[args.config])).eval().requires_grad_(False)
    build_s = time.perf_counter() - t
    ids = SpecialIds(config.eos_token_id, config.boi_token_id, config.eoi_token_id, config.img_token_id,
                     config.eol_token_id, config.first_visual_token_id, config.codebook_size, DIGITS)
    grid = args.image // 16
    rng = np.random.default_rng(0)
    prompts = build_prompts(ids, grid, args.question_tokens, rng)
    decoders = {"ar": ARImageDecoder, "dida": lambda: DiDAImageDecoder(DiDAConfig(noise=args.noise), args.passes)}
    chosen = ["ar", "dida"] if args.decoder == "both" else [args.decoder]
    result: dict = {"config": args.config, "device": str(device), "device_name": _device_name(device),
                    "dtype": str(dtype).removeprefix("torch."), "image": args.image, "grid": grid, "cfg": args.cfg,
                    "text_tokens": args.text_tokens, "prompt_tokens": len(prompts[0]), "params": n_params,
                    "build_s": build_s, "dida_passes": args.passes if "dida" in chosen else None,
                    "noise": args.noise, "ar_step_s": None, "dida_step_s": None, "ar_image_s": None,
                    "dida_image_s": None, "image_ratio": None}
    with torch.no_grad():
        for name in chosen:
            one_step(model, vq, ids, build_prompts(ids, 4, args.question_tokens, rng), decoders[name](), 4,
                     args.text_tokens, args.cfg, device, seed=1)                      # warm-up, excluded
            times = one_step(model, vq, ids, prompts, decoders[name](), grid, args.text_tokens, args.cfg, device,
                             seed=0)
            forwards = args.passes + 2 if name == "dida" else 1 + grid * grid     # header [+ passes + commit]
            times["image_forwards"] = forwards
            result[name] = times
            result[f"{name}_step_s"], result[f"{name}_image_s"] = times["step_s"], times["image_s"]
            print(f"{name:>4}: step {times['step_s']:.3f} s = prefill {times['prefill_s']:.3f} + text "
                  f"{times['text_s']:.3f} + image {times['image_s']:.3f} ({forwards} forwards, "
                  f"{1000 * times['image_s'] / forwards:.1f} ms each) + vision decode {times['vision_decode_s']:.3f}",
                  flush=True)
    if result["ar_image_s"] and result["dida_image_s"]:
        result["image_ratio"] = result["dida_image_s"] / result["ar_image_s"]
    rows = 2 if args.cfg != 1.0 else 1
    fl = floors(n_params, weight_bytes, len(prompts[0]), rows, args.text_tokens, grid, args.passes, device)
    result["floor"] = fl
    result["floor_step_s"] = fl["dida_step_s"] if fl else None
    if device.type == "cuda":
        result["peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    print(f"{args.config} on {result['device_name']}, {args.image}px ({grid}x{grid} tokens), CFG {args.cfg}, "
          f"DiDA K={args.passes}")
    if result["image_ratio"]:
        print(f"image: DiDA/AR = {result['image_ratio']:.3f} (AR {result['ar_image_s']:.3f} s, "
              f"DiDA {result['dida_image_s']:.3f} s)")
    if fl:
        print(f"floor: DiDA step {fl['dida_step_s']:.2f} s (prefill {fl['prefill_s']:.3f}, text {fl['text_s']:.2f}, "
              f"image {fl['dida_image_s']:.2f}); AR step {fl['ar_step_s']:.1f} s")
    else:
        print("floor: null (no datasheet bandwidth/peak for this device; CPU ratios are not GPU targets)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


if __name__ == "__main__":
    sys.exit(main())
