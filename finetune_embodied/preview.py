"""Write a storyboard of the step segmentation (HTML + one PNG per episode) for a human to check.

Each episode row shows the first frame with the task, then the key frame after each step with its text and frame
range, and a strip with the gripper signals / joint speed and the step boundaries.

    python -m finetune_embodied.preview --dataset /data/aloha_sim --out runs/storyboard \
        --episodes 0 1 2 --camera top --segment.min_steps 4
"""

from __future__ import annotations

import html
import json
import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .config import parse_config, save_config
from .dataset import LeRobotDatasetReader
from .segment import EpisodeSteps, SegmentConfig, Segmenter

log = logging.getLogger(__name__)


@dataclass
class PreviewConfig:
    """Options of the preview verb."""

    dataset: str = ""
    """Root of a local LeRobot v3.0 dataset."""
    out: str = "runs/storyboard"
    """Output folder (index.html, episode_XXXXXX.png, segments.json, preview_config.yaml)."""
    episodes: list[int] | None = None
    """Episodes to show; None = the first max_episodes."""
    max_episodes: int = 8
    """Cap when episodes is None."""
    camera: str | None = None
    """Camera shown in the thumbnails; None = the first camera of the dataset."""
    thumb_height: int = 120
    """Thumbnail height in pixels."""
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    """Segmentation settings (same as used for training samples)."""


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _thumb(frame: np.ndarray, height: int) -> Image.Image:
    img = Image.fromarray(frame)
    return img.resize((max(1, round(img.width * height / img.height)), height), Image.BILINEAR)


def _signal_strip(result: EpisodeSteps, width: int, height: int) -> Image.Image:
    """Gripper signals (blue/green), joint speed (gray) and step boundaries (red) over time."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    colors = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
    series = [("speed", "#999999")] + [(k, colors[i % 4]) for i, k in
                                       enumerate(k for k in result.signals if k.startswith("gripper"))]
    n = max(1, result.length - 1)
    for name, color in series:
        y = np.asarray(result.signals.get(name, []), dtype=float)
        if y.size < 2:
            continue
        lo, hi = float(y.min()), float(y.max())
        z = (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y)
        pts = [(i * (width - 1) / n, (height - 4) - z[i] * (height - 8)) for i in range(len(y))]
        draw.line(pts, fill=color, width=2)
    for s in result.steps[:-1]:
        x = s.end * (width - 1) / n
        draw.line([(x, 0), (x, height)], fill="#d62728", width=1)
    draw.text((4, 2), "speed (gray), grippers (color), step ends (red)", fill="black", font=_font(11))
    return img


def render_episode(reader: LeRobotDatasetReader, result: EpisodeSteps, camera: str, height: int) -> Image.Image:
    """The storyboard PNG of one episode."""
    keys = [0] + [s.keyframe for s in result.steps]
    frames = reader.frames(result.episode_index, camera, keys)
    thumbs = [_thumb(f, height) for f in frames]
    tw = thumbs[0].width
    text_h = 64
    width = (tw + 6) * len(thumbs) + 6
    strip_h = 70 if result.signals else 0
    canvas = Image.new("RGB", (width, 22 + height + text_h + strip_h + 6), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(12)
    draw.text((6, 4), f"episode {result.episode_index} ({result.length} frames, {result.method}): {result.task}",
              fill="black", font=_font(14))
    labels = [f"start\n{result.task}"] + [f"{k + 1}. {s.text}\n[{s.start}-{s.end - 1}]"
                                          for k, s in enumerate(result.steps)]
    chars = max(8, tw // 7)
    for k, (thumb, label) in enumerate(zip(thumbs, labels)):
        x = 6 + k * (tw + 6)
        canvas.paste(thumb, (x, 22))
        lines = [line for part in label.split("\n") for line in textwrap.wrap(part, chars)][:4]
        draw.multiline_text((x, 24 + height), "\n".join(lines), fill="black", font=font, spacing=2)
    if strip_h:
        canvas.paste(_signal_strip(result, width - 12, strip_h - 4), (6, 22 + height + text_h))
    return canvas


def write_storyboard(cfg: PreviewConfig) -> Path:
    """Segment the selected episodes and write index.html, PNGs and segments.json; returns the html path."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    reader = LeRobotDatasetReader(cfg.dataset, cameras=[cfg.camera] if cfg.camera else None)
    if not reader.camera_keys:
        raise ValueError(f"{cfg.dataset}: no camera features to show")
    camera = reader.camera_keys[0]
    episodes = cfg.episodes if cfg.episodes is not None else reader.episode_indices[:cfg.max_episodes]
    segmenter = Segmenter(reader, cfg.segment)
    rows, results = [], []
    for e in episodes:
        result = segmenter.segment(e)
        results.append(result.to_dict())
        png = out / f"episode_{e:06d}.png"
        render_episode(reader, result, camera, cfg.thumb_height).save(png)
        steps = "".join(f"<li>[{s.start}&ndash;{s.end - 1}] {html.escape(s.text)}</li>" for s in result.steps)
        rows.append(f"<h2>Episode {e}: {html.escape(result.task)}</h2><p>{len(result.steps)} steps, "
                    f"method <code>{result.method}</code></p><ol>{steps}</ol><img src='{png.name}'>")
        log.info("episode %d: %d steps (%s)", e, len(result.steps), result.method)
    (out / "segments.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    save_config(cfg, out / "preview_config.yaml")
    page = out / "index.html"
    page.write_text("<!doctype html><meta charset='utf-8'><title>Step segmentation</title>"
                    f"<h1>{html.escape(str(cfg.dataset))} ({camera})</h1>" + "\n".join(rows), encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = parse_config(PreviewConfig, argv, __doc__ or "")
    if not cfg.dataset:
        raise SystemExit("--dataset is required")
    print(write_storyboard(cfg))


if __name__ == "__main__":
    main()
