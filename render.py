"""Render a trained model's train/test views into Inria's folders (<split>/ours_<iter>/{renders,gt}).

    python render.py -m output/maryRose [--iteration N] [--skip_train] [--skip_test]

Scene settings (source folder, resolution, --eval split, background) come from <model>/cfg_args; flags
given here override them (e.g. -s when the source folder moved).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from utils.errors import ArgumentParser, cli_main
from utils.outputs import add_force_flag


def build_parser() -> argparse.ArgumentParser:
    from arguments import ModelParams, PipelineParams, add_arguments

    p = ArgumentParser(description="Render train/test views of a trained 3DGS model (Inria's layout).")
    add_arguments(p, ModelParams, "model (defaults from <model>/cfg_args)")
    add_arguments(p, PipelineParams, "pipeline")
    p.add_argument("--iteration", type=int, default=-1, help="iteration to render (default: newest saved)")
    p.add_argument("--skip_train", action="store_true", help="do not render the training views")
    p.add_argument("--skip_test", action="store_true", help="do not render the test views")
    p.add_argument("--threads", dest="num_threads", type=int, default=argparse.SUPPRESS,
                   help="threads for the rasterizer and torch (0: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_force_flag(p)
    return p


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    import contextlib

    import torch

    from arguments import ModelParams, PipelineParams, extract, model_params_from_cfg, read_cfg_args
    from scene.gaussian_model import GaussianModel
    from scene.scene import Scene
    from segmentation.cli import check_compute
    from training.evaluation import render_dir, render_set
    from utils.errors import UserError
    from utils.outputs import OutputFolder

    ns = build_parser().parse_args(argv)
    model_path = Path(getattr(ns, "model_path", "") or "")
    from scene.model_sources import detect_model_source

    if str(model_path) and detect_model_source(model_path):
        return _render_foreign(ns, model_path)
    if not str(model_path) or not model_path.is_dir():
        raise UserError(f"{model_path or '-m'}: model folder not found; pass -m/--model_path the folder "
                        f"train.py wrote")
    cfg_file = model_path / "cfg_args"
    saved = model_params_from_cfg(read_cfg_args(cfg_file)) if cfg_file.is_file() else ModelParams()
    params = extract(ModelParams, ns, base=saved)
    params.model_path = str(model_path)
    if not params.source_path:
        raise UserError(f"{cfg_file}: names no source folder; pass -s/--source_path with the scene folder")
    pipe = extract(PipelineParams, ns)
    check_compute(pipe.backend, "cpu")
    if pipe.num_threads > 0:
        torch.set_num_threads(pipe.num_threads)

    gaussians = GaussianModel(params.sh_degree)
    scene = Scene(params, gaussians, load_iteration=ns.iteration)
    background = torch.tensor([1.0, 1.0, 1.0] if params.white_background else [0.0, 0.0, 0.0])
    cache = scene.image_cache(params.image_cache_mb)
    assert scene.loaded_iter is not None
    inputs = [model_path / "point_cloud", params.source_path]
    splits = []
    for name, views, skip in (("train", scene.train_cameras, ns.skip_train),
                              ("test", scene.test_cameras, ns.skip_test)):
        if not skip and not views and not ns.quiet:
            print(f"no {name} views (train with --eval to hold out a test split)")
        if not skip and views:
            splits.append((name, views, render_dir(model_path, name, scene.loaded_iter)))
    with contextlib.ExitStack() as stack:  # every split checked and staged first, swapped in together at the end
        folders = [stack.enter_context(OutputFolder(out, "render.py", inputs, ns.force, flag=None))
                   for _, _, out in splits]
        for (name, views, _), folder in zip(splits, folders):
            render_set(model_path, name, scene.loaded_iter, views, gaussians, background, cache,
                       pipe.backend, pipe.num_threads, progress=not ns.quiet, out=folder.dir)
        for folder in folders:
            folder.commit()
    if not ns.quiet:
        for name, views, out in splits:
            print(f"{name}: {len(views)} views -> {out}")
    return 0


def _render_foreign(ns, model_path: Path) -> int:
    """A splatfacto/gsplat model: cameras from its data folder moved into its frame, renders written to
    model_output_dir (the run folder, or beside a model file)."""
    import torch

    from arguments import PipelineParams, extract
    from scene.cameras import ImageCache
    from scene.model_folder import load_model
    from scene.model_sources import model_output_dir
    from segmentation.views import load_views
    from training.evaluation import render_set

    pipe = extract(PipelineParams, ns)
    if pipe.num_threads > 0:
        torch.set_num_threads(pipe.num_threads)
    params, gaussians, iteration = load_model(model_path, ns.iteration)
    for name in ("white_background", "image_cache_mb"):
        if hasattr(ns, name):
            setattr(params, name, getattr(ns, name))
    background = torch.tensor([1.0, 1.0, 1.0] if params.white_background else [0.0, 0.0, 0.0])
    cache = ImageCache(params.image_cache_mb * 2**20)
    out_root = model_output_dir(model_path)
    for name, skip in (("train", ns.skip_train), ("test", ns.skip_test or not params.eval)):
        if skip:
            continue
        views = load_views(params, name, getattr(ns, "source_path", ""), getattr(ns, "images", ""),
                           getattr(ns, "resolution", 0)).cameras
        out = render_set(out_root, name, iteration, views, gaussians, background, cache, pipe.backend,
                         pipe.num_threads, progress=not ns.quiet)
        if not ns.quiet:
            print(f"{name}: {len(views)} views -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
