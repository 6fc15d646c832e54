"""The built-in demo (``python segment.py`` with no arguments): the whole job on a generated scene.

It writes what a user would have after training — a model folder in Inria's layout and a NeRF-synthetic
source folder (transforms_train/test.json, rendered images, 2D masks of the chosen objects for the training
views, ground-truth masks for the held-out views) — then runs segment.py's library on it exactly as the
command line would, evaluates the selection on the held-out views and prints where everything is.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from arguments import flag
from segmentation.synthetic import SyntheticScene, make_demo_scene
from utils.errors import UserError

@dataclass
class DemoOptions:
    """segment.py's demo flags (the demo runs the segmentation job on a generated scene)."""

    demo: bool = flag(False, "run the built-in demo (also: no arguments at all)", group="demo")
    demo_objects: str = flag("ball", "demo objects to segment: ball (default), box, can, a comma list (multi-label) "
                             "or all", group="demo")


HOLD_EVERY = 4          # every 4th view is held out for evaluation (6 of 24), the rest get masks
TOOL = "segment.py --demo"  # the name the demo's model/ and scene/ files are recorded under (utils.outputs)


def gaussians_from_synthetic(scene: SyntheticScene, sh_degree: int = 3, device: torch.device | str = "cpu") -> Any:
    """A GaussianModel holding the synthetic scene (view-independent colours: higher SH are zero)."""
    from scene.gaussian_model import GaussianModel
    from utils.general import inverse_sigmoid
    from utils.sh import rgb_to_sh

    t = torch.from_numpy
    n = scene.means.shape[0]
    rest = torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3)
    return GaussianModel.from_tensors(t(scene.means), rgb_to_sh(t(scene.colors).double()).float()[:, None, :], rest,
                                      torch.log(t(scene.scales)), t(scene.quats),
                                      inverse_sigmoid(t(scene.opacities).double()).float()[:, None], device=device)


def parse_objects(text: str, names: Sequence[str]) -> list[int]:
    """``"ball"``, ``"ball,can"`` or ``"all"`` -> object ids (1-based, as in ``SyntheticScene.object_ids``)."""
    objects = list(names[1:])
    if text.strip().lower() == "all":
        return list(range(1, len(objects) + 1))
    ids = []
    for part in text.split(","):
        p = part.strip().lower()
        if p not in objects:
            raise UserError(f"--demo-objects {text!r}: unknown object {part.strip()!r}; pick from "
                            f"{', '.join(objects)} or 'all'")
        if objects.index(p) + 1 not in ids:
            ids.append(objects.index(p) + 1)
    return ids


def _c2w_opengl(w2c: np.ndarray) -> list[list[float]]:
    """OpenCV world-to-camera -> NeRF-synthetic camera-to-world (OpenGL axes: y up, z back)."""
    c2w = np.linalg.inv(w2c)
    c2w[:3, 1:3] *= -1
    return c2w.tolist()


@dataclass
class DemoData:
    root: Path
    model_path: Path
    source_path: Path
    masks_path: Path
    gt_masks_path: Path
    scene: SyntheticScene
    object_ids: list[int]                # objects segmented (1-based synthetic ids), in label order
    train_names: list[str]
    test_names: list[str]


def write_demo_data(root: str | Path, objects: Sequence[int], num_views: int = 24, size: int = 128,
                    seed: int = 0, backend: str = "auto", num_threads: int = 0,
                    scene: Optional[SyntheticScene] = None, force: bool = False) -> DemoData:
    """Write ``root/model`` (Inria model folder) and ``root/scene`` (NeRF-synthetic source with masks).

    One object -> binary 0/255 PNGs; several -> a COCO RLE json (category ids = synthetic object ids, with
    names). Masks are the objects' occlusion-aware silhouettes (rendered indicator > 0.5, several objects:
    argmax where their summed alpha > 0.5), the same rule evaluation uses. Written all-or-nothing through
    utils.outputs: a re-run replaces the demo's own files (stale masks of another object choice included) and
    never touches anything else in ``root``.
    """
    from utils.outputs import OutputFolder

    root = Path(root).resolve()
    scene = scene if scene is not None else make_demo_scene(num_views=num_views, size=size, seed=seed)
    with OutputFolder(root, TOOL, force=force) as folder:
        data = _write_demo_files(folder.dir, root, scene, objects, backend, num_threads)
        folder.commit()
    return data


