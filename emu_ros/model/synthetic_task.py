"""A synthetic interleaved task whose correct next image is known: move a block on a token-grid table.

A scene is an H x W grid of visual codes: every row has a floor code (one of 4, random per row),
and two blocks of different colours sit on it. The instruction "Move the <colour> block <dir>." with
dir in up/down/left/right determines the next image exactly: the block moves one cell, the cell it
leaves shows its row's floor again, everything else is copied. The multi-answer variant "Move the
<colour> block sideways." has two valid next images (left or right), drawn 50/50 in training data:
a parallel decoder that mixes modes produces a blend (block in both cells, or in neither), which
``valid`` detects. Prompts use the official ``vla`` template with the current scene as the camera
image; the answer is the next image block then EOS; the unconditional twin uses the official
"no_text" prompt with the same image (for CFG and condition dropout).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from emu_ros.model.training_data import TrainExample
from emu_ros.model.prompts import build_prompt, build_unconditional_prompt
from emu_ros.model.sequence import image_string, image_token_ids
from emu_ros.model.tokenizer import Emu3Tokenizer

FLOORS = (0, 1, 2, 3)
BLOCKS = {"red": 8, "green": 9, "blue": 10, "yellow": 11}
MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
# RGB per code for the pixel-error metric (16 x 16 pixels per token, like the IBQ tokenizer's 16x)
PALETTE = {0: (90, 90, 90), 1: (120, 100, 80), 2: (80, 110, 120), 3: (140, 140, 120),
           8: (220, 40, 40), 9: (40, 200, 60), 10: (50, 70, 230), 11: (230, 210, 40)}


@dataclass
class Scene:
    """The current grid, the instruction and every valid next grid."""

    grid: np.ndarray
    question: str
    targets: list[np.ndarray]

    @property
    def multi(self) -> bool:
        return len(self.targets) > 1


class MoveTask:
    """Scene sampler and token encoder for the block-moving task."""

    def __init__(self, tok: Emu3Tokenizer, height: int = 6, width: int = 6, multi_fraction: float = 0.25) -> None:
        self.tok, self.height, self.width, self.multi_fraction = tok, height, width, multi_fraction
        if tok.codebook_size <= max(PALETTE):
            raise ValueError(f"the task needs visual codes up to {max(PALETTE)}, codebook has {tok.codebook_size}")

    def sample(self, rng: random.Random, multi: bool | None = None) -> Scene:
        """A random scene with a feasible instruction (multi=None: multi-answer with multi_fraction)."""
        if multi is None:
            multi = rng.random() < self.multi_fraction
        while True:
            floors = [rng.choice(FLOORS) for _ in range(self.height)]
            grid = np.array([[f] * self.width for f in floors], dtype=np.int64)           # [H, W]
            colours = rng.sample(sorted(BLOCKS), 2)
            cells = rng.sample([(r, c) for r in range(self.height) for c in range(self.width)], 2)
            for colour, (r, c) in zip(colours, cells):
                grid[r, c] = BLOCKS[colour]
            colour, (r, c) = colours[0], cells[0]
            dirs = ["left", "right"] if multi else [rng.choice(sorted(MOVES))]
            targets = []
            for d in dirs:
                dr, dc = MOVES[d]
                nr, nc = r + dr, c + dc
                if not (0 <= nr < self.height and 0 <= nc < self.width) or (nr, nc) == cells[1]:
                    break
                nxt = grid.copy()
                nxt[r, c] = floors[r]
                nxt[nr, nc] = BLOCKS[colour]
                targets.append(nxt)
            if len(targets) == len(dirs):
                word = "sideways" if multi else dirs[0]
                return Scene(grid, f"Move the {colour} block {word}.", targets)

    def prompts(self, scene: Scene) -> tuple[list[int], list[int]]:
        """Token ids of the official conditional and unconditional prompts with the scene as camera image."""
        img = image_string(scene.grid)
        return (self.tok.encode(build_prompt("vla", scene.question, [img])),
                self.tok.encode(build_unconditional_prompt([img])))

    def examples(self, count: int, seed: int) -> list[TrainExample]:
        """count training examples; scene and answer choice come from one rng stream per example (a fresh
        Random(i) for the choice would correlate it with the scene's first draw, i.e. with "multi")."""
        out = []
        for i in range(count):
            rng = random.Random(seed * 1_000_003 + i)
            out.append(self.example(self.sample(rng), rng))
        return out

    def example(self, scene: Scene, rng: random.Random | None = None) -> TrainExample:
        """Prompt + next image + EOS (one valid target, drawn with rng for multi-answer scenes)."""
        target = scene.targets[(rng or random).randrange(len(scene.targets))]
        answer = image_token_ids(target, self.tok) + [self.tok.token_id("EOS")]
        cond, uncond = self.prompts(scene)
        return TrainExample(cond + answer, len(cond), uncond + answer, len(uncond))


def token_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of grid cells equal to the target."""
    return float((pred == target).mean())


def valid(pred: np.ndarray, scene: Scene) -> bool:
    """True when the prediction is exactly one of the valid next images (not a blend)."""
    return any(np.array_equal(pred, t) for t in scene.targets)


def render(grid: np.ndarray) -> np.ndarray:
    """uint8 RGB [16H, 16W, 3]: each code painted as a 16 x 16 patch (unknown codes black)."""
    lut = np.zeros((int(max(grid.max(), max(PALETTE))) + 1, 3), dtype=np.uint8)
    for code, rgb in PALETTE.items():
        lut[code] = rgb
    return np.repeat(np.repeat(lut[grid], 16, axis=0), 16, axis=1)


def pixel_mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute RGB error (0..255) between the rendered images."""
    return float(np.abs(render(pred).astype(np.int32) - render(target).astype(np.int32)).mean())
