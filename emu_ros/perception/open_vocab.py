"""OWLv2 open-vocabulary detector: boxes for a text prompt ("a red mug"), weights from disk only.

A robot has no business downloading hundreds of megabytes at start-up (or at all, behind a lab
firewall), so the weights come from `perception.detector_dir` and a missing or incomplete directory
is a `DetectorUnavailable` raised when the detector is built, not a surprise at the first pick.
transformers is imported only when the detector is built, so the rest of `emu_ros.perception` stays
light.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from emu_ros.core.perception_spec import ObjectSpec
from emu_ros.perception.detection import Detection

#: the checkpoint the profile's OWLv2 settings are tuned for
DEFAULT_CHECKPOINT = "google/owlv2-base-patch16-ensemble"

# Files that transformers' `from_pretrained` needs, as alternatives: any one entry of a group will do.
_REQUIRED_FILES = {
    "model config (config.json)": (("config.json",),),
    "weights (model.safetensors or pytorch_model.bin, or their sharded index)": (
        ("model.safetensors",), ("model.safetensors.index.json",),
        ("pytorch_model.bin",), ("pytorch_model.bin.index.json",),
    ),
    "image processor config (preprocessor_config.json or processor_config.json)": (
        ("preprocessor_config.json",), ("processor_config.json",),
    ),
    "tokenizer (tokenizer.json, or vocab.json + merges.txt)": (
        ("tokenizer.json",), ("vocab.json", "merges.txt"),
    ),
}


class DetectorUnavailable(FileNotFoundError):
    """The detector's weights are not on this machine (and will not be fetched)."""


def _how_to_provide(directory: str) -> str:
    return (f"On a machine with internet access run `huggingface-cli download {DEFAULT_CHECKPOINT} "
            f"--local-dir {directory or '<dir>'}`, copy that directory to this robot, and set "
            f"perception.detector_dir in the robot profile to it. Nothing is downloaded automatically.")


def missing_files(directory: str) -> list[str]:
    """What the OWLv2 directory lacks, one description per missing part (empty when complete)."""
    d = Path(directory)
    return [what for what, options in _REQUIRED_FILES.items()
            if not any(all((d / f).is_file() for f in option) for option in options)]


def check_detector_dir(directory: str) -> Path:
    """The directory as a Path, or `DetectorUnavailable` saying what is missing and how to get it."""
    if not directory:
        raise DetectorUnavailable(f"OWLv2 needs perception.detector_dir (a local directory with the weights). "
                                  f"{_how_to_provide('')}")
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise DetectorUnavailable(f"OWLv2 weights directory {str(d)!r} does not exist. {_how_to_provide(str(d))}")
    missing = missing_files(str(d))
    if missing:
        raise DetectorUnavailable(f"OWLv2 weights directory {str(d)!r} is incomplete: missing {'; '.join(missing)}. "
                                  f"{_how_to_provide(str(d))}")
    return d


