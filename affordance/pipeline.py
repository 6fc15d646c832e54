"""The job behind ``affordance.py``: annotated images -> every training view (kNN) -> per-Gaussian labels.

Outputs in ``--out`` (default ``MODEL/affordance``), staged and swapped in at the end (utils.outputs)::

    labels_2d/<view>.png     class index per pixel of each target view (8-bit; 16-bit past 255 classes)
    overlays_2d/<view>.png   the photo tinted with the class colours
    labels.npy               [N] int64 per Gaussian: -1 undecided (no view saw it), 0 background, l class l
    votes.npy                [N, C] float64 alpha*T mass of each Gaussian on each class, summed over views
    labelled.ply             the scene with SH DC = class colour (higher SH zeroed; background light grey,
                             undecided dark grey) for any 3DGS viewer
    extracted_<class>.ply    the Gaussians of each affordance class that occurs in the sources
    renders/<view>.png       photo | 2D transfer | rendered 3D labelling, for a few views
    summary.json             classes, palette, sources, samples, views, counts, timings, outputs

Source images whose name matches a target view ("annotated views") vote with their own annotation instead of
a transferred one (``annotated_views="use"``); ``"transfer"`` treats them like any other view.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

import numpy as np

from affordance.annotations import SourceImage, find_sources, match_key
from affordance.classes import ClassList, parse_classes
from affordance.transfer import (KNN_BACKENDS, KnnTransfer, balanced_sample, collect_source_samples,
                                 pca_sample, resolve_knn_backend)
from arguments import Backend, flag, options
from arguments.options import Split
from features import extractors
from features.extractors import ExtractorName
from scene.recolour import recoloured
from scene.views import load_views
from segmentation.labels import render_label_map
from segmentation.voting import accumulate_votes, label_counts, make_selection
from utils.errors import UserError
from utils.io import safe_name, save_label_png, save_npy, save_png, save_summary
from utils.outputs import OutputFolder
from utils.previews import PALETTE, caption, evenly_spaced, overlay, to_uint8
from utils.timing import Laps

SUMMARY_VERSION = 1
TOOL = "affordance.py"  # the name affordance.py's files are recorded under (utils.outputs)
BACKGROUND_RGB = (0.62, 0.62, 0.62)
UNDECIDED_RGB = (0.15, 0.15, 0.15)

Log = Callable[[str], None]


_IN, _FEAT, _3D, _OUT, _COMPUTE = "inputs", "features and 2D transfer", "3D labels", "output", "compute"


@dataclass
class AffordanceConfig:
    """Everything ``affordance.py`` takes; each field is its flag."""

    model_path: str = options.model_path("trained model folder (Inria layout)", group=_IN)
    sources: str = flag("", "folder of annotated source images (layout below)", required=True, group=_IN)
    classes: Optional[str] = flag(None, "class names in label order, background first: a,b,c or a file with one "
                                  "name per line (default: the UMD part-affordance classes)", group=_IN)
    extractor: ExtractorName = extractors.extractor_flag(_FEAT)
    weights: Optional[str] = extractors.weights_flag(_FEAT)
    arch: Optional[str] = extractors.arch_flag(_FEAT)
    hub_repo: Optional[str] = extractors.hub_repo_flag(_FEAT)
    dim: int = extractors.dim_flag(group=_FEAT)
    stride: int = extractors.stride_flag(group=_FEAT)
    k: int = flag(5, "neighbours in the cosine k-NN majority vote (default 5)", group=_FEAT)
    max_samples: int = flag(50_000, "source pixels kept, balanced over classes (default 50000)", group=_FEAT)
    knn_backend: Literal["auto", "sklearn", "faiss"] = flag(
        "auto", "auto: faiss if installed, else scikit-learn (both exact)", group=_FEAT)
    pca_samples: int = extractors.pca_samples_flag(group=_FEAT)
    pca_views: int = flag(8, "target views whose pixels join the sources' in the PCA fit", group=_FEAT)
    annotated_views: Literal["use", "transfer"] = flag(
        "use", "target views that are themselves annotated sources: vote with their annotation (use, default) or "
        "with a transferred map like the others (transfer)", group=_FEAT)
    margin: float = flag(0.0, "keep a Gaussian's class only if (best - runner-up) / total mass > margin, else "
                         "background (default 0: argmax)", group=_3D)
    undecided: Literal["keep", "propagate"] = flag(
        "keep", "Gaussians no view saw: keep as -1 (default) or take their --knn3d nearest neighbours' class",
        group=_3D)
    knn3d: int = flag(8, "neighbours for --undecided propagate (default 8)", group=_3D)
    out: str = options.out("output folder (default MODEL/affordance)", group=_OUT)
    renders: int = flag(4, "renders/<view>.png strips (default 4)", group=_OUT)
    save_2d: bool = flag(True, "write labels_2d/ and overlays_2d/ (--no-2d: neither)", negative=("--no-2d",),
                         group=_OUT)
    split: Split = options.split("train", "target views labelled and voted (default train)", group=_IN)
    iteration: int = options.iteration(group=_IN)
    source_path: str = options.source_path(group=_IN)
    images: str = options.images(group=_IN)
    resolution: int = options.resolution(group=_IN)
    backend: Backend = options.backend(group=_COMPUTE)
    num_threads: int = options.num_threads(group=_COMPUTE)
    device: str = options.device("device for the ViT and the Gaussians (default cpu)", group=_COMPUTE)
    seed: int = options.seed(group=_FEAT)
    progress: bool = options.progress(group=_OUT)
    force: bool = options.force(group=_OUT)


@dataclass
class AffordanceResult:
    out: Path
    summary: dict
    labels: np.ndarray            # [N] int64
    votes: np.ndarray             # [N, C] float64
    classes: ClassList
    outputs: list[str] = field(default_factory=list)


def _check(cfg: AffordanceConfig) -> None:
    if cfg.k < 1:
        raise UserError(f"--k {cfg.k}: must be >= 1")
    if cfg.dim < 1:
        raise UserError(f"--dim {cfg.dim}: must be >= 1")
    if cfg.max_samples < 1:
        raise UserError(f"--max-samples {cfg.max_samples}: must be >= 1")
    if cfg.knn_backend not in KNN_BACKENDS:
        raise UserError(f"--knn-backend {cfg.knn_backend!r}: use one of {', '.join(KNN_BACKENDS)}")
    if cfg.annotated_views not in ("use", "transfer"):
        raise UserError(f"--annotated-views {cfg.annotated_views!r}: use 'use' or 'transfer'")
    if cfg.undecided not in ("keep", "propagate"):
        raise UserError(f"--undecided {cfg.undecided!r}: use 'keep' or 'propagate'")
    if not -1.0 < cfg.margin < 1.0:
        raise UserError(f"--margin {cfg.margin}: must lie in (-1, 1); 0 is a plain argmax")
    if cfg.knn3d < 1 or cfg.renders < 0 or cfg.pca_views < 0 or cfg.pca_samples < 16:
        raise UserError("--knn3d must be >= 1, --renders and --pca-views >= 0, --pca-samples >= 16")


def class_colours(num_classes: int) -> np.ndarray:  # [C, 3] float32 in [0, 1]
    """Class l >= 1 uses the overlay palette (utils.previews.PALETTE), background light grey."""
    cols = np.zeros((num_classes, 3), dtype=np.float32)
    cols[0] = BACKGROUND_RGB
    for l in range(1, num_classes):
        cols[l] = PALETTE[(l - 1) % len(PALETTE)] / 255.0
    return cols


def view_file_stems(names: list[str]) -> dict[str, str]:
    """File stem per view: the image's own stem (``train/r_0`` -> ``r_0``) so that ground truth named after the
    images matches; the full name (``train_r_0``) only where two views would collide."""
    short = {n: safe_name(Path(n).name, "view") for n in names}
    seen = Counter(s.lower() for s in short.values())
    return {n: (s if seen[s.lower()] == 1 else safe_name(n, "view")) for n, s in short.items()}


@dataclass
class _Source:
    image: SourceImage
    raw: np.ndarray          # [R, h, w] raw features
    grid: np.ndarray         # [h, w] int32 classes at the feature resolution
    full: np.ndarray         # [H, W] int32 classes at the image resolution
    counts: list[int]        # pixels per class (image resolution)


def _load_sources(sources: list[SourceImage], classes: ClassList, extractor: Any, log: Log) -> list[_Source]:
    from utils.masks import resize_nearest

    out = []
    dropped: Counter = Counter()
    for s in sources:
        img = s.load_image()
        full, drop = s.load_labels(classes, img.shape[:2])
        dropped.update(drop)
        raw = extractor(img)
        h, w = raw.shape[1:]
        grid = resize_nearest(full.astype(np.int32), w, h)
        counts = np.bincount(full.ravel(), minlength=len(classes))[: len(classes)].tolist()
        out.append(_Source(s, raw, grid, full, counts))
    if dropped:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(dropped.items()))
        warnings.warn(f"{sources[0].annotation.parent}: dropped {sum(dropped.values())} labelme shapes that cover no "
                      f"area ({kinds}); draw polygons, rectangles, circles or masks", stacklevel=2)
    present = sorted({int(v) for s in out for v in np.unique(s.grid)})
    if not any(v > 0 for v in present):
        raise UserError(f"{sources[0].annotation.parent}: the annotations hold only background ({classes.names[0]}); "
                        "label at least one affordance region")
    log(f"sources  {len(out)} annotated image{'s' if len(out) > 1 else ''} ({', '.join(s.image.name for s in out[:4])}"
        f"{'...' if len(out) > 4 else ''}); classes present: "
        f"{', '.join(classes.names[v] for v in present)}")
    return out


def run_affordance(cfg: AffordanceConfig, log: Log = lambda s: None) -> AffordanceResult:
    """Run the job; user-fixable problems raise a one-line UserError. Outputs are staged and swapped into
    ``cfg.out`` at the end (utils.outputs): a failed or interrupted run leaves the folder as it was."""
    from scene.model_folder import model_inputs

    model_path = Path(cfg.model_path)
    out = Path(cfg.out) if cfg.out else model_path / "affordance"
    folders: list[OutputFolder] = []
    with contextlib.ExitStack() as stack:
        def open_out() -> Path:  # entered once the sources and the model are known to be readable
            inputs = [*model_inputs(model_path, cfg.source_path), cfg.sources, cfg.weights, cfg.hub_repo,
                      cfg.classes if cfg.classes and Path(cfg.classes).exists() else None]
            folders.append(stack.enter_context(OutputFolder(out, TOOL, inputs, cfg.force)))
            return folders[0].dir

        result = _run_affordance(cfg, open_out, log)
        folders[0].commit()
    result.out = out
    return result


def _run_affordance(cfg: AffordanceConfig, open_out: Callable[[], Path], log: Log) -> AffordanceResult:
    """The job, writing into the staging folder that ``open_out()`` returns."""
    from features.extractors import ExtractorConfig, build_extractor, fit_projection
    from scene.model_folder import find_iteration, load_model

    t_start = time.perf_counter()
    laps = Laps()
    lap, timings = laps.lap, laps.timings

    _check(cfg)
    classes = parse_classes(cfg.classes)
    knn_backend = resolve_knn_backend(cfg.knn_backend)
    ecfg = ExtractorConfig(extractor=cfg.extractor, weights=cfg.weights, arch=cfg.arch, hub_repo=cfg.hub_repo,
                           dim=cfg.dim, stride=cfg.stride, pca_samples=cfg.pca_samples, seed=cfg.seed,
                           device=cfg.device)
    extractor = build_extractor(ecfg)          # weights and packages are checked before any image is read
    sources, skipped = find_sources(cfg.sources)
    if skipped:
        warnings.warn(f"{cfg.sources}: {len(skipped)} image(s) without annotation skipped (e.g. {skipped[0]}); "
                      "see affordance.py --help for where label files are looked up", stacklevel=2)
    log(f"features {extractor.description}")
    t = time.perf_counter()
    srcs = _load_sources(sources, classes, extractor, log)   # annotation errors surface before the model loads
    t = lap("sources", t)
    model_path = Path(cfg.model_path)
    iteration = find_iteration(model_path, None if cfg.iteration < 0 else cfg.iteration)
    out = open_out()

    params, gaussians, iteration = load_model(model_path, iteration, device=cfg.device)
    views = load_views(params, cfg.split, cfg.source_path, cfg.images, cfg.resolution)
    if not views.has_images:
        raise UserError(f"{model_path}: the target views' photos are needed and the source folder is missing; pass "
                        "-s/--source_path with the scene folder")
    cams = views.cameras
    log(f"model    {model_path} (iteration {iteration}, {len(gaussians):,} Gaussians); {len(cams)} {cfg.split} "
        f"views at {cams[0].width}x{cams[0].height}")
    t = lap("load", t)

    by_key = {match_key(s.image.name): s for s in srcs}
    annotated = {c.image_name: by_key[match_key(Path(c.image_name).name)] for c in cams
                 if match_key(Path(c.image_name).name) in by_key}
    use_annotation = cfg.annotated_views == "use"
    to_transfer = [c for c in cams if not (use_annotation and c.image_name in annotated)]

    rng = np.random.default_rng(cfg.seed)
    pca_idx = evenly_spaced(len(to_transfer), cfg.pca_views)
    cached: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # view -> (photo, raw features) for the PCA views
    for i in pca_idx:
        cam = to_transfer[i]
        photo = cam.prepare_image(cam.read_raw())
        cached[cam.image_name] = (photo, extractor(photo))
    projection = fit_projection(pca_sample([s.raw for s in srcs] + [r for _, r in cached.values()],
                                           cfg.pca_samples, rng), cfg.dim, cfg.seed)
    samples = collect_source_samples([(s.image.name, s.raw, s.grid) for s in srcs], projection)
    keep = balanced_sample(samples.labels, cfg.max_samples, rng)
    knn = KnnTransfer.fit(samples.features[keep], samples.labels[keep], len(classes), cfg.k, knn_backend,
                          cfg.num_threads)
    used_counts = np.bincount(samples.labels[keep], minlength=len(classes)).tolist()
    log(f"samples  {len(keep):,} of {len(samples.labels):,} source pixels ("
        + ", ".join(f"{classes.names[c]} {n:,}" for c, n in enumerate(used_counts) if n) +
        f"); {projection.components.shape[0]} channels; cosine {knn.k}-NN ({knn_backend})")
    t = lap("index", t)

    stems = view_file_stems([c.image_name for c in cams])
    render_names = {cams[i].image_name for i in evenly_spaced(len(cams), cfg.renders)}
    kept_maps: dict[str, np.ndarray] = {}
    view_stats: list[dict[str, Any]] = []
    outputs_2d: list[str] = []

    def label_maps() -> Iterator[tuple[Any, np.ndarray]]:
        from utils.masks import resize_nearest

        for cam in cams:
            name = cam.image_name
            photo = None
            if use_annotation and name in annotated:
                lm = np.asarray(cam.prepare_mask(annotated[name].full), dtype=np.int32)
                share = 1.0
                how = "annotated"
            else:
                photo, raw = cached.pop(name, (None, None))
                if photo is None:
                    photo = cam.prepare_image(cam.read_raw())
                    raw = extractor(photo)
                grid, conf = knn.predict_map(projection(raw))
                lm = resize_nearest(grid, cam.width, cam.height)
                share = float(conf.mean())
                how = "transferred"
            if cfg.save_2d:
                stem = stems[name]
                save_label_png(out / "labels_2d" / f"{stem}.png", lm)
                if photo is None:
                    photo = cam.prepare_image(cam.read_raw())
                save_png(out / "overlays_2d" / f"{stem}.png", overlay(to_uint8(photo), lm))
                outputs_2d.append(stem)
            if name in render_names:
                kept_maps[name] = lm
            frac = np.bincount(lm.ravel(), minlength=len(classes))[: len(classes)] / lm.size
            view_stats.append({"name": name, "labels": how, "vote_share": round(share, 4),
                               "class_fraction": [round(float(f), 5) for f in frac]})
            yield cam, lm

    votes, voted = accumulate_votes(gaussians, label_maps(), classes.num_labels, cfg.backend, cfg.num_threads,
                                    total=len(cams), progress=cfg.progress)
    t = lap("transfer_and_vote", t)
    n_tr = sum(1 for v in view_stats if v["labels"] == "transferred")
    log(f"views    {n_tr} transferred + {len(view_stats) - n_tr} annotated label maps voted onto the Gaussians")
    if not (votes.sum(axis=1) > 0).any():
        raise UserError(f"{model_path}: no Gaussian is visible in any of the {len(cams)} views; check that the model "
                        "and its cameras belong together")

    xyz = gaussians.get_xyz.detach().cpu().numpy()
    selection = make_selection(votes, xyz, cfg.margin, cfg.undecided, cfg.knn3d)
    labels = selection.labels
    counts = label_counts(labels, classes.num_labels)      # [undecided, background, class 1..L]
    t = lap("decide", t)

    outputs = _write_scenes(out, gaussians, labels, classes, srcs)
    save_npy(out / "labels.npy", labels)
    save_npy(out / "votes.npy", votes)
    outputs += ["labels.npy", "votes.npy"]
    if cfg.save_2d:
        outputs += [f"labels_2d/ ({len(outputs_2d)} PNGs)", f"overlays_2d/ ({len(outputs_2d)} PNGs)"]
    t = lap("write", t)
    rendered = _write_renders(out, cams, gaussians, labels, classes, kept_maps, stems, cfg)
    if rendered:
        outputs.append(f"renders/ ({len(rendered)} PNGs)")
    t = lap("renders", t)

    palette = class_colours(len(classes))
    summary = {
        "version": SUMMARY_VERSION,
        "model_path": str(model_path),
        "iteration": int(iteration),
        "num_gaussians": len(gaussians),
        "classes": classes.to_json(),
        "palette": {n: [round(float(c), 4) for c in palette[i]] for i, n in enumerate(classes.names)},
        "values": "labels.npy and labels_2d/*.png: class index (classes[l]); labels.npy -1 = undecided",
        "extractor": {"name": extractor.name, "description": extractor.description, "dim":
                      int(projection.components.shape[0]), "stride": cfg.stride,
                      "pca_explained_variance": round(projection.explained, 4)},
        "sources": {"folder": str(cfg.sources), "skipped_images": skipped,
                    "images": [{"name": s.image.name, "kind": s.image.kind, "annotation": str(s.image.annotation),
                                "pixels_per_class": s.counts} for s in srcs]},
        "samples": {"available": int(len(samples.labels)), "used": int(len(keep)),
                    "available_per_class": samples.class_counts(len(classes)), "used_per_class": used_counts,
                    "k": knn.k, "knn_backend": knn_backend, "max_samples": cfg.max_samples},
        "views": {"split": cfg.split, "num_views": len(cams), "width": cams[0].width, "height": cams[0].height,
                  "annotated_views": sorted(annotated), "annotated_views_mode": cfg.annotated_views,
                  "transferred": n_tr, "voted": voted, "per_view": view_stats},
        "gaussians": {"undecided": counts[0], "background": counts[1],
                      "per_class": {classes.names[l]: counts[l + 1] for l in range(1, len(classes))},
                      "propagated": selection.num_propagated},
        "parameters": {k: v for k, v in asdict(cfg).items() if k not in ("model_path", "sources", "progress")},
        "timings_s": {},
        "outputs": outputs + ["summary.json"],
    }
    timings["total"] = time.perf_counter() - t_start
    summary = save_summary(out / "summary.json", summary, timings, SUMMARY_VERSION)
    return AffordanceResult(out, summary, labels, votes, classes, summary["outputs"])


def _write_scenes(out: Path, gaussians: Any, labels: np.ndarray, classes: ClassList, srcs: list[_Source]
                  ) -> list[str]:
    """labelled.ply (SH DC = class colour) and extracted_<class>.ply for every class the sources contain."""
    import torch

    palette = class_colours(len(classes))
    colours = np.where(labels[:, None] >= 0, palette[np.clip(labels, 0, None)], np.float32(UNDECIDED_RGB))
    recoloured(gaussians, colours.astype(np.float32)).save_ply(out / "labelled.ply")
    written = ["labelled.ply"]
    present = sorted({int(v) for s in srcs for v in np.unique(s.grid) if v > 0})
    for l in present:
        name = f"extracted_{safe_name(classes.names[l])}.ply"
        keep = labels == l
        if not keep.any():
            warnings.warn(f"{name}: class {classes.names[l]!r} got no Gaussian (its transferred regions hold no "
                          "Gaussian's majority mass); the PLY is empty", stacklevel=3)
        gaussians.subset(torch.from_numpy(keep)).save_ply(out / name)
        written.append(name)
    return written


def _write_renders(out: Path, cams: list, gaussians: Any, labels: np.ndarray, classes: ClassList,
                   maps: dict[str, np.ndarray], stems: dict[str, str], cfg: AffordanceConfig) -> list[str]:
    """renders/<view>.png: photo | 2D label map (transferred or annotated) | rendered 3D labelling."""
    written = []
    for cam in cams:
        if cam.image_name not in maps:
            continue
        photo = to_uint8(cam.prepare_image(cam.read_raw()))
        lm3 = render_label_map(cam, gaussians, labels, classes.num_labels, cfg.backend, cfg.num_threads)
        strip = np.concatenate([caption(photo, "photo"), caption(overlay(photo, maps[cam.image_name]), "2D"),
                                caption(overlay(photo, lm3), "3D")], axis=1)
        name = f"{stems[cam.image_name]}.png"
        save_png(out / "renders" / name, strip)
        written.append(name)
    return written


def format_summary(summary: dict) -> str:
    """The lines affordance.py prints after a run."""
    g = summary["gaussians"]
    per = ", ".join(f"{n} {c:,}" for n, c in g["per_class"].items() if c)
    t = summary["timings_s"]
    lines = [f"labelled {summary['num_gaussians']:,} Gaussians: background {g['background']:,}"
             + (f", {per}" if per else "") + (f", undecided {g['undecided']:,}" if g["undecided"] else "")]
    lines.append(f"transfer + voting {t.get('transfer_and_vote', 0):.1f} s; total {t['total']:.1f} s")
    return "\n".join(lines)
