"""prune.py's work on model folders: load, prune, measure, write a new Inria folder and a report.

Output layout (default ``<MODEL>_pruned``; the input is only read; staged and swapped in at the end
through utils.outputs, so a failed verification or an interrupted run leaves the folder as it was)::

    <out>/cfg_args                                 the input's, model_path (and -s) updated
    <out>/cameras.json                             copied
    <out>/input.ply                                copied when present
    <out>/point_cloud/iteration_N/point_cloud.ply  the pruned Gaussians
    <out>/prune_report.json                        counts, sizes, verification, held-out quality, stage times
    <out>/sweep.json, sweep.png                    with --sweep: % removed vs held-out PSNR per threshold
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from arguments import Backend, ModelParams, flag, options, read_cfg_args, write_cfg_args
from gaussian_renderer import resolve_backend
from pruning.prune import BOUND, DEFAULT_SWEEP, PruneResult, RenderOptions, prune_gaussians, removal_mask
from pruning.quality import Quality, evaluate, evaluate_pruned
from scene.cameras import Camera, ImageCache
from scene.gaussian_model import GaussianModel
from scene.model_folder import find_iteration, load_model, ply_path, save_model, write_cameras_json
from scene.views import load_views
from utils.errors import UserError
from utils.io import atomic_path, atomic_write_text, json_safe, save_json, save_summary
from utils.outputs import OutputFolder

Log = Callable[[str], None]
REPORT_VERSION = 1   # prune_report.json; 1: the first versioned report ("times" became "timings_s")
_MODEL_FIELDS = {f.name for f in fields(ModelParams)}


def parse_thresholds(text: str) -> tuple[float, ...]:
    """``"0,1e-4,1e-2"`` -> (0.0, 0.0001, 0.01) (the --sweep-thresholds flag)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


@dataclass
class PruneConfig:
    """Everything prune.py takes; each field is its flag."""

    model_path: str = options.model_path()
    out: str = options.out("new output folder (default: <model_path>_pruned)")
    threshold: Optional[float] = flag(None, "also remove Gaussians with contribution < T x max contribution (lossy; "
                                      "the report gives the cost). Default: lossless mode")
    sweep: bool = flag(False, "write sweep.json and sweep.png (held-out PSNR vs %% removed per threshold) without "
                       "writing a model per threshold")
    sweep_thresholds: tuple[float, ...] = flag(DEFAULT_SWEEP, "thresholds for --sweep", parse=parse_thresholds)
    iteration: int = options.iteration("iteration to load (default: newest)")
    source_path: str = options.source_path("scene folder (default: cfg_args' source_path)")
    backend: Backend = options.backend()
    num_threads: int = options.num_threads("CPU rasterizer threads (0: all cores)")
    force: bool = options.force()
    device: str = options.device()
    progress: bool = options.progress()


@dataclass
class PruneReport:
    """What run_prune wrote: the report (prune_report.json) and, with --sweep, the rows of sweep.json."""

    out: Path
    report: dict[str, Any]
    sweep: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PruneViews:
    """Cameras used for the contribution / verification (train) and for quality (heldout)."""

    train: list[Camera]
    heldout: list[Camera]
    heldout_split: str        # "test" | "train" | "train+test (cameras.json)"
    reference: str            # "ground truth" | "unpruned render"
    note: str = ""            # why the held-out split / reference is what it is
    all_cameras: list[Camera] = field(default_factory=list)
    model_frame: Optional[dict] = None  # splatfacto/gsplat: how the cameras were moved into the model's frame


def default_out(model_path: Path) -> Path:
    from scene.model_sources import model_output_dir

    base = model_output_dir(model_path)  # a model file (gsplat ckpt, splatfacto PLY): named by its stem
    return base.parent / f"{base.name}_pruned"


def check_no_foreign_iterations(folder: Any, out: Path) -> None:
    """A point_cloud/iteration_N that prune.py did not write would stay (never deleted) and, if newer, be loaded
    instead of the pruned model: refuse such a folder before any work."""
    others = sorted({f.split("/")[1] for f in folder.foreign if f.startswith("point_cloud/iteration_")})
    if others:
        raise UserError(f"{out / 'point_cloud' / others[-1]}: a model iteration prune.py did not write (tools load "
                        "the newest one); pass --out a new folder")


