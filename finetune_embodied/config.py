"""A small dataclass <-> YAML/CLI layer shared by the finetune_embodied verbs (preview, make_sim_dataset, train).

Why our own: draccus (lerobot's parser) is not in our env and lerobot's own wrapper around it calls itself a hack;
this is ~100 lines. Precedence: dataclass defaults < ``--config file.yaml`` < ``--section.field value`` flags.
Nested dataclass fields become dotted flags (``--segment.min_steps 5``); the resolved config is saved as YAML next
to the outputs so a run can be reproduced from it alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or flag does not match the config dataclass; the message names the key."""


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(tp: Any) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else tp
    return tp


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type (strings from the CLI are parsed as YAML scalars)."""
    if value is None:
        return None
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if isinstance(value, str) and tp is not str:
        value = yaml.safe_load(value)
        if value is None:
            return None
    try:
        if tp is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if tp in (int, float, str):
            return tp(value)
        if origin in (list, tuple):
            (inner, *_) = typing.get_args(tp) or (Any,)
            items = value if isinstance(value, (list, tuple)) else [value]
            items = [item if inner is Any else _convert(inner, item, key) for item in items]
            return tuple(items) if origin is tuple else items
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot read {value!r} as {tp}") from None
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build a (nested) config dataclass from a mapping; unknown keys are an error, not silently dropped."""
    data = dict(data or {})
    hints = _field_types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data.pop(f.name)
        tp = _strip_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = from_dict(tp, value, prefix=f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _convert(hints[f.name], value, prefix + f.name)
    if data:
        raise ConfigError(f"unknown config keys {[prefix + k for k in data]} for {cls.__name__}; known: "
                          f"{[prefix + f.name for f in dataclasses.fields(cls)]}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-python (YAML-safe) form of a config dataclass."""
    def plain(v: Any) -> Any:
        """Recursively turn dataclasses, tuples and paths into YAML-safe values."""
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return plain(cfg)


def _flag_names(cls: type, prefix: str = "") -> list[str]:
    names = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = _strip_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            names.extend(_flag_names(tp, f"{prefix}{f.name}."))
        else:
            names.append(prefix + f.name)
    return names


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[leaf] = value


def parse_config(cls: type[T], argv: list[str] | None, description: str) -> T:
    """Parse ``--config YAML`` plus ``--a.b value`` flags into ``cls`` (defaults < YAML < flags)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML file with any of the fields below")
    for name in _flag_names(cls):
        parser.add_argument(f"--{name}", dest=name, nargs="+", default=None, metavar="V",
                            help=f"{name} (YAML scalar or list)")
    args = parser.parse_args(argv)
    data: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"--config {args.config}: file not found")
        data = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
    for name in _flag_names(cls):
        values = getattr(args, name)
        if values is not None:
            _set_dotted(data, name, values[0] if len(values) == 1 else values)
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (rule: the resolved config sits next to the outputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    return path
