"""``emu-ros check-model DIR``: verify a downloaded Emu3.5 directory in seconds, without loading weights.

Checks config.json, the shard index, every shard header (names, shapes, truncation) against the
config, the tokenizer files and their special-token ids, and (if present or given) the vision
tokenizer directory's config.yaml and checkpoint key names. Only safetensors headers and small
text files are read; the vision checkpoint is opened memory-mapped.

Example::

    python -m emu_ros.model.check models/Emu3.5 --vq-dir models/Emu3.5-VisionTokenizer
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .configuration_emu3 import ConfigError, Emu3Config
from .loading import CheckpointError, compare_checkpoint, scan_checkpoint
from .tokenizer import Emu3Tokenizer, TokenizerError

# Official ids (reference/emu35-facts.md §1.3); the config's token ids must agree with the tokenizer's.
OFFICIAL_IDS = {"PAD": 151643, "EOL": 151846, "BOS": 151849, "EOS": 151850, "IMG": 151851, "BOI": 151852,
                "EOI": 151853, "BSS": 151746, "ESS": 151747}


@dataclass
class CheckResult:
    """Outcome of check-model: a list of passed checks and a list of problems."""

    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_model_dir(model_dir: str | Path, vq_dir: str | Path | None = None) -> CheckResult:
    """Run every check on an LM directory (and its vision tokenizer); never raises on bad files."""
    model_dir = Path(model_dir)
    res = CheckResult()
    if not model_dir.is_dir():
        res.problems.append(f"{model_dir}: not a directory")
        return res
    config = None
    try:
        config = Emu3Config.from_json(model_dir)
        res.passed.append(f"config.json: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
                          f"vocab {config.vocab_size}, {config.num_parameters() / 1e9:.2f}B parameters")
        if config.unknown_keys:
            res.passed.append(f"config.json: unknown keys kept: {sorted(config.unknown_keys)}")
    except ConfigError as exc:
        res.problems.append(str(exc))
    if config is not None:
        try:
            infos = scan_checkpoint(model_dir)
            report = compare_checkpoint(config, infos)
            if report.ok:
                files = sorted({i.file for i in infos.values()})
                dtypes = sorted({i.dtype for i in infos.values()})
                res.passed.append(f"weights: {len(infos)} tensors in {len(files)} file(s), dtypes {dtypes}, "
                                  "names and shapes match config.json")
            else:
                res.problems.append(f"weights do not match config.json:\n{report.message()}")
        except CheckpointError as exc:
            res.problems.append(str(exc))
    _check_tokenizer(model_dir, config, res)
    if vq_dir is None and (model_dir.parent / "Emu3.5-VisionTokenizer").is_dir():
        vq_dir = model_dir.parent / "Emu3.5-VisionTokenizer"
    if vq_dir is not None:
        _check_vision_tokenizer(Path(vq_dir), config, res)
    return res


def _check_tokenizer(model_dir: Path, config: Emu3Config | None, res: CheckResult) -> None:
    try:
        tok = Emu3Tokenizer.from_dir(model_dir)
    except TokenizerError as exc:
        res.problems.append(str(exc))
        return
    wrong = {k: (tok.ids[k], v) for k, v in OFFICIAL_IDS.items() if tok.ids[k] != v}
    if wrong:
        res.problems.append("tokenizer: special ids differ from the official ones (got, expected): "
                            + ", ".join(f"{k} {g} != {e}" for k, (g, e) in wrong.items()))
    if tok.first_visual_id != 151854:
        res.problems.append(f"tokenizer: first visual token id {tok.first_visual_id}, official 151854")
    if config is not None:
        if len(tok) != config.vocab_size:
            res.problems.append(f"tokenizer has {len(tok)} tokens but config.json vocab_size is {config.vocab_size}")
        for name, field_name in (("BOS", "bos_token_id"), ("EOS", "eos_token_id"), ("IMG", "img_token_id"),
                                 ("BOI", "boi_token_id"), ("EOI", "eoi_token_id"), ("EOL", "eol_token_id"),
                                 ("PAD", "pad_token_id")):
            if tok.ids[name] != getattr(config, field_name):
                res.problems.append(f"config.json {field_name}={getattr(config, field_name)} but the tokenizer "
                                    f"puts {name} at {tok.ids[name]}")
    try:
        digits = tok.digit_ids
        res.passed.append(f"tokenizer: {len(tok)} tokens, {tok.codebook_size} visual, header digits "
                          f"{digits['0']}..{digits['9']}, '*'={digits['*']}")
    except TokenizerError as exc:
        res.problems.append(str(exc))


def _check_vision_tokenizer(vq_dir: Path, config: Emu3Config | None, res: CheckResult) -> None:
    import torch

    from .vision_tokenizer import CKPT_FILE, CONFIG_FILE, IBQ, IBQConfig, VisionTokenizerError, load_weights_only
    try:
        vq_config = IBQConfig.from_yaml(vq_dir / CONFIG_FILE)
    except VisionTokenizerError as exc:
        res.problems.append(str(exc))
        return
    if config is not None and vq_config.n_embed != config.codebook_size:
        res.problems.append(f"{vq_dir / CONFIG_FILE}: n_embed={vq_config.n_embed} but the LM has "
                            f"{config.codebook_size} visual tokens")
    ckpt = vq_dir / CKPT_FILE
    if not ckpt.is_file():
        res.problems.append(f"{ckpt}: not found")
        return
    try:
        state = load_weights_only(ckpt)
    except VisionTokenizerError as exc:
        res.problems.append(str(exc))
        return
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in IBQ(vq_config).state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shaped = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or shaped:
        res.problems.append(f"{ckpt}: {len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected "
                            f"{unexpected[:5]}, {len(shaped)} mis-shaped {shaped[:5]}")
    else:
        res.passed.append(f"vision tokenizer: {len(state)} tensors match config.yaml (codebook "
                          f"{vq_config.n_embed}x{vq_config.embed_dim})")


def main(argv: list[str] | None = None) -> int:
    """CLI entry: print each check; exit 0 when all pass, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="emu-ros check-model", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="Emu3.5 model directory (config.json, shards, emu3.tiktoken)")
    parser.add_argument("--vq-dir", default=None, help="Emu3.5-VisionTokenizer directory (default: sibling)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    res = check_model_dir(args.model_dir, args.vq_dir)
    for line in res.passed:
        print(f"ok    {line}")
    for line in res.problems:
        print(f"FAIL  {line}")
    print(f"{'all checks passed' if res.ok else f'{len(res.problems)} problem(s)'} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
