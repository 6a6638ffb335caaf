"""IBQ vision tokenizer of Emu3.5 (BAAI/Emu3.5-VisionTokenizer): images <-> grids of codebook indices.

A taming-VQGAN style conv encoder/decoder (16x downsampling) around an index-propagation
quantizer: the code of a latent vector is the argmax of its dot products with the 131,072
codebook rows (no L2 distance, no normalisation). Module names equal the official checkpoint
keys (``encoder.down.0.block.0.norm1.weight``, ``quantize.embedding.weight``, ...), so the official
directory (``config.yaml`` + ``model.ckpt``) loads unchanged; the checkpoint is read with
``torch.load(weights_only=True)``, which never unpickles code. Pixels map to [-1, 1] as
``x / 127.5 - 1``; decoded pixels map back with ``clamp((y + 1) * 127.5, 0, 255)`` truncated to
uint8, like the official ``decode_image``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import Tensor, nn

from emu_ros.core.image_grid import DOWNSAMPLE, area_size

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CKPT_FILE = "model.ckpt"


class VisionTokenizerError(ValueError):
    """Bad vision-tokenizer files or inputs; the message names the file, field or argument."""


@dataclass
class IBQConfig:
    """``config.yaml`` of the vision tokenizer: ``ddconfig`` (conv net) plus quantizer fields."""

    ch: int = 128
    out_ch: int = 3
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    in_channels: int = 3
    resolution: int = 256
    z_channels: int = 256
    double_z: bool = False
    dropout: float = 0.0
    resamp_with_conv: bool = True
    n_embed: int = 131072
    embed_dim: int = 256
    quantizer_extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "IBQConfig":
        """Parse the official config.yaml (top-level ddconfig, n_embed, embed_dim, loss fields)."""
        path = Path(path)
        if not path.is_file():
            raise VisionTokenizerError(f"{path}: {CONFIG_FILE} not found; point at the Emu3.5-VisionTokenizer "
                                       "directory (config.yaml + model.ckpt)")
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and "model" in data and "ddconfig" not in data:   # lightning-style nesting
            data = data["model"].get("params", data["model"])
        if not isinstance(data, dict) or not isinstance(data.get("ddconfig"), dict):
            raise VisionTokenizerError(f"{path}: expected a top-level 'ddconfig' mapping")
        dd = data["ddconfig"]
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(dd) - fields)
        if unknown:
            log.warning("%s: unknown ddconfig keys ignored: %s", path, unknown)
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dd.items() if k in fields}
        for key in ("n_embed", "embed_dim"):
            if key not in data:
                raise VisionTokenizerError(f"{path}: missing field '{key}'")
            kwargs[key] = data[key]
        extra = {k: v for k, v in data.items() if k not in ("ddconfig", "n_embed", "embed_dim")}
        cfg = cls(**kwargs, quantizer_extra=extra)
        cfg.validate(str(path))
        return cfg

    def validate(self, source: str = "config") -> None:
        """Raise naming the field if the config cannot describe a 16x IBQ tokenizer."""
        if 2 ** (len(self.ch_mult) - 1) != DOWNSAMPLE:
            raise VisionTokenizerError(f"{source}: ddconfig.ch_mult {list(self.ch_mult)} gives "
                                       f"{2 ** (len(self.ch_mult) - 1)}x downsampling; Emu3.5 needs 16x (5 levels)")
        if self.double_z:
            raise VisionTokenizerError(f"{source}: ddconfig.double_z must be false for IBQ (quant_conv takes "
                                       "z_channels)")
        for c in {self.ch * m for m in self.ch_mult}:
            if c % 32:
                raise VisionTokenizerError(f"{source}: ddconfig.ch * ch_mult gives {c} channels, not a multiple "
                                           "of 32 (GroupNorm(32) needs it)")

    def to_yaml_dict(self) -> dict[str, Any]:
        """The official config.yaml layout."""
        dd = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
              if f.name not in ("n_embed", "embed_dim", "quantizer_extra")}
        dd = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dd.items()}
        return {"ddconfig": dd, "n_embed": self.n_embed, "embed_dim": self.embed_dim, **self.quantizer_extra}


# ------------------------------------------------------------------------------------------ model
class IBQ(nn.Module):
    """Encoder -> quant_conv -> codebook argmax; codebook -> post_quant_conv -> decoder."""

    def __init__(self, config: IBQConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = Quantizer(config.n_embed, config.embed_dim)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    @torch.no_grad()
    def encode(self, images: np.ndarray | Tensor) -> Tensor:
        """uint8 RGB [N, H, W, 3] (H, W multiples of 16) -> LongTensor codes [N, H/16, W/16]."""
        x = _check_images(images)
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            x = x.copy()   # torch refuses to wrap read-only arrays (e.g. np.asarray of a PIL image)
        x = torch.as_tensor(x, device=self.device)
        x = (x.double() / 127.5 - 1.0).to(self.dtype).permute(0, 3, 1, 2)     # [N, 3, H, W] in [-1, 1]
        z = self.quant_conv(self.encoder(x))                                     # [N, D, h, w]
        return self.quantize.codes(z)

    @torch.no_grad()
    def decode(self, codes: np.ndarray | Tensor) -> np.ndarray:
        """Codes [N, h, w] (or [h, w]) -> uint8 RGB [N, 16h, 16w, 3]."""
        codes = torch.as_tensor(codes, device=self.device)
        if codes.dim() == 2:
            codes = codes[None]
        if codes.dim() != 3 or codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise VisionTokenizerError(f"codes must be an integer array [N, h, w], got {codes.dtype} "
                                       f"{list(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.config.n_embed):
            raise VisionTokenizerError(f"codes must lie in [0, {self.config.n_embed}), got "
                                       f"[{int(codes.min())}, {int(codes.max())}]")
        quant = self.quantize.embedding(codes.long()).permute(0, 3, 1, 2).to(self.dtype)   # [N, D, h, w]
        y = self.decoder(self.post_quant_conv(quant)).float()
        pixels = ((y + 1.0) * 127.5).clamp(0, 255).permute(0, 2, 3, 1)          # [N, H, W, 3]
        return pixels.cpu().numpy().astype(np.uint8)


class Quantizer(nn.Module):
    """Index-propagation codebook: code = argmax over softmax(<z, e_n>) (official tie-breaking)."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def codes(self, z: Tensor, chunk: int = 256) -> Tensor:
        """z [N, D, h, w] -> codes [N, h, w]; positions in chunks so [P, 131072] logits stay small."""
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)                              # [N*h*w, D]
        out = []
        for part in flat.split(chunk):
            logits = part @ self.embedding.weight.t()                            # [P, n_embed]
            out.append(F.softmax(logits, dim=1).max(dim=1)[1])
        return torch.cat(out).view(n, h, w)


