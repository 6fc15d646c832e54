"""Scoring affordance label maps: per-class IoU and recall, pooled over all evaluated pixels.

One confusion matrix (rows: ground truth, columns: prediction) is summed over every evaluated image, so a
class's IoU is TP / (TP + FP + FN) and its recall TP / (TP + FN) over the whole set (the usual protocol of
affordance segmentation benchmarks; a tiny object in one image does not weigh as much as a whole image).

Means are taken over the classes that occur in the ground truth:

* ``mean_iou`` / ``mean_recall``: affordance classes only (background excluded), the UMD convention;
* ``mean_iou_all`` / ``mean_recall_all``: background included (for a 2-class background/object labelling
  this is the usual binary-segmentation mIoU).

Two things can be scored (``eval_affordance.py``): a folder of predicted label PNGs (``affordance.py``'s
``labels_2d/``), and the per-Gaussian labelling (``labels.npy``) rendered into views of a model
(occlusion-aware: :func:`segmentation.labels.render_label_map`). Ground truth: label PNGs (class indices,
0/255 = binary) or UMD ``*_label.mat``, matched by name (``x_rgb`` <-> ``x_label``).
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from affordance.annotations import label_files, match_key, read_class_map
from affordance.classes import ClassList, parse_classes
from arguments import Backend, flag, options
from arguments.options import Split
from segmentation.labels import load_labels, render_label_map
from utils.errors import UserError
from utils.io import save_summary

Log = Callable[[str], None]
EVAL_VERSION = 1   # eval_affordance.json; 1: the first versioned file (adds "version" and "timings_s")


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:  # [C, C] int64
    """Counts of (ground truth, prediction) pairs; rows = ground truth.

    pred, gt: np.ndarray  # [H, W] int in 0..num_classes-1
    """
    pred = np.asarray(pred, dtype=np.int64).ravel()
    gt = np.asarray(gt, dtype=np.int64).ravel()
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in size: {pred.shape} vs {gt.shape}")
    return np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes,
                                                                                            num_classes)


def _nanmean(values: list[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


@dataclass
class ClassScores:
    """A pooled confusion matrix and the per-class numbers derived from it."""

    class_names: list[str]
    confusion: np.ndarray = field(default=None)  # type: ignore[assignment]  # [C, C] int64
    images: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.confusion is None:
            c = len(self.class_names)
            self.confusion = np.zeros((c, c), dtype=np.int64)

    def add(self, name: str, pred: np.ndarray, gt: np.ndarray) -> None:
        """pred, gt: [H, W] int class maps of one image."""
        self.confusion += confusion_matrix(pred, gt, len(self.class_names))
        self.images.append(name)

    @property
    def gt_pixels(self) -> np.ndarray:  # [C]
        return self.confusion.sum(axis=1)

    @property
    def pred_pixels(self) -> np.ndarray:  # [C]
        return self.confusion.sum(axis=0)

    def iou(self) -> list[Optional[float]]:
        """TP / (TP + FP + FN) per class; None when the class is in neither prediction nor ground truth."""
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.gt_pixels + self.pred_pixels - tp
        return [None if u == 0 else float(t / u) for t, u in zip(tp, union)]

    def recall(self) -> list[Optional[float]]:
        """TP / (TP + FN) per class; None when the class is absent from the ground truth."""
        tp = np.diag(self.confusion).astype(np.float64)
        return [None if g == 0 else float(t / g) for t, g in zip(tp, self.gt_pixels)]

    def _mean(self, values: list[Optional[float]], background: bool) -> Optional[float]:
        present = self.gt_pixels > 0
        start = 0 if background else 1
        return _nanmean([values[c] if values[c] is not None else 0.0
                         for c in range(start, len(values)) if present[c]])

    @property
    def mean_iou(self) -> Optional[float]:
        return self._mean(self.iou(), background=False)

    @property
    def mean_recall(self) -> Optional[float]:
        return self._mean(self.recall(), background=False)

    @property
    def mean_iou_all(self) -> Optional[float]:
        return self._mean(self.iou(), background=True)

    @property
    def mean_recall_all(self) -> Optional[float]:
        return self._mean(self.recall(), background=True)

    def to_json(self) -> dict[str, Any]:
        iou, rec = self.iou(), self.recall()
        return {
            "num_images": len(self.images),
            "images": self.images,
            "per_class": {n: {"iou": iou[c], "recall": rec[c], "gt_pixels": int(self.gt_pixels[c]),
                              "pred_pixels": int(self.pred_pixels[c])} for c, n in enumerate(self.class_names)},
            "mean_iou": self.mean_iou, "mean_recall": self.mean_recall,
            "mean_iou_all": self.mean_iou_all, "mean_recall_all": self.mean_recall_all,
            "confusion": self.confusion.tolist(),
        }

    def table(self, title: str = "") -> str:
        def f(v: Optional[float]) -> str:
            return "    -" if v is None else f"{v:.3f}"

        width = max([24] + [len(n) for n in self.class_names])
        iou, rec = self.iou(), self.recall()
        lines = [title] if title else []
        lines.append(f"{'class':<{width}}  {'IoU':>5}  {'recall':>6}  {'GT px':>11}  {'pred px':>11}")
        for c, n in enumerate(self.class_names):
            if self.gt_pixels[c] == 0 and self.pred_pixels[c] == 0:
                continue
            lines.append(f"{n:<{width}}  {f(iou[c])}  {f(rec[c]):>6}  {int(self.gt_pixels[c]):>11,}  "
                         f"{int(self.pred_pixels[c]):>11,}")
        lines.append("-" * len(lines[-1]))
        lines.append(f"{'mean (affordances in GT)':<{width}}  {f(self.mean_iou)}  {f(self.mean_recall):>6}")
        lines.append(f"{'mean (all classes in GT)':<{width}}  {f(self.mean_iou_all)}  {f(self.mean_recall_all):>6}")
        lines.append(f"{len(self.images)} image(s)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# 2D: a folder of predicted label PNGs
# ---------------------------------------------------------------------------------------------------------
def _fit_to(pred: np.ndarray, shape: tuple[int, int], where: Path) -> np.ndarray:
    from utils.masks import resize_nearest

    if pred.shape == shape:
        return pred
    (ph, pw), (h, w) = pred.shape, shape
    if abs(pw / ph - w / h) > 0.01 * (w / h):
        raise UserError(f"{where}: prediction is {pw}x{ph} but the ground truth is {w}x{h} (other aspect ratio); "
                        "predict at the ground truth's size")
    return resize_nearest(pred.astype(np.int32), w, h)


def evaluate_folder(pred_dir: str | Path, gt: str | Path, classes: ClassList, exclude: Optional[set[str]] = None
                    ) -> ClassScores:
    """Score every predicted label PNG that has a ground truth (names matched with ``match_key``).

    ``exclude``: view names not to score (e.g. the annotated source views, whose labels are the input).
    """
    preds = label_files(pred_dir, "prediction")
    gts = label_files(gt, "ground truth")
    excluded = {match_key(n) for n in (exclude or set())}
    keys = [k for k in preds if k in gts and k not in excluded]
    if not keys:
        some = ", ".join(list(preds)[:3])
        raise UserError(f"{gt}: no ground truth matches the predictions in {pred_dir} (e.g. {some}); name them alike "
                        "(x.png / x_label.mat / x_rgb.jpg match)")
    no_gt = [k for k in preds if k not in gts and k not in excluded]
    no_pred = [k for k in gts if k not in preds and k not in excluded]
    if no_gt:
        warnings.warn(f"{pred_dir}: {len(no_gt)} prediction(s) without ground truth not scored (e.g. {no_gt[0]})",
                      stacklevel=2)
    if no_pred:
        warnings.warn(f"{gt}: {len(no_pred)} ground-truth map(s) without a prediction not scored (e.g. {no_pred[0]})",
                      stacklevel=2)
    scores = ClassScores(list(classes.names))
    resized = 0
    for k in keys:
        g = read_class_map(gts[k], classes)
        p = read_class_map(preds[k], classes)
        resized += p.shape != g.shape
        scores.add(preds[k].stem, _fit_to(p, g.shape, preds[k]), g)
    if resized:
        warnings.warn(f"{pred_dir}: {resized} prediction(s) resized (nearest) to their ground truth's size",
                      stacklevel=2)
    return scores


# ---------------------------------------------------------------------------------------------------------
# 3D: a per-Gaussian labelling rendered into views
# ---------------------------------------------------------------------------------------------------------
def evaluate_rendered(gaussians: Any, labels: np.ndarray, cameras: list, gt: str | Path, classes: ClassList,
                      backend: str = "auto", num_threads: int = 0, progress: bool = True) -> ClassScores:
    """Render ``labels`` [N] into every camera that has a ground-truth map and score it.

    Ground truth is brought to the camera's pixel grid like masks are (nearest resize, undistortion).
    """
    from tqdm import tqdm

    gts = label_files(gt, "ground truth")
    matched = [(c, gts[match_key(Path(c.image_name).name)]) for c in cameras
               if match_key(Path(c.image_name).name) in gts]
    if not matched:
        some = ", ".join(c.image_name for c in cameras[:3])
        raise UserError(f"{gt}: no ground-truth map matches a view (views: {some}...); name GT files after the "
                        "images, or pick the right --split")
    if len(matched) < len(cameras):
        warnings.warn(f"{gt}: {len(cameras) - len(matched)} of {len(cameras)} views have no ground truth and are not "
                      "scored", stacklevel=2)
    scores = ClassScores(list(classes.names))
    lab = np.where(np.asarray(labels) > 0, labels, 0)
    for cam, path in tqdm(matched, desc="evaluating", unit="view", leave=False, disable=None if progress else True):
        g = np.asarray(cam.prepare_mask(read_class_map(path, classes)), dtype=np.int32)
        pred = render_label_map(cam, gaussians, lab, classes.num_labels, backend, num_threads)
        scores.add(cam.image_name, pred, g)
    return scores


# ---------------------------------------------------------------------------------------------------------
# The eval_affordance.py job
# ---------------------------------------------------------------------------------------------------------
@dataclass
class AffordanceEvalConfig:
    """Everything ``eval_affordance.py`` takes; each field is its flag."""

    gt: str = flag("", "ground-truth folder: label PNGs or UMD *_label.mat", required=True)
    pred: str = flag("", "folder of predicted label PNGs (affordance.py's labels_2d/)")
    model_path: str = options.model_path("model folder, with --labels: score the 3D labelling rendered into the "
                                         "--split views", required=False)
    labels: str = flag("", "labels.npy written by affordance.py")
    classes: Optional[str] = flag(None, "class names in label order (default: from summary.json beside the inputs, "
                                  "else UMD's)")
    split: Split = options.split("test", "views the 3D labelling is rendered into (default test: the --eval "
                                 "hold-out)")
    include_annotated: bool = flag(False, "2D: also score views whose label maps were the annotated input "
                                   "(default: excluded)")
    iteration: int = options.iteration()
    source_path: str = options.source_path()
    images: str = options.images()
    resolution: int = options.resolution()
    out: str = options.out("JSON path (default: eval_affordance.json beside the inputs)")
    backend: Backend = options.backend()
    num_threads: int = options.num_threads()
    device: str = options.device()
    progress: bool = options.progress()
    force: bool = options.force()


@dataclass
class AffordanceEvalResult:
    path: Path                 # the JSON written
    scores: dict[str, Any]     # its content: "2d" and/or "3d" scores


def _summary_near(*paths: Path) -> Optional[dict]:
    for p in paths:
        try:
            data = json.loads((p / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("classes"), list):
            return data
    return None


def run_eval(cfg: AffordanceEvalConfig, log: Log = lambda s: None) -> AffordanceEvalResult:
    """Score 2D predictions and/or a 3D labelling and write the JSON."""
    from scene.model_folder import model_inputs
    from utils.outputs import OutputFolder

    if not cfg.pred and not cfg.labels:
        raise UserError("nothing to evaluate: pass --pred DIR (2D label maps) and/or -m MODEL --labels labels.npy")
    if bool(cfg.labels) != bool(cfg.model_path):
        raise UserError("--labels needs -m/--model_path (the model the labels belong to), and -m needs --labels")
    pred_dir = Path(cfg.pred) if cfg.pred else None
    labels_path = Path(cfg.labels) if cfg.labels else None
    near = [p for p in ([pred_dir, pred_dir.parent] if pred_dir else []) + ([labels_path.parent] if labels_path
                                                                              else [])]
    summary = _summary_near(*near)
    if cfg.classes:
        classes = parse_classes(cfg.classes)
    elif summary is not None:
        classes = parse_classes(summary["classes"])
    else:
        classes = parse_classes(None)
    out = Path(cfg.out) if cfg.out else (labels_path.parent if labels_path else pred_dir.parent) / \
        "eval_affordance.json"
    inputs = [cfg.gt, pred_dir, labels_path, cfg.classes if cfg.classes and Path(cfg.classes).exists() else None]
    if cfg.model_path:
        inputs += model_inputs(cfg.model_path, cfg.source_path)
    with OutputFolder(out.parent, "eval_affordance.py", inputs, cfg.force, files=[out.name]) as folder:
        result = _run_eval(cfg, classes, summary, pred_dir, labels_path, folder.path(out.name), log)
        folder.commit()
    return AffordanceEvalResult(out, result)


def _run_eval(cfg: AffordanceEvalConfig, classes: ClassList, summary: Optional[dict], pred_dir: Optional[Path],
              labels_path: Optional[Path], out: Path, log: Log) -> dict[str, Any]:
    """Score and write ``out`` (the staged JSON)."""
    t_start = time.perf_counter()
    result: dict[str, Any] = {"classes": list(classes.names), "gt": str(cfg.gt)}
    log(f"classes  {', '.join(classes.names)}" + ("" if cfg.classes or summary is None else " (from summary.json)"))

    if pred_dir is not None:
        exclude: set[str] = set()
        if summary is not None and not cfg.include_annotated:
            exclude = set(summary.get("views", {}).get("annotated_views", []))
        s2 = evaluate_folder(pred_dir, cfg.gt, classes, exclude)
        result["2d"] = dict(s2.to_json(), pred=str(pred_dir), excluded_annotated=sorted(exclude))
        log(s2.table(f"2D label maps ({pred_dir})" + (f", {len(exclude)} annotated view(s) excluded"
                                                       if exclude else "")))
    if labels_path is not None:
        from scene.model_folder import find_iteration, load_model
        from scene.views import load_views

        if not labels_path.is_file():
            raise UserError(f"{labels_path}: labels file not found; pass the labels.npy written by affordance.py")
        it = find_iteration(cfg.model_path, None if cfg.iteration < 0 else cfg.iteration)
        params, gaussians, it = load_model(cfg.model_path, it, device=cfg.device)
        labels = load_labels(labels_path, len(gaussians))
        if labels.max(initial=0) >= len(classes):
            raise UserError(f"{labels_path}: labels go up to {int(labels.max())} but there are {len(classes)} classes; "
                            "pass --classes with the list affordance.py used")
        views = load_views(params, cfg.split, cfg.source_path, cfg.images, cfg.resolution)
        s3 = evaluate_rendered(gaussians, labels, views.cameras, cfg.gt, classes, cfg.backend, cfg.num_threads,
                               cfg.progress)
        result["3d"] = dict(s3.to_json(), model_path=str(cfg.model_path), iteration=int(it), labels=str(labels_path),
                            split=cfg.split)
        log(s3.table(f"3D labelling rendered into {len(s3.images)} {cfg.split} view(s)"))
    return save_summary(out, result, {"total": time.perf_counter() - t_start}, EVAL_VERSION)
