"""The three jobs behind extract_features.py, dino_train.py and cluster.py (the scripts only parse flags).

Folder layout (beside Inria's model folder; every folder written through utils.outputs)::

    output/features/<scene>/features.pt       extract_features.py (default --out, relative to the current
                                              folder; never inside the scene folder, which is an input)
    <MODEL>/features/gaussian_features.pt     dino_train.py: per-Gaussian features [N, C] + seen mask + stats
    <MODEL>/features/config.json              dino_train.py: config, views, losses
    <MODEL>/clusters/labels.npy               cluster.py: cluster id per Gaussian [N] int64
    <MODEL>/clusters/clusters/cluster_XXX.ply one Inria PLY per non-empty cluster
    <MODEL>/clusters/clustered.ply            the scene with SH DC = cluster colour (higher SH zeroed)
    <MODEL>/clusters/renders/<view>.png       RGB render | cluster colouring
    <MODEL>/clusters/clusters.json            config, sizes, timings
    <MODEL>/clusters/selection/{labels.npy, extracted.ply, summary.json}
                                              --select-by-mask: segment.py's format (1 / 0 / -1), so
                                              eval_segmentation.py --labels .../selection/labels.npy scores it
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from arguments import Backend, flag, nested, options
from features.clustering import (ClusterConfig, cluster_gaussians, cluster_mask_scores, palette, render_cluster_view,
                                 select_clusters, selection_labels)
from features.extractors import ExtractorConfig, build_extractor, extract_feature_maps, load_features, save_features
from features.field import FieldConfig, TargetMaps, field_paths, load_field, match_views, save_field, \
    train_feature_field
from scene.recolour import recoloured
from scene.views import load_views
from utils.errors import UserError
from utils.io import safe_name, save_json, save_npy, save_png, save_summary
from utils.outputs import OutputFolder
from utils.previews import evenly_spaced

Log = Callable[[str], None]
CLUSTERS_VERSION = 1   # clusters.json; 1: the first versioned file


def _quiet(_: str) -> None:
    return None


# ----- extract_features.py ------------------------------------------------------------------------------
def default_features_path(source_path: str | Path) -> Path:
    """``output/features/<scene folder name>/features.pt``, relative to the current folder: outside the scene
    (an input, often read-only). dino_train.py looks here when --features is not given."""
    return Path("output") / "features" / Path(os.path.abspath(source_path)).name / "features.pt"


@dataclass
class ExtractFeaturesConfig:
    """Everything extract_features.py takes; each field is its flag."""

    source_path: str = options.source_path("scene folder (COLMAP, LLFF or NeRF-synthetic)", required=True)
    images: str = options.images("images", "image folder inside the source")
    resolution: int = options.resolution(-1, "Inria's -r: -1 auto (<= 1600 px), 1/2/4/8 divide, > 8 target width")
    extractor: ExtractorConfig = nested(ExtractorConfig, "extractor")
    out: str = options.out("output file (default: output/features/<name of SOURCE>/features.pt; never inside "
                           "SOURCE, an input)")
    progress: bool = options.progress()
    force: bool = options.force()


@dataclass
class ExtractFeaturesResult:
    path: Path                 # the features.pt written
    meta: dict[str, Any]       # its "__meta__" (extractor, PCA, timings)


def run_extract(cfg: ExtractFeaturesConfig, log: Log = _quiet) -> ExtractFeaturesResult:
    """Extract, PCA-compress and save the feature maps of every view of a scene."""
    from scene.dataset_readers import read_scene

    ecfg = cfg.extractor
    path = Path(cfg.out) if cfg.out else default_features_path(cfg.source_path)
    with OutputFolder(path.parent, "extract_features.py", [cfg.source_path, ecfg.weights, ecfg.hub_repo], cfg.force,
                      files=[path.name]) as folder:
        extractor = build_extractor(ecfg)  # weights / packages are checked before any image is read
        info = read_scene(cfg.source_path, cfg.images, cfg.resolution, eval=False)
        cams = list(info.train_cameras) + list(info.test_cameras)
        log(f"extractor {extractor.description}")
        log(f"scene     {cfg.source_path}: {len(cams)} views at {cams[0].width}x{cams[0].height}")
        t0 = time.perf_counter()
        maps, meta = extract_feature_maps([(c.image_name, (lambda c=c: c.prepare_image(c.read_raw())))
                                           for c in cams], extractor, ecfg, progress=cfg.progress)
        meta.update(source_path=str(Path(cfg.source_path).resolve()), resolution=int(cfg.resolution),
                    images=cfg.images, num_images=len(maps), seconds=round(time.perf_counter() - t0, 3))
        save_features(folder.path(path.name), maps, meta)
        folder.commit()
    c, h, w = next(iter(maps.values())).shape
    log(f"wrote     {path}: {len(maps)} maps of {c}x{h}x{w} float16 ({meta['extractor']}, PCA keeps "
        f"{100 * meta['pca_explained_variance']:.1f}% of the variance) in {meta['seconds']:.1f} s")
    return ExtractFeaturesResult(path, meta)


# ----- dino_train.py ------------------------------------------------------------------------------------
@dataclass
class DinoTrainConfig:
    """Everything dino_train.py takes; each field is its flag."""

    model_path: str = options.model_path("trained model folder (Inria layout)")
    features: str = flag("", "features.pt from extract_features.py (default: output/features/<scene folder of "
                         "cfg_args>/features.pt, extract_features.py's default)")
    iteration: int = options.iteration()
    source_path: str = options.source_path("scene folder (default: cfg_args'; decides the training split)")
    field: FieldConfig = nested(FieldConfig, "feature field")
    device: str = options.device()
    progress: bool = options.progress()
    force: bool = options.force()


@dataclass
class DinoTrainResult:
    path: Path                 # MODEL/features/gaussian_features.pt
    summary: dict[str, Any]    # losses, seconds, Gaussians seen


def run_dino_train(cfg: DinoTrainConfig, log: Log = _quiet) -> DinoTrainResult:
    """Train the per-Gaussian feature field of a model on its training views."""
    from scene.model_folder import find_iteration, model_inputs

    iteration = find_iteration(cfg.model_path, None if cfg.iteration < 0 else cfg.iteration)
    inputs = model_inputs(cfg.model_path, cfg.source_path)
    feat_path = Path(cfg.features) if cfg.features else _default_features(inputs[1:])
    out = field_paths(cfg.model_path)[0].parent
    with OutputFolder(out, "dino_train.py", [*inputs, feat_path], cfg.force, flag=None) as folder:
        path, summary = _train_field(cfg, iteration, feat_path, folder, log)
        folder.commit()
    log(f"wrote     {path}")
    return DinoTrainResult(path, summary)


def _default_features(source: list[Path]) -> Path:
    """extract_features.py's default file for the model's scene, which must exist and come from that scene."""
    if not source:
        raise UserError("the model's cfg_args names no scene folder, so the default features file is unknown; "
                        "pass --features PATH (written by extract_features.py) or -s SOURCE")
    path = default_features_path(source[0])
    if not path.is_file():
        raise UserError(f"{path}: not found; run extract_features.py -s {source[0]} first (from this folder) or "
                        "pass --features PATH")
    return path


def _train_field(job: DinoTrainConfig, iteration: int, feat_path: Path, folder: Any, log: Log
                 ) -> tuple[Path, dict[str, Any]]:
    from scene.model_folder import load_model

    params, gaussians, iteration = load_model(job.model_path, iteration, device=job.device)
    views = load_views(params, "train", job.source_path)
    maps, fmeta = load_features(feat_path)
    if not job.features and fmeta.get("source_path") and views.source_path and \
            Path(fmeta["source_path"]).resolve() != Path(views.source_path).resolve():
        raise UserError(f"{feat_path}: was extracted from {fmeta['source_path']}, not from this model's scene "
                        f"{views.source_path}; pass --features PATH or re-run extract_features.py")
    train_names = {c.image_name for c in views.cameras}
    targets = TargetMaps({k: v for k, v in maps.items() if k in train_names} or maps)
    cams = match_views(views.cameras, targets, str(feat_path))
    extractor = fmeta.get("extractor", "unknown")
    log(f"model     {job.model_path} (iteration {iteration}, {len(gaussians)} Gaussians)")
    log(f"features  {feat_path}: {targets.channels} channels, {fmeta.get('description', extractor)}")
    log(f"training  {job.field.iterations} iterations on {len(cams)} {views.split} views at "
        f"{cams[0].width}x{cams[0].height} (geometry frozen, lr {job.field.lr}, cosine {job.field.cosine_weight})")
    t0 = time.perf_counter()
    result = train_feature_field(gaussians, cams, targets, job.field, device=job.device, progress=job.progress)
    seconds = time.perf_counter() - t0
    path, cfg_path = field_paths(job.model_path)
    meta = {"iteration": int(iteration), "features_file": str(feat_path), "extractor": extractor,
            "extractor_description": fmeta.get("description", extractor), "seconds": round(seconds, 3)}
    save_field(folder.path(path.name), result, meta, folder.path(cfg_path.name), job.field)
    first = float(np.mean(result.losses[:10])) if result.losses else float("nan")
    last = float(np.mean(result.losses[-10:])) if result.losses else float("nan")
    log(f"loss      {first:.4f} (first 10 its) -> {last:.4f} (last 10 its); {int(result.seen.sum())} of "
        f"{len(gaussians)} Gaussians seen; {seconds:.1f} s")
    return path, {"loss_first": first, "loss_last": last, "seconds": seconds, "seen": int(result.seen.sum())}


# ----- cluster.py ---------------------------------------------------------------------------------------
@dataclass
class ClusterJobConfig:
    """Everything cluster.py takes; each field is its flag."""

    model_path: str = options.model_path("trained model folder (Inria layout)")
    cluster: ClusterConfig = nested(ClusterConfig, "clustering")
    features: str = flag("", "gaussian_features.pt (default: MODEL/features/)")
    iteration: int = options.iteration()
    out: str = options.out("output folder (default: MODEL/clusters)")
    select_by_mask: list[tuple[str, str]] = flag(
        default_factory=list, help="select clusters mostly inside MASK (binary image) seen from VIEW (image name); "
        "repeatable", nargs=2, repeat=True, metavar=("VIEW", "MASK"))
    inside_frac: float = flag(0.5, "a cluster is selected when this fraction of its rendered weight lies inside the "
                              "masks")
    render_views: int = flag(4, "views rendered with the cluster colours")
    cluster_plys: bool = flag(True, "write one PLY per cluster (--no-cluster-plys: none)")
    source_path: str = options.source_path("scene folder (default: cfg_args'; else cameras.json)")
    backend: Backend = options.backend()
    num_threads: int = options.num_threads("CPU threads for the rasterizer and torch (default 0: all cores)")
    device: str = options.device()
    force: bool = options.force()


@dataclass
class ClusterResult:
    out: Path                  # the folder written (default MODEL/clusters)
    summary: dict[str, Any]    # clusters.json


def _view_lookup(cameras: list[Any]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for c in cameras:
        table.setdefault(c.image_name, c)
        table.setdefault(Path(c.image_name).name, c)
        table.setdefault(Path(c.image_name).stem, c)
    return table


def load_mask_views(select: list[tuple[str, str]], cameras: list[Any]) -> list[tuple[Any, np.ndarray]]:
    """(camera, mask [H, W] bool at the camera's size) for each (view name, mask file) pair."""
    from utils.masks import read_binary_mask

    table = _view_lookup(cameras)
    out = []
    for view, mask_file in select:
        cam = table.get(view) or table.get(Path(view).stem)
        if cam is None:
            some = ", ".join(c.image_name for c in cameras[:4])
            raise UserError(f"--select-by-mask {view}: no such view; use an image name such as {some}")
        if not Path(mask_file).is_file():
            raise UserError(f"{mask_file}: mask file not found; pass a binary mask image for view {view}")
        out.append((cam, np.asarray(cam.prepare_mask(read_binary_mask(mask_file)), dtype=bool)))
    return out


def run_cluster(job: ClusterJobConfig, log: Log = _quiet) -> ClusterResult:
    """Cluster a model's Gaussians by their learnt features; optionally select clusters by 2D masks."""
    from scene.model_folder import find_iteration, model_inputs

    if job.cluster.k < 1:
        raise UserError(f"--k {job.cluster.k}: must be >= 1")
    if not 0.0 <= job.inside_frac <= 1.0:
        raise UserError(f"--inside-frac {job.inside_frac}: must be in [0, 1]")
    find_iteration(job.model_path, None if job.iteration < 0 else job.iteration)  # a wrong -m fails first
    final = Path(job.out) if job.out else Path(job.model_path) / "clusters"
    feat_path = Path(job.features) if job.features else field_paths(job.model_path)[0]
    inputs = [*model_inputs(job.model_path, job.source_path), feat_path, *(m for _, m in job.select_by_mask)]
    with OutputFolder(final, "cluster.py", inputs, job.force) as folder:
        summary = _cluster(job, feat_path, folder.dir, log)
        folder.commit()
    log(f"wrote     {final}: {', '.join(summary['outputs'])}")
    return ClusterResult(final, summary)


def _cluster(job: ClusterJobConfig, feat_path: Path, out: Path, log: Log) -> dict[str, Any]:
    """The job, writing into ``out`` (the staging folder)."""
    from scene.model_folder import load_model

    timings: dict[str, float] = {}
    t = time.perf_counter()
    params, gaussians, iteration = load_model(job.model_path, None if job.iteration < 0 else job.iteration,
                                              device=job.device)
    n = len(gaussians)
    feats, seen, fmeta = load_field(feat_path, n)
    views = load_views(params, "all", job.source_path)
    select = [(str(v), str(m)) for v, m in job.select_by_mask]
    mask_views = load_mask_views(select, views.cameras) if select else []
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    xyz = gaussians.get_xyz.detach().cpu().numpy()
    ids = cluster_gaussians(feats.numpy(), xyz, job.cluster)
    k = int(ids.max()) + 1 if n else 0
    sizes = np.bincount(ids, minlength=k)
    timings["kmeans"] = time.perf_counter() - t
    log(f"clusters  {k} over {n} Gaussians ({'MiniBatchKMeans' if n > job.cluster.minibatch_above else 'KMeans'} "
        f"on features x{job.cluster.feature_weight} + xyz x{job.cluster.xyz_weight}); sizes {sizes.tolist()}")

    t = time.perf_counter()
    outputs = ["labels.npy", "clustered.ply", "clusters.json"]
    save_npy(out / "labels.npy", ids)
    colors = palette(k)[ids]
    recoloured(gaussians, colors).save_ply(out / "clustered.ply")
    written = set()
    if job.cluster_plys:
        for c in range(k):
            if sizes[c] > 0:
                name = f"cluster_{c:03d}.ply"
                gaussians.subset(torch.from_numpy(ids == c)).save_ply(out / "clusters" / name)
                written.add(name)
        outputs.append(f"clusters/ ({len(written)} PLYs)")
    color_t = torch.from_numpy(colors)
    rendered = set()
    for i in evenly_spaced(len(views.cameras), job.render_views):
        cam = views.cameras[i]
        name = safe_name(cam.image_name, "view") + ".png"
        save_png(out / "renders" / name, render_cluster_view(cam, gaussians, color_t, job.backend, job.num_threads))
        rendered.add(name)
    if rendered:
        outputs.append(f"renders/ ({len(rendered)} PNGs)")
    timings["write"] = time.perf_counter() - t

    summary: dict[str, Any] = {
        "model_path": str(job.model_path), "iteration": int(iteration), "num_gaussians": n,
        "features_file": str(feat_path), "extractor": fmeta.get("extractor"),
        "extractor_description": fmeta.get("extractor_description"),
        "config": asdict(job.cluster), "k": k, "sizes": sizes.tolist(),
        "seen_gaussians": int(seen.sum()), "palette": palette(k).round(4).tolist(),
        "values": "labels.npy: cluster id per Gaussian (0..k-1); clusters/cluster_XXX.ply holds cluster XXX",
    }
    if mask_views:
        t = time.perf_counter()
        scores = cluster_mask_scores(gaussians, ids, k, mask_views, job.backend, job.num_threads)
        selected = select_clusters(scores, job.inside_frac)
        labels = selection_labels(ids, selected, seen.numpy())
        sel_dir = out / "selection"
        save_npy(sel_dir / "labels.npy", labels)
        gaussians.subset(torch.from_numpy(labels == 1)).save_ply(sel_dir / "extracted.ply")
        frac = scores.fraction
        sel_summary = {
            "method": "feature-field clusters selected by 2D mask",
            "model_path": str(job.model_path), "iteration": int(iteration), "num_gaussians": n,
            "masks": {"format": "binary", "files": [m for _, m in select]},
            "labels": {"ids": [1], "names": ["selected"],
                       "values": "labels.npy: -1 undecided (feature never trained), 0 background, 1 selected"},
            "views": {"used": len(mask_views), "used_names": [c.image_name for c, _ in mask_views]},
            "inside_frac": job.inside_frac,
            "clusters": {"selected": np.flatnonzero(selected).tolist(),
                         "inside_fraction": [None if not np.isfinite(v) else round(float(v), 4) for v in frac]},
            "gaussians": {"selected": int((labels == 1).sum()), "background": int((labels == 0).sum()),
                          "undecided": int((labels == -1).sum())},
        }
        save_json(sel_dir / "summary.json", sel_summary)
        timings["select"] = time.perf_counter() - t
        summary["selection"] = {k_: sel_summary[k_] for k_ in ("clusters", "gaussians", "inside_frac")}
        outputs.append("selection/{labels.npy, extracted.ply, summary.json}")
        log(f"selected  clusters {np.flatnonzero(selected).tolist()} ({int((labels == 1).sum())} Gaussians) by "
            f"{len(mask_views)} mask(s) with inside fraction >= {job.inside_frac}")
    summary["outputs"] = outputs
    return save_summary(out / "clusters.json", summary, timings, CLUSTERS_VERSION)
