"""The whole segmentation job behind ``segment.py``: model + cameras + masks -> votes -> selection -> files."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from segmentation import export
from segmentation.views import SPLITS, load_views
from segmentation.voting import (UNDECIDED_MODES, Selection, accumulate_votes, label_counts, make_selection,
                                 parse_views, resolve_undecided_mode, select_views)
from utils.errors import UserError
from utils.timing import Laps

SUMMARY_VERSION = 1


@dataclass
class SegmentConfig:
    """Everything ``segment.py`` takes (field comments are the CLI help)."""

    model_path: str                       # model folder (Inria layout)
    iteration: int = -1                   # point_cloud/iteration_N to load (-1: newest)
    source_path: str = ""                 # scene folder; default: the one in cfg_args
    images: str = ""                      # image folder inside the source; default: cfg_args'
    resolution: int = 0                   # 0: cfg_args' resolution; else Inria's -r values
    masks: str = ""                       # mask folder / COCO json; default: <source>/masks
    mask_format: str = "auto"             # auto | binary | ids | sam | coco
    labels: Optional[str] = None          # ids (or COCO names) to segment, e.g. "3,7"; default all
    views: Optional[str] = None           # every N-th masked view (int) or a fraction in (0, 1]
    split: str = "train"                  # train | test | all views of the scene
    margin: float = 0.0                   # select only if (in - out) / (in + out) > margin
    undecided: str = "auto"               # auto | keep | drop | propagate
    knn: int = 8                          # neighbours used by --undecided propagate
    out: str = ""                         # output folder; default <model>/segmentation
    previews: int = 4                     # preview PNGs written (0: none)
    gif_frames: int = 24                  # frames of views.gif (0: no GIF)
    preview_size: int = 480               # longest side of preview panels, px
    backend: str = "auto"                 # rasterizer backend
    num_threads: int = 0                  # CPU threads (0: all)
    device: str = "cpu"                   # device of the Gaussians
    progress: bool = True                 # tqdm bars (only on a terminal)


@dataclass
class SegmentResult:
    out: Path
    summary: dict
    selection: Selection
    votes: np.ndarray                     # [N, L+1] float64
    label_names: list[str]
    outputs: list[str] = field(default_factory=list)


def _check_config(cfg: SegmentConfig) -> None:
    if cfg.undecided not in UNDECIDED_MODES:
        raise UserError(f"--undecided {cfg.undecided!r}: use one of {', '.join(UNDECIDED_MODES)}")
    if not -1.0 < cfg.margin < 1.0:
        raise UserError(f"--margin {cfg.margin}: must lie in (-1, 1); 0 reproduces the paper")
    if cfg.knn < 1:
        raise UserError(f"--knn {cfg.knn}: must be >= 1")
    if cfg.split not in SPLITS:
        raise UserError(f"--split {cfg.split!r}: use one of {', '.join(SPLITS)}")
    if cfg.previews < 0 or cfg.gif_frames < 0 or cfg.preview_size < 16:
        raise UserError("--previews and --gif-frames must be >= 0 and --preview-size >= 16")


def run_segmentation(cfg: SegmentConfig, log: Callable[[str], None] = lambda s: None) -> SegmentResult:
    """Run the job; every user-fixable problem raises a one-line UserError before any output is written."""
    from scene.model_folder import find_iteration, load_model
    from utils.masks import open_masks

    t_start = time.perf_counter()
    laps = Laps()
    lap, timings = laps.lap, laps.timings

    _check_config(cfg)
    view_spec = parse_views(cfg.views)
    model_path = Path(cfg.model_path)
    iteration = find_iteration(model_path, None if cfg.iteration < 0 else cfg.iteration)
    out = export.ensure_writable(Path(cfg.out) if cfg.out else model_path / "segmentation")

    t = time.perf_counter()
    params, gaussians, iteration = load_model(model_path, iteration, device=cfg.device)
    n = len(gaussians)
    log(f"model    {model_path} (iteration {iteration}, {n:,} Gaussians)")
    t = lap("load_model", t)

    views = load_views(params, cfg.split, cfg.source_path, cfg.images, cfg.resolution)
    cam0 = views.cameras[0]
    log(f"views    {len(views.cameras)} {cfg.split} views from "
        f"{views.source_path if views.cameras_from == 'source' else 'cameras.json'} ({cam0.width}x{cam0.height})")
    t = lap("load_cameras", t)

    if cfg.masks:
        masks_path = Path(cfg.masks)
    elif views.source_path and (Path(views.source_path) / "masks").exists():
        masks_path = Path(views.source_path) / "masks"
    else:
        raise UserError(f"{model_path}: no --masks given and no masks/ folder in the source; pass --masks with the "
                        "mask folder or COCO json")
    mask_set = open_masks(masks_path, views.cameras, cfg.mask_format, cfg.labels, other_views=views.other_names)
    label_names = mask_set.label_names        # resolves --labels now: a bad id fails before any work
    label_ids = mask_set.label_ids
    num_labels = len(label_names)
    if num_labels == 0:
        raise UserError(f"{masks_path}: the masks hold no label (all background); check the mask folder")
    if cfg.labels and mask_set.fmt == "ids":
        _check_ids_present(mask_set, cfg.labels)
    picked = select_views(len(mask_set), view_spec)
    used = mask_set.subset(picked)
    log(f"masks    {masks_path} ({mask_set.fmt}, {num_labels} label{'s' if num_labels > 1 else ''}: "
        f"{', '.join(label_names[:8])}{'...' if num_labels > 8 else ''}); {len(mask_set)} views have a mask"
        + (f", {len(mask_set.skipped_views)} have none" if mask_set.skipped_views else "")
        + (f"; voting on {len(used)} (--views {cfg.views})" if len(used) != len(mask_set) else ""))
    t = lap("open_masks", t)

    votes, voted = accumulate_votes(gaussians, used.items(), num_labels, cfg.backend, cfg.num_threads,
                                    total=len(used), progress=cfg.progress)
    t = lap("vote", t)
    if not (votes.sum(axis=1) > 0).any():
        raise UserError(f"{masks_path}: no Gaussian is visible in any of the {len(used)} voted views; check that "
                        f"the model, the cameras ({views.cameras_from}) and the masks belong together")

    all_used = not mask_set.skipped_views and len(used) == len(mask_set)
    mode = resolve_undecided_mode(cfg.undecided, all_used)
    xyz = gaussians.get_xyz.detach().cpu().numpy()
    selection = make_selection(votes, xyz, cfg.margin, mode, cfg.knn)
    counts = label_counts(selection.labels, num_labels)
    t = lap("decide", t)
    for name, c in zip(label_names, counts[2:]):
        if c == 0:
            warnings.warn(f"{masks_path}: label {name!r} got no Gaussian (its masks cover no Gaussian's majority "
                          "mass); check the masks of that label", stacklevel=2)

    previous = export.read_previous_outputs(out)
    # PLYs first: the largest files, the likeliest to fail (disk full); each file is replaced atomically
    written = export.write_scenes(out, gaussians, selection, label_names)
    export.save_npy(out / "labels.npy", selection.labels)
    export.save_npy(out / "votes.npy", votes)
    outputs = [*written, "labels.npy", "votes.npy"]
    t = lap("write", t)

    outputs += _write_previews(cfg, out, gaussians, selection, views, mask_set, used, params.white_background,
                               log)
    t = lap("previews", t)

    n_und = selection.num_undecided
    summary = {
        "version": SUMMARY_VERSION,
        "model_path": str(model_path),
        "iteration": int(iteration),
        "num_gaussians": n,
        "cameras": {"from": views.cameras_from, "source_path": views.source_path, "split": cfg.split,
                    "num_views": len(views.cameras), "width": cam0.width, "height": cam0.height},
        "masks": {"path": str(masks_path), "format": mask_set.fmt, "matched_views": len(mask_set),
                  "views_without_mask": len(mask_set.skipped_views),
                  "unmatched_mask_files": len(mask_set.unmatched_files)},
        "labels": {"ids": [i if isinstance(i, int) else str(i) for i in label_ids], "names": label_names,
                   "values": "labels.npy: -1 undecided, 0 background, l >= 1 = names[l - 1]"},
        "views": {"spec": cfg.views or "all", "masked": len(mask_set), "used": len(voted), "used_names": voted},
        "parameters": {"margin": cfg.margin, "undecided": cfg.undecided, "undecided_resolved": mode,
                       "knn": cfg.knn, "backend": cfg.backend, "resolution": cfg.resolution or params.resolution,
                       "mask_format": cfg.mask_format, "requested_labels": cfg.labels},
        "gaussians": {
            "undecided": n_und,
            "propagated": selection.num_propagated,
            "background": counts[1],
            "per_label": {name: c for name, c in zip(label_names, counts[2:])},
            "extracted": int(selection.extracted_mask().sum()),
            "deleted_scene": int(selection.deleted_mask().sum()),
            "dropped": n_und if mode == "drop" else 0,
        },
        "files": written,
        "timings_s": {},
        "outputs": outputs + ["summary.json"],
    }
    timings["total"] = round(time.perf_counter() - t_start, 4)
    summary["timings_s"] = timings
    export.save_json(out / "summary.json", summary)
    export.remove_stale_outputs(out, previous, summary["outputs"])
    return SegmentResult(out, summary, selection, votes, label_names, summary["outputs"])


def _check_ids_present(mask_set, requested: str) -> None:
    """Id masks name no labels up front: a mistyped --labels id would silently select nothing, so check
    that every requested id occurs in some mask (one extra read of the masks, cheap next to voting)."""
    seen = np.zeros(mask_set.num_labels + 1, dtype=bool)
    with warnings.catch_warnings():  # the real pass warns about mask problems
        warnings.simplefilter("ignore")
        for _, lm in mask_set.items():
            seen |= np.bincount(lm.ravel(), minlength=seen.size)[: seen.size] > 0
    missing = [name for name, s in zip(mask_set.label_names, seen[1:]) if not s]
    if missing:
        raise UserError(f"{mask_set.path}: --labels {requested}: id {missing[0]} occurs in no mask of the "
                        f"{len(mask_set)} matched views; pass ids that the masks contain (0/255 binary masks "
                        "need no --labels)")


def _write_previews(cfg: SegmentConfig, out: Path, gaussians, selection: Selection, views, mask_set, used,
                    white_background: bool, log: Callable[[str], None] = lambda s: None) -> list[str]:
    """preview_<view>.png for a few voted views and views.gif through all masked views.

    Each view is rendered once (a view in both the PNGs and the GIF is shrunk for the GIF), from models
    whose activations are computed once (export.FrozenGaussians)."""
    if cfg.previews == 0 and cfg.gif_frames == 0:
        return []
    from tqdm import tqdm

    png_idx = export.evenly_spaced(len(used), cfg.previews)
    png_views = used.subset(png_idx)
    position = {c.image_name: i for i, c in enumerate(mask_set.cameras)}
    gif_idx = _snap(export.evenly_spaced(len(mask_set), cfg.gif_frames),
                    [position[c.image_name] for c in png_views.cameras if c.image_name in position])
    gif_views = mask_set.subset(gif_idx)
    names = {c.image_name for c in png_views.cameras} | {c.image_name for c in gif_views.cameras}
    renders = 2 if views.has_images else 3
    log(f"previews {len(png_idx)} PNG strips, {len(gif_idx)} GIF frames: {len(names)} views x {renders} renders of "
        f"{len(gaussians):,} Gaussians (--previews 0 --gif-frames 0 skips this)")
    bg = (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)
    ctx = export.PreviewContext.of(gaussians, selection.extracted_mask(), selection.deleted_mask(), bg,
                                   views.has_images, cfg.backend, cfg.num_threads)
    bar = tqdm(total=len(names), desc=f"previews ({renders} renders/view)", unit="view",
               disable=None if cfg.progress else True, leave=False)
    with warnings.catch_warnings():  # mask warnings were given while voting; a few views would repeat them
        warnings.simplefilter("ignore")
        written = _preview_files(cfg, out, ctx, png_views, gif_views, bar)
    bar.close()
    return written


def _snap(frames: list[int], wanted: list[int]) -> list[int]:
    """Evenly spaced GIF frame indices with each ``wanted`` index (the PNG views) replacing the nearest
    frame not already wanted: the same number of frames, and the PNG views are rendered for both."""
    out = list(frames)
    keep: set[int] = set()
    for w in wanted:
        if w in out:
            keep.add(w)
            continue
        free = [i for i, f in enumerate(out) if f not in keep]
        if not free:
            break
        j = min(free, key=lambda i: abs(out[i] - w))
        out[j] = w
        keep.add(w)
    return sorted(set(out))


def _preview_files(cfg: SegmentConfig, out: Path, ctx, png_views, gif_views, bar) -> list[str]:
    written = []
    gif_side = min(cfg.preview_size, 256)
    in_gif = {c.image_name for c in gif_views.cameras}
    shared: dict[str, export.PreviewPanels] = {}  # GIF-size panels of views already rendered for a PNG
    for cam, lm in png_views.items():
        panels = export.render_panels(ctx, cam, cfg.preview_size)
        name = f"preview_{export.safe_name(cam.image_name)}.png"
        export.save_png(out / name, export.compose_row(panels, cam, lm, cfg.preview_size >= 200))
        written.append(name)
        if cam.image_name in in_gif:
            shared[cam.image_name] = export.shrink_panels(panels, cam, gif_side)
        bar.update()
    if len(gif_views):
        frames = []
        for cam, lm in gif_views.items():
            panels = shared.pop(cam.image_name, None)
            if panels is None:
                panels = export.render_panels(ctx, cam, gif_side)
                bar.update()
            frames.append(export.compose_row(panels, cam, lm, gif_side >= 200))
        h = min(f.shape[0] for f in frames)
        w = min(f.shape[1] for f in frames)
        export.save_gif(out / "views.gif", [f[:h, :w] for f in frames])
        written.append("views.gif")
    return written


def format_summary(summary: dict, indent: str = "") -> str:
    """The lines segment.py prints after a run (shared by the CLI and the demo)."""
    g = summary["gaussians"]
    n = summary["num_gaussians"]
    t = summary["timings_s"]
    lines = []
    per = ", ".join(f"{name} {c:,}" for name, c in g["per_label"].items())
    per = f" ({per})" if len(g["per_label"]) > 1 else ""
    lines.append(f"selected {g['extracted']:,} of {n:,} Gaussians{per}; deleted scene keeps "
                 f"{g['deleted_scene']:,}")
    mode = summary["parameters"]["undecided_resolved"]
    if g["undecided"]:
        what = {"keep": "kept in deleted.ply (paper's rule; --undecided propagate assigns them from their "
                        "nearest voted neighbours)",
                "drop": "dropped from both scenes",
                "propagate": f"labelled from their {summary['parameters']['knn']} nearest voted neighbours"}[mode]
        lines.append(f"{g['undecided']:,} Gaussians were seen by no voted view: {what}")
    lines.append(f"voted {summary['views']['used']} views in {t.get('vote', 0):.2f} s; total {t['total']:.1f} s "
                 f"(load {t.get('load_model', 0):.2f}, write {t.get('write', 0):.2f}, "
                 f"previews {t.get('previews', 0):.2f})")
    return "\n".join(indent + s for s in lines)
