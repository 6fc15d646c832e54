"""Per-Gaussian feature vectors distilled from 2D feature maps on FROZEN geometry (the baseline's training).

Each Gaussian gets a feature f_n in R^C (an ``nn.Parameter``, Adam). A view's feature render is
``render(camera, gaussians, background=0, override_color=f)`` = sum_n f_n alpha_n T_n per pixel, all C
channels in one pass (the CPU backend takes any C; the Inria CUDA backend only 3, so it is fed chunks of 3).
Positions, shapes, opacities and colours never change.

Normalisation: the targets are the 2D maps of ``features.pt`` upsampled bilinearly to the camera resolution
and STANDARDISED PER CHANNEL with the mean and std over every pixel of every training map (stored with the
result as ``channel_mean`` / ``channel_std``). Standardising keeps all channels on the same scale, so the L1
loss weighs them equally and one learning rate fits every extractor; it also makes the zero background the
mean feature. Clustering L2-normalises the learnt vectors, so the scale does not matter downstream.

Loss: mean |render - alpha * target| (L1) + ``cosine_weight`` * mean over pixels (1 - cos(render, target)),
alpha = the rendered opacity (detached): partly covered pixels render alpha * f against the zero background,
so that is the consistent target (in a trained scene alpha ~ 1 almost everywhere).
"""
from __future__ import annotations

import math
import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from arguments import Backend, flag, options
from scene.cameras import Camera
from utils.errors import UserError
from utils.io import atomic_torch_save, save_summary


FIELD_FORMAT = "gs-segment-gaussian-features-v1"
CONFIG_VERSION = 1   # config.json; 1: the first versioned file (adds "version" and "timings_s")


@dataclass
class FieldConfig:
    """Training of the per-Gaussian features (each field is its dino_train.py flag)."""

    iterations: int = flag(1500, "training iterations (one view each, Inria-style shuffled stack)")
    lr: float = flag(0.02, "Adam learning rate of the features (targets are standardised)")
    cosine_weight: float = flag(0.0, "weight of the (1 - cosine similarity) loss term added to L1")
    backend: Backend = options.backend()
    num_threads: int = options.num_threads("CPU threads for the rasterizer and torch (default 0: all cores)")
    seed: int = options.seed()


@dataclass
class FieldResult:
    """Learnt features and what is needed to interpret them."""

    features: Tensor       # [N, C] float32, in standardised target units
    seen: Tensor           # [N] bool: received a non-zero gradient from at least one training view
    channel_mean: Tensor   # [C] mean of the raw target maps (standardisation)
    channel_std: Tensor    # [C] std of the raw target maps
    losses: list[float]    # per-iteration training loss
    view_names: list[str]  # training views used


@dataclass
class FrozenGaussians:
    """Activated, detached Gaussian tensors with the attribute names ``gaussian_renderer.render`` reads."""

    get_xyz: Tensor        # [N, 3]
    get_rotation: Tensor   # [N, 4] wxyz, normalised
    get_scaling: Tensor    # [N, 3] activated
    get_opacity: Tensor    # [N, 1] activated
    get_features: Tensor   # [N, K, 3] SH coefficients
    active_sh_degree: int

    @classmethod
    def of(cls, gaussians: Any) -> "FrozenGaussians":
        with torch.no_grad():
            return cls(gaussians.get_xyz.detach().clone(), gaussians.get_rotation.detach().clone(),
                       gaussians.get_scaling.detach().clone(), gaussians.get_opacity.detach().clone(),
                       gaussians.get_features.detach().clone(), int(gaussians.active_sh_degree))

    def __len__(self) -> int:
        return int(self.get_xyz.shape[0])


class TargetMaps:
    """Standardised target maps per view, kept at feature resolution (float16) and upsampled on demand."""

    def __init__(self, maps: dict[str, Tensor], mean: Optional[Tensor] = None, std: Optional[Tensor] = None):
        """maps: {image_name: Tensor[C, h, w]}; mean/std [C] default to the statistics of ``maps``."""
        if not maps:
            raise ValueError("no feature maps")
        self.maps = {k: v.to(torch.float16) for k, v in maps.items()}
        if mean is None or std is None:
            mean, std = channel_stats(maps.values())
        self.mean = mean.float()
        self.std = std.float()

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def __contains__(self, name: str) -> bool:
        return name in self.maps

    def target(self, camera: Camera, device: torch.device | str = "cpu") -> Tensor:  # [C, H, W]
        fm = self.maps[camera.image_name].to(device=device, dtype=torch.float32)
        fm = (fm - self.mean.to(device)[:, None, None]) / self.std.to(device)[:, None, None]
        if fm.shape[1:] != (camera.height, camera.width):
            fm = F.interpolate(fm[None], size=(camera.height, camera.width), mode="bilinear",
                               align_corners=False)[0]
        return fm


