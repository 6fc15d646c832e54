"""The jobs behind render.py and metrics.py (Inria's tools): render a model's splits into Inria's folders, and
score those folders.

render.py: scene settings (source folder, resolution, --eval split, background) come from <model>/cfg_args;
flags given on the command line override them (``given``: the fields the user set, e.g. -s when the source
folder moved). A splatfacto/gsplat model takes its cameras from its data folder, moved into its frame.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Collection, Literal

from arguments import ModelParams, PipelineParams, flag, nested, options
from training.evaluation import MethodMetrics, evaluate_model_folder, lpips_metric, render_dir, render_set
from utils.errors import UserError

Log = Callable[[str], None]


@dataclass
class RenderConfig:
    """Everything render.py takes; each field is its flag (Inria's names)."""

    model: ModelParams = nested(ModelParams, "model (defaults from <model>/cfg_args)")
    pipe: PipelineParams = nested(PipelineParams, "pipeline")
    iteration: int = options.iteration("iteration to render (default: newest saved)")
    skip_train: bool = flag(False, "do not render the training views")
    skip_test: bool = flag(False, "do not render the test views")
    progress: bool = options.progress("progress bars and the lines naming what was written; --quiet or "
                                      "--no-progress: neither")
    force: bool = options.force()


@dataclass
class RenderResult:
    splits: dict[str, tuple[int, Path]] = field(default_factory=dict)  # split -> (views rendered, folder)


def run_render(cfg: RenderConfig, given: Collection[str] = (), log: Log = lambda s: None) -> RenderResult:
    """Render the train/test views of the model ``cfg.model.model_path`` into <model>/<split>/ours_<iter>.

    given: names of the ModelParams fields set on the command line (they override cfg_args)."""
    import torch

    from arguments import model_params_from_cfg, read_cfg_args
    from scene.gaussian_model import GaussianModel
    from scene.model_sources import detect_model_source
    from scene.scene import Scene
    from utils.outputs import OutputFolder

    model_path = Path(cfg.model.model_path or "")
    if str(model_path) and detect_model_source(model_path):
        return _render_foreign(cfg, model_path, given, log)
    if not str(model_path) or not model_path.is_dir():
        raise UserError(f"{model_path or '-m'}: model folder not found; pass -m/--model_path the folder train.py "
                        f"wrote")
    cfg_file = model_path / "cfg_args"
    saved = model_params_from_cfg(read_cfg_args(cfg_file)) if cfg_file.is_file() else ModelParams()
    params = dataclasses.replace(saved, **{f.name: getattr(cfg.model, f.name) for f in fields(ModelParams)
                                           if f.name in given})
    params.model_path = str(model_path)
    if not params.source_path:
        raise UserError(f"{cfg_file}: names no source folder; pass -s/--source_path with the scene folder")
    pipe = cfg.pipe

    gaussians = GaussianModel(params.sh_degree)
    scene = Scene(params, gaussians, load_iteration=cfg.iteration)
    background = torch.tensor([1.0, 1.0, 1.0] if params.white_background else [0.0, 0.0, 0.0])
    cache = scene.image_cache(params.image_cache_mb)
    assert scene.loaded_iter is not None
    inputs = [model_path / "point_cloud", params.source_path]
    splits = []
    for name, views, skip in (("train", scene.train_cameras, cfg.skip_train),
                              ("test", scene.test_cameras, cfg.skip_test)):
        if not skip and not views:
            log(f"no {name} views (train with --eval to hold out a test split)")
        if not skip and views:
            splits.append((name, views, render_dir(model_path, name, scene.loaded_iter)))
    with contextlib.ExitStack() as stack:  # every split checked and staged first, swapped in together at the end
        folders = [stack.enter_context(OutputFolder(out, "render.py", inputs, cfg.force, flag=None))
                   for _, _, out in splits]
        for (name, views, _), folder in zip(splits, folders):
            render_set(model_path, name, scene.loaded_iter, views, gaussians, background, cache,
                       pipe.backend, pipe.num_threads, progress=cfg.progress, out=folder.dir)
        for folder in folders:
            folder.commit()
    result = RenderResult({name: (len(views), out) for name, views, out in splits})
    for name, (n, out) in result.splits.items():
        log(f"{name}: {n} views -> {out}")
    return result


def _render_foreign(cfg: RenderConfig, model_path: Path, given: Collection[str], log: Log) -> RenderResult:
    """A splatfacto/gsplat model: cameras from its data folder moved into its frame, renders written to
    model_output_dir (the run folder, or beside a model file)."""
    import torch

    from scene.cameras import ImageCache
    from scene.model_folder import load_model
    from scene.model_sources import model_output_dir
    from scene.views import load_views

    def override(name: str, otherwise: object) -> object:
        return getattr(cfg.model, name) if name in given else otherwise

    params, gaussians, iteration = load_model(model_path, cfg.iteration)
    for name in ("white_background", "image_cache_mb"):
        setattr(params, name, override(name, getattr(params, name)))
    background = torch.tensor([1.0, 1.0, 1.0] if params.white_background else [0.0, 0.0, 0.0])
    cache = ImageCache(params.image_cache_mb * 2**20)
    out_root = model_output_dir(model_path)
    result = RenderResult()
    for name, skip in (("train", cfg.skip_train), ("test", cfg.skip_test or not params.eval)):
        if skip:
            continue
        views = load_views(params, name, override("source_path", ""), override("images", ""),
                           override("resolution", 0)).cameras
        out = render_set(out_root, name, iteration, views, gaussians, background, cache, cfg.pipe.backend,
                         cfg.pipe.num_threads, progress=cfg.progress)
        result.splits[name] = (len(views), out)
        log(f"{name}: {len(views)} views -> {out}")
    return result


@dataclass
class MetricsConfig:
    """Everything metrics.py takes; each field is its flag (Inria's names)."""

    model_paths: list[str] = flag(default_factory=list, help="model folders (render.py run first)", short="-m",
                                  nargs="+", required=True)
    split: Literal["test", "train"] = flag("test", "which rendered split to score (default: test; train writes "
                                           "results_train.json)")
    lpips: bool = flag(True, "compute LPIPS when the package and its weights are available offline (--no-lpips: "
                       "never)", negative=("--no_lpips",))
    force: bool = options.force()


@dataclass
class MetricsResult:
    models: dict[str, list[MethodMetrics]] = field(default_factory=dict)  # model folder -> one per ours_<iter>
    lpips_skipped: str = ""                                                # why LPIPS was not computed, if not


def run_metrics(cfg: MetricsConfig, log: Log = lambda s: None) -> MetricsResult:
    """Score every model's rendered split; writes results.json / per_view.json (Inria's) into each model."""
    lpips_fn, why = (lpips_metric() if cfg.lpips else (None, "disabled by --no_lpips"))
    result = MetricsResult(lpips_skipped=why if lpips_fn is None else "")
    if lpips_fn is None:
        log(f"LPIPS skipped: {why}")
    for model_path in cfg.model_paths:
        log(f"Scene: {model_path}")
        result.models[model_path] = evaluate_model_folder(model_path, cfg.split, lpips_fn, cfg.force)
        for m in result.models[model_path]:
            log(f"Method: {m.method}")
            for key in ("SSIM", "PSNR", "LPIPS"):
                if key in m.mean:
                    log(f"  {key:>5} : {m.mean[key]:>12.7f}")
            log(f"  views : {len(m.per_view['PSNR'])}")
    return result
