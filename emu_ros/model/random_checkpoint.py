"""Write a random Emu3.5 checkpoint in the official directory layout (for tests and benchmarks).

The real weights and vocabulary cannot be downloaded here, so this writes what the official
release contains, with random numbers and a synthetic BPE:

    out_dir/
      Emu3.5/                       config.json, generation_config.json,
                                    model-0000N-of-0000M.safetensors + model.safetensors.index.json,
                                    emu3.tiktoken, emu3_vision_tokens.txt
      Emu3.5-VisionTokenizer/       config.yaml, model.ckpt

The synthetic ``emu3.tiktoken`` has exactly 151,643 ranks (so every special token and visual
token gets its official id), the 256 single bytes in GPT-2/Qwen byte order (so '0'..'9' are 15..24,
'*' is 9, space 220, newline 198 as in the real file), then byte pairs and short letter strings.
"""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from typing import Callable

import torch
import yaml
from safetensors.torch import save_file

from .configuration_emu3 import Emu3Config, preset_config
from .loading import INDEX_FILE
from .modeling_emu3 import Emu3ForCausalLM
from .tokenizer import TIKTOKEN_FILE, VISION_TOKENS_FILE, VISUAL_TOKEN_FORMAT
from .vision_tokenizer import CKPT_FILE, CONFIG_FILE, IBQ, IBQConfig

NUM_BPE_RANKS = 151643   # ranks in the official emu3.tiktoken; specials start right after
LM_DIR = "Emu3.5"
VQ_DIR = "Emu3.5-VisionTokenizer"

VQ_PRESETS: dict[str, dict] = {
    # Same architecture as the release (5 levels, 16x), small widths.
    "tiny": dict(ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(16,), resolution=256,
                 z_channels=32, n_embed=1024, embed_dim=32),
    # Published facts: codebook 131072 x 256; widths are a guess (not published), ~455M is the paper's size.
    "full": dict(ch=256, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=4, attn_resolutions=(16,), resolution=256,
                 z_channels=256, n_embed=131072, embed_dim=256),
}


