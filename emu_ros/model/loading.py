"""Load an official Emu3.5 model directory (config.json + sharded safetensors) without conversion.

Memory rule: the 68 GB bf16 checkpoint must never sit in RAM twice. The model is built on the
meta device (no storage), every shard is memory-mapped by safetensors, and each tensor is cast to
the requested dtype and moved to the requested device one at a time, then assigned into the
module (``load_state_dict(assign=True)``). Peak host memory is about the final model (for a CPU
load) or one tensor (for a GPU load) plus the page cache the OS can drop.

All tensor names and shapes are checked against the config from the safetensors headers before
any weight is read, and every problem is reported in one error.

``quantize="int8" | "nf4"`` quantizes each decoder Linear weight as it streams in (on the target
device), so the bf16 model never exists in full: see ``quantization.py`` for what fits where.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from .configuration_emu3 import Emu3Config
from .modeling_emu3 import Emu3ForCausalLM
from .memory_plan import balanced_layer_counts
from .placement import layer_groups, tensor_device
from .quantization import check_quantize, load_quantized_weight, replace_decoder_linears

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

_ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
              "F8_E4M3": getattr(torch, "float8_e4m3fn", None), "F8_E5M2": getattr(torch, "float8_e5m2", None)}


class CheckpointError(RuntimeError):
    """The checkpoint files do not match what the config describes; the message lists every problem."""


@dataclass
class TensorInfo:
    """One tensor as its safetensors header describes it."""

    file: str
    dtype: str
    shape: tuple[int, ...]


@dataclass
class CheckpointReport:
    """Differences between a checkpoint's tensors and the config's expectation."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)

    def message(self, limit: int = 20) -> str:
        """Human-readable listing of every problem (long lists are abbreviated)."""
        parts = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("mis-shaped", self.mis_shaped)):
            if items:
                shown = items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])
                parts.append(f"{len(items)} {title} tensor(s):\n  " + "\n  ".join(shown))
        return "\n".join(parts)


def read_safetensors_header(path: str | Path) -> dict[str, TensorInfo]:
    """Parse one shard's header (no tensor data read); a truncated or corrupt file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: shard file not found (listed in {INDEX_FILE}); re-download it")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes); re-download it")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors header (header length {n}, "
                                  f"file size {size}); re-download it")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable safetensors header ({exc}); re-download it") from None
    infos, data_end = {}, 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        infos[name] = TensorInfo(path.name, meta["dtype"], tuple(meta["shape"]))
        data_end = max(data_end, meta["data_offsets"][1])
    if 8 + n + data_end > size:
        raise CheckpointError(f"{path}: truncated safetensors file: header needs {8 + n + data_end} bytes, "
                              f"file has {size}; re-download it")
    return infos


def checkpoint_files(model_dir: str | Path) -> dict[str, str]:
    """Tensor name -> shard file name, from the index (or the single-file checkpoint)."""
    model_dir = Path(model_dir)
    index_path = model_dir / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index_path}: not a safetensors index with a 'weight_map' ({exc!r})") from None
        return dict(weight_map)
    single = model_dir / SINGLE_FILE
    if single.is_file():
        return {name: SINGLE_FILE for name in read_safetensors_header(single)}
    raise CheckpointError(f"{model_dir}: neither {INDEX_FILE} nor {SINGLE_FILE} found; point at the Emu3.5 "
                          "model directory (e.g. a download of BAAI/Emu3.5)")


def scan_checkpoint(model_dir: str | Path) -> dict[str, TensorInfo]:
    """Read every shard header; check the index agrees with the shards. Name -> TensorInfo."""
    model_dir = Path(model_dir)
    weight_map = checkpoint_files(model_dir)
    infos: dict[str, TensorInfo] = {}
    problems = []
    for file in sorted(set(weight_map.values())):
        shard = read_safetensors_header(model_dir / file)
        for name in (n for n, f in weight_map.items() if f == file):
            if name not in shard:
                problems.append(f"{name}: listed in {INDEX_FILE} under {file} but not in that file")
        infos.update(shard)
    if problems:
        raise CheckpointError(f"{model_dir}: index and shards disagree:\n  " + "\n  ".join(problems))
    return infos


def expected_shapes(config: Emu3Config) -> dict[str, tuple[int, ...]]:
    """Every checkpoint tensor name and shape the config implies (built on meta: no memory)."""
    with torch.device("meta"):
        model = Emu3ForCausalLM(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def compare_checkpoint(config: Emu3Config, infos: dict[str, TensorInfo]) -> CheckpointReport:
    """Names and shapes in the checkpoint vs the config."""
    expected = expected_shapes(config)
    report = CheckpointReport()
    report.missing = sorted(set(expected) - set(infos))
    report.unexpected = sorted(f"{n} (in {infos[n].file})" for n in set(infos) - set(expected))
    for name in sorted(set(expected) & set(infos)):
        if infos[name].shape != expected[name]:
            report.mis_shaped.append(f"{name} (in {infos[name].file}): checkpoint {list(infos[name].shape)}, "
                                     f"config expects {list(expected[name])}")
    return report


def checked_config(model_dir: Path) -> tuple[Emu3Config, dict[str, TensorInfo]]:
    """The config and tensor headers of a model directory, checked against each other (no weights read)."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: model directory not found")
    config = Emu3Config.from_json(model_dir)
    infos = scan_checkpoint(model_dir)
    report = compare_checkpoint(config, infos)
    if not report.ok:
        raise CheckpointError(f"{model_dir}: checkpoint does not match config.json\n{report.message()}")
    return config, infos