def _write_demo_files(stage: Path, root: Path, scene: SyntheticScene, objects: Sequence[int], backend: str,
                      num_threads: int) -> DemoData:
    """The demo's files, written below ``stage``; paths inside them (cfg_args) name their final place ``root``."""
    from arguments import ModelParams, write_cfg_args
    from scene.model_folder import save_model, write_cameras_json
    from segmentation.export import render_rgb
    from segmentation.labels import render_label_map
    from utils.io import save_json, save_png

    gaussians = gaussians_from_synthetic(scene)
    model_path, source = root / "model", root / "scene"
    staged_model, staged_source = stage / "model", stage / "scene"
    masks, gt_masks = staged_source / "masks", staged_source / "gt_masks"

    # --- model folder (what train.py leaves behind) ---
    params = ModelParams(sh_degree=3, source_path=str(source), model_path=str(model_path), eval=True)
    staged_model.mkdir(parents=True, exist_ok=True)
    write_cfg_args(staged_model / "cfg_args", params)
    write_cameras_json(staged_model / "cameras.json", scene.cameras)
    save_model(staged_model, 0, gaussians)

    # --- source folder: images, transforms, masks ---
    obj = np.asarray(scene.object_ids)
    picked = np.zeros(len(obj), dtype=np.int64)     # label l (1..m, in `objects` order) per Gaussian
    for l, k in enumerate(objects, start=1):
        picked[obj == k] = l
    multi = len(objects) > 1
    fov = 2.0 * math.atan(scene.cameras[0].width / (2.0 * scene.cameras[0].fx))
    frames: dict[str, list] = {"train": [], "test": []}
    coco = {"train": _coco_skeleton(scene, objects), "test": _coco_skeleton(scene, objects)}
    names: dict[str, list[str]] = {"train": [], "test": []}
    for i, cam in enumerate(scene.cameras):
        split = "test" if i % HOLD_EVERY == 0 else "train"
        save_png(staged_source / split / f"{cam.image_name}.png", render_rgb(cam, gaussians, (0.0, 0.0, 0.0), backend,
                                                                        num_threads))
        frames[split].append({"file_path": f"./{split}/{cam.image_name}", "transform_matrix":
                              _c2w_opengl(cam.world_to_camera)})
        names[split].append(cam.image_name)
        lm = render_label_map(cam, gaussians, picked, len(objects), backend, num_threads)
        folder = gt_masks if split == "test" else masks
        if multi:   # COCO RLE json: carries the object names, so outputs are extracted_<name>.ply
            _coco_add(coco[split], cam, lm, objects)
        else:       # binary 0/255 PNG per view, the most common mask format
            save_png(folder / f"{cam.image_name}.png", (lm * 255).astype(np.uint8))
    for split, fr in frames.items():
        save_json(staged_source / f"transforms_{split}.json", {"camera_angle_x": fov, "frames": fr})
        if multi:
            save_json((gt_masks if split == "test" else masks) / "annotations.json", coco[split])
    train_names, test_names = names["train"], names["test"]
    return DemoData(root, model_path, source, source / "masks", source / "gt_masks", scene, list(objects),
                    train_names, test_names)


def _coco_skeleton(scene: SyntheticScene, objects: Sequence[int]) -> dict:
    return {"images": [], "annotations": [],
            "categories": [{"id": int(k), "name": scene.object_names[k]} for k in objects]}


def _coco_add(coco: dict, cam: Any, label_map: np.ndarray, objects: Sequence[int]) -> None:
    """One image and its objects' RLE masks (category id = synthetic object id)."""
    from utils.masks import rle_counts_to_string, rle_encode

    image_id = len(coco["images"]) + 1
    coco["images"].append({"id": image_id, "file_name": f"{cam.image_name}.png", "width": int(cam.width),
                           "height": int(cam.height)})
    for l, k in enumerate(objects, start=1):
        m = label_map == l
        if m.any():
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": int(k), "iscrowd": 1,
                "area": int(m.sum()), "segmentation": {"size": [int(cam.height), int(cam.width)],
                                                       "counts": rle_counts_to_string(rle_encode(m))}})


