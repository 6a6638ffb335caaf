"""Human-readable reports of a task run: a storyboard (HTML + PNG) and a short camera video.

Built only from the run's task log (events.jsonl + images/), so any run — simulated, replayed or on
a robot — can be turned into a storyboard afterwards:

    python -m emu_ros.report RUN_DIR            (writes RUN_DIR/storyboard.html and .png)
"""
from __future__ import annotations

import html
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from emu_ros.bridge.task_log import read_events

log = logging.getLogger(__name__)

THUMB = (160, 120)  # w, h of each picture in the PNG storyboard
COLOURS = {"finished": (40, 160, 70), "unfinished": (220, 140, 20), "failed": (200, 50, 50), "canceled": (120, 120, 120)}


@dataclass
class StoryRow:
    """One attempted step (or a re-plan marker when `replan` is set)."""

    step_index: int = 0
    text: str = ""
    revision: int = 0
    attempt: int = 0
    status: str = ""
    reason: str = ""
    predicted: Optional[str] = None  # image path relative to the run dir
    observed: Optional[str] = None
    replan: str = ""  # non-empty: this row marks a re-plan and says why


@dataclass
class Story:
    task: str
    source: str
    rows: List[StoryRow] = field(default_factory=list)
    status: str = ""
    message: str = ""