def channel_stats(maps: Any) -> tuple[Tensor, Tensor]:  # -> mean [C], std [C]
    """Per-channel mean and std over every pixel of every map (float64 accumulation)."""
    total = sq = None
    count = 0
    for m in maps:
        x = m.double().reshape(m.shape[0], -1)
        total = x.sum(1) if total is None else total + x.sum(1)
        sq = (x * x).sum(1) if sq is None else sq + (x * x).sum(1)
        count += x.shape[1]
    mean = total / count
    std = torch.sqrt(torch.clamp_min(sq / count - mean * mean, 0.0))
    return mean.float(), torch.where(std > 1e-6, std, torch.ones_like(std)).float()


def render_features(camera: Camera, gaussians: Any, features: Tensor, backend: str = "auto",
                    num_threads: int = 0, with_alpha: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Render per-Gaussian features [N, C] with a zero background -> [C, H, W] (and alpha [1, H, W] if
    ``with_alpha``), differentiable w.r.t. ``features``.

    All C channels in one pass, except on the Inria CUDA rasterizer, which composites exactly 3 channels:
    there the features go through in chunks of 3 (the last one zero-padded).
    """
    from gaussian_renderer import render, resolve_backend

    c = features.shape[1]
    if resolve_backend(backend, features.device) != "inria":
        out = render(camera, gaussians, torch.zeros(c, device=features.device), override_color=features,
                     backend=backend, num_threads=num_threads)
        return (out["render"], out["alpha"]) if with_alpha else out["render"]
    pad = (-c) % 3
    padded = torch.cat([features, features.new_zeros(features.shape[0], pad)], 1) if pad else features
    bg = torch.zeros(3, device=features.device)
    outs = [render(camera, gaussians, bg, override_color=padded[:, i:i + 3].contiguous(), backend=backend,
                   num_threads=num_threads) for i in range(0, c + pad, 3)]
    image = torch.cat([o["render"] for o in outs], 0)[:c]
    return (image, outs[0]["alpha"]) if with_alpha else image


def feature_loss(pred: Tensor, target: Tensor, cosine_weight: float = 0.0,
                 alpha: Optional[Tensor] = None) -> Tensor:
    """L1 + cosine_weight * (1 - cos). pred, target: [C, H, W]; alpha: [1, H, W] rendered opacity.

    With ``alpha`` the target is ``alpha * target``: a pixel the Gaussians cover only partly renders
    alpha * f (zero background), so that is what consistent features produce; on a fully covered pixel
    (alpha ~ 1, almost every pixel of a trained scene) nothing changes.
    """
    if alpha is not None:
        target = alpha.detach() * target
    loss = (pred - target).abs().mean()
    if cosine_weight > 0:
        cos = F.cosine_similarity(pred, target, dim=0, eps=1e-6)
        loss = loss + cosine_weight * (1.0 - cos).mean()
    return loss


def match_views(cameras: Sequence[Camera], targets: TargetMaps, where: str = "features.pt") -> list[Camera]:
    """The cameras that have a feature map; the others are dropped with a counted warning."""
    kept = [c for c in cameras if c.image_name in targets]
    if not kept:
        names = ", ".join(sorted(targets.maps)[:3])
        raise UserError(f"{where}: no feature map matches a training view (maps are for e.g. {names}); extract "
                        f"features from the model's source scene")
    if len(kept) < len(cameras):
        warnings.warn(f"{where}: {len(cameras) - len(kept)} of {len(cameras)} training views have no feature map "
                      f"and are skipped", stacklevel=2)
    return kept


@torch.no_grad()
def evaluate_field(gaussians: Any, cameras: Sequence[Camera], targets: TargetMaps, features: Tensor,
                   cfg: FieldConfig) -> float:
    """Mean loss over ``cameras`` (no training)."""
    losses = []
    for cam in cameras:
        pred, alpha = render_features(cam, gaussians, features, cfg.backend, cfg.num_threads, with_alpha=True)
        losses.append(float(feature_loss(pred, targets.target(cam, features.device), cfg.cosine_weight, alpha)))
    return float(np.mean(losses))


def train_feature_field(gaussians: Any, cameras: Sequence[Camera], targets: TargetMaps, cfg: FieldConfig,
                        device: torch.device | str = "cpu", progress: bool = True,
                        init: Optional[Tensor] = None) -> FieldResult:
    """Fit per-Gaussian features so their renders match ``targets`` in every camera; geometry is frozen.

    gaussians: GaussianModel (or anything with the render attributes); cameras: training views whose
    ``image_name`` is in ``targets``; init: optional [N, C] starting features (default zeros).
    """
    from tqdm import tqdm

    if cfg.iterations < 0:
        raise UserError(f"--iterations {cfg.iterations}: must be >= 0")
    if not cameras:
        raise UserError("no training views to fit features to")
    frozen = gaussians if isinstance(gaussians, FrozenGaussians) else FrozenGaussians.of(gaussians)
    n, c = len(frozen), targets.channels
    start = torch.zeros(n, c) if init is None else init.detach().float()
    feats = torch.nn.Parameter(start.to(device).clone())
    optimizer = torch.optim.Adam([feats], lr=cfg.lr, eps=1e-15)
    seen = torch.zeros(n, dtype=torch.bool, device=device)
    rng = random.Random(cfg.seed)
    stack: list[Camera] = []
    losses: list[float] = []
    ema = None
    bar = tqdm(range(cfg.iterations), desc="feature field", disable=not progress, unit="it")
    for it in bar:
        if not stack:
            stack = list(cameras)
            rng.shuffle(stack)
        cam = stack.pop()
        pred, alpha = render_features(cam, frozen, feats, cfg.backend, cfg.num_threads, with_alpha=True)
        loss = feature_loss(pred, targets.target(cam, device), cfg.cosine_weight, alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        seen |= (feats.grad != 0).any(1)
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"feature loss became {value} at iteration {it}; lower --lr")
        losses.append(value)
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        if it % 10 == 0:
            bar.set_postfix(loss=f"{ema:.4f}")
    return FieldResult(features=feats.detach().cpu(), seen=seen.cpu(), channel_mean=targets.mean.cpu(),
                       channel_std=targets.std.cpu(), losses=losses, view_names=[c.image_name for c in cameras])


# ----- gaussian_features.pt I/O ---------------------------------------------------------------------------
def field_paths(model_path: str | Path) -> tuple[Path, Path]:
    """(<model>/features/gaussian_features.pt, <model>/features/config.json)."""
    d = Path(model_path) / "features"
    return d / "gaussian_features.pt", d / "config.json"


def save_field(path: str | Path, result: FieldResult, meta: dict[str, Any],
               config_path: Optional[str | Path] = None, cfg: Optional[FieldConfig] = None) -> None:
    """Write gaussian_features.pt (features [N, C], seen [N], channel stats, meta) and a config json."""
    payload = {"format": FIELD_FORMAT, "features": result.features.float().contiguous(),
               "seen": result.seen.bool().contiguous(), "channel_mean": result.channel_mean.float(),
               "channel_std": result.channel_std.float(), "meta": dict(meta)}
    atomic_torch_save(path, payload)
    if config_path is not None:
        tail = result.losses[-50:]
        info = {"format": FIELD_FORMAT, "config": asdict(cfg) if cfg is not None else None, **meta,
                "num_gaussians": int(result.features.shape[0]), "channels": int(result.features.shape[1]),
                "seen_gaussians": int(result.seen.sum()), "views": result.view_names,
                "loss_first": result.losses[0] if result.losses else None,
                "loss_last50_mean": float(np.mean(tail)) if tail else None,
                "normalisation": "targets standardised per channel: (f - channel_mean) / channel_std"}
        save_summary(config_path, info, {"train": meta.get("seconds", 0.0)}, CONFIG_VERSION)


def load_field(path: str | Path, num_gaussians: Optional[int] = None) -> tuple[Tensor, Tensor, dict[str, Any]]:
    """Read gaussian_features.pt → (features [N, C], seen [N] bool, meta); checks N against the model."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not found; train the feature field first with dino_train.py -m MODEL")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / foreign file: many exception types
        raise UserError(f"{path}: unreadable ({type(e).__name__}); re-create it with dino_train.py") from None
    if not isinstance(data, dict) or data.get("format") != FIELD_FORMAT or not isinstance(data.get("features"),
                                                                                          Tensor):
        raise UserError(f"{path}: not a gaussian_features.pt written by dino_train.py; re-create it")
    feats = data["features"].float()
    seen = data.get("seen")
    seen = seen.bool() if isinstance(seen, Tensor) else torch.ones(feats.shape[0], dtype=torch.bool)
    if num_gaussians is not None and feats.shape[0] != num_gaussians:
        raise UserError(f"{path}: has features for {feats.shape[0]} Gaussians but the model has {num_gaussians}; "
                        f"re-run dino_train.py on this model (and --iteration)")
    meta = data.get("meta", {})
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["channel_mean"] = data.get("channel_mean")
    meta["channel_std"] = data.get("channel_std")
    return feats, seen, meta