def prune_views(model_path: Path, params: ModelParams, source_override: str = "") -> PruneViews:
    """Training / held-out cameras, as the model was trained (cfg_args' resolution, --eval split, background).

    Without the source images (cfg_args' source_path gone and no -s), every camera of cameras.json counts as
    a training view (conservative: more views can only keep more Gaussians) and quality is measured against
    the unpruned model's renders.
    """
    views = load_views(params, "train", source_override, cameras_json="all")
    if views.cameras_from == "source":
        if params.eval and views.test_cameras:
            return PruneViews(views.cameras, views.test_cameras, "test", "ground truth",
                              all_cameras=views.all_cameras, model_frame=views.model_frame)
        note = ("model trained without --eval: no held-out split exists, so quality is measured on the "
                "training views")
        return PruneViews(views.cameras, views.cameras, "train", "ground truth", note, views.all_cameras,
                          views.model_frame)
    cams = views.cameras
    source = source_override or params.source_path
    where = f"source folder {source!r} not found" if source else "cfg_args names no source folder"
    warnings.warn(f"{model_path}: {where}; pass -s SOURCE for held-out PSNR/SSIM against the photos. Using all "
                  f"{len(cams)} cameras of cameras.json as training views and the unpruned renders as reference",
                  stacklevel=2)
    note = f"{where}: all cameras.json views used; quality is relative to the unpruned model's renders"
    return PruneViews(cams, cams, "train+test (cameras.json)", "unpruned render", note, cams)


def _quality_dict(q: Quality) -> dict[str, Any]:
    return {"psnr": q.psnr, "ssim": q.ssim, "num_views": q.num_views}


def run_sweep(gaussians: GaussianModel, contribution: torch.Tensor, views: PruneViews, opts: RenderOptions,
              thresholds: Sequence[float], cache: Optional[ImageCache]) -> list[dict[str, Any]]:
    """% removed and held-out quality per threshold (no verification, no models written)."""
    reference = gaussians if views.reference == "unpruned render" else None
    rows = []
    for t in thresholds:
        remove = removal_mask(contribution, float(t))
        n_removed = int(remove.sum())
        q = evaluate(gaussians.subset(~remove), views.heldout, opts, reference, cache, desc=f"sweep {t:g}")
        rows.append({"threshold": float(t), "removed": n_removed,
                     "percent_removed": 100.0 * n_removed / max(1, len(gaussians)),
                     "kept": len(gaussians) - n_removed, "psnr": q.psnr, "ssim": q.ssim})
    return rows


