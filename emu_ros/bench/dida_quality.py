"""DiDA quality on a task with known answers: a tiny Emu3.5-shaped model trained AR, then DiDA-adapted.

Task (``emu_ros.model.synthetic_task.MoveTask``): a 6 x 6 token-grid table with two coloured blocks; "Move the red block
left." determines the next image exactly; "... sideways." has two valid answers (left or right).
Steps, all on the CPU with one thread: write a random checkpoint in the official layout (Emu3.5
vocabulary and special ids, small widths), train it autoregressively, then DiDA-adapt the exported AR
model with mask noise and (separately) with uniform noise — both through the one trainer,
``finetune_embodied.train`` (``--objective ar``, then ``--objective dida``, ``--data
synthetic:move-block``, compact vocabulary) — then decode held-out prompts through the real
runtime (``generate`` with the official prompts, CFG rows and sampling settings) with the AR decoder
and with ``DiDAImageDecoder`` at K = 1, 2, 4, 8. Reported per decoder: image-token accuracy and
exact-image rate on the deterministic prompts, pixel error of the rendered grids, the valid rate on
the multi-answer prompts (an output must equal one valid image, not a blend), forward passes and
wall time per image. The headline AR numbers (``ar_token_acc``, ``multi_answer_valid_rate.ar``) decode
the *adapted* weights autoregressively, so AR and DiDA differ only in the decoder (same weights, same
training steps); ``ar`` / ``ar_before_adaptation_token_acc`` is the AR model before adaptation (fewer
steps), and the AR rows per noise show the AR path survives adaptation.

Usage::

    python -m emu_ros.bench.dida_quality --json /tmp/dida_quality.json      # ~9 min on 2 CPU cores
    python -m emu_ros.bench.dida_quality --noise mask --steps-ar 200 --steps-dida 100   # quicker look
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from finetune_embodied.checkpoint import LM_DIR, latest_checkpoint
from finetune_embodied.config import from_dict
from finetune_embodied.train import TrainConfig, Trainer

from emu_ros.model.synthetic_task import MoveTask, Scene, pixel_mae, token_accuracy, valid
from emu_ros.model.configuration_emu3 import PRESETS, Emu3Config
from emu_ros.model.dida import DiDAConfig, DiDAImageDecoder
from emu_ros.model.generation import ARImageDecoder, GenerationConfig, SamplingParams, SpecialIds, generate
from emu_ros.model.loading import load_lm
from emu_ros.model.random_checkpoint import write_random_checkpoint
from emu_ros.model.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

# Emu3.5 vocabulary and ids (tiny preset), a model just big enough to learn the task on a CPU in minutes.
BENCH_MODEL = {**PRESETS["tiny"], "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32}
PASSES = (1, 2, 4, 8)


class TimedDecoder:
    """Wraps an image decoder and records the wall time of each image body."""

    def __init__(self, inner: Callable) -> None:
        self.inner, self.seconds = inner, []

    def __call__(self, session, header, height, width, cancel=None):
        start = time.perf_counter()
        codes = self.inner(session, header, height, width, cancel)
        self.seconds.append(time.perf_counter() - start)
        return codes


def decode_all(lm, task: MoveTask, scenes: list[Scene], make_decoder: Callable, ids: SpecialIds, cfg_scale: float,
               image: SamplingParams, seed: int) -> tuple[list[np.ndarray], float]:
    """The decoded next image of every scene and the mean seconds per image body."""
    preds, seconds = [], []
    for n, scene in enumerate(scenes):
        cond, uncond = task.prompts(scene)
        dec = TimedDecoder(make_decoder())
        config = GenerationConfig(image=image, cfg_scale=cfg_scale, image_size=scene.grid.shape, force_image_after=0,
                                  max_images=1, max_new_tokens=64, seed=seed + n)
        result = generate(lm, cond, uncond, config, ids, image_decoder=dec)
        preds.append(result.images[0])
        seconds += dec.seconds
    return preds, float(np.mean(seconds))


def score(preds: list[np.ndarray], scenes: list[Scene]) -> dict[str, float]:
    """Token accuracy, exact rate and pixel error on deterministic scenes; valid rate on multi-answer ones."""
    det = [(p, s) for p, s in zip(preds, scenes) if not s.multi]
    multi = [(p, s) for p, s in zip(preds, scenes) if s.multi]
    out = {}
    if det:
        out["token_acc"] = float(np.mean([token_accuracy(p, s.targets[0]) for p, s in det]))
        out["exact"] = float(np.mean([np.array_equal(p, s.targets[0]) for p, s in det]))
        out["pixel_mae"] = float(np.mean([pixel_mae(p, s.targets[0]) for p, s in det]))
    if multi:
        out["valid_rate"] = float(np.mean([valid(p, s) for p, s in multi]))
        left = [np.array_equal(p, s.targets[0]) for p, s in multi if valid(p, s)]
        out["left_share"] = float(np.mean(left)) if left else float("nan")   # ~0.5: both modes sampled
    return out


def train(model_dir: Path, run_dir: Path, objective: str, steps: int, lr: float, args: argparse.Namespace,
          dida: dict | None = None) -> tuple[Path, dict]:
    """One run of the trainer on the synthetic task; returns the exported model directory and a summary."""
    cfg = from_dict(TrainConfig, {
        "data": "synthetic:move-block", "model_dir": str(model_dir), "output_dir": str(run_dir),
        "objective": objective, "dida": dida, "steps": steps, "batch_size": args.batch_size, "cond_dropout": 0.1,
        "synthetic": {"examples": args.examples, "eval_examples": 32}, "eval_every": steps, "save_every": steps,
        "keep_checkpoints": 1, "seed": args.seed, "device": "cpu", "param_dtype": "float32", "bf16": False,
        "compact_vocab": True, "samples": {"max_length": 512},
        "optim": {"lr": lr, "warmup_steps": 20, "min_lr_ratio": 0.0, "betas": [0.9, 0.95]}})
    start = time.perf_counter()
    summary = Trainer(cfg).run()
    tail = [h for h in summary_history(run_dir) if h["split"] == "train"][-20:]
    return latest_checkpoint(run_dir) / LM_DIR, {
        "seconds": time.perf_counter() - start, "loss": float(np.mean([h["loss"] for h in tail])),
        "eval_loss": (summary["last_eval"] or {}).get("loss"), "trainer": "finetune_embodied.train",
        "objective": objective, "steps": summary["step"]}


def summary_history(run_dir: Path) -> list[dict]:
    """The run's metrics.csv rows (train and eval)."""
    import csv

    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as fh:
        return [{**row, "loss": float(row["loss"])} for row in csv.DictReader(fh)]


