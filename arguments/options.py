"""The flags many scripts share, declared once here and used as config fields (``backend: Backend = backend()``).

Each function returns a dataclass field (:func:`arguments.flags.flag`) whose spelling, aliases and help are the
same in every script; ``help`` overrides the wording where a script means something narrower.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, get_args

from arguments.flags import flag

# Rasterizer backend names (gaussian_renderer.rasterization selects among them); here so that argument parsing
# needs no torch import.
Backend = Literal["auto", "cpu", "reference", "inria", "gsplat"]
BACKENDS: tuple[str, ...] = get_args(Backend)
Split = Literal["train", "test", "all"]

MODEL_HELP = ("trained model: Inria folder, splatfacto run folder or export PLY, or gsplat ckpt_*.pt / result "
              "folder")
FORCE_HELP = ("write into a non-empty output folder that holds no output of this tool (its files are added beside "
              "the others; nothing else is deleted), and replace a same-named file it did not write")


def model_path(help: str = MODEL_HELP, required: bool = True, group: Optional[str] = None) -> Any:
    """-m / --model-path / --model_path / --model."""
    return flag("", help, short="-m", aliases=("--model",), required=required, group=group)


def iteration(help: str = "point_cloud/iteration_N to load (default -1: newest)", group: Optional[str] = None) -> Any:
    return flag(-1, help, group=group)


def source_path(help: str = "scene folder (default: the one in MODEL/cfg_args)", required: bool = False,
                group: Optional[str] = None) -> Any:
    """-s / --source-path / --source_path (Inria's)."""
    return flag("", help, short="-s", required=required, group=group)


def images(default: str = "", help: str = "image folder inside the scene (default: cfg_args')",
           group: Optional[str] = None) -> Any:
    """-i / --images (Inria's)."""
    return flag(default, help, short="-i", group=group)


def resolution(default: int = 0, help: str = "0: as trained (cfg_args); else Inria's -r (1/2/4/8 divide, >8 target "
               "width)", group: Optional[str] = None) -> Any:
    """-r / --resolution (Inria's)."""
    return flag(default, help, short="-r", group=group)


def split(default: str, help: str, group: Optional[str] = None) -> Any:
    """--split train|test|all (type the field as :data:`Split` or a narrower Literal)."""
    return flag(default, help, group=group)


def backend(help: str = "rasterizer backend (default auto: a CUDA backend when the Gaussians are on a CUDA device "
                        "and one is installed, else the native CPU one)", group: Optional[str] = None) -> Any:
    return flag("auto", help, group=group)


def num_threads(help: str = "CPU threads (default 0: all cores)", group: Optional[str] = None) -> Any:
    """--num-threads / --num_threads / --threads."""
    return flag(0, help, aliases=("--threads",), group=group)


def device(help: str = "torch device holding the Gaussians (default cpu)", group: Optional[str] = None) -> Any:
    return flag("cpu", help, group=group)


def progress(help: str = "progress bars (shown on a terminal only); --no-progress or --quiet: none",
             group: Optional[str] = None) -> Any:
    """--progress / --no-progress / --quiet."""
    return flag(True, help, negative=("--quiet",), group=group, show_default=False)


def force(group: Optional[str] = None) -> Any:
    return flag(False, FORCE_HELP, group=group, show_default=False)


def out(help: str, group: Optional[str] = None) -> Any:
    return flag("", help, group=group)


def seed(help: str = "seed of every random choice", group: Optional[str] = None) -> Any:
    return flag(0, help, group=group)