def plot_sweep(rows: Sequence[dict[str, Any]], path: Path, baseline_psnr: float, ylabel: str) -> None:
    """PNG of held-out PSNR vs % removed, a legend entry per threshold (matplotlib Agg, no pyplot state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("--sweep plot needs matplotlib; install it with `pip install 'matplotlib>=3.7,<4'`") from None
    fig = Figure(figsize=(6.0, 4.0), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    xs = [r["percent_removed"] for r in rows]
    ys = [r["psnr"] for r in rows]
    ax.plot(xs, ys, "-", color="0.6", zorder=1)
    colors = [f"C{i % 10}" for i in range(len(rows))]
    for x, y, r, c in zip(xs, ys, rows, colors):  # a legend entry per threshold: points may coincide
        ax.scatter([x], [y], color=c, zorder=2, s=28,
                   label=f"T={r['threshold']:g}: {r['percent_removed']:.2f} %, {r['psnr']:.2f} dB")
    if math.isfinite(baseline_psnr):
        ax.axhline(baseline_psnr, color="gray", linestyle="--", linewidth=1, label=f"unpruned: {baseline_psnr:.2f} dB")
    ax.legend(loc="best", fontsize=7)
    ax.set_xlabel("Gaussians removed (%)")
    ax.set_ylabel(ylabel)
    ax.set_title("pruning sweep: remove contribution < T x max contribution", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _write_cfg_args(src_model: Path, out: Path, params: ModelParams, source_override: str,
                    final: Optional[Path] = None) -> None:
    """Copy cfg_args keeping every key (other forks add some), with model_path (``final``, default ``out``:
    where the folder ends up) and -s updated."""
    cfg_file = src_model / "cfg_args"
    final = final or out
    if cfg_file.is_file():
        cfg = read_cfg_args(cfg_file)
        cfg["model_path"] = str(final)
        if source_override:
            cfg["source_path"] = source_override
        atomic_write_text(out / "cfg_args", str(argparse.Namespace(**cfg)))
    else:  # (a splatfacto/gsplat model's params carry its source description: keep ModelParams' fields only)
        p = ModelParams(**{**{k: getattr(params, k) for k in _MODEL_FIELDS}, "model_path": str(final)})
        if source_override:
            p.source_path = source_override
        write_cfg_args(out / "cfg_args", p)


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_output(src_model: Path, out: Path, iteration: int, pruned: GaussianModel, params: ModelParams,
                 views: PruneViews, source_override: str, final: Optional[Path] = None) -> Path:
    """Write the new model folder into ``out`` (the staging folder; ``final``: where it ends up, recorded in
    cfg_args); returns the PLY path."""
    out.mkdir(parents=True, exist_ok=True)
    _write_cfg_args(src_model, out, params, source_override, final)
    if (src_model / "cameras.json").is_file():
        _copy(src_model / "cameras.json", out / "cameras.json")
    else:
        write_cameras_json(out / "cameras.json", views.all_cameras)
    if (src_model / "input.ply").is_file():
        _copy(src_model / "input.ply", out / "input.ply")
    if views.model_frame is not None:  # a foreign model's frame: model_frame.json ties the data's cameras to it
        from scene.model_sources import write_model_frame

        write_model_frame(out, views.model_frame)
    return save_model(out, iteration, pruned)


def _input_bytes(params: ModelParams, model_path: Path, iteration: int) -> int:
    """Size of what was read: the PLY, or a splatfacto/gsplat model's files."""
    from scene.model_sources import model_source_of

    src = model_source_of(params)
    files = src.files if src is not None and src.files else [ply_path(model_path, iteration)]
    return sum(f.stat().st_size for f in files)


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def format_report(rep: dict[str, Any]) -> str:
    """The printed summary table."""
    g, v, q = rep["gaussians"], rep["verification"], rep["heldout"]
    size = rep["ply_bytes"]

    def f(x: Optional[float], spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    lines = [f"pruned {rep['model_path']} (iteration {rep['iteration']}) -> {rep['out']}",
             f"mode: {rep['mode']}",
             f"{'':34}{'before':>14}{'after':>14}",
             f"{'Gaussians':34}{g['before']:>14,}{g['after']:>14,}   (-{g['removed']:,}, {g['percent_removed']:.2f} %)",
             f"{'PLY size':34}{_mb(size['before']):>14}{_mb(size['after']):>14}"]
    lines.append(f"{'held-out PSNR (dB)':34}{f(q['psnr_before'], '.3f'):>14}{f(q['psnr_after'], '.3f'):>14}")
    lines.append(f"{'held-out SSIM':34}{f(q['ssim_before'], '.4f'):>14}{f(q['ssim_after'], '.4f'):>14}")
    lines.append(f"  held-out views: {q['split']}, {q['num_views']} views, vs {q['reference']}")
    if q.get("note"):
        lines.append(f"  note: {q['note']}")
    if rep["mode"] == "lossless":
        lines.append(f"training renders: max |diff| {v['max_abs_diff']:.6f} < 1/510 = {BOUND:.6f} over "
                     f"{v['num_views']} views: {'PASSED' if v['passed'] else 'FAILED'}"
                     + (f" ({rep['restored_stoppers']} stopper(s) kept)" if rep["restored_stoppers"] else ""))
    else:
        lines.append(f"training renders vs unpruned: max |diff| {v['max_abs_diff']:.6f}, PSNR min "
                     f"{f(v['min_psnr'], '.2f')} / mean {f(v['mean_psnr'], '.2f')} dB over {v['num_views']} views")
    lines.append("times: " + " | ".join(f"{k} {t:.2f} s" for k, t in rep["timings_s"].items()))
    return "\n".join(lines)


def format_sweep(rows: Sequence[dict[str, Any]], reference: str) -> str:
    head = f"{'threshold':>10}{'removed':>10}{'%':>8}{'PSNR':>9}{'SSIM':>8}   (held-out, vs {reference})"
    body = [f"{r['threshold']:>10g}{r['removed']:>10,}{r['percent_removed']:>8.2f}{r['psnr']:>9.3f}{r['ssim']:>8.4f}"
            for r in rows]
    return "\n".join([head] + body)


def run_prune(cfg: PruneConfig, log: Log = lambda s: None) -> PruneReport:
    """Load, prune, verify, measure and write; returns the report written to prune_report.json.

    Raises UserError for bad inputs (before any heavy work) and pruning.prune.VerificationError when the
    lossless guarantee cannot be shown (nothing is written then).
    """
    t_all = time.perf_counter()
    model_path = Path(cfg.model_path)
    out = Path(cfg.out) if cfg.out else default_out(model_path)
    if cfg.threshold is not None and not 0.0 <= cfg.threshold <= 1.0:
        raise UserError(f"--threshold {cfg.threshold}: must lie in [0, 1] (fraction of the largest contribution)")
    if cfg.sweep and (not cfg.sweep_thresholds or any(not 0.0 <= t <= 1.0 for t in cfg.sweep_thresholds)):
        raise UserError("--sweep_thresholds: give one or more values in [0, 1], e.g. 0,1e-4,1e-2")
    if cfg.sweep and importlib.util.find_spec("matplotlib") is None:
        raise UserError("--sweep plots with matplotlib; install it with `pip install 'matplotlib>=3.7,<4'`")
    device = torch.device(cfg.device)
    iteration = find_iteration(model_path, cfg.iteration)  # cheap checks first: bad -m / --out fail fast
    with OutputFolder(out, "prune.py", [model_path, cfg.source_path], cfg.force) as folder:
        check_no_foreign_iterations(folder, out)
        rep, sweep_rows, views = _prune(cfg, model_path, out, folder.dir, iteration, device, t_all, log)
        folder.commit()
    log(format_report(rep))
    if cfg.sweep:
        log(format_sweep(sweep_rows, views.reference))
    return PruneReport(out, rep, sweep_rows)


def _prune(cfg: PruneConfig, model_path: Path, out: Path, stage: Path, iteration: int, device: torch.device,
           t_all: float, log: Log) -> tuple[dict[str, Any], list[dict[str, Any]], PruneViews]:
    """The job, writing the new model folder into ``stage`` (``out`` once committed)."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    params, gaussians, iteration = load_model(model_path, iteration, device)
    views = prune_views(model_path, params, cfg.source_path)
    background = torch.ones(3) if params.white_background else torch.zeros(3)
    opts = RenderOptions(background.to(device), cfg.backend, cfg.num_threads, cfg.progress, device)
    backend = resolve_backend(cfg.backend, device)
    times["load"] = time.perf_counter() - t0
    log(f"{model_path}: {len(gaussians):,} Gaussians (iteration {iteration}), {len(views.train)} training views, "
        f"backend {backend}")

    pruned, res = prune_gaussians(gaussians, views.train, opts, cfg.threshold, log=log)
    times.update(res.times)

    t0 = time.perf_counter()
    cache = ImageCache(params.image_cache_mb * 2**20) if views.reference == "ground truth" else None
    # against the unpruned renders the "before" column is the reference itself: not measured
    before, after = evaluate_pruned(gaussians, pruned, ~res.keep, views.heldout, opts,
                                    views.reference == "unpruned render", cache)
    times["quality"] = time.perf_counter() - t0

    sweep_rows: list[dict[str, Any]] = []
    if cfg.sweep:
        t0 = time.perf_counter()
        sweep_rows = run_sweep(gaussians, res.contribution, views, opts, cfg.sweep_thresholds, cache)
        times["sweep"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ply_out = write_output(model_path, stage, iteration, pruned, params, views, cfg.source_path, out)
    times["write"] = time.perf_counter() - t0
    if cfg.sweep:
        t0 = time.perf_counter()
        ylabel = f"held-out PSNR (dB, {views.heldout_split} vs {views.reference})"
        plot_sweep(sweep_rows, stage / "sweep.png", before.psnr, ylabel)
        save_json(stage / "sweep.json", json_safe({
            "model_path": str(model_path), "iteration": iteration, "heldout_split": views.heldout_split,
            "reference": views.reference, "unpruned": _quality_dict(before), "rows": sweep_rows}))
        times["sweep"] += time.perf_counter() - t0  # plot and table
    times["total"] = time.perf_counter() - t_all

    rep = build_report(cfg, model_path, out, iteration, backend, gaussians, res, views, before, after,
                       _input_bytes(params, model_path, iteration), ply_out.stat().st_size)
    rep = save_summary(stage / "prune_report.json", rep, times, REPORT_VERSION)
    return rep, sweep_rows, views


def build_report(cfg: PruneConfig, model_path: Path, out: Path, iteration: int, backend: str,
                 gaussians: GaussianModel, res: PruneResult, views: PruneViews, before: Quality, after: Quality,
                 ply_before: int, ply_after: int) -> dict[str, Any]:
    """prune_report.json without its timings (save_summary adds "version" and "timings_s")."""
    c = res.check
    n = len(gaussians)
    contrib = res.contribution
    return {
        "model_path": str(model_path), "out": str(out), "iteration": iteration, "model_frame": views.model_frame,
        "mode": "lossless" if cfg.threshold is None else f"threshold {cfg.threshold:g} x max contribution",
        "threshold": cfg.threshold, "backend": backend, "num_threads": cfg.num_threads,
        "gaussians": {"before": n, "after": n - res.num_removed, "removed": res.num_removed,
                      "percent_removed": res.percent_removed,
                      "zero_contribution": int((contrib <= 0).sum()),
                      "max_contribution": float(contrib.max()) if n else 0.0},
        "restored_stoppers": res.restored,
        "ply_bytes": {"before": ply_before, "after": ply_after},
        "verification": {"num_views": c.num_views, "bound": BOUND, "max_abs_diff": c.max_abs_diff,
                         "worst_view": c.worst_view, "changed_pixels": c.changed_pixels,
                         "min_psnr": c.min_psnr, "mean_psnr": c.mean_psnr, "passed": c.passed},
        "heldout": {"split": views.heldout_split, "reference": views.reference, "num_views": before.num_views,
                    "psnr_before": before.psnr, "psnr_after": after.psnr, "ssim_before": before.ssim,
                    "ssim_after": after.ssim, "note": views.note},
        "timings_s": {},
    }