def box_mask(box_xyxy: Sequence[float], height: int, width: int, keep: float = 0.6) -> np.ndarray:
    """Boolean HxW mask of the central `keep` fraction (per axis) of a pixel box, clipped to the image.

    A detector box is not the object: its corners and edges are table or wall, and the estimator
    takes the median depth under the mask. Keeping the middle (60 % each way, 36 % of the area) puts
    that median on the object for any roughly convex object; the object's extent comes from its
    catalogue size, not from the mask. Box coordinates are continuous (pixel i spans [i, i+1)); a
    pixel is in when its centre is inside the shrunk box. A shrunk box thinner than a pixel still
    marks the pixel under its centre, so a small far object keeps one depth sample.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    height, width = int(height), int(width)
    mask = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return mask
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    hw, hh = (x1 - x0) * keep / 2.0, (y1 - y0) * keep / 2.0

    def span(lo: float, hi: float, centre: float, size: int) -> tuple:
        first, last = math.ceil(lo - 0.5), math.floor(hi - 0.5)
        if last < first:  # thinner than a pixel: the pixel under the centre
            first = last = math.floor(centre)
        return max(first, 0), min(last, size - 1)

    c0, c1 = span(cx - hw, cx + hw, cx, width)
    r0, r1 = span(cy - hh, cy + hh, cy, height)
    if c1 >= c0 and r1 >= r0:
        mask[r0:r1 + 1, c0:c1 + 1] = True
    return mask


def _area(r: np.ndarray) -> np.ndarray:
    return np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box `a` with each row of `b`."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


class Owlv2Detector:
    """OWLv2 boxes for `obj.prompt`, as central-part masks, best score first.

    Loaded at construction so a bad `detector_dir` fails at start-up. OWLv2 scores one box per
    image patch, so one object yields a cluster of overlapping boxes; greedy suppression
    (`nms_iou`) keeps the candidates distinct objects, which is what the size check downstream
    chooses between.
    """

    name = "owlv2"

    def __init__(self, detector_dir: str, threshold: float = 0.1, device: str = "cpu",
                 max_candidates: int = 4, nms_iou: float = 0.5, keep: float = 0.6):
        self.detector_dir = check_detector_dir(detector_dir)
        self.threshold = float(threshold)
        self.device = str(device)
        self.max_candidates = int(max_candidates)
        self.nms_iou = float(nms_iou)
        self.keep = float(keep)
        try:
            from transformers import Owlv2ForObjectDetection, Owlv2Processor

            self.processor = Owlv2Processor.from_pretrained(str(self.detector_dir), local_files_only=True)
            self.model = Owlv2ForObjectDetection.from_pretrained(str(self.detector_dir), local_files_only=True)
        except (OSError, ValueError) as e:
            raise DetectorUnavailable(f"OWLv2 weights in {str(self.detector_dir)!r} could not be loaded ({e}). "
                                      f"{_how_to_provide(str(self.detector_dir))}") from e
        self.model.to(self.device).eval()

    def boxes(self, rgb: np.ndarray, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """(boxes Nx4 xyxy in image pixels, scores N), unfiltered, in the model's patch order.

        The processor pads the image at the bottom/right to a square of side max(H, W) before
        resizing, so the model's normalised boxes are fractions of that square: pixels = box * max(H, W)
        on both axes. Passing target_sizes=(S, S) with S = max(H, W) gives exactly that in every
        transformers version (recent ones scale by max(h, w) themselves; older ones scaled x by W and
        y by H, which squashes boxes on non-square images when given the true (H, W)).
        """
        import torch
        from PIL import Image

        h, w = rgb.shape[:2]
        side = max(h, w)
        image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))  # unambiguous channels-last
        inputs = self.processor(text=[[prompt]], images=[image], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        result = self.processor.post_process_grounded_object_detection(
            outputs, threshold=-1.0, target_sizes=[(side, side)])[0]  # -1: keep all, filter here with >=
        return (result["boxes"].float().cpu().numpy().reshape(-1, 4),
                result["scores"].float().cpu().numpy().reshape(-1))

    def detect(self, rgb: np.ndarray, obj: ObjectSpec, camera_matrix: np.ndarray) -> list[Detection]:
        """Up to `max_candidates` Detections of `obj` (score >= threshold, highest first)."""
        if not obj.prompt:
            raise ValueError(f"object {obj.name!r} has no prompt for the owlv2 detector (profile perception.objects)")
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"owlv2 needs an HxWx3 RGB image, got shape {rgb.shape}")
        h, w = rgb.shape[:2]
        boxes, scores = self.boxes(rgb, obj.prompt)
        good = np.isfinite(scores) & (scores >= self.threshold)
        order = [i for i in np.argsort(-scores, kind="stable") if good[i]]
        out: list[Detection] = []
        kept: list[int] = []
        for i in order:
            if len(out) >= self.max_candidates:
                break
            if kept and self.nms_iou < 1.0 and np.max(_iou(boxes[i], boxes[kept])) > self.nms_iou:
                continue
            mask = box_mask(boxes[i], h, w, keep=self.keep)
            if not mask.any():  # a box wholly in the square's padding, off the image
                continue
            kept.append(i)
            out.append(Detection(obj=obj.name, score=float(np.clip(scores[i], 0.0, 1.0)), source=self.name,
                                 mask=mask))
        return out
