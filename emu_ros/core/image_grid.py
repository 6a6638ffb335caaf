"""The official image-size rule of Emu3.5 (aspect kept, sides rounded to multiples of 16 pixels) and
the token count of one image, in one torch-free place.

Why here: the vision tokenizer resizes with it, the guidance backend sizes its token budget with it
(and must import without torch), and the memory plan counts prompt and step-image tokens with it.
"""
from __future__ import annotations

#: pixels per token side of the IBQ vision tokenizer
DOWNSAMPLE = 16
#: tokens of an image besides its rows: begin-of-image, the "H*W" size header, image, end-of-image
IMAGE_MARKER_TOKENS = 8


def area_size(height: int, width: int, area: int) -> tuple[int, int]:
    """(height, width) in pixels of a `height` x `width` image resized to `area` the official way
    (aspect kept, sides rounded to multiples of 16); divide by 16 for the token grid."""
    aspect = width / height
    new_h = int((area / aspect) ** 0.5)
    new_w = int(new_h * aspect)
    new_h = max(DOWNSAMPLE, (new_h + DOWNSAMPLE // 2) // DOWNSAMPLE * DOWNSAMPLE)
    new_w = max(DOWNSAMPLE, (new_w + DOWNSAMPLE // 2) // DOWNSAMPLE * DOWNSAMPLE)
    return new_h, new_w


def token_grid(height: int, width: int, area: int) -> tuple[int, int]:
    """(rows, cols) in tokens of a `height` x `width` image resized to `area`."""
    new_h, new_w = area_size(height, width, area)
    return new_h // DOWNSAMPLE, new_w // DOWNSAMPLE


def image_token_count(rows: int, cols: int) -> int:
    """Tokens of one image in the sequence: rows x (cols + end-of-line) plus its markers."""
    return rows * (cols + 1) + IMAGE_MARKER_TOKENS
