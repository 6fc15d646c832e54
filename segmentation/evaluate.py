"""Evaluating a 3D selection against 2D ground-truth masks (``eval_segmentation.py``, benchmarks, the demo).

Two protocols (``render``: ``object``, the selection alone, or ``scene``, the selection occluded by the rest;
:mod:`segmentation.labels` renders both), always named with the numbers they produce. Floaters of the rest of
the scene in front of a held-out camera lower the ``scene`` score while the extracted object can be right.

Per view: IoU per label (labels absent from both prediction and ground truth are skipped), the view's IoU
is the mean over the remaining labels, pixel accuracy over all pixels. ``miou``/``macc`` average the views
(views where no label occurs in either mask have no IoU and are left out of ``miou``).
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np

from arguments import Backend, flag, options
from arguments.options import Split
from segmentation.labels import RENDER_MODES, load_labels, render_label_map
from utils.errors import UserError
from utils.io import save_summary


EVAL_VERSION = 1   # eval.json; 1: the first versioned file (adds "version" and "timings_s")


# ---------------------------------------------------------------------------------------------------------
# Scoring one view (the label maps are rendered by segmentation.labels.render_label_map)
# ---------------------------------------------------------------------------------------------------------
def score_view(pred: np.ndarray, gt: np.ndarray, num_labels: int) -> tuple[list[Optional[float]], float]:
    """(IoU per label, None where the label is in neither map; pixel accuracy).

    pred, gt: np.ndarray  # [H, W] int label maps, 0 = background
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    ious: list[Optional[float]] = []
    for l in range(1, num_labels + 1):
        p, g = pred == l, gt == l
        union = int(np.logical_or(p, g).sum())
        ious.append(None if union == 0 else float(np.logical_and(p, g).sum()) / union)
    acc = float((pred == gt).mean()) if pred.size else 1.0
    return ious, acc


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


@dataclass
class ViewScore:
    name: str
    iou: Optional[float]                 # mean over labels present in prediction or ground truth
    acc: float                           # pixel accuracy
    label_iou: list[Optional[float]]


@dataclass
class EvalResult:
    label_names: list[str]
    views: list[ViewScore] = field(default_factory=list)
    path: Optional[Path] = None          # the eval.json written (run_evaluation)

    @property
    def miou(self) -> Optional[float]:
        return _mean([v.iou for v in self.views])

    @property
    def macc(self) -> Optional[float]:
        return _mean([v.acc for v in self.views])

    def label_miou(self) -> list[Optional[float]]:
        return [_mean([v.label_iou[l] for v in self.views]) for l in range(len(self.label_names))]

    def to_json(self) -> dict:
        return {
            "miou": self.miou,
            "macc": self.macc,
            "num_views": len(self.views),
            "label_names": self.label_names,
            "label_miou": dict(zip(self.label_names, self.label_miou())),
            "views": [{"name": v.name, "iou": v.iou, "acc": v.acc, "label_iou": v.label_iou} for v in self.views],
        }

    def table(self) -> str:
        """Per-view and mean table for the terminal."""
        def f(v: Optional[float]) -> str:
            return "    -" if v is None else f"{v:.3f}"

        multi = len(self.label_names) > 1
        width = max([4] + [len(v.name) for v in self.views])
        head = f"{'view':<{width}}  IoU    acc" + ("".join(f"  {n[:10]:>10}" for n in self.label_names) if multi else "")
        lines = [head]
        for v in self.views:
            row = f"{v.name:<{width}}  {f(v.iou)}  {f(v.acc)}"
            if multi:
                row += "".join(f"  {f(x):>10}" for x in v.label_iou)
            lines.append(row)
        mean = f"{'mean':<{width}}  {f(self.miou)}  {f(self.macc)}"
        if multi:
            mean += "".join(f"  {f(x):>10}" for x in self.label_miou())
        lines.append("-" * len(head))
        lines.append(mean)
        return "\n".join(lines)


def evaluate_selection(gaussians: Any, labels: np.ndarray, gt_masks: Any, backend: str = "auto",
                       num_threads: int = 0, progress: bool = True, mode: str = "scene") -> EvalResult:
    """Score ``labels`` [N] on every view of ``gt_masks`` (a :class:`utils.masks.LabelMasks`), rendered in the
    ``object`` or ``scene`` protocol."""
    from tqdm import tqdm

    num_labels = gt_masks.num_labels
    result = EvalResult(list(gt_masks.label_names))
    bar = tqdm(gt_masks.items(), total=len(gt_masks), desc="evaluating", unit="view", leave=False,
               disable=None if progress else True)
    for cam, gt in bar:
        pred = render_label_map(cam, gaussians, labels, num_labels, backend, num_threads, mode)
        ious, acc = score_view(pred, gt, num_labels)
        result.views.append(ViewScore(cam.image_name, _mean(ious), acc, ious))
    return result


