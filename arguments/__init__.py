"""Typed configuration for every script.

Inria's flag names are kept (``-s/--source_path``, ``-m/--model_path``, ``-r/--resolution``, ``--eval``,
``--white_background`` ...) so existing commands keep working, but the values live in dataclasses instead of
ParamGroup reflection, booleans can be switched off (``--no-eval``), and ``cfg_args`` is read back with
:func:`read_cfg_args`, which parses literals only and never calls ``eval``.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Type, TypeVar

from utils.errors import UserError

T = TypeVar("T")


def _f(default: Any, help: str, short: Optional[str] = None) -> Any:
    """A dataclass field carrying its CLI help text and optional short flag."""
    return field(default=default, metadata={"help": help, "short": short})


@dataclass
class ModelParams:
    """Where the data and the model live, and how images are loaded (Inria's ModelParams)."""

    sh_degree: int = _f(3, "maximum spherical-harmonics degree")
    source_path: str = _f("", "scene folder: COLMAP (sparse/0), LLFF (poses_bounds.npy), NeRF-synthetic "
                              "(transforms_train.json) or nerfstudio (transforms.json)", "-s")
    model_path: str = _f("", "model folder (Inria layout: cfg_args, cameras.json, point_cloud/)", "-m")
    images: str = _f("images", "image folder inside the source (LLFF: images_8 etc. are found automatically)", "-i")
    resolution: int = _f(-1, "-1: auto (longest side <= 1600), 1/2/4/8: downscale factor, >8: target width", "-r")
    white_background: bool = _f(False, "composite RGBA images and render on white instead of black", "-w")
    data_device: str = _f("cpu", "device holding the training images")
    eval: bool = _f(False, "hold out every 8th view as the test split (Inria's --eval)")
    object_masks: str = _f("", "folder of binary masks, one per view (matched by file stem): pixels outside "
                               "the mask become the background colour in training and evaluation (object-only "
                               "reconstruction, for captures whose background is not static; default: off)")
    image_cache_mb: int = _f(2048, "memory budget for decoded images; beyond it images are loaded lazily")


# Rasterizer backend names (gaussian_renderer.rasterization selects among them); here so that argument
# parsing needs no torch import.
BACKENDS = ("auto", "cpu", "reference", "inria", "gsplat")


@dataclass
class PipelineParams:
    """Rendering options (Inria's PipelineParams plus the backend choice)."""

    backend: str = _f("auto", "rasterizer backend: auto | cpu | reference | inria | gsplat")
    num_threads: int = _f(0, "threads for the CPU rasterizer (0: all cores)")
    compute_cov3D_python: bool = _f(False, "accepted for Inria compatibility; covariance is always computed in torch")
    convert_SHs_python: bool = _f(False, "accepted for Inria compatibility; SH are always evaluated in torch")
    debug: bool = _f(False, "show the full traceback of an unexpected error (Inria's flag; read by utils.errors)")


@dataclass
class OptimizationParams:
    """Inria's optimisation defaults (30k iterations); see train.py for the CPU preset."""

    iterations: int = _f(30_000, "training iterations")
    position_lr_init: float = _f(0.00016, "initial position learning rate (times the scene extent)")
    position_lr_final: float = _f(0.0000016, "final position learning rate")
    position_lr_delay_mult: float = _f(0.01, "position LR warm-up multiplier")
    position_lr_max_steps: int = _f(30_000, "steps of the exponential position LR decay")
    feature_lr: float = _f(0.0025, "SH DC learning rate (rest: /20)")
    opacity_lr: float = _f(0.025, "opacity learning rate")
    scaling_lr: float = _f(0.005, "scale learning rate")
    rotation_lr: float = _f(0.001, "rotation learning rate")
    percent_dense: float = _f(0.01, "fraction of the scene extent separating clone from split")
    lambda_dssim: float = _f(0.2, "weight of D-SSIM in the loss")
    lambda_opacity: float = _f(0.0, "weight of the mean opacity in the loss (0: Inria; > 0 fades Gaussians no "
                                    "view constrains; --preset cpu uses 0.3 on scenes without points)")
    densification_interval: int = _f(100, "iterations between densification steps")
    opacity_reset_interval: int = _f(3000, "iterations between opacity resets")
    densify_from_iter: int = _f(500, "first densification iteration")
    densify_until_iter: int = _f(15_000, "last densification iteration")
    densify_grad_threshold: float = _f(0.0002, "screen-space gradient threshold for densification")
    random_background: bool = _f(False, "random background colour each iteration")


def add_arguments(parser: argparse.ArgumentParser, cls: Type[Any], title: Optional[str] = None) -> None:
    """Add one flag per dataclass field, with Inria's long names and the field's default."""
    group = parser.add_argument_group(title or cls.__name__)
    for f in fields(cls):
        names = [f"--{f.name}"]
        if f.metadata.get("short"):
            names.insert(0, f.metadata["short"])
        help_text = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        if f.type in (bool, "bool"):
            group.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            group.add_argument(*names, dest=f.name, type=kind, default=argparse.SUPPRESS, help=help_text)


def extract(cls: Type[T], ns: argparse.Namespace, base: Optional[T] = None) -> T:
    """Build ``cls`` from parsed args; unset flags fall back to ``base`` (e.g. cfg_args) then to defaults."""
    values = dataclasses.asdict(base) if base is not None else {}
    for f in fields(cls):
        if hasattr(ns, f.name):
            values[f.name] = getattr(ns, f.name)
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


# A user-fixable configuration problem (one line, exit 2): the same class as utils.errors.UserError.
ConfigError = UserError


def read_cfg_args(path: str | Path) -> dict[str, Any]:
    """Parse Inria's ``cfg_args`` (``Namespace(a=1, b='x', ...)``) without ``eval``.

    Only literal values are accepted (numbers, strings, booleans, None, lists/tuples of those).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read cfg_args ({e.strerror}); pass -s SOURCE explicitly") from None
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ConfigError(f"{path}: not a Namespace(...) line; re-create it or pass -s SOURCE explicitly") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Namespace"
            and not node.args):
        raise ConfigError(f"{path}: expected Namespace(key=value, ...); pass -s SOURCE explicitly")
    out: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ConfigError(f"{path}: '**' is not allowed in cfg_args")
        try:
            out[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise ConfigError(f"{path}: value of '{kw.arg}' is not a literal; cfg_args is never evaluated") from None
    return out


def write_cfg_args(path: str | Path, params: ModelParams) -> None:
    """Write ``cfg_args`` in Inria's format (``str(Namespace(...))``) so Inria's tools read it too."""
    ns = argparse.Namespace(**dataclasses.asdict(params))
    from utils.io import atomic_write_text  # local import: utils imports nothing from here

    atomic_write_text(path, str(ns))


def model_params_from_cfg(cfg: dict[str, Any]) -> ModelParams:
    """ModelParams from a parsed cfg_args dict, ignoring keys we do not know (other forks add some)."""
    known = {f.name for f in fields(ModelParams)}
    return ModelParams(**{k: v for k, v in cfg.items() if k in known})
