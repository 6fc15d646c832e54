"""Clustering Gaussians by learnt feature and position, and selecting clusters with a 2D mask.

Clustering input per Gaussian: ``[feature_weight * f / |f|, xyz_weight * (xyz - median) / r90]`` where
``f`` is the learnt feature (L2-normalised, so only its direction counts: a Gaussian seen half-transparent
still clusters with its object) and ``r90`` is the 90th percentile of the distance to the median position
(robust to floaters). Unit-length features and a unit-radius scene make the two weights comparable:
``xyz_weight`` 0 ignores position, 1 treats one scene radius like opposite features. KMeans (scikit-learn),
MiniBatchKMeans above ``minibatch_above`` Gaussians.

Selection by mask: the rendered weight alpha*T of each cluster's Gaussians inside and outside a 2D mask is
summed (``gaussian_renderer.vote``) over the given views; clusters with at least ``inside_frac`` of their
weight inside are selected. Output labels follow segment.py: 1 selected, 0 background, -1 undecided (the
Gaussian's feature was never trained: no training view saw it).
"""
from __future__ import annotations

import colorsys
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from arguments import flag, options
from scene.cameras import Camera


@dataclass
class ClusterConfig:
    """KMeans on weighted [normalised features, normalised positions] (each field is its cluster.py flag)."""

    k: int = flag(8, "number of clusters", required=True)
    feature_weight: float = flag(1.0, "weight of the unit features")
    xyz_weight: float = flag(0.3, "weight of positions normalised to the scene's 90th-percentile radius")
    minibatch_above: int = flag(200_000, "use MiniBatchKMeans above this many Gaussians")
    n_init: int = flag(3, "KMeans restarts")
    seed: int = options.seed()


def normalised_positions(xyz: np.ndarray) -> np.ndarray:  # xyz: [N, 3] -> [N, 3]
    """(xyz - median) / 90th percentile of the distance to the median."""
    xyz = np.asarray(xyz, dtype=np.float64)
    centre = np.median(xyz, axis=0)
    d = np.linalg.norm(xyz - centre, axis=1)
    r = float(np.percentile(d, 90)) if len(d) else 1.0
    return ((xyz - centre) / (r if r > 1e-12 else 1.0)).astype(np.float32)


def cluster_inputs(features: np.ndarray, xyz: np.ndarray, feature_weight: float = 1.0,
                   xyz_weight: float = 0.3) -> np.ndarray:  # -> [N, C + 3] float32
    """features: [N, C]; xyz: [N, 3]. Zero feature vectors (never trained) stay zero."""
    f = np.asarray(features, dtype=np.float32)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    f = np.where(norm > 1e-8, f / np.maximum(norm, 1e-8), 0.0)
    return np.concatenate([feature_weight * f, xyz_weight * normalised_positions(xyz)], axis=1).astype(np.float32)


