"""Measured resident memory per rank of the one trainer under torchrun on CPUs (gloo, FSDP2).

    python -m finetune_embodied.bench_memory --ranks 2 --objective ar --lora --json /tmp/mem_ar_lora.json
    python -m finetune_embodied.bench_memory --ranks 2 --objective dida --lora --json /tmp/mem_dida_lora.json
    python -m finetune_embodied.bench_memory --ranks 2 --objective ar --size medium --json /tmp/mem_ar_full.json

Writes a random checkpoint in the official layout (``write_random_lm``, one shard in memory at a time):
``--size large`` 8.1B parameters, 16.2 GB in bf16, so that the fixed costs of a rank — interpreter and
libraries, the gathered lm_head, two prefetched layers — are small next to its share; ``medium`` 1.5B,
3.0 GB, for a full fine-tune whose AdamW state has to fit this machine's RAM; ``small`` a smoke check of
the script. Then it runs
``finetune_embodied.train`` on ``--ranks`` processes on ``synthetic:move-block``. Each rank reports
its peak resident set (VmHWM: anonymous memory plus mapped file pages) after the model is built and
loaded, and again over ``--steps`` optimizer steps (the peak is reset in between). The JSON has
``full_model_bytes``, ``per_rank_peak_rss_bytes`` (the larger of the two phases per rank), the phases
separately, the baseline of a rank before the model exists, the trainer's memory plan and the ratio to
the full model. Not a unit test: it takes minutes and most of this machine's memory.

Allocator: on a CPU the ranks' tensors live in glibc malloc, whose mmap threshold grows (up to 32 MB)
after large frees, so FSDP's per-layer all-gather buffers (2-16 MB here) are then served from the heap
and their pages stay resident after they are freed; RSS then climbs toward a full replica although no
tensor is live. The bench sets ``MALLOC_MMAP_THRESHOLD_=65536`` for the ranks (freed buffers go back to
the OS at once); ``--malloc-mmap-threshold 0`` measures glibc's default. GPUs are unaffected (the CUDA
caching allocator holds the device memory; host RAM holds no weights there).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {
    # the Emu3.5 vocabulary (tiny preset: text ids + 1,024 visual codes) so the synthetic task's ids exist;
    # hidden 1024 keeps the embedding small next to the layers, as in the 34B model (2.9B of 34.1B)
    "large": dict(hidden_size=1024, intermediate_size=8192, num_hidden_layers=280, num_attention_heads=16,
                  num_key_value_heads=4, head_dim=64),
    "medium": dict(hidden_size=1024, intermediate_size=8192, num_hidden_layers=42, num_attention_heads=16,
                   num_key_value_heads=4, head_dim=64),
    # a seconds-long check that the script runs (the ranks' baseline dominates: no memory conclusion)
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32),
}


DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4}


def read_status(field: str) -> int:
    """A /proc/self/status memory field in bytes (VmHWM, VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); False when the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def worker(args: argparse.Namespace) -> int:
    """One rank: build and load through the Trainer, then train --steps steps; write this rank's figures."""
    import torch

    from .config import from_dict
    from .train import TrainConfig, Trainer

    torch.set_num_threads(1)
    baseline = read_status("VmRSS")
    cfg = from_dict(TrainConfig, {
        "data": "synthetic:move-block", "model_dir": args.model_dir, "output_dir": args.out,
        "objective": args.objective, "steps": args.steps, "batch_size": 1, "device": "cpu",
        "param_dtype": "bfloat16", "bf16": True, "eval_every": 10 ** 9, "save_every": 10 ** 9,
        "synthetic": {"examples": 8, "eval_examples": 0}, "lora": {"enabled": args.lora, "rank": 8},
        "gradient_checkpointing": True, "distributed": {"backend": "gloo", "fsdp": True}})
    start = time.perf_counter()
    trainer = Trainer(cfg)
    load_s = time.perf_counter() - start
    load_peak = read_status("VmHWM")
    resettable = reset_peak()
    start = time.perf_counter()
    losses = [trainer.train_step()["loss"] for _ in range(args.steps)]
    step_s = (time.perf_counter() - start) / args.steps
    step_peak = read_status("VmHWM")
    rank = trainer.ranks.rank
    params_local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel()
                       for p in trainer.objective.parameters())
    result = {"rank": rank, "baseline_rss_bytes": baseline, "load_peak_rss_bytes": load_peak,
              "step_peak_rss_bytes": step_peak, "peak_reset_between_phases": resettable, "load_s": load_s,
              "step_s": step_s, "losses": losses, "local_parameters": params_local,
              "memory_plan": trainer.plan.to_dict()}
    Path(args.report_dir, f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    from .distributed import shutdown

    shutdown(trainer.ranks)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Write the checkpoint, launch the ranks, print the table and the JSON."""
    p = argparse.ArgumentParser(prog="python -m finetune_embodied.bench_memory", description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--objective", choices=["ar", "dida"], default="ar")
    p.add_argument("--lora", action="store_true", help="LoRA r=8 (default: full fine-tune)")
    p.add_argument("--size", choices=sorted(SIZES), default="large")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--malloc-mmap-threshold", type=int, default=65536,
                   help="glibc MALLOC_MMAP_THRESHOLD_ for the ranks (0 = glibc's dynamic default, see the docstring)")
    p.add_argument("--json", type=Path)
    p.add_argument("--work", type=Path, help="keep the checkpoint and run here (default: a temporary dir)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", dest="model_dir", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--report-dir", dest="report_dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    from emu_ros.model import Emu3Config
    from emu_ros.model.configuration_emu3 import PRESETS
    from emu_ros.model.loading import scan_checkpoint
    from emu_ros.model.random_checkpoint import write_random_lm

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    model_dir = work / args.size / "Emu3.5"
    if not (model_dir / "model.safetensors.index.json").is_file():
        config = Emu3Config.from_dict({**PRESETS["tiny"], **SIZES[args.size]})
        print(f"writing a random {args.size} checkpoint to {model_dir.parent} ...", flush=True)
        write_random_lm(model_dir, config, seed=0, num_shards=8)
    infos = scan_checkpoint(model_dir)
    n_params = sum(math.prod(info.shape) for info in infos.values())
    full_bytes = sum(math.prod(info.shape) * DTYPE_BYTES[info.dtype] for info in infos.values())
    run = work / f"run_{args.objective}_{'lora' if args.lora else 'full'}"
    reports = work / f"reports_{args.objective}_{'lora' if args.lora else 'full'}"
    for d in (run, reports):
        if d.exists():
            import shutil

            shutil.rmtree(d)
    reports.mkdir(parents=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.ranks),
           "-m", "finetune_embodied.bench_memory", "--worker", "--model-dir", str(model_dir), "--out", str(run),
           "--report-dir", str(reports), "--objective", args.objective, "--steps", str(args.steps)]
    if args.lora:
        cmd.append("--lora")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-6000:])
        return proc.returncode
    ranks = [json.loads((reports / f"rank{r}.json").read_text()) for r in range(args.ranks)]
    per_rank = [max(r["load_peak_rss_bytes"], r["step_peak_rss_bytes"]) for r in ranks]
    result = {
        "objective": args.objective, "lora": args.lora, "ranks": args.ranks, "size": args.size,
        "parameters": n_params, "full_model_bytes": full_bytes, "param_dtype": "bfloat16",
        "per_rank_peak_rss_bytes": per_rank,
        "per_rank_load_peak_rss_bytes": [r["load_peak_rss_bytes"] for r in ranks],
        "per_rank_step_peak_rss_bytes": [r["step_peak_rss_bytes"] for r in ranks],
        "per_rank_baseline_rss_bytes": [r["baseline_rss_bytes"] for r in ranks],
        "peak_over_full_model": [b / full_bytes for b in per_rank],
        "load_s": [r["load_s"] for r in ranks], "step_s": [r["step_s"] for r in ranks],
        "losses": ranks[0]["losses"], "local_parameters": [r["local_parameters"] for r in ranks],
        "memory_plan": ranks[0]["memory_plan"], "machine": f"{os.cpu_count()} CPUs, gloo, torch FSDP2",
        "malloc_mmap_threshold": args.malloc_mmap_threshold or "glibc default (dynamic)",
    }
    gb = 1e9
    print(f"\n{args.objective} {'LoRA r=8' if args.lora else 'full fine-tune'}, {args.ranks} ranks, "
          f"{n_params / 1e9:.2f}B params, full model {full_bytes / gb:.2f} GB (bf16)")
    print(f"{'rank':>4} {'baseline GB':>12} {'load peak GB':>13} {'step peak GB':>13} {'peak / model':>13}")
    for r, rep in enumerate(ranks):
        print(f"{r:>4} {rep['baseline_rss_bytes'] / gb:>12.2f} {rep['load_peak_rss_bytes'] / gb:>13.2f} "
              f"{rep['step_peak_rss_bytes'] / gb:>13.2f} {per_rank[r] / full_bytes:>13.2f}")
    print(f"plan: {result['memory_plan']['summary']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