def gpt2_byte_order() -> list[int]:
    """Byte values in GPT-2/Qwen BPE rank order: printable bytes first, then the rest."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    return printable + [b for b in range(256) if b not in printable]


def synthetic_bpe_pieces(n: int = NUM_BPE_RANKS) -> list[bytes]:
    """n distinct BPE pieces whose every prefix-split is reachable (all byte pairs are pieces)."""
    pieces = [bytes([b]) for b in gpt2_byte_order()]
    pieces += [bytes([a, b]) for a in range(256) for b in range(256)]
    seen = set(pieces)
    letters = b"abcdefghijklmnopqrstuvwxyz"
    for length in (3, 4, 5):
        for combo in itertools.product(letters, repeat=length):
            if len(pieces) >= n:
                return pieces[:n]
            piece = bytes(combo)
            if piece not in seen:
                seen.add(piece)
                pieces.append(piece)
    return pieces[:n]


def write_tokenizer_files(model_dir: Path, codebook_size: int) -> None:
    """emu3.tiktoken (synthetic, official format) and emu3_vision_tokens.txt (official content)."""
    lines = (base64.b64encode(p) + b" " + str(i).encode() for i, p in enumerate(synthetic_bpe_pieces()))
    (model_dir / TIKTOKEN_FILE).write_bytes(b"\n".join(lines) + b"\n")
    vision = ["<|image token|>", "<|image start|>", "<|image end|>"]
    vision += [VISUAL_TOKEN_FORMAT.format(k) for k in range(codebook_size)]
    (model_dir / VISION_TOKENS_FILE).write_text("\n".join(vision) + "\n", encoding="utf-8")


def _lm_shapes(config: Emu3Config) -> dict[str, torch.Size]:
    """Every checkpoint tensor name and shape, in state-dict order (built on meta: no memory)."""
    with torch.device("meta"):
        return {k: v.shape for k, v in Emu3ForCausalLM(config).state_dict().items()}


def _random_tensor(name: str, shape: torch.Size, config: Emu3Config, gen: torch.Generator,
                   dtype: torch.dtype) -> torch.Tensor:
    """Random weights (normal std 0.02 for matrices, norms near 1), in ``dtype``."""
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * torch.randn(shape, generator=gen)).to(dtype)
    return (config.initializer_range * torch.randn(shape, generator=gen)).to(dtype)


def _shard_groups(names: list[str], sizes: list[int], num_shards: int) -> list[list[str]]:
    """Consecutive names split into up to ``num_shards`` groups of about equal bytes."""
    target = sum(sizes) / num_shards
    shards: list[list[str]] = [[]]
    acc = 0.0
    for name, size in zip(names, sizes):
        if acc >= target * len(shards) and len(shards) < num_shards:
            shards.append([])
        shards[-1].append(name)
        acc += size
    return shards


def _write_shards(model_dir: Path, groups: list[list[str]], tensors: Callable[[list[str]], dict[str, torch.Tensor]],
                  total_size: int) -> None:
    """model-0000i-of-0000n.safetensors (``tensors(group)`` called per shard, so only one shard is held at a
    time) plus model.safetensors.index.json."""
    weight_map = {}
    for i, group in enumerate(groups, 1):
        file = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file(tensors(group), str(model_dir / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in group})
    index = {"metadata": {"total_size": int(total_size)}, "weight_map": weight_map}
    (model_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def write_sharded_safetensors(state: dict[str, torch.Tensor], model_dir: Path, num_shards: int) -> None:
    """Official sharding: model-0000i-of-0000n.safetensors plus model.safetensors.index.json."""
    names = list(state)
    sizes = [state[n].numel() * state[n].element_size() for n in names]
    _write_shards(model_dir, _shard_groups(names, sizes, num_shards),
                  lambda group: {n: state[n].contiguous() for n in group}, sum(sizes))


def write_random_lm(model_dir: str | Path, config: Emu3Config, seed: int = 0, num_shards: int = 3) -> Path:
    """Write the LM directory (config, generation config, shards, index, tokenizer files).

    The weights are generated shard by shard (one generator, in state-dict order), so a checkpoint larger
    than this host's RAM can be written as long as one shard fits.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    config.save(model_dir / "config.json")
    gen_cfg = {"_from_model_config": True, "bos_token_id": config.bos_token_id,
               "eos_token_id": config.eos_token_id, "pad_token_id": config.pad_token_id}
    (model_dir / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")
    shapes = _lm_shapes(config)
    dtype = getattr(torch, config.torch_dtype or "bfloat16")
    names = list(shapes)
    sizes = [shapes[n].numel() * _dtype_bytes(config.torch_dtype) for n in names]
    gen = torch.Generator().manual_seed(seed)
    _write_shards(model_dir, _shard_groups(names, sizes, num_shards),
                  lambda group: {n: _random_tensor(n, shapes[n], config, gen, dtype) for n in group}, sum(sizes))
    write_tokenizer_files(model_dir, config.codebook_size)
    return model_dir


def write_random_vision_tokenizer(vq_dir: str | Path, config: IBQConfig, seed: int = 0) -> Path:
    """Write config.yaml + model.ckpt (a plain state dict, loadable with weights_only=True)."""
    vq_dir = Path(vq_dir)
    vq_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = IBQ(config)
    with torch.no_grad():   # spread the codebook so random images do not all pick one code
        model.quantize.embedding.weight.normal_(0.0, 1.0)
    (vq_dir / CONFIG_FILE).write_text(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
    torch.save(model.state_dict(), vq_dir / CKPT_FILE)
    return vq_dir


def write_random_checkpoint(out_dir: str | Path, config: str | Emu3Config = "tiny", seed: int = 0,
                            vq_config: str | IBQConfig | None = None) -> Path:
    """Write ``out_dir/Emu3.5`` and ``out_dir/Emu3.5-VisionTokenizer`` with random weights; return out_dir."""
    out_dir = Path(out_dir)
    lm_config = preset_config(config) if isinstance(config, str) else config
    if vq_config is None:
        vq_config = config if isinstance(config, str) else "tiny"
    if isinstance(vq_config, str):
        vq_config = IBQConfig(**VQ_PRESETS[vq_config])
    if vq_config.n_embed != lm_config.codebook_size:
        raise ValueError(f"vision codebook n_embed={vq_config.n_embed} but the LM vocabulary holds "
                         f"{lm_config.codebook_size} visual tokens (vocab_size - {lm_config.first_visual_token_id})")
    lm_bytes = lm_config.num_parameters() * _dtype_bytes(lm_config.torch_dtype)
    if lm_bytes > _host_ram_bytes() // 2:
        raise ValueError(f"a random {lm_bytes / 1e9:.1f} GB checkpoint does not fit in half this host's RAM "
                         f"({_host_ram_bytes() / 1e9:.1f} GB); use config='tiny', or benchmark "
                         "the full size without files: python -m emu_ros.bench.decode --config full")
    write_random_lm(out_dir / LM_DIR, lm_config, seed)
    write_random_vision_tokenizer(out_dir / VQ_DIR, vq_config, seed)
    return out_dir


def _dtype_bytes(name: str | None) -> int:
    return torch.empty((), dtype=getattr(torch, name or "bfloat16")).element_size()


def _host_ram_bytes() -> int:
    import os
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