def build_story(run_dir: Path) -> Story:
    """Walk the events once: plan images per revision, one row per step verdict, re-plan markers."""
    events = read_events(run_dir)
    story = Story(task="", source="")
    predicted: dict = {}
    for e in events:
        kind = e.get("event")
        story.task = story.task or e.get("task", "")
        if kind == "plan_ready":
            plan = e.get("plan", {})
            story.source = story.source or plan.get("source", "")
            imgs = e.get("images", {})
            predicted = {s["index"]: imgs.get(f"step{k + 1}") for k, s in enumerate(plan.get("steps", []))}
        elif kind == "replanning":
            story.rows.append(StoryRow(revision=e.get("revision", 0), replan=e.get("message", "re-plan")))
        elif kind in ("step_finished", "step_unfinished", "step_failed"):
            out = e.get("outcome", {})
            story.rows.append(StoryRow(step_index=e.get("step_index", 0), text=e.get("step_text", ""),
                                       revision=e.get("revision", 0), attempt=e.get("attempt", 0),
                                       status=out.get("status", kind.replace("step_", "")), reason=out.get("reason", ""),
                                       predicted=predicted.get(e.get("step_index")),
                                       observed=(e.get("images") or {}).get("observed")))
        elif kind in ("done", "aborted", "canceled"):
            story.status, story.message = kind, e.get("message", "")
    return story


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_html(story: Story, run_dir: Path, out: Path, extra: Optional[dict] = None) -> Path:
    """storyboard.html: a table per attempt; images referenced relative to the output file."""
    def img(rel: Optional[str]) -> str:
        if not rel:
            return '<div class="none">no image</div>'
        src = os.path.relpath(Path(run_dir) / rel, out.parent)
        return f'<img src="{html.escape(src)}" width="{THUMB[0] * 2}">'

    rows = []
    for r in story.rows:
        if r.replan:
            rows.append(f'<tr class="replan"><td colspan="5">&#x21bb; RE-PLAN (revision {r.revision}): '
                        f'{html.escape(r.replan)}</td></tr>')
            continue
        colour = "#%02x%02x%02x" % COLOURS.get(r.status, (90, 90, 90))
        rows.append(f'<tr><td>{r.step_index + 1}{" (retry %d)" % r.attempt if r.attempt else ""}<br>'
                    f'<small>plan rev {r.revision}</small></td><td>{html.escape(r.text)}</td>'
                    f'<td>{img(r.predicted)}</td><td>{img(r.observed)}</td>'
                    f'<td style="color:{colour}"><b>{html.escape(r.status)}</b><br>{html.escape(r.reason)}</td></tr>')
    facts = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in (extra or {}).items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>emu_ros storyboard: {html.escape(story.task)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td{{border:1px solid #ccc;padding:6px;vertical-align:top}}
tr.replan td{{background:#fff3d6;font-weight:bold}} .none{{color:#999;width:{THUMB[0] * 2}px}}</style></head><body>
<h1>{html.escape(story.task)}</h1>
<p>Planner: <b>{html.escape(story.source or "unknown")}</b> &mdash; result: <b>{html.escape(story.status)}</b> {html.escape(story.message)}</p>
<ul>{facts}</ul>
<table><tr><th>step</th><th>instruction</th><th>predicted (planner's step image)</th><th>camera after the step</th><th>outcome</th></tr>
{''.join(rows)}</table></body></html>"""
    _atomic_write(out, page.encode("utf-8"))
    return out


def _thumb(run_dir: Path, rel: Optional[str]) -> Image.Image:
    if rel and (Path(run_dir) / rel).is_file():
        return Image.open(Path(run_dir) / rel).convert("RGB").resize(THUMB)
    im = Image.new("RGB", THUMB, (235, 235, 235))
    ImageDraw.Draw(im).text((8, THUMB[1] // 2 - 6), "no image", fill=(150, 150, 150))
    return im


def write_png(story: Story, run_dir: Path, out: Path) -> Path:
    """storyboard.png: one row per attempt (predicted | observed | text + outcome), re-plans as banners."""
    font = ImageFont.load_default()
    row_h, text_w, pad = THUMB[1] + 10, 420, 5
    heights = [28 if r.replan else row_h for r in story.rows]
    W, H = 2 * THUMB[0] + text_w + 4 * pad, 40 + sum(heights) + pad
    canvas = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(canvas)
    d.text((pad, 8), f"{story.task}  |  planner: {story.source}  |  {story.status}", fill=(0, 0, 0), font=font)
    d.text((pad, 22), "predicted step image          camera view after the step", fill=(90, 90, 90), font=font)
    y = 40
    for r, h in zip(story.rows, heights):
        if r.replan:
            d.rectangle([0, y, W, y + h - 4], fill=(255, 236, 190))
            d.text((pad, y + 7), f"RE-PLAN (revision {r.revision}): {r.replan}"[:110], fill=(120, 70, 0), font=font)
        else:
            canvas.paste(_thumb(run_dir, r.predicted), (pad, y + 5))
            canvas.paste(_thumb(run_dir, r.observed), (2 * pad + THUMB[0], y + 5))
            x = 3 * pad + 2 * THUMB[0]
            colour = COLOURS.get(r.status, (90, 90, 90))
            d.rectangle([x - 3, y + 5, x - 1, y + row_h - 5], fill=colour)
            d.text((x + 4, y + 8), f"{r.step_index + 1}. {r.text}"[:68], fill=(0, 0, 0), font=font)
            d.text((x + 4, y + 26), f"{r.status.upper()}" + (f" (retry {r.attempt})" if r.attempt else "")
                   + (f"   [plan revision {r.revision}]" if r.revision else ""), fill=colour, font=font)
            for k, line in enumerate(_wrap(r.reason, 66)[:5]):
                d.text((x + 4, y + 44 + 13 * k), line, fill=(60, 60, 60), font=font)
        y += h
    tmp = out.with_name(f".{out.name}.tmp.png")
    canvas.save(tmp)
    os.replace(tmp, out)
    return out


def _wrap(text: str, width: int) -> list:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return lines + ([cur] if cur else [])


def write_storyboard(run_dir: Path, out_dir: Optional[Path] = None, extra: Optional[dict] = None) -> tuple:
    """Write storyboard.html and storyboard.png for a run; returns their paths."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir)
    story = build_story(run_dir)
    return (write_html(story, run_dir, out_dir / "storyboard.html", extra),
            write_png(story, run_dir, out_dir / "storyboard.png"))


def write_video(frames: Sequence[np.ndarray], out: Path, fps: float = 10.0) -> Path:
    """MP4 (imageio-ffmpeg) or, when no encoder is available, an animated GIF next to it."""
    if not frames:
        raise ValueError("no frames to write")
    try:
        import imageio.v2 as imageio

        with imageio.get_writer(str(out), fps=fps, codec="libx264", quality=7, macro_block_size=8) as w:
            for f in frames:
                w.append_data(np.asarray(f, np.uint8))
        return out
    except Exception as e:  # noqa: BLE001 - no ffmpeg: fall back to GIF, say so
        gif = out.with_suffix(".gif")
        log.warning("MP4 encoding unavailable (%s); writing %s instead", e, gif.name)
        ims = [Image.fromarray(np.asarray(f, np.uint8)) for f in frames]
        ims[0].save(gif, save_all=True, append_images=ims[1:], duration=int(1000 / fps), loop=0)
        return gif


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m emu_ros.report RUN_DIR", file=sys.stderr)
        return 2
    html_path, png_path = write_storyboard(Path(args[0]))
    print(json.dumps({"html": str(html_path), "png": str(png_path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
