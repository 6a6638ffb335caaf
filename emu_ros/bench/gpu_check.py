"""The GPU figures one lent device gives, in one process: prefill of four camera views, AR decode
ms/token against the weight-bandwidth floor, which attention kernel each path can use, the peak
memory against the computed plan, and int8 (and NF4 when bitsandbytes is installed) decode.

    python -m emu_ros.bench.gpu_check --config full --device cuda --json gpu_check.json
    python -m emu_ros.bench.gpu_check --config tiny --device cpu      # the same code path, seconds

Weights are random (same shapes and kernels as the real ones), built on the device. Kernel checks
run a forward with SDPA restricted to one backend (`torch.nn.attention.sdpa_kernel`): it raises
when that kernel cannot serve the call, so "usable" means the kernel ran. `scripts/gpu_check.sh`
runs this and the AR-vs-DiDA step benchmark and merges the JSON.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from emu_ros.bench.decode import config_special_ids, hbm_bandwidth, random_model, sync
from emu_ros.model.configuration_emu3 import preset_config
from emu_ros.model.generation import DecodeSession, GenerationConfig, SamplingParams, SpecialIds, sample
from emu_ros.model.memory_plan import StepShape, image_tokens, plan_step
from emu_ros.model.modeling_emu3 import attention_paths, reset_attention_paths


def prompts(config, shape: StepShape, scale: float) -> tuple:
    """Random ids standing in for a `vla` prompt of `shape` (cond) and its text-only uncond row."""
    n = max(8, int(shape.prompt_tokens * scale))
    g = torch.Generator().manual_seed(0)
    cond = torch.randint(0, min(150000, config.vocab_size), (n,), generator=g).tolist()
    return cond, cond[: max(4, n // 8)]


def decode_ms(session: DecodeSession, cfg: GenerationConfig, ids: SpecialIds, steps: int, device) -> float:
    logits = session.logits
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            sync(device)
            t0 = time.perf_counter()
        code = sample(session.visual_logits(logits), cfg.image, session.generator)
        logits = session.feed((code + ids.first_visual).view(1), session.rows)
    sync(device)
    return 1000 * (time.perf_counter() - t0) / steps


def kernel_usable(backend_name: str, fn) -> str:
    """'ran' when fn ran with SDPA restricted to the backend, else the error's first line."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel([getattr(SDPBackend, backend_name)]):
            fn()
        return "ran"
    except RuntimeError as e:
        return f"not usable: {str(e).splitlines()[0][:160]}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m emu_ros.bench.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="full", choices=["full", "tiny"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    config = preset_config(args.config)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = StepShape(views=args.views)
    scale = 1.0 if args.config == "full" else 0.05  # the tiny config's context is short
    out: dict = {"config": args.config, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""), "views": args.views}
    t0 = time.perf_counter()
    model = random_model(config, device, dtype)
    sync(device)
    out["build_s"] = round(time.perf_counter() - t0, 1)
    ids = config_special_ids(config)
    cond, uncond = prompts(config, shape, scale)
    cfg = GenerationConfig(cfg_scale=3.0, seed=0, max_new_tokens=args.decode_tokens + 2 * shape.step_image_tokens,
                           image=SamplingParams(10240, 1.0, 1.0))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reset_attention_paths()
    sync(device)
    t0 = time.perf_counter()
    session = DecodeSession(model, cond, uncond, cfg, ids)  # the prefill of both CFG rows
    sync(device)
    out["prefill"] = {"tokens": len(cond), "rows": 2, "s": round(time.perf_counter() - t0, 3),
                      "views": args.views, "tokens_per_view": image_tokens(*shape.view_hw, shape.view_area),
                      "attention_paths": attention_paths()}
    reset_attention_paths()
    ms = decode_ms(session, cfg, ids, args.decode_tokens, device)
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    out["decode"] = {"ms_per_token": round(ms, 3), "rows": 2, "dtype": out["dtype"], "attention_paths": attention_paths()}
    bw = hbm_bandwidth(device)
    if bw:
        out["decode"].update(floor_ms_per_token=round(1000 * weight_bytes / bw, 3),
                                  fraction_of_floor=round(1000 * weight_bytes / bw / ms, 3))
    # a DiDA-style block pass (all slots of a 512x512 step image at once, bidirectional), both rows
    t = shape.step_image_tokens if args.config == "full" else 32
    block = torch.full((t,), ids.eol, dtype=torch.long, device=device)

    def block_pass(rows: int = session.rows) -> None:
        pos = session.pos_dev[:rows, None] + torch.arange(t, device=device)
        model.model(block.view(1, t).expand(rows, t), input_pos=pos, kv_len=max(session.pos[:rows]) + t,
                    block=True, uniform_len=session.uniform_len(rows, t))

    block_pass()
    sync(device)
    t0 = time.perf_counter()
    block_pass()
    sync(device)
    out["dida_block_pass"] = {"tokens": t, "rows": 2, "s": round(time.perf_counter() - t0, 4)}
    one = None
    if device.type == "cuda":
        one = DecodeSession(model, cond[:256], None, GenerationConfig(seed=0, max_new_tokens=t + 8), ids)
        out["kernels"] = {
            "prefill causal (flash)": kernel_usable("FLASH_ATTENTION", lambda: DecodeSession(
                model, cond[:256], None, GenerationConfig(seed=0, max_new_tokens=8), ids)),
            "decode, rows at one position (flash)": kernel_usable("FLASH_ATTENTION", lambda: one.feed(
                torch.tensor([ids.eol], device=device), 1)),
            "block pass, CFG rows at different positions (efficient, key-length mask)": kernel_usable(
                "EFFICIENT_ATTENTION", block_pass),
            "flash_attn package": "installed" if _has_flash_attn() else "not installed (pip install flash-attn)"}
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
        plan = plan_step(config, shape)
        out["memory_plan_gib"] = round(plan.per_device_gib, 2)
        out["memory_plan_parts_gib"] = {k: round(getattr(plan, k), 2) for k in
                                        ("weights_gib", "kv_cache_gib", "activations_gib", "logits_gib")}
    session = one = None  # free the caches before the quantized model allocates its own
    out["decode_int8"] = quantized_decode(model, "int8", dtype, cond, uncond, cfg, ids, args.decode_tokens, device)
    model = None
    if importlib.util.find_spec("bitsandbytes") is None:
        out["decode_nf4"] = {"skipped": "bitsandbytes not installed (pip install 'bitsandbytes>=0.46')"}
    else:  # a fresh model: the first one is int8 now
        model = random_model(config, device, dtype)
        out["decode_nf4"] = quantized_decode(model, "nf4", dtype, cond, uncond, cfg, ids, args.decode_tokens, device)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def quantized_decode(model, mode, dtype, cond, uncond, cfg, ids, steps, device) -> dict:
    from emu_ros.model.quantization import QuantizationError, quantize_model_, weight_bytes

    try:
        t0 = time.perf_counter()
        quantize_model_(model, mode, dtype)
        sync(device)
        took = time.perf_counter() - t0
    except (QuantizationError, ImportError) as e:
        return {"skipped": str(e)}
    session = DecodeSession(model, cond, uncond, cfg, ids)
    ms = decode_ms(session, cfg, ids, steps, device)
    return {"ms_per_token": round(ms, 3), "weight_gib": round(weight_bytes(model) / 2 ** 30, 2),
            "quantize_s": round(took, 1)}


def _has_flash_attn() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


if __name__ == "__main__":
    raise SystemExit(main())
