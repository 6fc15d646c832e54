"""Rendering views for evaluation, writing Inria's render folders, and image metrics (render.py / metrics.py).

Folder layout (Inria's)::

    <model>/<split>/ours_<iteration>/renders/00000.png ...   rendered views
    <model>/<split>/ours_<iteration>/gt/00000.png ...        ground truth at the same size
    <model>/results.json     {"ours_<it>": {"SSIM": mean, "PSNR": mean[, "LPIPS": mean]}}
    <model>/per_view.json    {"ours_<it>": {"SSIM": {"00000.png": v, ...}, "PSNR": {...}[, "LPIPS": {...}]}}

Metrics are computed from the 8-bit PNGs, as Inria's metrics.py does, so they can be recomputed by anyone
from the folders alone.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from scene.cameras import Camera, ImageCache
from utils.errors import UserError
from utils.io import atomic_write_text, save_png
from utils.loss_utils import l1_loss, psnr, ssim

_METHOD_DIR = re.compile(r"ours_(\d+)$")


def to_uint8(image: Tensor) -> np.ndarray:  # image: [3, H, W] float -> [H, W, 3] uint8
    """torchvision.save_image's quantisation (clamp to [0, 1], x255, round half up), which Inria uses."""
    arr = image.detach().clamp(0.0, 1.0).mul(255.0).add(0.5).clamp(0.0, 255.0).to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def evaluate_views(cameras: Sequence[Camera], gaussians: Any, background: Tensor, cache: Optional[ImageCache],
                   backend: str = "auto", num_threads: int = 0) -> dict[str, float]:
    """Mean L1 and PSNR over ``cameras`` (renders and ground truth clamped to [0, 1], like Inria's report).

    background: Tensor  # [3]
    """
    from gaussian_renderer import render

    if not cameras:
        return {"l1": float("nan"), "psnr": float("nan"), "views": 0}
    l1s, psnrs = [], []
    device = gaussians.get_xyz.device
    for cam in cameras:
        image = render(cam, gaussians, background, backend=backend, num_threads=num_threads)["render"].clamp(0, 1)
        gt = cam.load_image(cache, device).clamp(0, 1)
        l1s.append(float(l1_loss(image, gt)))
        psnrs.append(float(psnr(image, gt)))
    return {"l1": float(np.mean(l1s)), "psnr": float(np.mean(psnrs)), "views": len(cameras)}


@torch.no_grad()
def render_dir(model_path: str | Path, name: str, iteration: int) -> Path:
    """Inria's <model>/<split>/ours_<iteration> folder of render.py."""
    return Path(model_path) / name / f"ours_{int(iteration)}"


def render_set(model_path: str | Path, name: str, iteration: int, views: Sequence[Camera], gaussians: Any,
               background: Tensor, cache: Optional[ImageCache] = None, backend: str = "auto",
               num_threads: int = 0, progress: bool = True, out: Optional[Path] = None) -> Path:
    """Write {renders,gt}/NNNNN.png for ``views`` (in order) into ``out`` (default: render_dir(...), Inria's
    <model>/<name>/ours_<iteration>); returns that folder. background: Tensor  # [3]"""
    from tqdm import tqdm

    from gaussian_renderer import render

    out = Path(out) if out is not None else render_dir(model_path, name, iteration)
    device = gaussians.get_xyz.device
    for idx, view in enumerate(tqdm(views, desc=f"Rendering {name}", disable=not progress)):
        image = render(view, gaussians, background, backend=backend, num_threads=num_threads)["render"]
        save_png(out / "renders" / f"{idx:05d}.png", to_uint8(image))
        save_png(out / "gt" / f"{idx:05d}.png", to_uint8(view.load_image(cache, device)))
    return out


