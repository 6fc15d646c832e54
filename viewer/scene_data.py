"""What the page draws: the Gaussians as splat arrays, a segmentation's labels, and the shown subsets/colours.

A segmentation is read from its folder's ``labels.npy`` (-1 undecided, 0 background, l >= 1 a label or an
instance id: any small non-negative ids) and ``summary.json`` (optional: label names and whether undecided
Gaussians stay in deleted.ply). The page shows the subsets segment.py writes, from those labels: extracted =
labels >= 1, deleted = background plus undecided unless the run dropped them (segmentation.voting.Selection).
"""
from __future__ import annotations

import colorsys
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from utils.errors import UserError

SHOW_MODES = ("full scene", "extracted", "deleted")
UNDECIDED_RGB = (0.55, 0.55, 0.55)      # label colours: Gaussians no voted view saw
BACKGROUND_RGB = (0.85, 0.85, 0.85)     # label colours: background


@dataclass
class SplatArrays:
    """The Gaussians as viser's add_gaussian_splats takes them (float32, view-independent DC colour)."""

    centers: np.ndarray      # [N, 3]
    covariances: np.ndarray  # [N, 3, 3]
    rgbs: np.ndarray         # [N, 3] in [0, 1]
    opacities: np.ndarray    # [N, 1] in [0, 1]

    def __len__(self) -> int:
        return len(self.centers)

    def subset(self, mask: np.ndarray, rgbs: Optional[np.ndarray] = None) -> "SplatArrays":
        """The Gaussians where ``mask`` ([N] bool) holds, optionally recoloured (rgbs: [N, 3], all of them)."""
        colours = self.rgbs if rgbs is None else rgbs
        return SplatArrays(self.centers[mask], self.covariances[mask], colours[mask], self.opacities[mask])


def splats_of(gaussians: Any) -> SplatArrays:
    """Means, world covariances R S S^T R^T, DC colours (SH degree 0 + 0.5, clipped) and opacities."""
    import torch

    from utils.sh import C0

    with torch.no_grad():
        tri = gaussians.get_covariance().detach().to("cpu", torch.float64).numpy()  # [N, 6] xx xy xz yy yz zz
        cov = np.empty((len(tri), 3, 3))
        for k, (i, j) in enumerate(((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))):
            cov[:, i, j] = cov[:, j, i] = tri[:, k]
        dc = gaussians.get_features_dc.detach().to("cpu", torch.float32).numpy()[:, 0, :]
        return SplatArrays(
            centers=gaussians.get_xyz.detach().to("cpu", torch.float32).numpy().copy(),
            covariances=cov.astype(np.float32),
            rgbs=np.clip(dc * C0 + 0.5, 0.0, 1.0).astype(np.float32),
            opacities=gaussians.get_opacity.detach().to("cpu", torch.float32).numpy().reshape(-1, 1).copy())


def label_palette(num: int) -> np.ndarray:  # [num + 1, 3] float32, row l = colour of label l (row 0 unused)
    """segment.py's preview colours for the first labels, then evenly spread hues (golden-ratio steps) at
    three saturations and two values, so that many instance ids stay distinguishable."""
    from segmentation.export import PALETTE

    out = np.zeros((num + 1, 3), dtype=np.float32)
    for l in range(1, num + 1):
        if l <= len(PALETTE):
            out[l] = PALETTE[l - 1] / 255.0
        else:
            k = l - len(PALETTE)
            out[l] = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, (0.85, 0.6, 0.4)[k % 3],
                                         (0.95, 0.75)[(k // 3) % 2])
    return out


def label_colours(labels: np.ndarray) -> np.ndarray:  # [N, 3] float32
    """One colour per label (labels: [N] int, -1 undecided, 0 background, l >= 1)."""
    labels = np.asarray(labels)
    top = int(labels.max(initial=0))
    table = label_palette(max(top, 0))
    out = np.empty((len(labels), 3), dtype=np.float32)
    out[:] = BACKGROUND_RGB
    out[labels < 0] = UNDECIDED_RGB
    sel = labels >= 1
    out[sel] = table[labels[sel]]
    return out


@dataclass
class Segmentation:
    """Labels of every Gaussian and how the run treated the undecided ones."""

    labels: np.ndarray                 # [N] int64: -1 undecided, 0 background, l >= 1
    undecided_mode: str = "keep"       # keep | drop | propagate (segment.py's --undecided, resolved)
    label_names: list[str] = field(default_factory=list)
    source: str = ""                   # the folder it came from (or "" for a run of this page)

    def mask(self, show: str) -> np.ndarray:  # [N] bool
        """Which Gaussians ``show`` (one of SHOW_MODES) draws: the subsets of segment.py's PLY files."""
        if show == "extracted":
            return self.labels >= 1
        if show == "deleted":
            return self.labels == 0 if self.undecided_mode == "drop" else self.labels <= 0
        return np.ones(len(self.labels), dtype=bool)

    def counts(self) -> str:
        ids = np.unique(self.labels[self.labels >= 1])
        kind = "label" if len(ids) == 1 else "labels"
        return (f"{int((self.labels >= 1).sum()):,} selected ({len(ids)} {kind}), "
                f"{int((self.labels == 0).sum()):,} background, {int((self.labels < 0).sum()):,} undecided")


def read_segmentation(folder: str | Path, num_gaussians: int) -> Segmentation:
    """A segment.py result folder (``--segmentation DIR``) for a model of ``num_gaussians``; one-line
    UserErrors for a missing, unreadable or mismatched labels.npy."""
    folder = Path(folder)
    path = folder / "labels.npy"
    if not folder.is_dir():
        raise UserError(f"{folder}: --segmentation folder not found; pass a folder that segment.py wrote "
                        "(it holds labels.npy)")
    if not path.is_file():
        raise UserError(f"{path}: not found; pass --segmentation a folder that segment.py wrote")
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npy file ({str(e).splitlines()[0][:120]}); re-run segment.py") \
            from None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: expected one integer label per Gaussian, got {labels.dtype} of shape "
                        f"{labels.shape}; pass the labels.npy segment.py wrote")
    if len(labels) != num_gaussians:
        raise UserError(f"{path}: {len(labels):,} labels for a model of {num_gaussians:,} Gaussians; pass the "
                        "segmentation of this model (and the same --iteration)")
    if labels.size and int(labels.min()) < -1:
        raise UserError(f"{path}: label {int(labels.min())} (labels are -1 undecided, 0 background, >= 1); pass "
                        "the labels.npy segment.py wrote")
    mode, names = "keep", []
    summary = folder / "summary.json"
    if summary.is_file():
        try:
            s = json.loads(summary.read_text(encoding="utf-8"))
            mode = str(s.get("parameters", {}).get("undecided_resolved") or "keep")
            names = [str(n) for n in s.get("labels", {}).get("names", [])]
        except (OSError, ValueError, AttributeError) as e:  # labels.npy alone is enough to show the result
            warnings.warn(f"{summary}: unreadable ({str(e).splitlines()[0][:80]}); showing labels.npy without "
                          "label names, undecided Gaussians counted as kept in deleted.ply", stacklevel=2)
    return Segmentation(labels.astype(np.int64), mode, names, str(folder))
