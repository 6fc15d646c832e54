"""The training configuration (typed) and the train.py command line that fills it.

Precedence for every value: explicit flag > preset > Inria's default (arguments.* dataclasses).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, Optional, Sequence

from arguments import (ModelParams, OptimizationParams, PipelineParams, config_parser, flag, nested, options,
                       parse_config)
from arguments.flags import from_namespace
from training.presets import get_preset
from utils.errors import UserError

_RUN = "training run"


@dataclass
class TrainConfig:
    """Everything one training run needs; each field is its train.py flag (Inria's names)."""

    model: ModelParams = nested(ModelParams, "model")
    opt: OptimizationParams = nested(OptimizationParams, "optimization")
    pipe: PipelineParams = nested(PipelineParams, "pipeline")
    preset: Literal["cpu", "inria"] = flag("inria", "default schedule: inria (30k iterations) or cpu (short, for "
                                           "2-core CPUs); explicit flags override it (default: inria)", group=_RUN)
    test_iterations: list[int] = flag(default_factory=lambda: [7_000, 30_000], nargs="+", group=_RUN,
                                      help="iterations at which PSNR is measured on train/test views (default: "
                                           "preset's)")
    save_iterations: list[int] = flag(default_factory=lambda: [7_000, 30_000], nargs="+", group=_RUN,
                                      help="iterations at which point_cloud.ply is saved; the last iteration is "
                                           "always added (default: preset's)")
    checkpoint_iterations: list[int] = flag(default_factory=list, nargs="+", group=_RUN,
                                            help="iterations at which chkpntN.pth (resumable state) is saved")
    start_checkpoint: Optional[str] = flag(None, "resume from this chkpntN.pth", group=_RUN)
    seed: int = options.seed("seed of every random stream: init, view order, random background, split samples "
                             "(default: 0)", group=_RUN)
    random_init_points: int = flag(100_000, "random points when the dataset has none (default: preset's; Inria: "
                                   "100000)", group=_RUN)
    random_init: Literal["uniform", "images", "triangulate"] = flag(
        "uniform", "initial points when the dataset has none: uniform (Inria: random in the bounds, near-grey), "
        "images (the same points, each coloured with the mean colour of the views it projects into) or triangulate "
        "(SIFT matches between training views triangulated with the known poses; falls back to images when under "
        "1000 points) (default: preset's)", group=_RUN)
    random_init_lambda_opacity: float = flag(
        0.0, "--lambda_opacity used instead when the init is random, not triangulated (default: preset's; an "
        "explicit --lambda_opacity applies to every scene)", group=_RUN)
    sh_increase_interval: int = flag(1000, "raise the active SH degree every this many iterations", group=_RUN)
    min_opacity: float = flag(0.005, "Inria's pruning threshold in densify_and_prune", group=_RUN)
    device: str = options.device("device for the Gaussians (default: cpu)", group=_RUN)
    progress: bool = options.progress("progress bar and event lines (saves, evaluations); --quiet or "
                                      "--no-progress: neither", group=_RUN)
    detect_anomaly: bool = flag(False, "torch autograd anomaly detection (slow)", group=_RUN)
    force: bool = options.force(group=_RUN)

    @property
    def quiet(self) -> bool:
        """No per-event lines (saves, evaluations): the same switch as the progress bar."""
        return not self.progress


def build_parser() -> argparse.ArgumentParser:
    """Inria's train.py flags, plus --preset, --seed, --threads, --random_init_points ... (TrainConfig's fields)."""
    return config_parser(TrainConfig, prog="train.py", description="Train a 3D Gaussian Splatting model (Inria's "
                         "algorithm and output folder, CPU-capable).")


def default_model_path() -> str:
    """Inria's default: ./output/<10 characters of a uuid>."""
    unique = os.getenv("OAR_JOB_ID") or str(uuid.uuid4())
    return os.path.join(".", "output", unique[:10])


def resolve_config(cfg: TrainConfig, given: set[str]) -> TrainConfig:
    """Fields not ``given`` on the command line take the chosen preset's values (precedence: explicit flag >
    preset > Inria's default); paths are made absolute and the model folder defaults to Inria's."""
    preset = get_preset(cfg.preset)
    iterations = cfg.opt.iterations if "iterations" in given else preset.iterations
    if iterations <= 0:
        raise UserError(f"--iterations {iterations}: must be positive")
    opt = dataclasses.replace(OptimizationParams(**preset.optimization_overrides(iterations)),
                              **{f.name: getattr(cfg.opt, f.name) for f in fields(OptimizationParams)
                                 if f.name in given})
    model = dataclasses.replace(cfg.model)
    if not model.source_path:
        raise UserError("-s/--source_path is required: the scene folder to train on")
    model.source_path = str(Path(model.source_path).resolve())
    if model.object_masks:
        model.object_masks = str(Path(model.object_masks).resolve())
    if not model.model_path:
        model.model_path = default_model_path()

    def chosen(name: str, preset_value: object) -> object:
        return getattr(cfg, name) if name in given else preset_value

    save = list(chosen("save_iterations", preset.save_iterations(iterations)))
    tests = list(chosen("test_iterations", preset.test_iterations(iterations)))
    # an explicit --lambda_opacity applies to every scene; otherwise random-init scenes get the preset's
    lam = chosen("random_init_lambda_opacity",
                 opt.lambda_opacity if "lambda_opacity" in given else preset.random_init_lambda_opacity)
    return dataclasses.replace(
        cfg, model=model, opt=opt,
        test_iterations=sorted(set(tests)),
        save_iterations=sorted(set(save) | {opt.iterations}),   # Inria appends the final iteration
        checkpoint_iterations=sorted(set(cfg.checkpoint_iterations)),
        random_init_points=chosen("random_init_points", preset.random_init_points),
        random_init=chosen("random_init", preset.random_init),
        random_init_lambda_opacity=lam,
        preset=preset.name,
    )


def config_from_args(ns: argparse.Namespace) -> TrainConfig:
    """Resolve parsed flags (:func:`build_parser`) against the chosen preset."""
    given: set[str] = set()
    return resolve_config(from_namespace(TrainConfig, ns, given), given)


def parse_train_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    cfg, given = parse_config(build_parser(), argv)
    return resolve_config(cfg, given)
