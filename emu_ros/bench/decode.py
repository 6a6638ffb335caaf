"""AR decode benchmark of the Emu3.5 runtime: ms/token of the image-body step, vs the weight-bandwidth floor.

The timed step is exactly the inner loop of ``ARImageDecoder``: CFG over the cond/uncond rows
(``--batch 2``) or plain logits (``--batch 1``), image sampling, then one cached forward. Warm-up
steps are excluded and the device is synchronised before and after timing. With random weights
the speed is the same as with real ones (same shapes, same kernels).

Examples::

    python -m emu_ros.bench.decode --config tiny --tokens 64 --json /tmp/tiny.json
    python -m emu_ros.bench.decode --config full --device cuda --dtype bfloat16 --batch 2
    python -m emu_ros.bench.decode --config full --device meta --count-only   # 34.1B, no memory
    python -m emu_ros.bench.decode --model-dir models/Emu3.5 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

from emu_ros.model.configuration_emu3 import Emu3Config, preset_config
from emu_ros.model.generation import DecodeSession, GenerationConfig, SamplingParams, SpecialIds, sample
from emu_ros.model.loading import load_lm
from emu_ros.model.modeling_emu3 import Emu3ForCausalLM

# Peak HBM bandwidth by device name (vendor datasheets), bytes/s.
HBM_BANDWIDTH = {"H200": 4.8e12, "H100 SXM": 3.35e12, "H100 80GB HBM3": 3.35e12, "H100 PCIe": 2.0e12,
                 "H100": 3.35e12, "A100-SXM4-80GB": 2.04e12, "A100": 1.56e12, "L40S": 0.864e12,
                 "RTX 4090": 1.008e12}


def hbm_bandwidth(device: torch.device) -> float | None:
    """Datasheet HBM bandwidth of a CUDA device, matched on its name (None if unknown)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, bw in HBM_BANDWIDTH.items():
        if key in name:
            return bw
    return None


def random_model(config: Emu3Config, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Emu3ForCausalLM:
    """Build on meta, then materialise random weights directly on the device (no host copy)."""
    with torch.device("meta"):
        model = Emu3ForCausalLM(config).to(dtype)    # dtype first: 34B fp32 would not fit any GPU
    model = model.to_empty(device=device)
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, config.initializer_range, generator=gen)
    model.model.reset_buffers()
    return model.eval().requires_grad_(False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emu_ros.bench.decode", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-dir", type=Path, help="official Emu3.5 model directory to load")
    src.add_argument("--config", default="tiny", help="preset with random weights: tiny | full")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--tokens", type=int, default=64, help="timed decode steps")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--batch", type=int, default=2, choices=[1, 2], help="2 = CFG cond+uncond rows")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--count-only", action="store_true", help="build on meta, print the parameter count")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (CUDA graphs on GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (torch.set_num_threads); 1 avoids thread-pool stalls on a busy host")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and optionally write JSON."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = Emu3Config.from_json(args.model_dir) if args.model_dir else preset_config(args.config)
    n_params = config.num_parameters()
    dtype = getattr(torch, args.dtype)
    weight_bytes = n_params * torch.empty((), dtype=dtype).element_size()
    if args.count_only or args.device == "meta":
        with torch.device("meta"):
            built = sum(p.numel() for p in Emu3ForCausalLM(config).parameters())
        print(f"parameters: {built:,} ({built / 1e9:.2f}B; {weight_bytes / 1e9:.1f} GB in {args.dtype}); "
              f"published 34.1B -> {100 * (built - 34.1e9) / 34.1e9:+.2f}%")
        return 0
    device = torch.device(args.device)
    if device.type == "cpu" and weight_bytes > 0.8 * _host_ram_bytes():
        print(f"refusing: {weight_bytes / 1e9:.1f} GB of {args.dtype} weights do not fit this host's RAM "
              f"({_host_ram_bytes() / 1e9:.1f} GB); run the full config on a GPU or use --config tiny",
              file=sys.stderr)
        return 2
    if args.model_dir:
        model = load_lm(args.model_dir, device=device, dtype=dtype)
    else:
        model = random_model(config, device, dtype)
    vocab_ids = config_special_ids(config)
    gen_cfg = GenerationConfig(cfg_scale=3.0 if args.batch == 2 else 1.0, seed=0,
                               max_new_tokens=args.tokens + args.warmup + 2,
                               image=SamplingParams(10240, 1.0, 1.0), compile=args.compile)
    prompt = torch.randint(0, 150000, (args.prompt_len,), generator=torch.Generator().manual_seed(0)).tolist()
    session = DecodeSession(model, prompt, prompt[: args.prompt_len // 2] if args.batch == 2 else None,
                            gen_cfg, vocab_ids)
    logits = session.logits

    def step(logits: torch.Tensor) -> torch.Tensor:
        code = sample(session.visual_logits(logits), gen_cfg.image, session.generator)
        return session.feed((code + vocab_ids.first_visual).view(1), session.rows)

    for _ in range(args.warmup):
        logits = step(logits)
    sync(device)
    start = time.perf_counter()
    for _ in range(args.tokens):
        logits = step(logits)
    sync(device)
    seconds = time.perf_counter() - start
    ms = 1000 * seconds / args.tokens
    result = {"ms_per_token": ms, "tokens_per_s": 1000 / ms, "device": _device_name(device), "dtype": args.dtype,
              "batch": args.batch, "tokens": args.tokens, "prompt_len": args.prompt_len, "params": n_params,
              "weight_bytes": weight_bytes, "config": str(args.model_dir or args.config),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "torch": torch.__version__, "compile": args.compile}
    bw = hbm_bandwidth(device)
    if bw:
        floor = 1000 * weight_bytes / bw
        result.update(hbm_bandwidth_bytes_per_s=bw, floor_ms_per_token=floor, fraction_of_floor=floor / ms,
                      achieved_gb_per_s=weight_bytes / (ms / 1000) / 1e9,
                      peak_gpu_mem_gb=torch.cuda.max_memory_allocated(device) / 1e9)
    print(f"{result['config']} on {result['device']} ({args.dtype}, batch {args.batch}): "
          f"{ms:.2f} ms/token, {1000 / ms:.1f} tokens/s over {args.tokens} tokens")
    if bw:
        print(f"weight-bandwidth floor {result['floor_ms_per_token']:.2f} ms/token "
              f"({weight_bytes / 1e9:.1f} GB / {bw / 1e12:.2f} TB/s): {100 * result['fraction_of_floor']:.0f}% "
              f"of the floor, {result['achieved_gb_per_s']:.0f} GB/s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a timing boundary); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def config_special_ids(config: Emu3Config) -> SpecialIds:
    """The special ids a random-weight benchmark needs, from the config (no tokenizer files)."""
    return SpecialIds(eos=config.eos_token_id, boi=config.boi_token_id, eoi=config.eoi_token_id,
                      img=config.img_token_id, eol=config.eol_token_id, first_visual=config.first_visual_token_id,
                      codebook_size=config.codebook_size, digits={})


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _host_ram_bytes() -> int:
    import os
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


if __name__ == "__main__":
    sys.exit(main())