def load_lm(model_dir: str | Path, device: str | torch.device | Sequence[str | torch.device] = "cpu",
            dtype: torch.dtype = torch.bfloat16, quantize: str | None = None) -> Emu3ForCausalLM:
    """Load the Emu3.5 LM from an official model directory; returns an eval-mode Emu3ForCausalLM.

    device: one device, or several ("cuda:0,cuda:1" or a list): the decoder layers are split into
    contiguous groups across them (model/placement.py) and every tensor is loaded straight onto its
    own device, so no card ever holds more than its share.

    quantize: None (every weight in ``dtype``), "int8" (our per-channel Int8Linear) or "nf4"
    (bitsandbytes Linear4bit) for the decoder-layer Linears; embeddings, norms and lm_head stay in
    ``dtype``, which is also the compute dtype.
    """
    check_quantize(quantize)
    model_dir = Path(model_dir)
    config, infos = checked_config(model_dir)
    devices = parse_devices(device)
    # several devices: the balanced split (the end devices also hold the embedding / lm_head)
    shares = balanced_layer_counts(config, len(devices), quantize) if len(devices) > 1 else None
    layer_devices = layer_groups(config.num_hidden_layers, devices, shares)
    with torch.device("meta"):
        model = Emu3ForCausalLM(config)
    quantized = replace_decoder_linears(model, quantize, dtype) if quantize else set()
    by_file: dict[str, list[str]] = {}
    for name, info in infos.items():
        by_file.setdefault(info.file, []).append(name)
    for file, names in sorted(by_file.items()):
        _load_shard(model, model_dir / file, names, layer_devices, dtype, quantized)
    model.model.reset_buffers()
    return model.eval().requires_grad_(False)


def _load_shard(model: torch.nn.Module, path: Path, names: list[str], layer_devices: list[torch.device],
                dtype: torch.dtype, quantized: set[str] = frozenset()) -> None:
    """Assign one memory-mapped shard's tensors into the meta model, one tensor at a time, each onto
    its module's device (weights of the ``quantized`` modules are quantized there instead)."""
    try:
        shard = safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:   # safetensors raises its own error types for damaged files
        raise _damaged(path, exc) from exc
    with shard:
        for name in names:
            try:
                tensor = shard.get_tensor(name)
            except Exception as exc:
                raise _damaged(path, exc) from exc
            owner, _, attr = name.rpartition(".")
            device = tensor_device(name, layer_devices)
            if owner in quantized:
                load_quantized_weight(model.get_submodule(owner), tensor, device)
            else:
                # assign (not copy): the meta parameter is replaced by the loaded tensor itself
                setattr(model.get_submodule(owner), attr,
                        torch.nn.Parameter(tensor.to(device=device, dtype=dtype), requires_grad=False))
            del tensor


def parse_devices(device: str | torch.device | Sequence[str | torch.device]) -> list[torch.device]:
    """"cuda:0,cuda:1" / ["cuda:0", "cuda:1"] / "cuda" -> a list of devices (at least one)."""
    if isinstance(device, torch.device):
        return [device]
    items = device.split(",") if isinstance(device, str) else list(device)
    devices = [torch.device(d.strip() if isinstance(d, str) else d) for d in items if str(d).strip()]
    if not devices:
        raise ValueError(f"no device in {device!r}")
    return devices


def _damaged(path: Path, exc: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: failed to read tensors ({type(exc).__name__}: {exc}); "
                           "the shard may be damaged, re-download it")
