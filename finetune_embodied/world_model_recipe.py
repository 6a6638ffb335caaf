"""The simulator world model from nothing: dataset -> vision tokenizer -> text tokenizer -> AR LM -> DiDA -> ship.

``make world-model`` runs this. Every stage goes through the tools a user runs on their own robot data:

1. ``make_sim_dataset``: seeded closed-loop episodes of the tasks (a share with an injected missed grasp and
   the loop's recovery), training phrasings of each instruction, a LeRobot v3.0 dataset;
2. ``train_vision_tokenizer``: a small IBQ tokenizer on the dataset's camera frames (official layout);
3. ``text_tokenizer``: a byte-level BPE learned from the prompts and step texts (official file format and ids);
4. an Emu3.5-architecture LM of the ``SIM_ALOHA`` size, initialised at random, then
   ``finetune_embodied.train --objective ar`` on the ``vla`` samples (segmented by ``segment.py``, mid-trajectory
   and failure-state starts, some without history, finished-task samples), then ``--objective dida``;
5. the result is copied to ``--ship_dir`` (``models/sim-aloha``) with the embedding and head rows no training
   sample uses set to zero (git compresses them away) and stored in bf16.

Each stage is skipped when its output exists (delete the stage folder to redo it). Everything is seeded. The
defaults are the shipped model; ``--preset toy`` is the minute-long version the test suite runs end to end.

    python -m finetune_embodied.world_model_recipe --work runs/world_model --ship_dir models/sim-aloha
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import parse_config, save_config

log = logging.getLogger(__name__)

#: The shipped LM's architecture: the Emu3.5 decoder (QK-norm GQA, SwiGLU, RoPE) at laptop size.
SIM_ALOHA = dict(vocab_size=151854 + 1024, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=48, max_position_embeddings=2048,
                 rms_norm_eps=1e-6, rope_theta=1_000_000.0, image_area=96 * 128, torch_dtype="bfloat16")
TOY = dict(SIM_ALOHA, hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16,
           vocab_size=151854 + 256)

#: The prompt text every sample carries besides instructions and step texts (for the BPE).
PROMPT_TEXTS = ("You are a helpful assistant. USER: ", " ASSISTANT: ", "Steps already done: ", " was not finished",
                " failed", "The images show the scene now. Give the remaining steps from here, each a short "
                "instruction followed by an image of the scene after it.", "Step 1: ", " Step 2: ")


#: How emu_ros runs the shipped model (emu_ros.guidance.backends.sim_world_model reads it).
BACKEND_YAML = """\
# How emu_ros runs this model (emu_ros.guidance.backends.sim_world_model); written by the recipe.
tasks: [{tasks}]   # the simulated tasks it was trained on (`--planner auto` uses it for these)
mode: dida              # the decoder it was adapted for (a missing dida_config.json is an error, not AR)
device: cpu
dtype: float32          # a model this small runs faster in fp32 than in bf16 on a CPU
cameras: [cam_high]     # the camera it was trained on
max_input_images: 1
image_area: {area}      # camera views are resized to this many pixels (its training size)
view_grid: [{rows}, {cols}]      # ... which must give this token grid (the camera shape it was trained on)
step_image_area: {area} # predicted step images: the same grid
generation:
  cfg_scale: 1.0        # trained without unconditional twins: no classifier-free guidance
  seed: 0
  text: {{top_k: 1, top_p: 1.0, temperature: 0.0}}    # greedy plans
  image: {{top_k: 1, top_p: 1.0, temperature: 0.0}}   # each code its most likely value
"""


@dataclass
class RecipeConfig:
    """The whole recipe (stages in the module docstring)."""

    work: str = "runs/world_model"
    """Working directory (one folder per stage)."""
    ship_dir: str = ""
    """Copy the result here (models/sim-aloha for the shipped model); empty = keep it in work/."""
    preset: str = "sim_aloha"
    """sim_aloha (the shipped sizes) or toy (seconds per stage; the end-to-end test)."""
    tasks: list[str] = field(default_factory=lambda: ["transfer_cube", "insertion"])
    episodes_per_task: int = 64
    """Training episodes are seeds 0..N-1 of each task; evaluations use other seeds."""
    eval_episodes_per_task: int = 4
    """The last N episodes of each task are the trainer's held-out split (eval loss, step accuracy)."""
    fault_share: float = 0.3
    record_every: int = 10
    vq_steps: int = 1200
    vq_codebook: int = 1024
    ar_steps: int = 1200
    dida_steps: int = 400
    dida_passes: int = 4
    batch_size: int = 8
    lr: float = 3e-3
    history_dropout: float = 0.25
    seed: int = 0
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""

    def __post_init__(self) -> None:
        if self.preset not in ("sim_aloha", "toy"):
            raise ValueError(f"preset must be sim_aloha or toy, got {self.preset!r}")
        if self.preset == "toy":
            self.vq_codebook = 256