class Encoder(nn.Module):
    """conv_in -> per level: res blocks (+attn), downsample -> mid -> norm, swish, conv_out."""

    def __init__(self, c: IBQConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, block_in = c.resolution, c.ch
        for level, mult in enumerate(c.ch_mult):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(c.num_res_blocks):
                stage.block.append(ResnetBlock(block_in, c.ch * mult))
                block_in = c.ch * mult
                if res in c.attn_resolutions:
                    stage.attn.append(AttnBlock(block_in))
            if level != len(c.ch_mult) - 1:
                stage.downsample = Downsample(block_in, c.resamp_with_conv)
                res //= 2
            self.down.append(stage)
        self.mid = _mid(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, c.z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """conv_in -> mid -> per level (low to high res): res blocks (+attn), upsample -> norm, swish, conv_out."""

    def __init__(self, c: IBQConfig) -> None:
        super().__init__()
        levels = len(c.ch_mult)
        block_in = c.ch * c.ch_mult[-1]
        res = c.resolution // 2 ** (levels - 1)
        self.conv_in = nn.Conv2d(c.z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        stages: list[nn.Module] = []
        for level in reversed(range(levels)):
            stage = nn.Module()
            stage.block, stage.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                stage.block.append(ResnetBlock(block_in, c.ch * c.ch_mult[level]))
                block_in = c.ch * c.ch_mult[level]
                if res in c.attn_resolutions:
                    stage.attn.append(AttnBlock(block_in))
            if level != 0:
                stage.upsample = Upsample(block_in, c.resamp_with_conv)
                res *= 2
            stages.insert(0, stage)          # up[0] is the highest resolution, as in the checkpoint
        self.up = nn.ModuleList(stages)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, c.out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for stage in reversed(self.up):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class ResnetBlock(nn.Module):
    """GN -> swish -> conv3 -> GN -> swish -> conv3, plus a 1x1 shortcut when channels change."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 convs, scale C^-0.5."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)       # [B, HW, C]
        k = self.k(h).reshape(b, c, hh * ww)                       # [B, C, HW]
        v = self.v(h).reshape(b, c, hh * ww)                       # [B, C, HW]
        w = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)      # [B, HWq, HWk]
        out = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after asymmetric (0,1,0,1) zero padding (or 2x2 average pooling)."""

    def __init__(self, c: int, with_conv: bool) -> None:
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "conv"):
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2, 2)


class Upsample(nn.Module):
    """Nearest 2x upsampling, then a 3x3 conv."""

    def __init__(self, c: int, with_conv: bool) -> None:
        super().__init__()
        if with_conv:
            self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def _mid(c: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)
    return mid


# ------------------------------------------------------------------------------------------ I/O
def _check_images(images: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Validate uint8 [N, H, W, 3] with sides that are multiples of 16; raise naming what is wrong."""
    dtype = images.dtype
    if dtype not in (np.uint8, torch.uint8):
        raise VisionTokenizerError(f"images must be uint8 RGB [N, H, W, 3], got dtype {dtype}; convert with "
                                   "np.asarray(img, dtype=np.uint8)")
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[3] != 3:
        raise VisionTokenizerError(f"images must have shape [N, H, W, 3], got {list(shape)}")
    if shape[1] % DOWNSAMPLE or shape[2] % DOWNSAMPLE or shape[1] == 0 or shape[2] == 0:
        raise VisionTokenizerError(f"image sides must be positive multiples of 16, got {shape[1]}x{shape[2]}; "
                                   "resize first with resize_to_area()")
    return images


def resize_to_area(image: Image.Image | np.ndarray, area: int = 518400) -> np.ndarray:
    """Official ``smart_resize``: keep aspect, target pixel area, sides rounded to x16, PIL bicubic -> uint8 HxWx3."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise VisionTokenizerError(f"image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
        image = Image.fromarray(image)
    image = image.convert("RGB")
    width, height = image.size
    new_h, new_w = area_size(height, width, area)
    return np.array(image.resize((new_w, new_h), Image.BICUBIC), dtype=np.uint8)


class _Opaque:
    """Inert stand-in for a non-tensor class or function pickled in a checkpoint (never executed)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


def load_weights_only(path: Path) -> object:
    """torch.load(weights_only=True), memory-mapped; other pickled globals (e.g. a training
    framework's hyper-parameter objects next to ``state_dict``) load as inert stubs, never as code."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:   # truncated or not a torch zip checkpoint
        raise VisionTokenizerError(f"{path}: cannot be read as a weights-only checkpoint "
                                   f"({type(exc).__name__}: {exc})") from exc
    if unsafe:
        log.warning("%s: non-tensor globals replaced by inert stubs: %s", path, unsafe)
    try:
        with torch.serialization.safe_globals([(_Opaque, name) for name in unsafe]):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise VisionTokenizerError(f"{path}: cannot be read as a weights-only checkpoint "
                                   f"({type(exc).__name__}: {exc})") from exc


def load_vision_tokenizer(tokenizer_dir: str | Path, device: str | torch.device = "cpu",
                          dtype: torch.dtype = torch.float32) -> IBQ:
    """Load the official Emu3.5-VisionTokenizer directory (config.yaml + model.ckpt), eval mode."""
    tokenizer_dir = Path(tokenizer_dir)
    config = IBQConfig.from_yaml(tokenizer_dir / CONFIG_FILE)
    ckpt_path = tokenizer_dir / CKPT_FILE
    if not ckpt_path.is_file():
        raise VisionTokenizerError(f"{ckpt_path}: {CKPT_FILE} not found next to config.yaml")
    state = load_weights_only(ckpt_path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise VisionTokenizerError(f"{ckpt_path}: holds a {type(state).__name__}, not a state dict")
    with torch.device("meta"):
        model = IBQ(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(f"{k}: file {list(state[k].shape)}, config {list(expected[k].shape)}"
                        for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or mis_shaped:
        lines = [f"{len(v)} {t}: " + ", ".join(v[:10]) + (" ..." if len(v) > 10 else "")
                 for t, v in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped)) if v]
        raise VisionTokenizerError(f"{ckpt_path}: does not match {CONFIG_FILE}\n  " + "\n  ".join(lines))
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, assign=True)
    return model.eval().requires_grad_(False)
