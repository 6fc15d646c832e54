"""Gradient voting: per-Gaussian label masses from 2D masks, and the decision rules built on them.

For a pixel, C = sum_n c_n alpha_n T_n, so dC/dc_n = alpha_n T_n: a Gaussian's vote for a mask is the
alpha*T mass it puts inside the mask minus the mass outside, summed over views (the paper's rule: vote > 0
means inside). We accumulate one channel per class instead of one signed channel:

    votes[n, 0] = sum over views and background pixels of alpha_n(p) T_n(p)
    votes[n, l] = the same over pixels of label l (l = 1..L)

so the paper's single-label vote is ``votes[:, 1] - votes[:, 0]``, multi-label is argmax over the row, and
``votes.sum(1)`` is the Gaussian's total contribution (zero: no masked view ever saw it -> undecided).
Everything is forward-only (the engine's label-map vote: the kernel reads the int label map, no one-hot
[H, W, L+1] weights; bit-identical to voting the one-hot weights) and accumulated in float64.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
from torch import Tensor

from utils.errors import UserError

UNDECIDED_MODES = ("auto", "keep", "drop", "propagate")

ViewSpec = Union[int, float, None]


# ---------------------------------------------------------------------------------------------------------
# --views
# ---------------------------------------------------------------------------------------------------------
def parse_views(text: Optional[str | int | float]) -> ViewSpec:
    """``--views``: None/"all" -> every masked view; an integer N >= 1 -> every N-th masked view; a number in
    (0, 1) -> that fraction of the masked views, evenly spread (0.1 = the paper's "10 % of the masks")."""
    if text is None:
        return None
    if isinstance(text, bool):
        raise UserError(f"--views {text!r}: expected an integer step or a fraction")
    if isinstance(text, (int, float)):
        value: float | int = text
        raw = repr(text)
    else:
        raw = text.strip()
        if raw.lower() in ("", "all"):
            return None
        if re.fullmatch(r"[+-]?\d+", raw):
            value = int(raw)
        else:
            try:
                value = float(raw)
            except ValueError:
                raise UserError(f"--views {raw!r}: not a number; pass an integer step N (every N-th masked view) "
                                "or a fraction in (0, 1], e.g. 0.1") from None
    if isinstance(value, int):
        if value < 1:
            raise UserError(f"--views {raw}: the step must be >= 1; pass e.g. 4 (every 4th masked view) or 0.25")
        return value
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise UserError(f"--views {raw}: a fraction must lie in (0, 1]; pass e.g. 0.1 for 10 % of the masked "
                        "views, or an integer step")
    return 1 if value == 1.0 else float(value)


def select_views(num_views: int, spec: ViewSpec) -> list[int]:
    """Indices (into the masked views, in view order) that ``spec`` keeps; at least one view."""
    if num_views <= 0:
        return []
    if spec is None:
        return list(range(num_views))
    if isinstance(spec, int):
        return list(range(0, num_views, spec))
    k = max(1, int(round(spec * num_views)))
    return sorted({int(round(x)) for x in np.linspace(0, num_views - 1, k)})


# ---------------------------------------------------------------------------------------------------------
# Accumulation
# ---------------------------------------------------------------------------------------------------------
def vote_view(camera: Any, gaussians: Any, label_map: np.ndarray, num_labels: int, backend: str = "auto",
              num_threads: int = 0) -> Tensor:  # -> [N, L+1] float64
    """alpha*T mass of every Gaussian on each class (background + L labels) of one view's label map.

    label_map: np.ndarray  # [H, W] int, 0 = background, l = label l
    gaussians: a model, or a gaussian_renderer.PreparedGaussians (prepared once for many views)
    """
    from gaussian_renderer import vote_labels

    return vote_labels(camera, gaussians, np.asarray(label_map), num_labels, backend=backend,
                       num_threads=num_threads).double()


def accumulate_votes(gaussians: Any, items: Iterable[tuple[Any, np.ndarray]], num_labels: int,
                     backend: str = "auto", num_threads: int = 0, total: Optional[int] = None,
                     progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """Sum :func:`vote_view` over ``(camera, label_map)`` items (e.g. ``MaskSet.items()``).

    Returns (votes [N, L+1] float64, names of the views voted). A tqdm bar shows on a terminal. The next
    item (reading, decoding and resizing its mask) is prepared in a background thread while this view votes.
    """
    from tqdm import tqdm

    from gaussian_renderer import prepare_gaussians
    from utils.prefetch import prefetch

    prepared = prepare_gaussians(gaussians)  # activations once per job, not once per view
    n = len(prepared)
    votes = torch.zeros(n, num_labels + 1, dtype=torch.float64)
    names: list[str] = []
    bar = tqdm(prefetch(items), total=total, desc="voting", unit="view", disable=None if progress else True,
               dynamic_ncols=True, leave=False)
    with torch.no_grad():
        for camera, label_map in bar:
            votes += vote_view(camera, prepared, label_map, num_labels, backend, num_threads).cpu()
            names.append(camera.image_name)
    return votes.numpy(), names


# ---------------------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------------------
def vote_scores(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best label [N] in 1..L, normalised score [N] in [-1, 1]) from votes [N, L+1].

    score = (mass on the best label - largest mass on any other class) / total mass. For one label this is
    the paper's vote normalised by the Gaussian's contribution, (in - out) / (in + out). Zero-mass rows
    score 0.
    """
    votes = np.asarray(votes, dtype=np.float64)
    fg = votes[:, 1:]
    best = fg.argmax(axis=1)
    rows = np.arange(votes.shape[0])
    m_best = fg[rows, best]
    others = votes.copy()
    others[rows, best + 1] = -np.inf
    m_other = others.max(axis=1)
    total = votes.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(total > 0, (m_best - m_other) / np.where(total > 0, total, 1.0), 0.0)
    return best + 1, score


def decide_labels(votes: np.ndarray, margin: float = 0.0) -> np.ndarray:  # [N] int64
    """Label per Gaussian: -1 undecided (zero total mass), 0 background, l >= 1 label l.

    A Gaussian gets its best label l when ``vote_scores`` > ``margin``; margin 0 is exactly the paper
    (single label: vote > 0; several labels: argmax, ties going to the background). A positive margin asks
    for a clearer majority (fewer boundary Gaussians selected), a negative one selects more generously.
    """
    if not -1.0 < margin < 1.0:
        raise UserError(f"--margin {margin}: must lie in (-1, 1); 0 reproduces the paper")
    votes = np.asarray(votes, dtype=np.float64)
    if votes.ndim != 2 or votes.shape[1] < 2:
        raise ValueError(f"votes must be [N, L+1] with L >= 1, got {votes.shape}")
    best, score = vote_scores(votes)
    labels = np.where(score > margin, best, 0).astype(np.int64)
    labels[votes.sum(axis=1) <= 0] = -1
    return labels


def propagate_labels(xyz: np.ndarray, labels: np.ndarray, k: int = 8) -> np.ndarray:  # [N] int64
    """Give every undecided Gaussian (label -1) the label of its k nearest decided neighbours in 3D
    (inverse-distance-weighted majority), so objects keep their hidden interior and parts no mask saw.

    xyz: np.ndarray     # [N, 3] Gaussian centres
    labels: np.ndarray  # [N] int, -1 undecided
    """
    from pykdtree.kdtree import KDTree

    labels = np.asarray(labels, dtype=np.int64).copy()
    undecided = labels < 0
    decided = ~undecided
    if not undecided.any():
        return labels
    if not decided.any():
        raise ValueError("no decided Gaussian to propagate labels from")
    pts = np.ascontiguousarray(xyz, dtype=np.float64)
    k = int(max(1, min(k, int(decided.sum()))))
    tree = KDTree(pts[decided])
    dist, idx = tree.query(pts[undecided], k=k)
    dist = np.asarray(dist, dtype=np.float64).reshape(-1, k)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1, k)
    neighbour_labels = labels[decided][idx]                       # [U, k]
    w = 1.0 / (dist + 1e-9 * (1.0 + dist.max(initial=0.0)))      # [U, k]
    n_classes = int(labels.max()) + 1
    scores = np.zeros((idx.shape[0], n_classes))
    np.add.at(scores, (np.repeat(np.arange(idx.shape[0]), k), neighbour_labels.ravel()), w.ravel())
    labels[undecided] = scores.argmax(axis=1)
    return labels


def resolve_undecided_mode(mode: str, all_views_used: bool) -> str:
    """``auto`` -> ``keep`` when every view of the split had a mask and all were voted (the paper's setting,
    identical result), else ``propagate`` (with few masks many Gaussians are seen by none of them)."""
    if mode not in UNDECIDED_MODES:
        raise UserError(f"--undecided {mode!r}: use one of {', '.join(UNDECIDED_MODES)}")
    if mode != "auto":
        return mode
    return "keep" if all_views_used else "propagate"


@dataclass
class Selection:
    """Final per-Gaussian decision and what it means for the written scenes."""

    labels: np.ndarray          # [N] int64: -1 undecided (kept/dropped), 0 background, l >= 1 label l
    undecided_mode: str         # keep | drop | propagate (resolved)
    num_undecided: int          # Gaussians no voted view saw (before propagation)
    num_propagated: int         # of those, given a label by propagation

    def extracted_mask(self, label: Optional[int] = None) -> np.ndarray:  # [N] bool
        """Gaussians of ``label`` (None: of any label)."""
        return self.labels >= 1 if label is None else self.labels == label

    def deleted_mask(self) -> np.ndarray:  # [N] bool
        """The scene without the selection: background, plus undecided Gaussians unless dropped."""
        if self.undecided_mode == "drop":
            return self.labels == 0
        return self.labels <= 0


def make_selection(votes: np.ndarray, xyz: np.ndarray, margin: float = 0.0, undecided: str = "keep",
                   knn: int = 8) -> Selection:
    """votes [N, L+1] + centres [N, 3] -> :class:`Selection` (``undecided`` must be resolved, not auto)."""
    if undecided not in UNDECIDED_MODES[1:]:
        raise ValueError(f"undecided mode must be keep, drop or propagate, got {undecided!r}")
    labels = decide_labels(votes, margin)
    n_und = int((labels < 0).sum())
    n_prop = 0
    if undecided == "propagate" and n_und:
        labels = propagate_labels(xyz, labels, knn)
        n_prop = n_und
    return Selection(labels, undecided, n_und, n_prop)


def label_counts(labels: np.ndarray, num_labels: int) -> list[int]:
    """Gaussians per class: [undecided, background, label 1, ..., label L]."""
    labels = np.asarray(labels)
    return [int((labels == v).sum()) for v in range(-1, num_labels + 1)]