def _stage(name: str, done: Path):
    if done.exists():
        log.info("stage %s: %s exists, skipped", name, done)
        return False
    log.info("stage %s ...", name)
    return True


def build_dataset(cfg: RecipeConfig, root: Path) -> Path:
    from .make_sim_dataset import SimDatasetConfig, build_dataset as record

    out = root / "dataset"
    if _stage("dataset", out / "meta" / "sim_rollouts.json"):
        record(SimDatasetConfig(out=str(out), tasks=list(cfg.tasks), episodes_per_task=cfg.episodes_per_task,
                                seed=cfg.seed, record_every=cfg.record_every, fault_share=cfg.fault_share,
                                overwrite=True))
    return out


def build_vision_tokenizer(cfg: RecipeConfig, root: Path, dataset: Path) -> Path:
    from .train_vision_tokenizer import VQTrainConfig, train

    out = root / "Emu3.5-VisionTokenizer"
    if _stage("vision tokenizer", out / "metrics.json"):
        toy = cfg.preset == "toy"
        train(VQTrainConfig(data=str(dataset), out=str(out), n_embed=cfg.vq_codebook, steps=cfg.vq_steps,
                            batch_size=4 if toy else 8, seed=cfg.seed, threads=cfg.threads,
                            eval_frames=16 if toy else 256))
    return out


def training_texts(dataset: Path) -> list[str]:
    """Instructions and step texts of the dataset plus the prompt template's words (no held-out phrasing)."""
    from .dataset import LeRobotDatasetReader

    reader = LeRobotDatasetReader(dataset)
    texts = list(PROMPT_TEXTS)
    for e in reader.episode_indices:
        ep = reader.load_episode(e)
        texts += list(dict.fromkeys(ep.frame_tasks))
        texts += [n.text for n in reader.step_annotations(e, ep)]
        texts += [n.outcome for n in reader.step_annotations(e, ep) if n.outcome]
    return texts


def build_initial_lm(cfg: RecipeConfig, root: Path, dataset: Path) -> Path:
    """A random Emu3.5-layout LM of the preset's size with our tokenizer files."""
    from emu_ros.model import Emu3Config
    from emu_ros.model.random_checkpoint import write_random_lm

    from .text_tokenizer import write_text_tokenizer

    out = root / "init" / "Emu3.5"
    if _stage("initial LM", out / "model.safetensors.index.json"):
        arch = dict(TOY if cfg.preset == "toy" else SIM_ALOHA, vocab_size=151854 + cfg.vq_codebook)
        config = Emu3Config.from_dict(arch, source=f"recipe preset {cfg.preset}")
        out.mkdir(parents=True, exist_ok=True)
        write_random_lm(out, config, seed=cfg.seed, num_shards=1)   # (writes the synthetic BPE: replaced next)
        merges = write_text_tokenizer(out, training_texts(dataset), cfg.vq_codebook)
        log.info("initial LM: %s, %d BPE merges learned", out, merges)
    return out


def _eval_episodes(dataset: Path, per_task: int) -> list[int]:
    """The last `per_task` episodes of each task (rollouts are in task order)."""
    rollouts = json.loads((dataset / "meta" / "sim_rollouts.json").read_text(encoding="utf-8"))
    by_task: dict[str, list[int]] = {}
    for r in rollouts:
        by_task.setdefault(r["task"], []).append(int(r["episode_index"]))
    return sorted(i for eps in by_task.values() for i in eps[-per_task:])


