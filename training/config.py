"""The training configuration (typed) and the train.py command line that fills it.

Precedence for every value: explicit flag > preset > Inria's default (arguments.* dataclasses).
"""
from __future__ import annotations

import argparse
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from arguments import ModelParams, OptimizationParams, PipelineParams, add_arguments, extract
from training.presets import PRESETS, get_preset
from utils.errors import ArgumentParser, UserError
from utils.outputs import add_force_flag


@dataclass
class TrainConfig:
    """Everything one training run needs."""

    model: ModelParams = field(default_factory=ModelParams)
    opt: OptimizationParams = field(default_factory=OptimizationParams)
    pipe: PipelineParams = field(default_factory=PipelineParams)
    test_iterations: list[int] = field(default_factory=lambda: [7_000, 30_000])   # PSNR on train/test
    save_iterations: list[int] = field(default_factory=lambda: [7_000, 30_000])   # PLY; the last is added
    checkpoint_iterations: list[int] = field(default_factory=list)               # chkpntN.pth
    start_checkpoint: Optional[str] = None   # resume from this chkpntN.pth
    seed: int = 0                            # seeds init, view order, random background, split samples
    random_init_points: int = 100_000        # points drawn when the dataset has none (Inria: 100k)
    random_init: str = "uniform"             # "uniform" (Inria, grey), "images" (coloured) or "triangulate"
    random_init_lambda_opacity: float = 0.0  # opt.lambda_opacity used instead when the init is random (not triangulated)
    sh_increase_interval: int = 1000         # raise the active SH degree every this many iterations
    min_opacity: float = 0.005               # Inria's pruning threshold in densify_and_prune
    device: str = "cpu"                      # where the Gaussians live
    preset: str = "inria"                    # name of the preset the defaults came from
    progress: bool = True                    # tqdm progress bar
    quiet: bool = False                      # no per-event lines (saves, evaluations)
    force: bool = False                      # write into a non-empty model folder that holds no train.py output


def build_parser() -> argparse.ArgumentParser:
    """Inria's train.py flags, plus --preset, --seed, --threads, --random_init_points."""
    p = ArgumentParser(
        description="Train a 3D Gaussian Splatting model (Inria's algorithm and output folder, CPU-capable).")
    add_arguments(p, ModelParams, "model")
    add_arguments(p, OptimizationParams, "optimization")
    add_arguments(p, PipelineParams, "pipeline")
    g = p.add_argument_group("training run")
    g.add_argument("--preset", default="inria", choices=sorted(PRESETS),
                   help="default schedule: inria (30k iterations) or cpu (short, for 2-core CPUs); explicit "
                        "flags override it (default: inria)")
    g.add_argument("--test_iterations", nargs="+", type=int, default=None,
                   help="iterations at which PSNR is measured on train/test views (default: preset's)")
    g.add_argument("--save_iterations", nargs="+", type=int, default=None,
                   help="iterations at which point_cloud.ply is saved; the last iteration is always added")
    g.add_argument("--checkpoint_iterations", nargs="+", type=int, default=[],
                   help="iterations at which chkpntN.pth (resumable state) is saved")
    g.add_argument("--start_checkpoint", type=str, default=None, help="resume from this chkpntN.pth")
    g.add_argument("--seed", type=int, default=0, help="seed of every random stream (default: 0)")
    g.add_argument("--random_init_points", type=int, default=None,
                   help="random points when the dataset has none (default: preset's; Inria: 100000)")
    g.add_argument("--random_init", choices=("uniform", "images", "triangulate"), default=None,
                   help="initial points when the dataset has none: uniform (Inria: random in the bounds, "
                        "near-grey), images (the same points, each coloured with the mean colour of the views "
                        "it projects into) or triangulate (SIFT matches between training views triangulated "
                        "with the known poses; falls back to images when under 1000 points) (default: preset's)")
    g.add_argument("--threads", dest="num_threads", type=int, default=argparse.SUPPRESS,
                   help="threads for the rasterizer and torch (0: all cores); same as --num_threads")
    g.add_argument("--device", default="cpu", help="device for the Gaussians (default: cpu)")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no event lines")
    g.add_argument("--detect_anomaly", action="store_true", help="torch autograd anomaly detection (slow)")
    add_force_flag(g)
    return p


def default_model_path() -> str:
    """Inria's default: ./output/<10 characters of a uuid>."""
    unique = os.getenv("OAR_JOB_ID") or str(uuid.uuid4())
    return os.path.join(".", "output", unique[:10])


def config_from_args(ns: argparse.Namespace) -> TrainConfig:
    """Resolve flags against the chosen preset."""
    preset = get_preset(ns.preset)
    iterations = getattr(ns, "iterations", preset.iterations)
    if iterations <= 0:
        raise UserError(f"--iterations {iterations}: must be positive")
    base_opt = OptimizationParams(**preset.optimization_overrides(iterations))
    opt = extract(OptimizationParams, ns, base=base_opt)
    model = extract(ModelParams, ns)
    if not model.source_path:
        raise UserError("-s/--source_path is required: the scene folder to train on")
    model.source_path = str(Path(model.source_path).resolve())
    if model.object_masks:
        model.object_masks = str(Path(model.object_masks).resolve())
    if not model.model_path:
        model.model_path = default_model_path()
    pipe = extract(PipelineParams, ns)
    save = preset.save_iterations(iterations) if ns.save_iterations is None else list(ns.save_iterations)
    tests = preset.test_iterations(iterations) if ns.test_iterations is None else list(ns.test_iterations)
    init_points = preset.random_init_points if ns.random_init_points is None else ns.random_init_points
    init_mode = preset.random_init if ns.random_init is None else ns.random_init
    return TrainConfig(
        model=model, opt=opt, pipe=pipe,
        test_iterations=sorted(set(tests)),
        save_iterations=sorted(set(save) | {opt.iterations}),   # Inria appends the final iteration
        checkpoint_iterations=sorted(set(ns.checkpoint_iterations)),
        start_checkpoint=ns.start_checkpoint,
        seed=ns.seed,
        random_init_points=init_points,
        random_init=init_mode,
        # an explicit --lambda_opacity applies to every scene; otherwise random-init scenes get the preset's
        random_init_lambda_opacity=(opt.lambda_opacity if hasattr(ns, "lambda_opacity")
                                    else preset.random_init_lambda_opacity),
        device=ns.device,
        preset=preset.name,
        progress=not ns.quiet,
        quiet=ns.quiet,
        force=ns.force,
    )


def parse_train_args(argv: Optional[Sequence[str]] = None) -> tuple[TrainConfig, argparse.Namespace]:
    ns = build_parser().parse_args(argv)
    return config_from_args(ns), ns
