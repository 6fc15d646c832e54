"""Dense per-image feature maps for the feature-field baseline, saved as ``features.pt``.

Extractors map an image [H, W, 3] float32 in [0, 1] to a feature map [C, h, w] with h, w ≈ H/stride, W/stride:

* ``classic`` (default, weight-free): NOT DINO, a stand-in that needs no weights. Lab colour at several blurs
  plus HOG-like gradient-orientation histograms (soft-binned, cell-pooled, block-normalised) at several
  scales, optionally the normalised pixel position. It separates objects by colour and texture only.
* ``dino`` / ``dinov2``: the last-layer patch tokens of a DINO / DINOv2 ViT, built with timm or a LOCAL
  torch.hub repository and loaded from a LOCAL weights file. Nothing is ever downloaded: timm is imported
  lazily and a missing package or weights file is a one-line UserError naming the file / pip command.

All maps are then projected to ``dim`` channels by one PCA (scikit-learn) fitted on a seeded sample of
pixels from all images (raw channels standardised first so that no unit dominates), and stored float16.

``features.pt`` format: ``{image_name: Tensor[C, h, w] float16, ..., "__meta__": {...}}`` — a plain dict
(readable with ``torch.load(..., weights_only=True)``); the reserved key ``__meta__`` holds the format tag,
the extractor's name and honest description, the PCA size and the stride.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Protocol, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from arguments import flag, options
from utils.errors import UserError
from utils.io import atomic_torch_save

log = logging.getLogger(__name__)

FEATURES_FORMAT = "gs-segment-features-v1"
META_KEY = "__meta__"
EXTRACTORS = ("classic", "dino", "dinov2")
CLASSIC_DESCRIPTION = ("classic: multi-scale Lab colour + HOG-like gradient-orientation histograms "
                       "(NOT DINO: a weight-free stand-in)")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


ExtractorName = Literal["classic", "dino", "dinov2"]


# The extractor's flags, declared once: extract_features.py takes them through ExtractorConfig, affordance.py
# through its own config (which builds an ExtractorConfig).
def extractor_flag(group: Optional[str] = None) -> Any:
    return flag("classic", "classic: weight-free colour+texture stand-in (not DINO); dino/dinov2: ViT from "
                "--weights", group=group)


def weights_flag(group: Optional[str] = None) -> Any:
    return flag(None, "dino/dinov2: local checkpoint file, e.g. dino_deitsmall16_pretrain.pth or "
                "dinov2_vits14_pretrain.pth (never downloaded)", group=group)


def arch_flag(group: Optional[str] = None) -> Any:
    return flag(None, "timm model name (default vit_small_patch16_224.dino / vit_small_patch14_dinov2.lvd142m) or, "
                "with --hub-repo, the hubconf entry (dino_vits16 / dinov2_vits14)", group=group)


def hub_repo_flag(group: Optional[str] = None) -> Any:
    return flag(None, "local clone of facebookresearch/dino(v2): loaded with torch.hub.load(DIR, source='local') "
                "instead of timm", group=group)


def dim_flag(default: int = 64, group: Optional[str] = None) -> Any:
    return flag(default, "feature channels after PCA (capped by the raw channel count)", group=group)


def stride_flag(default: int = 4, group: Optional[str] = None) -> Any:
    return flag(default, "feature map = image size / stride", group=group)


def pca_samples_flag(default: int = 200_000, group: Optional[str] = None) -> Any:
    return flag(default, "pixels sampled over all images for the PCA", group=group)


@dataclass
class ExtractorConfig:
    """How features are extracted and compressed (each field is its extract_features.py flag)."""

    extractor: ExtractorName = extractor_flag()
    weights: Optional[str] = weights_flag()
    arch: Optional[str] = arch_flag()
    hub_repo: Optional[str] = hub_repo_flag()
    dim: int = dim_flag()
    stride: int = stride_flag()
    position: bool = flag(False, "classic: add normalised pixel position channels")
    pca_samples: int = pca_samples_flag()
    max_tokens: int = flag(4096, "ViT: at most this many patch tokens per image (CPU time / memory)")
    cache_mb: int = flag(4096, "raw maps kept in memory between the PCA fit and the projection (beyond it they are "
                         "extracted again)")
    seed: int = options.seed()
    device: str = options.device("device for the ViT")


class Extractor(Protocol):
    """image [H, W, 3] float32 in [0, 1] -> feature map [C, h, w] float32."""

    name: str
    description: str

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def output_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """(h, w) of a feature map for an image of ``height`` x ``width``."""
    return max(1, int(round(height / stride))), max(1, int(round(width / stride)))


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:  # x: [h, w, C] float32
    if sigma <= 0:
        return x
    out = cv2.GaussianBlur(x, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT)
    return out.reshape(x.shape)


def _resize_area(x: np.ndarray, h: int, w: int) -> np.ndarray:  # [H, W, C] -> [h, w, C]
    if x.shape[:2] == (h, w):
        return x
    chans = x.shape[2]
    parts = [cv2.resize(np.ascontiguousarray(x[..., i:i + 4]), (w, h), interpolation=cv2.INTER_AREA)
             for i in range(0, chans, 4)]  # OpenCV resizes at most 4 channels reliably
    return np.concatenate([p.reshape(h, w, -1) for p in parts], axis=2)


@dataclass
class ClassicExtractor:
    """Weight-free colour + texture descriptor (NOT DINO). Deterministic, CPU, ~ms per 256² image.

    Channels: Lab (L/100, a/128, b/128) at each ``colour_sigmas`` blur, then for each ``hog_sigmas`` scale
    ``bins`` block-normalised orientation histograms + 1 log gradient-energy channel; optionally (x, y).
    Sigmas are in output pixels (one output pixel = ``stride`` image pixels).
    """

    stride: int = 4
    colour_sigmas: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
    hog_sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)
    bins: int = 8
    position: bool = False
    energy_eps: float = 0.02  # gradient magnitude (L/100 per pixel) below which a cell counts as flat
    name: str = "classic"
    description: str = CLASSIC_DESCRIPTION

    @property
    def channels(self) -> int:
        return 3 * len(self.colour_sigmas) + (self.bins + 1) * len(self.hog_sigmas) + (2 if self.position else 0)

    def __call__(self, image: np.ndarray) -> np.ndarray:  # [H, W, 3] float32 -> [C, h, w] float32
        img = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image must be [H, W, 3], got {img.shape}")
        height, width = img.shape[:2]
        h, w = output_size(height, width, self.stride)
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab) * np.array([1 / 100, 1 / 128, 1 / 128], dtype=np.float32)
        small = _resize_area(lab, h, w)
        chans = [_blur(small, s) for s in self.colour_sigmas]

        lum = np.ascontiguousarray(lab[..., 0])
        gx = cv2.Sobel(lum, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
        gy = cv2.Sobel(lum, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT) / 8.0
        mag = np.sqrt(gx * gx + gy * gy)
        # Unsigned orientation in [0, pi), soft-assigned to the two nearest of ``bins`` bin centres.
        pos = (np.arctan2(gy, gx) % np.pi) / np.pi * self.bins - 0.5
        lo = np.floor(pos)
        frac = (pos - lo).astype(np.float32)
        lo = lo.astype(np.int64) % self.bins
        hi = (lo + 1) % self.bins
        hist = np.zeros((height, width, self.bins), dtype=np.float32)
        for b in range(self.bins):
            hist[..., b] = mag * ((lo == b) * (1.0 - frac) + (hi == b) * frac)
        cells = _resize_area(hist, h, w)  # mean over stride x stride cells
        for s in self.hog_sigmas:
            block = _blur(cells, s)
            energy = np.sqrt((block * block).sum(axis=2, keepdims=True))
            chans.append(block / np.sqrt(energy * energy + self.energy_eps ** 2))
            chans.append(np.log1p(energy / self.energy_eps))
        if self.position:
            ys, xs = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32),
                                 indexing="ij")
            chans += [xs[..., None], ys[..., None]]
        out = np.concatenate(chans, axis=2).transpose(2, 0, 1)
        return np.ascontiguousarray(out, dtype=np.float32)


def patch_tokens(model: torch.nn.Module, x: Tensor) -> Tensor:
    """Last-layer patch tokens [B, P, D] of a ViT for input x [B, 3, H, W] (P = (H/p)(W/p)).

    Accepts timm ViTs (``forward_features`` -> [B, prefix + P, D]), DINOv2 hub models (``forward_features``
    -> dict with ``x_norm_patchtokens``) and DINO hub models (``get_intermediate_layers``). Prefix tokens
    (class, registers) come first in all three, so the patch tokens are the last P.
    """
    p = _patch_size(model)
    n = (x.shape[2] // p) * (x.shape[3] // p)
    if hasattr(model, "forward_features"):
        out = model.forward_features(x)
        if isinstance(out, dict):
            out = out["x_norm_patchtokens"]
    elif hasattr(model, "get_intermediate_layers"):
        out = model.get_intermediate_layers(x, n=1)[0]
    else:
        raise TypeError(f"{type(model).__name__}: not a ViT with forward_features or get_intermediate_layers")
    if out.dim() != 3 or out.shape[1] < n:
        raise ValueError(f"expected tokens [B, >= {n}, D], got {tuple(out.shape)}")
    return out[:, out.shape[1] - n:]


def _patch_size(model: torch.nn.Module) -> int:
    ps = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if ps is None:
        ps = getattr(model, "patch_size", None)
    if ps is None:
        raise TypeError(f"{type(model).__name__}: cannot find the patch size (patch_embed.patch_size)")
    return int(ps[0] if isinstance(ps, (tuple, list)) else ps)


@dataclass
class ViTExtractor:
    """Dense ViT features: the image is resized so the patch grid is the output grid (capped at
    ``max_tokens`` patches, then the token map is bilinearly upsampled to the output grid)."""

    model: torch.nn.Module
    name: str
    description: str
    stride: int = 4
    max_tokens: int = 4096
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.model = self.model.eval().to(self.device)
        self.patch = _patch_size(self.model)

    def __call__(self, image: np.ndarray) -> np.ndarray:  # [H, W, 3] float32 -> [D, h, w] float32
        height, width = image.shape[:2]
        h, w = output_size(height, width, self.stride)
        gh, gw = h, w
        if gh * gw > self.max_tokens:
            f = math.sqrt(self.max_tokens / (gh * gw))
            gh, gw = max(1, int(gh * f)), max(1, int(gw * f))
        size = (gw * self.patch, gh * self.patch)
        interp = cv2.INTER_AREA if size[0] < width else cv2.INTER_CUBIC
        x = cv2.resize(np.asarray(image, dtype=np.float32), size, interpolation=interp)
        x = (np.clip(x, 0, 1) - _IMAGENET_MEAN) / _IMAGENET_STD
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self.device)
        with torch.inference_mode():
            tok = patch_tokens(self.model, xt)  # [1, gh*gw, D]
            fmap = tok.reshape(1, gh, gw, -1).permute(0, 3, 1, 2).float()
            if (gh, gw) != (h, w):
                fmap = torch.nn.functional.interpolate(fmap, size=(h, w), mode="bilinear", align_corners=False)
        return fmap[0].cpu().numpy()


_VIT_SPECS = {
    "dino": {"timm": "vit_small_patch16_224.dino", "hub": "dino_vits16", "file": "dino_deitsmall16_pretrain.pth",
             "repo": "facebookresearch/dino"},
    "dinov2": {"timm": "vit_small_patch14_dinov2.lvd142m", "hub": "dinov2_vits14",
               "file": "dinov2_vits14_pretrain.pth", "repo": "facebookresearch/dinov2"},
}


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            try:
                from safetensors.torch import load_file
            except ImportError:
                raise UserError(f"{path}: reading .safetensors needs `pip install safetensors`, or pass a .pth "
                                 f"checkpoint") from None
            sd: Any = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as e:  # torch.load raises many types for a corrupt file; report it as the user's file
        raise UserError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        f"pass a PyTorch state-dict file") from None
    for key in ("teacher", "model", "state_dict"):  # DINO training checkpoints nest the weights
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise UserError(f"{path}: not a state dict of tensors; pass the backbone weights file")
    out = {}
    for k, v in sd.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_vit_extractor(cfg: ExtractorConfig) -> ViTExtractor:
    """A DINO / DINOv2 ViT from LOCAL weights (timm, or torch.hub with a local repo). Never downloads."""
    spec = _VIT_SPECS[cfg.extractor]
    never = "nothing is downloaded; or use --extractor classic (weight-free)"
    if not cfg.weights:
        raise UserError(f"--extractor {cfg.extractor}: needs --weights PATH to a local checkpoint such as "
                        f"{spec['file']} ({spec['repo']}); {never}")
    wpath = Path(cfg.weights).expanduser()
    if not wpath.is_file():
        raise UserError(f"{wpath}: weights file not found; --extractor {cfg.extractor} expects a local checkpoint "
                        f"such as {spec['file']} ({spec['repo']}); {never}")
    if cfg.hub_repo:
        repo = Path(cfg.hub_repo).expanduser()
        if not (repo / "hubconf.py").is_file():
            raise UserError(f"{repo / 'hubconf.py'}: not found; --hub-repo must be a local clone of {spec['repo']}")
        entry = cfg.arch or spec["hub"]
        try:
            model = torch.hub.load(str(repo), entry, source="local", pretrained=False)
        except (ImportError, RuntimeError, AttributeError) as e:
            raise UserError(f"{repo}: torch.hub.load('{entry}', source='local') failed ({e}); check --arch and the "
                            f"repository") from None
        state = _read_state_dict(wpath)
        missing, unexpected = model.load_state_dict(state, strict=False)
        _check_keys(wpath, model, missing, unexpected)
    else:
        try:
            import timm
        except ImportError:
            raise UserError(f"{wpath}: --extractor {cfg.extractor} needs timm (`pip install timm`) or --hub-repo DIR, "
                            f"a local clone of {spec['repo']}") from None
        arch = cfg.arch or spec["timm"]
        try:  # pretrained_cfg_overlay(file=...) makes timm read the local file through its own key filter
            model = timm.create_model(arch, pretrained=True, num_classes=0, dynamic_img_size=True,
                                      pretrained_cfg_overlay={"file": str(wpath)})
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"{wpath}: does not load into timm '{arch}' ({str(e).splitlines()[0][:200]}); pass "
                            f"--arch matching the checkpoint") from None
    desc = f"{cfg.extractor}: last-layer patch tokens of {cfg.arch or spec['timm']} from {wpath.name}"
    return ViTExtractor(model, name=cfg.extractor, description=desc, stride=cfg.stride, max_tokens=cfg.max_tokens,
                        device=cfg.device)


def _check_keys(path: Path, model: torch.nn.Module, missing: Sequence[str], unexpected: Sequence[str]) -> None:
    n = len(model.state_dict())
    if len(missing) > 0.1 * n:
        raise UserError(f"{path}: {len(missing)} of {n} model weights missing from the checkpoint (e.g. "
                        f"{missing[0]}); pass --arch matching it")
    if missing or unexpected:
        warnings.warn(f"{path}: {len(missing)} missing and {len(unexpected)} unexpected keys ignored", stacklevel=3)


def build_extractor(cfg: ExtractorConfig) -> Extractor:
    """The extractor named by ``cfg.extractor``; checks weights and packages before any image is read."""
    if cfg.stride < 1:
        raise UserError(f"--stride {cfg.stride}: must be >= 1")
    if cfg.extractor == "classic":
        return ClassicExtractor(stride=cfg.stride, position=cfg.position)
    if cfg.extractor in _VIT_SPECS:
        return load_vit_extractor(cfg)
    raise UserError(f"--extractor {cfg.extractor}: unknown; choose one of {', '.join(EXTRACTORS)}")


# ----- PCA over all images ----------------------------------------------------------------------------
@dataclass
class FeatureProjection:
    """Standardise raw channels then project on the leading principal components (fitted on a sample)."""

    mean: np.ndarray        # [R]
    std: np.ndarray         # [R]
    components: np.ndarray  # [C, R]
    pca_mean: np.ndarray    # [R] (of the standardised sample)
    explained: float        # fraction of the standardised variance kept

    def __call__(self, raw: np.ndarray) -> np.ndarray:  # [R, h, w] -> [C, h, w] float32
        r, h, w = raw.shape
        x = (raw.reshape(r, -1).T - self.mean) / self.std
        return ((x - self.pca_mean) @ self.components.T).T.reshape(-1, h, w).astype(np.float32)


def fit_projection(samples: np.ndarray, dim: int, seed: int = 0) -> FeatureProjection:
    """PCA (scikit-learn) to ``min(dim, R)`` channels on standardised samples [S, R]."""
    from sklearn.decomposition import PCA

    samples = np.asarray(samples, dtype=np.float64)
    mean = samples.mean(0)
    std = samples.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    z = (samples - mean) / std
    k = int(min(dim, z.shape[1], z.shape[0]))
    if k < dim:
        log.info("PCA: keeping %d channels (raw features have %d, --dim %d)", k, z.shape[1], dim)
    pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(z)
    return FeatureProjection(mean.astype(np.float32), std.astype(np.float32), pca.components_.astype(np.float32),
                             pca.mean_.astype(np.float32), float(pca.explained_variance_ratio_.sum()))


def extract_feature_maps(images: Sequence[tuple[str, Callable[[], np.ndarray]]], extractor: Extractor,
                         cfg: ExtractorConfig, progress: bool = True) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Run ``extractor`` on every (name, load_image) pair, fit the PCA on a pixel sample of all of them and
    return ({name: Tensor[C, h, w] float16}, metadata). Raw maps are kept up to ``cfg.cache_mb`` and
    recomputed past it, so memory stays bounded for large scenes."""
    from tqdm import tqdm

    if not images:
        raise UserError("no images to extract features from; check -s and --images")
    names = [n for n, _ in images]
    if len(set(names)) != len(names):
        raise UserError("two views share an image name; features.pt is keyed by image name")
    rng = np.random.default_rng(cfg.seed)
    per_image = max(16, cfg.pca_samples // len(images))
    cache: dict[str, np.ndarray] = {}
    cached_bytes = 0
    samples = []
    raw_dim = None
    for name, load in tqdm(images, desc=f"features ({extractor.name})", disable=not progress, unit="img"):
        raw = extractor(load())
        raw_dim = raw.shape[0]
        flat = raw.reshape(raw.shape[0], -1)
        pick = rng.choice(flat.shape[1], size=min(per_image, flat.shape[1]), replace=False)
        samples.append(flat[:, pick].T)
        if cached_bytes + raw.nbytes // 2 <= cfg.cache_mb * 2 ** 20:
            cache[name] = raw.astype(np.float16)
            cached_bytes += raw.nbytes // 2
    proj = fit_projection(np.concatenate(samples), cfg.dim, cfg.seed)
    out: dict[str, Tensor] = {}
    recompute = [(n, ld) for n, ld in images if n not in cache]
    for name, _ in images:
        if name in cache:
            out[name] = torch.from_numpy(proj(cache.pop(name).astype(np.float32))).to(torch.float16)
    for name, load in tqdm(recompute, desc="features (projection)", disable=not progress or not recompute,
                           unit="img"):
        raw16 = extractor(load()).astype(np.float16)  # same rounding as the cached maps
        out[name] = torch.from_numpy(proj(raw16.astype(np.float32))).to(torch.float16)
    log.info("%s: %d images, %d raw channels -> %d (PCA keeps %.1f%% of the variance)", extractor.description,
             len(images), raw_dim, proj.components.shape[0], 100 * proj.explained)
    meta = {
        "format": FEATURES_FORMAT,
        "extractor": extractor.name,
        "description": extractor.description,
        "dim": int(proj.components.shape[0]),
        "raw_dim": int(raw_dim or 0),
        "stride": int(cfg.stride),
        "pca_explained_variance": float(proj.explained),
        "config": {k: v for k, v in asdict(cfg).items() if k != "device"},
    }
    return {n: out[n] for n in names}, meta


# ----- features.pt I/O ----------------------------------------------------------------------------------
def save_features(path: str | Path, maps: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write features.pt atomically: {image_name: Tensor[C, h, w], "__meta__": meta}."""
    if META_KEY in maps:
        raise ValueError(f"'{META_KEY}' is reserved and cannot be an image name")
    chans = {int(t.shape[0]) for t in maps.values()}
    if len(chans) > 1 or any(t.dim() != 3 for t in maps.values()):
        raise ValueError(f"every feature map must be [C, h, w] with one C, got channel counts {sorted(chans)}")
    payload: dict[str, Any] = {n: t.detach().cpu().contiguous() for n, t in maps.items()}
    payload[META_KEY] = dict(meta, format=FEATURES_FORMAT)
    atomic_torch_save(path, payload)


def load_features(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read features.pt → ({image_name: Tensor[C, h, w]}, metadata). A plain {name: tensor} dict without
    metadata (e.g. written by another tool) is accepted too."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: features file not found; run extract_features.py -s SOURCE --out {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / foreign pickle: many exception types
        raise UserError(f"{path}: not a readable features.pt ({type(e).__name__}); re-create it with "
                        f"extract_features.py") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a dict {{image_name: Tensor[C, h, w]}}; re-create it with "
                        f"extract_features.py")
    meta = data.pop(META_KEY, {}) if isinstance(data.get(META_KEY, {}), dict) else {}
    maps = {}
    for name, t in data.items():
        if not isinstance(t, Tensor) or t.dim() != 3:
            raise UserError(f"{path}: entry {name!r} is not a Tensor[C, h, w]; re-create it with extract_features.py")
        maps[str(name)] = t
    if not maps:
        raise UserError(f"{path}: holds no feature maps; re-create it with extract_features.py")
    chans = {int(t.shape[0]) for t in maps.values()}
    if len(chans) != 1:
        raise UserError(f"{path}: feature maps have different channel counts {sorted(chans)}; re-create it")
    return maps, meta