def train_lm(cfg: RecipeConfig, root: Path, dataset: Path, vq_dir: Path, model_dir: Path, objective: str) -> Path:
    """One finetune_embodied.train run; returns its exported Emu3.5 directory."""
    from . import train as trainer

    out = root / objective
    final = out / "final" / "Emu3.5"
    if not _stage(f"LM {objective}", final / "config.json"):
        return final
    steps = cfg.ar_steps if objective == "ar" else cfg.dida_steps
    argv = ["--data", str(dataset), "--model_dir", str(model_dir), "--vq_dir", str(vq_dir),
            "--output_dir", str(out), "--objective", objective, "--steps", str(steps),
            "--batch_size", str(cfg.batch_size), "--optim.lr", str(cfg.lr if objective == "ar" else cfg.lr / 3),
            "--optim.warmup_steps", str(max(1, steps // 20)), "--bf16", "false", "--param_dtype", "float32",
            "--compact_vocab", "true", "--memory_check", "false", "--seed", str(cfg.seed),
            "--eval_every", str(max(1, steps // 4)), "--save_every", str(max(1, steps // 4)),
            "--eval_episodes", json.dumps(_eval_episodes(dataset, cfg.eval_episodes_per_task)),
            "--samples.history_dropout", str(cfg.history_dropout), "--samples.done_samples", "true",
            "--samples.max_length", "2048", "--cache_dir", str(root / "token_cache")]
    if objective == "dida":
        argv += ["--passes", str(cfg.dida_passes)]
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    trainer.main(argv)
    latest = sorted((out / "checkpoints").glob("step_*"))[-1] / "Emu3.5"
    if final.parent.exists():
        shutil.rmtree(final.parent)
    shutil.copytree(latest, final)
    return final


def ship(lm_dir: Path, vq_dir: Path, dest: Path, tasks: list, root: Path) -> Path:
    """Copy LM + tokenizer to dest: bf16, unused embedding/head rows zeroed (so git stores them as nothing)."""
    import torch
    from safetensors.torch import load_file

    from emu_ros.model.random_checkpoint import write_sharded_safetensors
    from emu_ros.model.loading import INDEX_FILE

    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "Emu3.5").mkdir(parents=True)
    index = json.loads((lm_dir / INDEX_FILE).read_text(encoding="utf-8"))
    weights = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(load_file(str(lm_dir / shard)))
    used = json.loads((root / "used_token_ids.json").read_text(encoding="utf-8"))
    keep = torch.zeros(weights["lm_head.weight"].shape[0], dtype=torch.bool)
    keep[torch.tensor(used)] = True
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        weights[key] = weights[key].clone()
        weights[key][~keep] = 0
    write_sharded_safetensors({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, tmp / "Emu3.5", 1)
    for f in lm_dir.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors") and f.name != INDEX_FILE:
            shutil.copy2(f, tmp / "Emu3.5" / f.name)
    cfg_path = tmp / "Emu3.5" / "config.json"
    conf = json.loads(cfg_path.read_text(encoding="utf-8"))
    conf["torch_dtype"] = "bfloat16"
    cfg_path.write_text(json.dumps(conf, indent=2) + "\n", encoding="utf-8")
    shutil.copytree(vq_dir, tmp / "Emu3.5-VisionTokenizer",
                    ignore=shutil.ignore_patterns("train_config.yaml"))
    if dest.exists():
        for sub in ("Emu3.5", "Emu3.5-VisionTokenizer"):
            if (dest / sub).exists():
                shutil.rmtree(dest / sub)
    dest.mkdir(parents=True, exist_ok=True)
    for sub in ("Emu3.5", "Emu3.5-VisionTokenizer"):
        os.replace(tmp / sub, dest / sub)
    shutil.rmtree(tmp)
    area = int(conf["image_area"])
    rows, cols = json.loads((vq_dir / "metrics.json").read_text(encoding="utf-8"))["held_out"]["token_grid"]
    settings = BACKEND_YAML.format(area=area, rows=rows, cols=cols, tasks=", ".join(tasks))
    (dest / "backend.yaml").write_text(settings, encoding="utf-8")
    return dest


def used_token_ids(root: Path) -> list[int]:
    """The embedding/head rows the AR and DiDA runs trained (their compact vocabularies: every id a training
    sample uses, the pad and mask ids, the visual codes); written to used_token_ids.json for ship()."""
    from .train import COMPACT_VOCAB_FILE

    ids: set[int] = set()
    for objective in ("ar", "dida"):
        path = root / objective / COMPACT_VOCAB_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: the {objective} stage predates it; delete {root / objective} "
                                    "and run the recipe again")
        ids |= set(json.loads(path.read_text(encoding="utf-8")))
    out = sorted(ids)
    (root / "used_token_ids.json").write_text(json.dumps(out), encoding="utf-8")
    return out


def run(cfg: RecipeConfig) -> dict:
    """All stages; returns a summary with the time each took."""
    root = Path(cfg.work)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "recipe_config.yaml")
    times = {}
    t = time.time()
    dataset = build_dataset(cfg, root)
    times["dataset_s"], t = round(time.time() - t, 1), time.time()
    vq_dir = build_vision_tokenizer(cfg, root, dataset)
    times["vision_tokenizer_s"], t = round(time.time() - t, 1), time.time()
    init = build_initial_lm(cfg, root, dataset)
    ar = train_lm(cfg, root, dataset, vq_dir, init, "ar")
    times["ar_s"], t = round(time.time() - t, 1), time.time()
    dida = train_lm(cfg, root, dataset, vq_dir, ar, "dida")
    times["dida_s"], t = round(time.time() - t, 1), time.time()
    used_token_ids(root)
    summary = {"dataset": str(dataset), "vision_tokenizer": str(vq_dir), "ar": str(ar), "dida": str(dida), **times}
    if cfg.ship_dir:
        summary["shipped"] = str(ship(dida, vq_dir, Path(cfg.ship_dir), list(cfg.tasks), root))
    (root / "recipe_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MUJOCO_GL", "egl")
    cfg = parse_config(RecipeConfig, argv, __doc__ or "")
    print(json.dumps(run(cfg), indent=1))


if __name__ == "__main__":
    main()