# ---------------------------------------------------------------------------------------------------------
# The eval_segmentation.py job
# ---------------------------------------------------------------------------------------------------------
@dataclass
class EvalConfig:
    """Everything ``eval_segmentation.py`` takes; each field is its flag."""

    model_path: str = options.model_path()
    labels: str = flag("", "labels.npy written by segment.py", required=True)
    gt_masks: str = flag("", "ground-truth masks: folder or COCO json, matched to views by image stem like "
                         "segment.py's --masks", required=True)
    split: Split = options.split("test", "views to score (default test: the --eval hold-out, every 8th view or "
                                 "NeRF-synthetic's test set)")
    iteration: int = options.iteration()
    gt_format: Literal["auto", "binary", "ids", "sam", "coco"] = flag(
        "auto", "ground-truth mask format (default: auto-detected)")
    gt_labels: Optional[str] = flag(None, "GT ids in labels.npy's order, e.g. 3,7 (default: the ids segment.py "
                                    "used, from summary.json beside labels.npy)")
    source_path: str = options.source_path()
    images: str = options.images()
    resolution: int = options.resolution()
    out: str = options.out("eval.json path (default: beside labels.npy)")
    render: Literal["scene", "object"] = flag(
        "scene", "scene (default): the selection inside the full scene, occluded by the rest (floaters in front "
        "count against it); object: the selected Gaussians alone, as a viewer shows extracted.ply (an object "
        "hidden behind another in a view counts against it)")
    backend: Backend = options.backend()
    num_threads: int = options.num_threads()
    device: str = options.device()
    progress: bool = options.progress()
    force: bool = options.force()


def read_summary(labels_path: Path) -> Optional[dict]:
    p = labels_path.parent / "summary.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_evaluation(cfg: EvalConfig, log: Callable[[str], None] = lambda s: None) -> EvalResult:
    """Load model, labels and GT masks of ``cfg.split``, score, write eval.json (``result.path``)."""
    from scene.model_folder import find_iteration, model_inputs
    from utils.outputs import OutputFolder

    labels_path = Path(cfg.labels)
    if not labels_path.is_file():
        raise UserError(f"{labels_path}: labels file not found; pass the labels.npy written by segment.py")
    model_path = Path(cfg.model_path)
    iteration = find_iteration(model_path, None if cfg.iteration < 0 else cfg.iteration)
    out = Path(cfg.out) if cfg.out else labels_path.parent / "eval.json"
    inputs = [*model_inputs(model_path, cfg.source_path), labels_path, cfg.gt_masks]
    with OutputFolder(out.parent, "eval_segmentation.py", inputs, cfg.force, files=[out.name]) as folder:
        result = _evaluate(cfg, model_path, iteration, labels_path, folder.path(out.name), log)
        folder.commit()
    result.path = out
    return result


def _evaluate(cfg: EvalConfig, model_path: Path, iteration: int, labels_path: Path, out: Path,
              log: Callable[[str], None]) -> EvalResult:
    """Score and write ``out`` (the staged eval.json)."""
    from scene.model_folder import load_model

    t_start = time.perf_counter()
    from scene.views import load_views
    from utils.masks import open_masks

    params, gaussians, iteration = load_model(model_path, iteration, device=cfg.device)
    labels = load_labels(labels_path, len(gaussians))
    views = load_views(params, cfg.split, cfg.source_path, cfg.images, cfg.resolution)

    summary = read_summary(labels_path)
    gt_labels = cfg.gt_labels
    if gt_labels is None and summary is not None:
        masks = summary.get("masks", {})
        fmt = masks.get("format")
        ids = summary.get("labels", {}).get("ids")
        if fmt in ("ids", "sam-tracked", "coco") and not masks.get("prompts") and isinstance(ids, list) and ids:
            gt_labels = ",".join(str(i) for i in ids)
    gt = open_masks(cfg.gt_masks, views.cameras, cfg.gt_format, gt_labels, other_views=views.other_names)
    num_labels = gt.num_labels
    top = int(labels.max(initial=0))
    if top > num_labels:
        raise UserError(f"{labels_path}: labels go up to {top} but the ground truth has {num_labels} label(s) "
                        f"({', '.join(gt.label_names[:5])}); pass --gt-labels with the ids segment.py used")
    if summary is not None:
        used = {str(n).lower() for n in summary.get("views", {}).get("used_names", [])}
        overlap = [c.image_name for c in gt.cameras if c.image_name.lower() in used]
        if overlap:
            warnings.warn(f"{cfg.gt_masks}: {len(overlap)} of {len(gt)} evaluated views had their masks used for "
                          f"voting (e.g. {overlap[0]}), so they are not held out; evaluate --split test after "
                          "segmenting the train split", stacklevel=2)
    if cfg.render not in RENDER_MODES:
        raise UserError(f"--render {cfg.render!r}: use object or scene")
    log(f"evaluating {len(gt)} {cfg.split} views with ground truth ({num_labels} label"
        f"{'s' if num_labels > 1 else ''}), protocol {cfg.render} "
        f"({'the selection alone' if cfg.render == 'object' else 'the selection occluded by the rest of the scene'})")
    result = evaluate_selection(gaussians, labels, gt, cfg.backend, cfg.num_threads, cfg.progress, cfg.render)
    data = result.to_json()
    data.update({"model_path": str(model_path), "iteration": int(iteration), "labels": str(labels_path),
                 "gt_masks": str(cfg.gt_masks), "split": cfg.split, "render": cfg.render})
    if views.model_frame is not None:  # splatfacto/gsplat: how the cameras were moved into the model's frame
        data["model_frame"] = views.model_frame
    save_summary(out, data, {"total": time.perf_counter() - t_start}, EVAL_VERSION)
    return result