def adapt_and_score(job: tuple) -> dict:
    """DiDA-adapt the exported AR model with one noise type, decode the held-out prompts at every K."""
    noise, ar_dir, work, args, scenes, passes = job
    torch.set_num_threads(args.threads)
    dida_dir, summary = train(ar_dir, work / f"dida-{noise}", "dida", args.steps_dida, args.dida_lr, args,
                              {"noise": noise, "visual_weight": 0.5})
    lm = load_lm(dida_dir, dtype=torch.float32)
    tok = load_tokenizer(dida_dir)
    ids, task = SpecialIds.from_tokenizer(tok), MoveTask(tok)
    image = SamplingParams(10240, 1.0, args.temperature)
    entry = {"train": summary, "passes": {}}
    for k in passes:
        dcfg = DiDAConfig(noise=noise, passes=k)
        preds, sec = decode_all(lm, task, scenes, lambda: DiDAImageDecoder(dcfg), ids, args.cfg, image, args.seed)
        entry["passes"][str(k)] = {**score(preds, scenes), "forwards": k + 2, "ms_per_image": 1000 * sec}
    preds, _ = decode_all(lm, task, scenes, ARImageDecoder, ids, args.cfg, image, args.seed)
    entry["ar_after_adaptation"] = score(preds, scenes)
    return entry


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m emu_ros.bench.dida_quality", description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--noise", choices=["both", "mask", "uniform"], default="both")
    p.add_argument("--steps-ar", type=int, default=800)
    p.add_argument("--steps-dida", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3, help="AR training peak lr")
    p.add_argument("--dida-lr", type=float, default=2e-3, help="adaptation peak lr")
    p.add_argument("--jobs", type=int, default=2, help="processes for the per-noise adaptations (1 thread each)")
    p.add_argument("--examples", type=int, default=6000, help="distinct training scenes")
    p.add_argument("--eval", type=int, default=48, help="held-out deterministic prompts")
    p.add_argument("--eval-multi", type=int, default=32, help="held-out multi-answer prompts")
    p.add_argument("--cfg", type=float, default=1.0, help="CFG scale at decoding (3.0 = deployment)")
    p.add_argument("--temperature", type=float, default=1.0, help="image sampling temperature (official 1.0)")
    p.add_argument("--passes", default=",".join(map(str, PASSES)))
    p.add_argument("--out", type=Path, help="keep the training runs (AR and adapted checkpoints) here (not for git)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, adapt, decode, print the table; optionally write JSON."""
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    passes = [int(k) for k in args.passes.split(",")]
    t0 = time.perf_counter()
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="dida_quality_"))
    root = write_random_checkpoint(work / "random", Emu3Config.from_dict(dict(BENCH_MODEL)), seed=args.seed)
    tok = load_tokenizer(root / "Emu3.5")
    ids = SpecialIds.from_tokenizer(tok)
    task = MoveTask(tok)
    eval_rng = random.Random(10_000_019 + args.seed)
    scenes = [task.sample(eval_rng, multi=False) for _ in range(args.eval)] + \
             [task.sample(eval_rng, multi=True) for _ in range(args.eval_multi)]
    image = SamplingParams(10240, 1.0, args.temperature)
    hw = scenes[0].grid.shape
    n_vis = hw[0] * hw[1]

    # 1. autoregressive training (next-token loss on the answer)
    ar_dir, ar_train = train(root / "Emu3.5", work / "ar", "ar", args.steps_ar, args.lr, args)
    lm = load_lm(ar_dir, dtype=torch.float32)
    preds, sec = decode_all(lm, task, scenes, ARImageDecoder, ids, args.cfg, image, args.seed)
    ar = {**score(preds, scenes), "forwards": 1 + n_vis, "ms_per_image": 1000 * sec, "train": ar_train}
    result = {"task": f"move-block {hw[0]}x{hw[1]}", "model": {k: BENCH_MODEL[k] for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")},
        "cfg": args.cfg, "temperature": args.temperature, "eval_prompts": args.eval,
        "eval_multi_prompts": args.eval_multi, "ar": ar, "by_noise": {}}

    # 2. DiDA adaptation of the exported AR model, per noise type (one process per noise with --jobs 2)
    noises = ["mask", "uniform"] if args.noise == "both" else [args.noise]
    jobs = [(noise, ar_dir, work, args, scenes, passes) for noise in noises]
    if args.jobs > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(args.jobs, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
            entries = list(pool.map(adapt_and_score, jobs))
    else:
        entries = [adapt_and_score(job) for job in jobs]
    result["by_noise"] = dict(zip(noises, entries))

    # AR vs DiDA on the same weights (the adapted model decoded both ways): the decoder is the only difference.
    primary = noises[0]
    entry = result["by_noise"][primary]
    same = {**entry["ar_after_adaptation"], "forwards": 1 + n_vis}
    result.update({
        "noise": primary,
        "ar_token_acc": same.get("token_acc"),
        "ar_before_adaptation_token_acc": ar.get("token_acc"),
        "dida_token_acc": {k: v.get("token_acc") for k, v in entry["passes"].items()},
        "multi_answer_valid_rate": {"ar": same.get("valid_rate"),
                                    **{f"dida_{k}": v.get("valid_rate") for k, v in entry["passes"].items()}},
        "seconds_total": time.perf_counter() - t0,
    })
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def print_table(result: dict) -> None:
    """One line per decoder."""
    head = (f"{'decoder':<16}{'token acc':>10}{'exact':>8}{'pixel MAE':>11}{'multi valid':>13}{'forwards':>10}"
            f"{'ms/image':>10}")
    print(f"\nDiDA quality, {result['task']}, CFG {result['cfg']}, T={result['temperature']}, "
          f"{result['eval_prompts']} + {result['eval_multi_prompts']} held-out prompts")
    print(head)
    print("-" * len(head))

    def row(name: str, r: dict) -> None:
        print(f"{name:<16}{100 * r.get('token_acc', float('nan')):>9.1f}%{100 * r.get('exact', float('nan')):>7.1f}%"
              f"{r.get('pixel_mae', float('nan')):>11.2f}{100 * r.get('valid_rate', float('nan')):>12.1f}%"
              f"{r.get('forwards', ''):>10}{r.get('ms_per_image', float('nan')):>10.1f}")

    row("AR (before)", result["ar"])
    for noise, entry in result["by_noise"].items():
        for k, r in entry["passes"].items():
            row(f"DiDA-{noise} K={k}", r)
        row(f"AR, {noise} wts", entry["ar_after_adaptation"])
    print(f"total {result['seconds_total']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
