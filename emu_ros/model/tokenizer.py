"""Emu3.5 text tokenizer from the official files: ``emu3.tiktoken`` + ``emu3_vision_tokens.txt``.

``emu3.tiktoken`` holds the Qwen byte-level BPE, one ``base64(bytes) rank`` line per piece.
Special tokens follow the last rank in a fixed order: ``<|endoftext|>``, ``<|im_start|>``,
``<|im_end|>``, ``<|extra_0|>`` .. ``<|extra_204|>``, then every line of
``emu3_vision_tokens.txt`` (``<|image token|>``, ``<|image start|>``, ``<|image end|>``, then the
visual tokens). With the real files that puts BOS at 151849, BOI at 151852 and visual code k at
151854 + k. Special-token strings are recognised inside ordinary text, which is how prompts carry
image strings. Text is NFC-normalised before encoding, as in the official tokenizer.
"""

from __future__ import annotations

import base64
import unicodedata
from functools import cached_property
from pathlib import Path

import tiktoken

TIKTOKEN_FILE = "emu3.tiktoken"
VISION_TOKENS_FILE = "emu3_vision_tokens.txt"

# Qwen pre-tokenizer: digits split one by one (\p{N}), so "12*34" is 5 tokens.
PAT_STR = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
           r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
LEADING_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + tuple(f"<|extra_{i}|>" for i in range(205))
VISUAL_TOKEN_FORMAT = "<|visual token {:06d}|>"

# Role names used by the official runtime (configs/*.py special_tokens) -> token strings.
SPECIAL_TOKEN_NAMES = {
    "PAD": "<|endoftext|>", "BOS": "<|extra_203|>", "EOS": "<|extra_204|>", "EOL": "<|extra_200|>",
    "EOF": "<|extra_201|>", "TMS": "<|extra_202|>", "IMG": "<|image token|>", "BOI": "<|image start|>",
    "EOI": "<|image end|>", "BSS": "<|extra_100|>", "ESS": "<|extra_101|>", "BOG": "<|extra_60|>",
    "EOG": "<|extra_61|>", "BOC": "<|extra_50|>", "EOC": "<|extra_51|>",
}


class TokenizerError(ValueError):
    """The tokenizer files are missing or malformed; the message names the file."""


def load_bpe_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse a tiktoken BPE file (``base64 rank`` per line)."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: {TIKTOKEN_FILE} not found; it ships in the Emu3.5 model directory")
    ranks = {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line:
            continue
        try:
            piece, rank = line.split()
            ranks[base64.b64decode(piece, validate=True)] = int(rank)
        except ValueError as exc:
            raise TokenizerError(f"{path}:{lineno}: not a 'base64 rank' line ({exc})") from None
    return ranks


class Emu3Tokenizer:
    """Encode/decode text with special tokens; map visual token ids <-> codebook indices."""

    def __init__(self, tiktoken_file: str | Path, vision_tokens_file: str | Path) -> None:
        ranks = load_bpe_ranks(tiktoken_file)
        vision_path = Path(vision_tokens_file)
        if not vision_path.is_file():
            raise TokenizerError(f"{vision_path}: {VISION_TOKENS_FILE} not found; it ships in the Emu3.5 "
                                 "model directory next to emu3.tiktoken")
        vision = [t.strip() for t in vision_path.read_text(encoding="utf-8").splitlines() if t.strip()]
        if vision[:3] != ["<|image token|>", "<|image start|>", "<|image end|>"]:
            raise TokenizerError(f"{vision_path}: must start with <|image token|>, <|image start|>, <|image end|>")
        for k, token in enumerate(vision[3:]):
            if token != VISUAL_TOKEN_FORMAT.format(k):
                raise TokenizerError(f"{vision_path}: line {k + 4} is {token!r}, expected "
                                     f"{VISUAL_TOKEN_FORMAT.format(k)!r}")
        start = len(ranks)
        if sorted(ranks.values()) != list(range(start)):
            raise TokenizerError(f"{tiktoken_file}: ranks must be 0..{start - 1} without gaps")
        self.special_tokens = {tok: start + i for i, tok in enumerate(LEADING_SPECIALS + tuple(vision))}
        self._enc = tiktoken.Encoding("Emu3", pat_str=PAT_STR, mergeable_ranks=ranks,
                                      special_tokens=self.special_tokens)
        self.id_to_special = {i: t for t, i in self.special_tokens.items()}
        self.num_text_tokens = start                      # ids below this are plain BPE text
        self.first_visual_id = start + len(LEADING_SPECIALS) + 3
        self.codebook_size = len(vision) - 3

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "Emu3Tokenizer":
        """Load from a model directory holding emu3.tiktoken and emu3_vision_tokens.txt."""
        model_dir = Path(model_dir)
        return cls(model_dir / TIKTOKEN_FILE, model_dir / VISION_TOKENS_FILE)

    def __len__(self) -> int:
        return self._enc.n_vocab

    # ------------------------------------------------------------------ text
    def encode(self, text: str) -> list[int]:
        """Token ids of text; special-token strings inside it become their ids (official behaviour)."""
        return self._enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of ids; with skip_special_tokens only ids below the first special remain."""
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i < self.num_text_tokens]
        return self._enc.decode(ids, errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        """Raw bytes of ids (for streaming: callers hold back incomplete UTF-8)."""
        return self._enc.decode_bytes([int(i) for i in ids])

    def token_id(self, token: str) -> int:
        """Id of a special token string or a role name (BOS, EOS, BOI, EOI, IMG, EOL, BSS, ...)."""
        token = SPECIAL_TOKEN_NAMES.get(token, token)
        if token not in self.special_tokens:
            raise KeyError(f"{token!r} is neither a special token nor a role name {sorted(SPECIAL_TOKEN_NAMES)}")
        return self.special_tokens[token]

    @cached_property
    def ids(self) -> dict[str, int]:
        """Role name -> id for every role in SPECIAL_TOKEN_NAMES."""
        return {name: self.special_tokens[tok] for name, tok in SPECIAL_TOKEN_NAMES.items()}

    @cached_property
    def digit_ids(self) -> dict[str, int]:
        """'0'..'9' and '*' -> their single-token ids (the image header alphabet)."""
        out = {}
        for ch in "0123456789*":
            ids = self._enc.encode_ordinary(ch)
            if len(ids) != 1:
                raise TokenizerError(f"{ch!r} is not a single token in {TIKTOKEN_FILE}")
            out[ch] = ids[0]
        return out

    # ------------------------------------------------------------------ visual tokens
    def visual_id(self, code: int) -> int:
        """Token id of codebook index code."""
        if not 0 <= code < self.codebook_size:
            raise ValueError(f"visual code {code} outside the codebook [0, {self.codebook_size})")
        return self.first_visual_id + code

    def visual_code(self, token_id: int) -> int:
        """Codebook index of a visual token id."""
        code = int(token_id) - self.first_visual_id
        if not 0 <= code < self.codebook_size:
            raise ValueError(f"token id {token_id} is not a visual token "
                             f"[{self.first_visual_id}, {self.first_visual_id + self.codebook_size})")
        return code

    def is_visual(self, token_id: int) -> bool:
        """True for visual token ids."""
        return self.first_visual_id <= int(token_id) < self.first_visual_id + self.codebook_size


def load_tokenizer(model_dir: str | Path) -> Emu3Tokenizer:
    """The text tokenizer of an Emu3.5 model directory (public API)."""
    return Emu3Tokenizer.from_dir(model_dir)
