"""Train a small IBQ vision tokenizer on a LeRobot dataset's camera frames, written in the official layout.

The release's tokenizer (455M parameters, 131,072 codes) is far too big to train or run on a laptop, so the
simulator world model gets its own: the same IBQ architecture as ``emu_ros.model.vision_tokenizer`` (five
levels, 16x downsampling, index-backpropagation quantizer), small widths, a small codebook, saved as
``config.yaml`` + ``model.ckpt`` so ``load_vision_tokenizer`` loads it like the official download.

Training follows the IBQ paper's quantizer (a hard one-hot of the dot-product codebook logits with the softmax's
gradient, so every code receives gradient) with three changes for a short CPU run, and without the perceptual
and adversarial terms (no pretrained VGG or discriminator here): the encoder also gets the straight-through
gradient of its code, code vectors are kept at unit norm (the runtime's dot-product argmax then picks the nearest
direction) and codes left unused are restarted on encoder outputs. Loss = L1 + L2 reconstruction + codebook and
commitment terms + a batch-entropy term. Held-out frames (the last episodes) give PSNR / SSIM
of the reconstructions, written to ``metrics.json``.

    python -m finetune_embodied.train_vision_tokenizer --data runs/sim_dataset --out runs/vq --steps 2000
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from .config import parse_config, save_config

log = logging.getLogger(__name__)


@dataclass
class VQTrainConfig:
    """Options of the vision-tokenizer trainer."""

    data: str = ""
    """Required: a local LeRobot v3.0 dataset root."""
    camera: str = ""
    """Camera whose frames are used (default: the dataset's first)."""
    out: str = "runs/vision_tokenizer"
    """Directory to write config.yaml, model.ckpt and metrics.json into."""
    ch: int = 32
    """Base width of the encoder/decoder (x ch_mult (1, 1, 2, 2, 4) per level)."""
    z_channels: int = 32
    embed_dim: int = 32
    n_embed: int = 1024
    """Codebook size (the LM's visual vocabulary)."""
    num_res_blocks: int = 1
    steps: int = 2000
    batch_size: int = 16
    crop: list[int] | None = None
    """Train on random [h, w] crops on the 16-pixel grid (a fully convolutional net: ~4x cheaper at half
    height and width); held-out metrics are always on whole frames. None = whole frames."""
    lr: float = 1e-3
    beta: float = 0.25
    """Commitment weight (encoder output towards its code)."""
    entropy_weight: float = 0.01
    """Weight of the batch-entropy term (higher = more codes used)."""
    renew_every: int = 50
    """Steps between codebook renewals (unit norm + restart of the codes unused since the last one; the last
    10% of the steps only renormalise)."""
    eval_fraction: float = 0.15
    """Share of episodes held out (the last ones) for PSNR / SSIM."""
    eval_frames: int = 256
    seed: int = 0
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""


def load_frames(data: str, camera: str, eval_fraction: float) -> tuple[np.ndarray, np.ndarray, str]:
    """(train frames, held-out frames, camera) as uint8 [N, H, W, 3]; held out = the last episodes."""
    from .dataset import LeRobotDatasetReader

    reader = LeRobotDatasetReader(data)
    camera = camera or reader.camera_keys[0]
    episodes = reader.episode_indices
    n_eval = max(1, int(round(len(episodes) * eval_fraction))) if len(episodes) > 1 else 0
    split = {"train": episodes[:len(episodes) - n_eval], "eval": episodes[len(episodes) - n_eval:]}
    out = {}
    for name, eps in split.items():
        frames = [reader.frames(e, camera, list(range(reader.episode_meta(e).length))) for e in eps]
        out[name] = np.concatenate(frames) if frames else np.zeros((0,) + reader.camera_shape(camera), np.uint8)
    return out["train"], out["eval"], camera


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(0, 3, 1, 2).contiguous()


def _batch(frames: np.ndarray, rng: np.random.Generator, size: int, crop: list[int] | None) -> np.ndarray:
    """Random frames, or random crops on the 16-pixel token grid."""
    picked = frames[rng.integers(0, len(frames), size)]
    if not crop:
        return picked
    ch, cw = int(crop[0]), int(crop[1])
    h, w = frames.shape[1:3]
    if ch % 16 or cw % 16 or ch > h or cw > w:
        raise ValueError(f"crop {crop} must be multiples of 16 within the {h}x{w} frames")
    out = np.empty((size, ch, cw, 3), np.uint8)
    for i, f in enumerate(picked):
        y = 16 * int(rng.integers(0, (h - ch) // 16 + 1))
        x = 16 * int(rng.integers(0, (w - cw) // 16 + 1))
        out[i] = f[y:y + ch, x:x + cw]
    return out


def quantize_train(model, z: torch.Tensor, cfg: VQTrainConfig) -> tuple[torch.Tensor, torch.Tensor, Tensor]:
    """Quantize with gradients. The code is the runtime's (argmax of the dot-product logits); the codebook learns
    through IBQ's index backpropagation (hard one-hot, softmax gradient) and the codebook term, the encoder through
    the straight-through copy of the code (the VQ-VAE estimator: without it a short CPU run never leaves the
    mean image, the softmax over 1,024 codes passes it almost no gradient). Returns (quantized, loss, codes)."""
    n, d, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    emb = model.quantize.embedding.weight
    logits = flat @ emb.t()
    soft = logits.softmax(dim=1)
    index = logits.argmax(dim=1)   # the same code the runtime's Quantizer.codes picks
    hard = F.one_hot(index, emb.shape[0]).to(soft.dtype)
    zq_code = (hard - soft.detach() + soft) @ emb          # value: the code vectors
    codebook = F.mse_loss(zq_code, flat.detach())
    commit = F.mse_loss(flat, zq_code.detach())
    mean = soft.mean(dim=0)
    per_sample = -(soft * soft.clamp_min(1e-9).log()).sum(dim=1).mean()
    batch = -(mean * mean.clamp_min(1e-9).log()).sum()
    loss = codebook + cfg.beta * commit + cfg.entropy_weight * (per_sample - batch)
    zq = flat + (zq_code - flat).detach()                   # the code's value, the encoder's gradient
    return zq.view(n, h, w, d).permute(0, 3, 1, 2), loss, index


@torch.no_grad()
def renew_codebook(model, usage: torch.Tensor, z: torch.Tensor, rng: np.random.Generator) -> int:
    """Unit-norm code vectors (so the runtime's dot-product argmax is the nearest direction), and codes unused
    since the last renewal restarted on encoder outputs of this batch (dead-code restart). Returns how many."""
    emb = model.quantize.embedding.weight
    dead = (usage == 0).nonzero().flatten()
    if len(dead):
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        pick = torch.from_numpy(rng.integers(0, len(flat), len(dead)))
        emb[dead] = flat[pick] + 0.01 * torch.randn(len(dead), emb.shape[1])
    emb.copy_(F.normalize(emb, dim=1))
    return int(len(dead))


def reconstruction_metrics(vq, frames: np.ndarray, batch: int = 32) -> dict:
    """Mean PSNR / SSIM (grey, 7-px windows) of encode -> decode on frames, and the token grid."""
    from emu_ros.bridge.visual_check import grey_ssim, psnr

    ps, ss = [], []
    grid = None
    for i in range(0, len(frames), batch):
        part = frames[i:i + batch]
        codes = vq.encode(part)
        grid = tuple(codes.shape[1:])
        recon = vq.decode(codes)
        for a, b in zip(part, recon):
            ps.append(psnr(a, b))
            ss.append(grey_ssim(a, b))
    return {"psnr_db": float(np.mean(ps)), "ssim": float(np.mean(ss)), "frames": len(frames),
            "token_grid": list(grid) if grid else None}


def train(cfg: VQTrainConfig) -> dict:
    """Train, save the official layout into cfg.out and return the metrics."""
    from tqdm import tqdm

    from emu_ros.model.vision_tokenizer import CKPT_FILE, CONFIG_FILE, IBQ, IBQConfig, load_vision_tokenizer

    if not cfg.data:
        raise ValueError("--data is required (a LeRobot v3.0 dataset root)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_frames, eval_frames, camera = load_frames(cfg.data, cfg.camera, cfg.eval_fraction)
    if len(train_frames) == 0:
        raise ValueError(f"{cfg.data}: no training frames for camera {camera!r}")
    h, w = train_frames.shape[1:3]
    if h % 16 or w % 16:
        raise ValueError(f"{cfg.data}: frames are {h}x{w}; the 16x tokenizer needs multiples of 16")
    config = IBQConfig(ch=cfg.ch, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=cfg.num_res_blocks, attn_resolutions=(16,),
                       resolution=256, z_channels=cfg.z_channels, n_embed=cfg.n_embed, embed_dim=cfg.embed_dim)
    config.validate("VQTrainConfig")
    model = IBQ(config).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / cfg.steps))))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc="vision tokenizer", unit="step")
    history = []
    usage = torch.zeros(cfg.n_embed, dtype=torch.long)
    used = 0
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(F.normalize(model.quantize.embedding.weight, dim=1))
    for step in bar:
        x = _to_tensor(_batch(train_frames, rng, cfg.batch_size, cfg.crop))
        z = model.quant_conv(model.encoder(x))
        zq, qloss, codes = quantize_train(model, z, cfg)
        usage += torch.bincount(codes, minlength=cfg.n_embed)
        y = model.decoder(model.post_quant_conv(zq))
        rec = F.l1_loss(y, x) + F.mse_loss(y, x)
        loss = rec + qloss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        restarted = 0
        if step % cfg.renew_every == 0 or step == cfg.steps - 1:
            used = int((usage > 0).sum())
            restarted = renew_codebook(model, usage if step < cfg.steps * 0.9 else usage + 1, z, rng)
            usage.zero_()
        if step % 20 == 0 or step == cfg.steps - 1:
            bar.set_postfix(rec=f"{rec.item():.4f}", codes=used)
            history.append({"step": step, "rec": rec.item(), "quant": qloss.item(), "codes_used": used,
                            "restarted": restarted})
    train_s = time.time() - t0
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False), encoding="utf-8")
    torch.save({"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}, out / CKPT_FILE)
    vq = load_vision_tokenizer(out)   # measured through the loader users have
    pick = rng.choice(len(eval_frames), min(cfg.eval_frames, len(eval_frames)), replace=False) \
        if len(eval_frames) else []
    metrics = {"camera": camera, "image_hw": [int(h), int(w)], "train_frames": int(len(train_frames)),
               "steps": cfg.steps, "train_s": round(train_s, 1),
               "parameters": int(sum(p.numel() for p in model.parameters())),
               "held_out": reconstruction_metrics(vq, eval_frames[pick]) if len(pick) else None,
               "codes_used_at_the_end": history[-1]["codes_used"], "curve": history[::10]}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    save_config(cfg, out / "train_config.yaml")
    return metrics


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = parse_config(VQTrainConfig, argv, __doc__ or "")
    m = train(cfg)
    print(json.dumps({k: v for k, v in m.items() if k != "curve"}, indent=1))


if __name__ == "__main__":
    main()