# ---------------------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------------------
@dataclass
class DemoReport:
    data: DemoData
    seg_out: Path
    summary: dict
    eval_json: Path
    miou: Optional[float]
    macc: Optional[float]
    precision: list[float] = field(default_factory=list)   # per object, among Gaussians some mask saw
    recall: list[float] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def run_demo(out: str | Path = "output/demo", objects: str = "ball", overrides: Optional[dict] = None,
             size: int = 128, num_views: int = 24, log: Callable[[str], None] = print) -> DemoReport:
    """Generate, segment, evaluate and report. ``overrides``: SegmentConfig fields (views, margin, ...)."""
    import warnings

    from segmentation.evaluate import EvalConfig, run_evaluation
    from segmentation.pipeline import SegmentConfig, format_summary, run_segmentation
    from utils.outputs import ForeignFilesWarning

    t0 = time.perf_counter()
    scene = make_demo_scene(num_views=num_views, size=size)
    names = scene.object_names
    ids = parse_objects(objects, names)
    root = Path(out).resolve()
    overrides = dict(overrides or {})
    force = bool(overrides.pop("force", False))
    # Hidden Gaussians (inside the objects) are seen by no mask; the paper leaves them in deleted.ply, where
    # they show once the object is gone. The demo assigns them from their neighbours (shown in the command).
    overrides.setdefault("undecided", "propagate")
    backend = overrides.get("backend", "auto")
    threads = overrides.get("num_threads", 0)
    obj_names = [names[k] for k in ids]

    log(f"Demo: {len(names) - 1} objects ({', '.join(names[1:])}) on a ground plane, {num_views} views at {size}x{size} px; "
        f"segmenting {' + '.join(obj_names)}")
    with warnings.catch_warnings():  # the demo's folder holds its own nested outputs (segmentation/)
        warnings.simplefilter("ignore", ForeignFilesWarning)
        data = write_demo_data(root, ids, backend=backend, num_threads=threads, scene=scene, force=force)
    n = len(data.scene.means)
    t_data = time.perf_counter() - t0
    rel = _rel
    log(f"  wrote a trained-model folder  {rel(data.model_path)}  ({n:,} Gaussians, Inria layout)")
    log(f"  and its scene folder          {rel(data.source_path)}  (NeRF-synthetic: transforms_*.json, "
        f"{len(data.train_names)} train + {len(data.test_names)} held-out images)")
    log(f"  2D masks of {'/'.join(obj_names)} for the {len(data.train_names)} training views in "
        f"{rel(data.masks_path)}, ground truth for the held-out views in {rel(data.gt_masks_path)}  "
        f"[{t_data:.1f} s]")

    seg_out = root / "segmentation"
    extra = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in overrides.items()
                     if k not in ("backend", "num_threads", "progress") and v is not None)
    log("")
    log(f"$ python segment.py -m {rel(data.model_path)} --masks {rel(data.masks_path)} --out {rel(seg_out)}"
        + (f" {extra}" if extra else ""))
    # the same arguments as the printed command line (relative to the current folder when inside it)
    cfg = SegmentConfig(model_path=rel(data.model_path), masks=rel(data.masks_path), out=rel(seg_out), force=force,
                        **overrides)
    t1 = time.perf_counter()
    with warnings.catch_warnings():  # eval.json of the previous demo run stays until the evaluation replaces it
        warnings.simplefilter("ignore", ForeignFilesWarning)
        result = run_segmentation(cfg, log=lambda s: log("  " + s))
    t_seg = time.perf_counter() - t1
    summary = result.summary
    log(format_summary(summary, indent="  "))

    # 3D check against the generator's ground truth (only a synthetic scene has it)
    obj = np.asarray(data.scene.object_ids)
    labels = result.selection.labels
    seen = result.votes.sum(axis=1) > 0
    precision, recall = [], []
    for l, k in enumerate(ids, start=1):
        sel, truth = (labels == l) & seen, (obj == k) & seen
        tp = int((sel & truth).sum())
        precision.append(tp / max(1, int(sel.sum())))
        recall.append(tp / max(1, int(truth.sum())))
    log("  3D check vs the generator's object ids (Gaussians some mask saw): " + ", ".join(
        f"{names[k]} precision {p:.1%} recall {r:.1%}" for k, p, r in zip(ids, precision, recall)))

    log("")
    log(f"$ python eval_segmentation.py -m {rel(data.model_path)} --labels {rel(seg_out / 'labels.npy')} "
        f"--gt-masks {rel(data.gt_masks_path)} --split test")
    ecfg = EvalConfig(model_path=rel(data.model_path), labels=rel(seg_out / "labels.npy"),
                      gt_masks=rel(data.gt_masks_path), split="test", backend=backend, num_threads=threads,
                      progress=cfg.progress, force=force)
    t2 = time.perf_counter()
    ev = run_evaluation(ecfg)
    eval_json = ev.path
    ev_obj = run_evaluation(EvalConfig(**{**vars(ecfg), "render": "object",
                                          "out": str(seg_out / "eval_object.json")}))
    t_eval = time.perf_counter() - t2
    log("\n".join("  " + line for line in ev.table().splitlines()))
    total = time.perf_counter() - t0
    log("")
    miou = ev.miou
    log(f"Held-out views: mIoU {miou:.3f}, pixel accuracy {ev.macc:.3f} in the scene ({len(ev.views)} views never "
        f"used for voting); the extracted object alone: mIoU {ev_obj.miou:.3f} (--render object: lower where "
        "another object hides part of it)" if miou is not None else "Held-out views: no object visible, no IoU")
    outs = summary["outputs"]
    plys = [o for o in outs if o.endswith(".ply")]
    pics = [o for o in outs if o.endswith((".png", ".gif"))]
    log(f"Outputs in {rel(seg_out)}/")
    log(f"  {', '.join(plys):<44} the selection and the scene without it (Inria PLY: any 3DGS viewer)")
    log(f"  {'labels.npy, votes.npy':<44} per-Gaussian label (-1 undecided, 0 background, l) and alpha*T mass per class")
    log(f"  {'summary.json, ' + eval_json.name + ', eval_object.json':<44} counts, parameters, timings; "
        "held-out scores")
    if pics:
        log(f"  {('preview_*.png, views.gif' if 'views.gif' in pics else 'preview_*.png'):<44} "
            "original | extracted | deleted | mask overlay")
    log(f"Done in {total:.1f} s (scene {t_data:.1f} s, segmentation {t_seg:.1f} s, evaluation {t_eval:.1f} s). "
        "Your own model: python segment.py -m MODEL --masks MASKS")
    return DemoReport(data, seg_out, summary, eval_json, miou, ev.macc, precision, recall,
                      {"data": t_data, "segment": t_seg, "eval": t_eval, "total": total})


def _rel(p: Path) -> str:
    """A path relative to the current folder when it is inside it (shorter, copy-pasteable printouts)."""
    try:
        return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
