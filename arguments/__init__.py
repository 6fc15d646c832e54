"""Typed configuration for every script: the flag dataclasses, their command-line reflection, cfg_args.

Inria's flag names are kept (``-s/--source_path``, ``-m/--model_path``, ``-r/--resolution``, ``--eval``,
``--white_background`` ...) so existing commands keep working, but the values live in dataclasses instead of
ParamGroup reflection: each field declares its flag once (:func:`arguments.flags.flag`), every script's parser
is generated from its config (:func:`arguments.flags.config_parser`), booleans can be switched off
(``--no-eval``), and ``cfg_args`` is read back with :func:`read_cfg_args`, which parses literals only and
never calls ``eval``. Flags shared by many scripts are declared once in :mod:`arguments.options`.

arguments/ sits on the ground floor beside utils/ (docs/architecture.md): it imports nothing else of the
project, so the renderer and the scene may use its types.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from arguments import options
from arguments.flags import config_parser, flag, nested, parse_config
from arguments.options import BACKENDS, Backend
from utils.errors import UserError

__all__ = ["ModelParams", "PipelineParams", "OptimizationParams", "BACKENDS", "Backend", "flag", "nested",
           "config_parser", "parse_config", "read_cfg_args", "write_cfg_args", "model_params_from_cfg"]


@dataclass
class ModelParams:
    """Where the data and the model live, and how images are loaded (Inria's ModelParams)."""

    sh_degree: int = flag(3, "maximum spherical-harmonics degree")
    source_path: str = flag("", "scene folder: COLMAP (sparse/0), LLFF (poses_bounds.npy), NeRF-synthetic "
                              "(transforms_train.json) or nerfstudio (transforms.json)", short="-s")
    model_path: str = flag("", "model folder (Inria layout: cfg_args, cameras.json, point_cloud/)", short="-m")
    images: str = flag("images", "image folder inside the source (LLFF: images_8 etc. are found automatically)",
                       short="-i")
    resolution: int = flag(-1, "-1: auto (longest side <= 1600), 1/2/4/8: downscale factor, >8: target width",
                           short="-r")
    white_background: bool = flag(False, "composite RGBA images and render on white instead of black", short="-w")
    data_device: str = flag("cpu", "accepted for Inria compatibility and ignored: decoded images stay in CPU memory "
                                 "(within --image_cache_mb) and each view moves to --device when used")
    eval: bool = flag(False, "hold out every 8th view as the test split (Inria's --eval)")
    object_masks: str = flag("", "folder of binary masks, one per view (matched by file stem): pixels outside "
                               "the mask become the background colour in training and evaluation (object-only "
                               "reconstruction, for captures whose background is not static; default: off)")
    image_cache_mb: int = flag(2048, "memory budget for decoded images; beyond it images are loaded lazily")


@dataclass
class PipelineParams:
    """Rendering options (Inria's PipelineParams plus the backend choice)."""

    backend: Backend = options.backend()
    num_threads: int = options.num_threads("threads for the CPU rasterizer and torch (0: all cores)")
    compute_cov3D_python: bool = flag(False, "accepted for Inria compatibility; covariance is always computed in torch")
    convert_SHs_python: bool = flag(False, "accepted for Inria compatibility; SH are always evaluated in torch")


@dataclass
class OptimizationParams:
    """Inria's optimisation defaults (30k iterations); see train.py for the CPU preset."""

    iterations: int = flag(30_000, "training iterations")
    position_lr_init: float = flag(0.00016, "initial position learning rate (times the scene extent)")
    position_lr_final: float = flag(0.0000016, "final position learning rate")
    position_lr_delay_mult: float = flag(0.01, "position LR warm-up multiplier")
    position_lr_max_steps: int = flag(30_000, "steps of the exponential position LR decay")
    feature_lr: float = flag(0.0025, "SH DC learning rate (rest: /20)")
    opacity_lr: float = flag(0.025, "opacity learning rate")
    scaling_lr: float = flag(0.005, "scale learning rate")
    rotation_lr: float = flag(0.001, "rotation learning rate")
    percent_dense: float = flag(0.01, "fraction of the scene extent separating clone from split")
    lambda_dssim: float = flag(0.2, "weight of D-SSIM in the loss")
    lambda_opacity: float = flag(0.0, "weight of the mean opacity in the loss (0: Inria; > 0 fades Gaussians no "
                                    "view constrains; --preset cpu uses 0.3 on scenes without points)")
    densification_interval: int = flag(100, "iterations between densification steps")
    opacity_reset_interval: int = flag(3000, "iterations between opacity resets")
    densify_from_iter: int = flag(500, "first densification iteration")
    densify_until_iter: int = flag(15_000, "last densification iteration")
    densify_grad_threshold: float = flag(0.0002, "screen-space gradient threshold for densification")
    random_background: bool = flag(False, "random background colour each iteration")


def read_cfg_args(path: str | Path) -> dict[str, Any]:
    """Parse Inria's ``cfg_args`` (``Namespace(a=1, b='x', ...)``) without ``eval``.

    Only literal values are accepted (numbers, strings, booleans, None, lists/tuples of those).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise UserError(f"{path}: cannot read cfg_args ({e.strerror}); pass -s SOURCE explicitly") from None
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise UserError(f"{path}: not a Namespace(...) line; re-create it or pass -s SOURCE explicitly") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Namespace"
            and not node.args):
        raise UserError(f"{path}: expected Namespace(key=value, ...); pass -s SOURCE explicitly")
    out: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise UserError(f"{path}: '**' is not allowed in cfg_args")
        try:
            out[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise UserError(f"{path}: value of '{kw.arg}' is not a literal; cfg_args is never evaluated") from None
    return out


def write_cfg_args(path: str | Path, params: ModelParams) -> None:
    """Write ``cfg_args`` in Inria's format (``str(Namespace(...))``) so Inria's tools read it too."""
    from utils.io import atomic_write_text

    atomic_write_text(path, str(argparse.Namespace(**dataclasses.asdict(params))))


def model_params_from_cfg(cfg: dict[str, Any]) -> ModelParams:
    """ModelParams from a parsed cfg_args dict, ignoring keys we do not know (other forks add some)."""
    known = {f.name for f in fields(ModelParams)}
    return ModelParams(**{k: v for k, v in cfg.items() if k in known})