# ----- metrics --------------------------------------------------------------------------------------------
def read_png(path: Path) -> Tensor:  # -> [3, H, W] float32 in [0, 1]
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as e:
        raise UserError(f"{path}: cannot read image ({e}); re-run render.py") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def lpips_metric() -> tuple[Optional[Callable[[Tensor, Tensor], float]], str]:
    """(LPIPS function, "") when the ``lpips`` package and its VGG weights are available offline, else
    (None, why). Nothing is ever downloaded: this machine class has no access to pretrained weights."""
    if importlib.util.find_spec("lpips") is None:
        return None, "the 'lpips' package is not installed (pip install lpips, plus cached VGG weights)"
    if importlib.util.find_spec("torchvision") is None:
        return None, "'lpips' needs torchvision, which is not installed"
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    vgg = sorted(hub.glob("vgg16-*.pth")) if hub.is_dir() else []
    if not vgg:
        return None, f"no VGG16 weights in {hub} (lpips would try to download them)"
    try:
        import lpips  # type: ignore[import-not-found]

        net = lpips.LPIPS(net="vgg", verbose=False).eval()
    except (ImportError, OSError, RuntimeError) as e:
        return None, f"lpips failed to load offline ({str(e).splitlines()[0][:120]})"

    def fn(a: Tensor, b: Tensor) -> float:  # a, b: [3, H, W] in [0, 1]
        with torch.no_grad():
            return float(net(a[None] * 2 - 1, b[None] * 2 - 1).mean())

    return fn, ""


@dataclass
class MethodMetrics:
    """Per-view and mean metrics of one ours_<iteration> folder."""

    method: str
    per_view: dict[str, dict[str, float]]   # metric -> {image name: value}
    mean: dict[str, float]                  # metric -> mean over views


def method_dirs(split_dir: Path) -> list[Path]:
    """The ours_<N> folders of a split, sorted by N."""
    if not split_dir.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in split_dir.iterdir() if d.is_dir() and (m := _METHOD_DIR.match(d.name))]
    return [d for _, d in sorted(found)]


def compute_method_metrics(method_dir: Path,
                           lpips_fn: Optional[Callable[[Tensor, Tensor], float]] = None) -> MethodMetrics:
    """PSNR and SSIM (and LPIPS if given) of every renders/NNNNN.png against gt/NNNNN.png."""
    renders, gts = method_dir / "renders", method_dir / "gt"
    names = sorted(p.name for p in renders.glob("*.png")) if renders.is_dir() else []
    if not names:
        raise UserError(f"{renders}: no rendered PNGs; run render.py -m <model> first")
    missing = [n for n in names if not (gts / n).is_file()]
    if missing:
        raise UserError(f"{gts}: {len(missing)} of {len(names)} ground-truth PNGs missing (e.g. {missing[0]}); "
                        f"re-run render.py")
    per_view: dict[str, dict[str, float]] = {"SSIM": {}, "PSNR": {}}
    if lpips_fn is not None:
        per_view["LPIPS"] = {}
    for name in names:
        r, g = read_png(renders / name), read_png(gts / name)
        if r.shape != g.shape:
            raise UserError(f"{renders / name}: size {tuple(r.shape[1:])} differs from its gt "
                            f"{tuple(g.shape[1:])}; re-run render.py")
        per_view["SSIM"][name] = float(ssim(r, g))
        per_view["PSNR"][name] = float(psnr(r, g))
        if lpips_fn is not None:
            per_view["LPIPS"][name] = lpips_fn(r, g)
    mean = {k: float(np.mean(list(v.values()))) for k, v in per_view.items()}
    return MethodMetrics(method_dir.name, per_view, mean)


def evaluate_model_folder(model_path: str | Path, split: str = "test",
                          lpips_fn: Optional[Callable[[Tensor, Tensor], float]] = None,
                          force: bool = False) -> list[MethodMetrics]:
    """Metrics of every <model>/<split>/ours_N folder; writes results.json and per_view.json (Inria's) into
    the model folder (shared mode of utils.outputs: only these two files are ever replaced there)."""
    from utils.outputs import OutputFolder

    model_path = Path(model_path)
    if not model_path.is_dir():
        raise UserError(f"{model_path}: model folder not found; pass -m the folder train.py wrote")
    methods = method_dirs(model_path / split)
    if not methods:
        hint = " (train with --eval to get a test split)" if split == "test" else ""
        raise UserError(f"{model_path / split}: no ours_<iteration> folders; run render.py -m {model_path} "
                        f"first{hint}")
    suffix = "" if split == "test" else f"_{split}"
    names = [f"results{suffix}.json", f"per_view{suffix}.json"]
    with OutputFolder(model_path, "metrics.py", [model_path / split], force, files=names, flag=None) as folder:
        results = [compute_method_metrics(d, lpips_fn) for d in methods]
        atomic_write_text(folder.path(names[0]), json.dumps({m.method: m.mean for m in results}, indent=True))
        atomic_write_text(folder.path(names[1]), json.dumps({m.method: m.per_view for m in results}, indent=True))
        folder.commit()
    return results
