"""Quality and size cost of weight-only quantized loading (``load_lm(quantize=...)``) on CPU.

Every mode loads the same checkpoint (by default a tiny random one written to a temp dir) and is
compared with the fp32 load:

* weight bytes (everything the model would save) and the decoder-Linear share of them, measured;
  and the full 34B size per mode, computed from the published architecture (preset "full");
* max / mean |logit - fp32 logit| over the full vocabulary, teacher-forced on the prompt plus the
  fp32 model's greedy continuation;
* greedy agreement over ``--tokens`` new tokens: top-1 match with fp32 at every teacher-forced
  position, and the length of the free-running greedy prefix identical to fp32's;
* ms/token of cached 1-row decoding on this CPU (tiny shapes: overhead-bound, not a GPU forecast).

Random weights give near-uniform logits (std ~0.16 on "tiny"), so top-1 ties are much closer than
in a trained model: the agreement here is a pessimistic floor, the logit error is what transfers.

    python -m emu_ros.bench.quantization                         # tiny random checkpoint, table + JSON
    python -m emu_ros.bench.quantization --model-dir models/Emu3.5 --modes bf16,int8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from emu_ros.model.configuration_emu3 import Emu3Config, preset_config
from emu_ros.model.loading import load_lm
from emu_ros.model.modeling_emu3 import Emu3ForCausalLM
from emu_ros.model.quantization import QuantizationError, check_quantize, decoder_linear_names, weight_bytes

# name -> (compute dtype, quantize); the reference is always fp32 / None
MODES: dict[str, tuple[torch.dtype, str | None]] = {
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "int8@fp32": (torch.float32, "int8"),
    "int8@bf16": (torch.bfloat16, "int8"),
    "nf4@fp32": (torch.float32, "nf4"),
    "nf4@bf16": (torch.bfloat16, "nf4"),
}
NF4_BLOCK, NF4_NESTED_BLOCK = 64, 256


def full_size_bytes(config: Emu3Config, dtype_bytes: int, quantize: str | None) -> int:
    """Weight bytes of a model of this config: decoder Linears per ``quantize``, the rest in the load dtype.

    int8: 1 B per weight + a fp32 scale per output channel. nf4 (bitsandbytes, compress_statistics):
    0.5 B per weight + a uint8 absmax per 64 weights + a fp32 absmax per 256 blocks.
    """
    with torch.device("meta"):
        model = Emu3ForCausalLM(config)
    linear_names = set(decoder_linear_names(model))
    total = 0
    for name, module in model.named_modules():
        if name in linear_names:
            w = module.weight
            if quantize == "int8":
                total += w.numel() + 4 * w.shape[0]
            elif quantize == "nf4":
                blocks = -(-w.numel() // NF4_BLOCK)
                total += w.numel() // 2 + blocks + 4 * -(-blocks // NF4_NESTED_BLOCK)
            else:
                total += w.numel() * dtype_bytes
        elif not list(module.children()):
            total += sum(p.numel() for p in module.parameters(recurse=False)) * dtype_bytes
    return total


def linear_bytes(model: nn.Module) -> int:
    """Saved bytes of the decoder-layer Linears only (the quantized part)."""
    return sum(t.numel() * t.element_size() for name in decoder_linear_names(model)
               for t in model.get_submodule(name).state_dict().values() if isinstance(t, torch.Tensor))


@torch.no_grad()
def greedy(model: Emu3ForCausalLM, prompt: list[int], tokens: int) -> tuple[list[int], float]:
    """Cached greedy decoding of ``tokens`` ids after ``prompt`` (1 row); returns (ids, ms per token)."""
    model.setup_caches(1, len(prompt) + tokens + 1)
    ids = torch.tensor([prompt])
    logits = model(ids, torch.arange(len(prompt))[None], kv_len=len(prompt), keep=-1)
    out, pos = [], len(prompt)
    start = None
    for i in range(tokens):
        if i == 1:                       # the first step (allocations, first kernel calls) is warm-up
            start = time.perf_counter()
        token = int(logits[0, -1].argmax())
        out.append(token)
        logits = model(torch.tensor([[token]]), torch.tensor([[pos]]), kv_len=pos + 1, keep=-1)
        pos += 1
    ms = (time.perf_counter() - start) * 1e3 / max(1, tokens - 1) if start is not None else float("nan")
    model.clear_caches()
    return out, ms


def measure(model_dir: Path, modes: list[str], tokens: int, prompt_len: int, seed: int) -> dict:
    """Load every mode, compare with fp32; returns the JSON-ready result."""
    gen = torch.Generator().manual_seed(seed)
    ref = load_lm(model_dir, dtype=torch.float32)
    config = ref.config
    prompt = torch.randint(0, config.first_visual_token_id - 1024, (prompt_len,), generator=gen).tolist()
    ref_new, _ = greedy(ref, prompt, tokens)
    sequence = torch.tensor([prompt + ref_new])
    with torch.no_grad():
        ref_logits = ref(sequence)[0]                                              # [T, vocab]
    ref_top1 = ref_logits[prompt_len - 1:-1].argmax(-1)
    full = preset_config("full")
    rows = []
    for name in modes:
        dtype, quantize = MODES[name]
        row = {"mode": name, "compute_dtype": str(dtype).removeprefix("torch."), "quantize": quantize}
        try:
            check_quantize(quantize)
        except QuantizationError as exc:
            row["skipped"] = str(exc).split(" (")[0]
            rows.append(row)
            continue
        model = ref if name == "fp32" else load_lm(model_dir, dtype=dtype, quantize=quantize)
        with torch.no_grad():
            logits = model(sequence)[0].float()
        diff = (logits - ref_logits).abs()
        new, ms = greedy(model, prompt, tokens)
        same = next((i for i, (a, b) in enumerate(zip(new, ref_new)) if a != b), len(new))
        row.update({
            "weight_bytes": weight_bytes(model), "linear_bytes": linear_bytes(model),
            "full_34b_weight_gb": round(full_size_bytes(full, 4 if dtype == torch.float32 else 2, quantize) / 1e9, 2),
            "max_abs_logit_diff": diff.max().item(), "mean_abs_logit_diff": diff.mean().item(),
            "top1_agreement": (logits[prompt_len - 1:-1].argmax(-1) == ref_top1).float().mean().item(),
            "greedy_identical_prefix": same, "ms_per_token_cpu": round(ms, 3),
        })
        rows.append(row)
        if model is not ref:
            del model
    return {"model_dir": str(model_dir), "config": {"hidden_size": config.hidden_size,
                                                    "num_hidden_layers": config.num_hidden_layers,
                                                    "vocab_size": config.vocab_size},
            "tokens": tokens, "prompt_len": prompt_len, "seed": seed, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "bitsandbytes": _bnb_version(),
            "logit_std_fp32": ref_logits.std().item(), "modes": rows}


def _bnb_version() -> str | None:
    try:
        import bitsandbytes
    except (ImportError, OSError, RuntimeError):
        return None
    return bitsandbytes.__version__


def table(result: dict) -> str:
    head = (f"{'mode':<10} {'weights MB':>10} {'linears MB':>10} {'34B GB':>7} {'max|dlogit|':>11} "
            f"{'mean|dlogit|':>12} {'top1 agree':>10} {'greedy same':>11} {'ms/tok':>7}")
    lines = [head, "-" * len(head)]
    n = result["tokens"]
    for r in result["modes"]:
        if "skipped" in r:
            lines.append(f"{r['mode']:<10} skipped: {r['skipped']}")
            continue
        lines.append(f"{r['mode']:<10} {r['weight_bytes'] / 1e6:>10.2f} {r['linear_bytes'] / 1e6:>10.3f} "
                     f"{r['full_34b_weight_gb']:>7.1f} {r['max_abs_logit_diff']:>11.2e} "
                     f"{r['mean_abs_logit_diff']:>12.2e} {r['top1_agreement']:>10.3f} "
                     f"{r['greedy_identical_prefix']:>5d}/{n:<5d} {r['ms_per_token_cpu']:>7.2f}")
    lines.append(f"(fp32 logit std {result['logit_std_fp32']:.3f}; 34B GB = decoder Linears quantized, "
                 "embedding + lm_head + norms in the compute dtype)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, help="an Emu3.5 LM directory (default: a tiny random one)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {list(MODES)}")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable timings on a busy host)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {list(MODES)}")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from emu_ros.model.random_checkpoint import write_random_lm
            model_dir = write_random_lm(Path(tmp) / "Emu3.5", preset_config("tiny"), seed=args.seed)
        result = measure(model_dir, modes, args.tokens, args.prompt_len, args.seed)
        if args.model_dir is None:
            result["model_dir"] = f"random 'tiny' (write_random_lm, seed {args.seed})"
    print(table(result))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