def kmeans_labels(x: np.ndarray, cfg: ClusterConfig) -> np.ndarray:  # x: [N, D] -> [N] int64 in [0, k)
    """KMeans (MiniBatchKMeans above ``cfg.minibatch_above`` rows), seeded."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = x.shape[0]
    if cfg.k < 1:
        raise ValueError(f"k must be >= 1, got {cfg.k}")
    k = min(cfg.k, n)
    if k < cfg.k:
        warnings.warn(f"--k {cfg.k} exceeds the {n} Gaussians; using k={k}", stacklevel=2)
    if n > cfg.minibatch_above:
        km: Any = MiniBatchKMeans(n_clusters=k, batch_size=8192, n_init=cfg.n_init, random_state=cfg.seed)
    else:
        km = KMeans(n_clusters=k, n_init=cfg.n_init, random_state=cfg.seed)
    return km.fit_predict(x).astype(np.int64)


def cluster_gaussians(features: np.ndarray, xyz: np.ndarray, cfg: ClusterConfig) -> np.ndarray:  # [N] int64
    """Cluster ids [N] from features [N, C] and positions [N, 3]."""
    return kmeans_labels(cluster_inputs(features, xyz, cfg.feature_weight, cfg.xyz_weight), cfg)


def palette(k: int) -> np.ndarray:  # [k, 3] float32 RGB in [0, 1]
    """k distinct colours: golden-ratio hue steps, alternating saturation and value."""
    out = []
    for i in range(k):
        h = (0.07 + i * 0.618033988749895) % 1.0
        s = (0.85, 0.55, 0.95)[i % 3]
        v = (0.95, 0.75, 0.6)[(i // 3) % 3]
        out.append(colorsys.hsv_to_rgb(h, s, v))
    return np.asarray(out, dtype=np.float32).reshape(k, 3)


# ----- selection by 2D mask -----------------------------------------------------------------------------
@dataclass
class MaskScores:
    """Per-cluster rendered weight inside and outside the masks, summed over views."""

    inside: np.ndarray  # [k]
    total: np.ndarray   # [k]

    @property
    def fraction(self) -> np.ndarray:  # [k], NaN where a cluster is invisible in every mask view
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, self.inside / np.where(self.total > 0, self.total, 1.0), np.nan)


def cluster_mask_scores(gaussians: Any, cluster_ids: np.ndarray, k: int,
                        views: Sequence[tuple[Camera, np.ndarray]], backend: str = "auto",
                        num_threads: int = 0) -> MaskScores:
    """Sum over views of each cluster's alpha*T mass inside / outside the mask.

    cluster_ids: [N] int in [0, k); views: (camera, mask [H, W] bool at the camera's size) pairs.
    """
    from gaussian_renderer import vote

    ids = np.asarray(cluster_ids, dtype=np.int64)
    inside = np.zeros(k, dtype=np.float64)
    total = np.zeros(k, dtype=np.float64)
    for cam, mask in views:
        m = torch.from_numpy(np.asarray(mask, dtype=bool))
        if tuple(m.shape) != (cam.height, cam.width):
            raise ValueError(f"mask of {cam.image_name} is {tuple(m.shape)}, camera is {cam.height}x{cam.width}")
        weights = torch.stack([m, ~m], dim=-1).float()  # [H, W, 2]
        v = vote(cam, gaussians, weights, backend=backend, num_threads=num_threads).double().cpu().numpy()
        inside += np.bincount(ids, weights=v[:, 0], minlength=k)
        total += np.bincount(ids, weights=v.sum(1), minlength=k)
    return MaskScores(inside, total)


def select_clusters(scores: MaskScores, inside_frac: float = 0.5) -> np.ndarray:  # [k] bool
    """Clusters with at least ``inside_frac`` of their mask-view weight inside the mask."""
    frac = scores.fraction
    return np.nan_to_num(frac, nan=-1.0) >= inside_frac


def selection_labels(cluster_ids: np.ndarray, selected: np.ndarray, seen: Optional[np.ndarray] = None
                     ) -> np.ndarray:  # [N] int64: 1 selected, 0 background, -1 undecided
    """segment.py's labels.npy convention from cluster ids [N], selected clusters [k] and trained mask [N]."""
    labels = np.asarray(selected, dtype=bool)[np.asarray(cluster_ids, dtype=np.int64)].astype(np.int64)
    if seen is not None:
        labels[~np.asarray(seen, dtype=bool)] = -1
    return labels


# ----- outputs -----------------------------------------------------------------------------------------
def render_cluster_view(camera: Camera, gaussians: Any, colors: Tensor, backend: str = "auto",
                        num_threads: int = 0) -> np.ndarray:  # [H, 2W, 3] uint8
    """RGB render | cluster colouring (override colours [N, 3], black background), side by side."""
    from gaussian_renderer import render

    bg = torch.zeros(3)
    with torch.no_grad():
        rgb = render(camera, gaussians, bg, backend=backend, num_threads=num_threads)["render"]
        lab = render(camera, gaussians, bg, override_color=colors, backend=backend, num_threads=num_threads)["render"]
    img = torch.cat([rgb, lab], dim=2).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (img * 255.0 + 0.5).astype(np.uint8)
