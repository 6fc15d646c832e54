"""Inference-time pruning by gradient contribution, with a checked quality guarantee.

A Gaussian's contribution to a pixel is alpha*T when the rasterizer composites it there and 0 otherwise, and
its total contribution is the sum over every pixel of every training view: the vote kernel with unit weights
(``vote(camera, gaussians, ones[H, W, 1])``), i.e. d(sum of the render)/d(its colour).

Why removing a zero-contribution Gaussian is invisible in the training views -- and the one case where it
is not. In Inria's front-to-back loop a Gaussian is NOT composited at a pixel when

1. it is culled for the view: z <= 0.2 (behind the camera) or its 3-sigma box touches no tile (outside the
   frustum), so it never enters the pixel's list;
2. it is skipped there: power > 0 or alpha = min(0.99, o*G) < 1/255 (transparent at that pixel);
3. it lies behind the point where the loop stopped (occluded: T would have fallen below 1e-4);
4. it IS the Gaussian that stops the loop: T*(1 - alpha) < 1e-4 makes the loop break BEFORE adding it.

Every composited Gaussian adds alpha*T >= (1/255)*1e-4 > 0 (T never goes below 1e-4), so a total of exactly
0 means every (pixel, view) is in cases 1-4 -- an exact test, no tolerance, and the float64 sum of
non-negative float32 terms cannot cancel. Removing a Gaussian in cases 1-3 leaves each training pixel
bit-identical: a skip leaves T and the colour untouched, a culled one never enters the list, the others keep
their depth order, and nothing after the stop is read. Case 4 differs: without the stopper the loop runs on
and may composite the Gaussians behind it. Before the stopper T < 1e-4/(1 - alpha) <= 0.01, so the pixel
can move by up to ~T*|colour - background| < 0.01, well above 1/510 (tests/test_prune.py builds one: a
Gaussian hidden behind near-opaque layers, in front of a Gaussian that is kept because another view sees
it; removing the hidden one changes the first view by 0.0045).

So the default mode removes the zero-contribution set, renders every training view before and after, and
where a pixel moved by >= 1/510 puts back the removed Gaussians that are composited at that pixel when the
removed set is rendered alone (the front-most of those is the pixel's stopper: every removed Gaussian in
front of the stopper was skipped there). It repeats until every training view passes; the final full
comparison is the proof, and a failure raises :class:`VerificationError`. The guarantee covers the training
views only: a novel view may see what every training view had hidden.

What the comparison renders. By the argument above, removing zero-contribution Gaussians can change a pixel
only where one of them is the pixel's stopper (case 4); everywhere else the pruned render equals the original
bit for bit (the same Gaussians are composited in the same order with the same arithmetic). The contribution
pass records each pixel's stopper (``gaussian_renderer.contribution``), so the comparison renders both models
only on the 16x16 tiles holding a pixel stopped by a removed Gaussian (with --threshold, also the tight
footprints of removed Gaussians that are composited somewhere) and takes the rest as equal: the same
numbers as comparing full renders, at a fraction of the cost. Backends without stopper reports (CUDA)
compare full renders.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from gaussian_renderer import contribution as view_contribution
from gaussian_renderer import PreparedGaussians, footprint_tiles, num_tiles, prepare_gaussians, render, vote
from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from utils.loss_utils import psnr

#: Largest per-pixel change the default mode allows: half an 8-bit step, so saved PNGs are unchanged.
BOUND = 1.0 / 510.0
#: Thresholds of ``--sweep`` (fractions of the largest contribution).
DEFAULT_SWEEP = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


class VerificationError(RuntimeError):
    """The pruned model changed a training render by >= BOUND even after restoring stoppers."""


@dataclass
class RenderOptions:
    """How to render / vote: backend name, CPU threads (0: all), background colour [3], progress bars."""

    background: Tensor  # [3]
    backend: str = "auto"
    num_threads: int = 0
    progress: bool = True
    device: torch.device | str = "cpu"


def _bar(items: Sequence, desc: str, opts: RenderOptions):  # type: ignore[no-untyped-def]
    # disable=None: shown on a terminal only, so logs and test output stay clean
    return tqdm(items, desc=desc, unit="view", leave=False, disable=None if opts.progress else True)


@dataclass
class Stoppers:
    """Where the compositing of the model's own training renders stops, per view: distinct (tile, Gaussian)
    pairs, the Gaussian being the one at which some pixel of the 16x16 tile (row-major) stopped."""

    tiles: list[Tensor]      # per view [P] int64
    gaussians: list[Tensor]  # per view [P] int64
    num_tiles: list[int]     # per view

    def dirty_tiles(self, view: int, removed: Tensor) -> Tensor:  # removed: [N] bool -> [num_tiles] bool
        """Tiles of ``view`` with a pixel stopped by a removed Gaussian."""
        mask = torch.zeros(self.num_tiles[view], dtype=torch.bool)
        g = self.gaussians[view]
        mask[self.tiles[view][removed.cpu()[g]]] = True
        return mask


def contribution_and_stoppers(gaussians: GaussianModel, cameras: Sequence[Camera],
                              opts: RenderOptions) -> tuple[Tensor, Optional[Stoppers]]:
    """(sum over every pixel of every view of alpha*T per Gaussian [N] float64, the views' Stoppers or None when
    the backend does not report them)."""
    prepared = prepare_gaussians(gaussians)  # activations once, not once per view
    n = len(prepared)
    total = torch.zeros(n, dtype=torch.float64, device=opts.device)
    pairs: Optional[Stoppers] = Stoppers([], [], [])
    with torch.no_grad():
        for cam in _bar(cameras, "contribution", opts):
            c = view_contribution(cam, prepared, backend=opts.backend, num_threads=opts.num_threads)
            total += c.mass.double()
            if c.stopper_ids is None or pairs is None:
                pairs = None
                continue
            pairs.tiles.append(c.stopper_tiles.long().cpu())
            pairs.gaussians.append(c.stopper_ids.long().cpu())
            pairs.num_tiles.append(num_tiles(cam.width, cam.height))
    return total, pairs


def total_contribution(gaussians: GaussianModel, cameras: Sequence[Camera], opts: RenderOptions) -> Tensor:  # [N]
    """Sum over every pixel of every view of alpha*T per Gaussian, float64 (vote kernel, unit weights)."""
    return contribution_and_stoppers(gaussians, cameras, opts)[0]


def removal_mask(contribution: Tensor, threshold: float = 0.0) -> Tensor:  # contribution: [N] -> [N] bool
    """Gaussians to remove: zero contribution, plus (threshold > 0) those below threshold * max contribution.

    The zero set is always included, so a higher threshold removes a superset and threshold 0 is the
    default (lossless) candidate set.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1] (a fraction of the largest contribution), got {threshold}")
    remove = contribution <= 0
    if threshold > 0 and contribution.numel():
        remove |= contribution < threshold * contribution.max()
    return remove


@dataclass
class RenderCheck:
    """Training renders before vs after pruning."""

    num_views: int
    max_abs_diff: float                  # over all pixels, channels and views
    worst_view: str                      # image_name with the largest difference ("" if none differ)
    changed_pixels: int                  # pixels with any difference > 0, all views
    min_psnr: float                      # dB, pruned vs original render, worst view (120 dB = identical)
    mean_psnr: float
    failing: dict[int, Tensor] = field(default_factory=dict, repr=False)  # view index -> [H, W] bool, diff >= bound

    @property
    def passed(self) -> bool:
        return not self.failing


def compare_renders(original: GaussianModel, pruned: GaussianModel, cameras: Sequence[Camera],
                    opts: RenderOptions, bound: float = BOUND, desc: str = "verify",
                    tile_masks: Optional[Sequence[Tensor]] = None) -> RenderCheck:
    """Render every view with both models; report max |difference| and keep the pixels at or above ``bound``.

    tile_masks: per view [num_tiles] bool, the only tiles where the two renders can differ (see
    :func:`dirty_tiles`); both models are rendered on those tiles only and the rest counts as equal, which
    gives exactly the numbers of full renders. None: full renders."""
    worst, worst_name, changed = 0.0, "", 0
    psnrs: list[float] = []
    failing: dict[int, Tensor] = {}
    bg = opts.background.to(opts.device)
    identical = float(psnr(torch.zeros(1), torch.zeros(1)))  # what psnr gives for two equal images
    with torch.no_grad():
        for i, cam in enumerate(_bar(cameras, desc, opts)):
            mask = None if tile_masks is None else tile_masks[i]
            if mask is not None and not bool(mask.any()):
                psnrs.append(identical)
                continue
            a = render(cam, original, bg, backend=opts.backend, num_threads=opts.num_threads, tile_mask=mask)["render"]
            b = render(cam, pruned, bg, backend=opts.backend, num_threads=opts.num_threads, tile_mask=mask)["render"]
            diff = (a - b).abs().amax(dim=0)  # [H, W]
            m = float(diff.max()) if diff.numel() else 0.0
            if m > worst:
                worst, worst_name = m, cam.image_name
            changed += int((diff > 0).sum())
            psnrs.append(float(psnr(b, a)))
            bad = diff >= bound
            if bool(bad.any()):
                failing[i] = bad.cpu()
    return RenderCheck(len(cameras), worst, worst_name, changed, min(psnrs, default=float("nan")),
                       float(np.mean(psnrs)) if psnrs else float("nan"), failing)


def dirty_tiles(gaussians: GaussianModel, pruned: GaussianModel, removed: Tensor, contribution: Tensor,
                stoppers: Optional[Stoppers], cameras: Sequence[Camera],
                opts: RenderOptions) -> Optional[list[Tensor]]:
    """Per view [num_tiles] bool: where the renders of ``gaussians`` and ``pruned`` = gaussians.subset(~removed)
    can differ. A removed Gaussian with zero contribution changes only the pixels it stops; one with a
    contribution (threshold mode) only its own footprint; and a kept Gaussian only if its activated values are
    not bit-identical in the pruned model (torch's vectorised activations round by position), within its
    footprint in either model. None when the stoppers are unknown (compare full renders)."""
    if stoppers is None:
        return None
    masks = [stoppers.dirty_tiles(i, removed) for i in range(len(cameras))]
    composited = prepare_gaussians(gaussians).subset(torch.nonzero(removed & (contribution > 0)).squeeze(1))
    for i, extra in enumerate(footprints(cameras, [composited, *rerounded(gaussians, pruned, removed)], opts)):
        masks[i] |= extra
    return masks


def rerounded(gaussians: GaussianModel, pruned: GaussianModel,
              removed: Tensor) -> tuple[PreparedGaussians, PreparedGaussians]:  # removed: [N] bool
    """The kept Gaussians whose activated values are not bit-identical in ``pruned`` = gaussians.subset(~removed)
    (torch's vectorised activations round an element by its position), with their values in either model."""
    before, after = prepare_gaussians(gaussians), prepare_gaussians(pruned)
    keep = torch.nonzero(~removed).squeeze(1)
    changed = before.subset(keep).differs_from(after)
    return before.subset(keep[changed]), after.subset(torch.nonzero(changed).squeeze(1))


def footprints(cameras: Sequence[Camera], parts: Sequence[PreparedGaussians],
               opts: RenderOptions) -> list[Tensor]:  # -> per view [num_tiles] bool
    """Per view, the union of the tight footprints of the Gaussians in ``parts``."""
    masks = [torch.zeros(num_tiles(c.width, c.height), dtype=torch.bool) for c in cameras]
    for part in parts:
        if len(part) == 0:
            continue
        for i, cam in enumerate(cameras):
            masks[i] |= footprint_tiles(cam, part, opts.num_threads).cpu()
    return masks


def find_stoppers(gaussians: GaussianModel, removed: Tensor, cameras: Sequence[Camera], failing: dict[int, Tensor],
                  opts: RenderOptions) -> Tensor:  # removed: [N] bool -> [N] bool (subset of removed)
    """Removed Gaussians composited at a failing pixel when the removed set is rendered alone.

    At a failing pixel the front-most such Gaussian is the original render's stopper (case 4 in the module
    docstring), so putting these back restores that pixel; the others found are harmless to keep.
    """
    idx = torch.nonzero(removed).squeeze(1)
    found = torch.zeros_like(removed)
    if idx.numel() == 0 or not failing:
        return found
    alone = gaussians.subset(idx)
    hits = torch.zeros(idx.numel(), dtype=torch.float64, device=opts.device)
    with torch.no_grad():
        for i, mask in failing.items():
            w = mask.to(opts.device, torch.float32)[..., None]  # [H, W, 1]
            hits += vote(cameras[i], alone, w, backend=opts.backend, num_threads=opts.num_threads)[:, 0].double()
    found[idx[hits > 0]] = True
    return found


@dataclass
class PruneResult:
    """Outcome of :func:`prune_gaussians` (counts are over the input model)."""

    keep: Tensor                # [N] bool
    contribution: Tensor        # [N] float64, total alpha*T over the training views
    threshold: float
    restored: int               # stoppers put back by the verification (default mode)
    check: RenderCheck          # final before/after comparison on the training views
    times: dict[str, float]     # seconds per stage: contribution, select, verify

    @property
    def num_removed(self) -> int:
        return int((~self.keep).sum())

    @property
    def percent_removed(self) -> float:
        return 100.0 * self.num_removed / max(1, self.keep.numel())


def prune_gaussians(gaussians: GaussianModel, cameras: Sequence[Camera], opts: RenderOptions,
                    threshold: Optional[float] = None, contribution: Optional[Tensor] = None,
                    max_rounds: int = 8, log: Callable[[str], None] = lambda s: None) -> tuple[GaussianModel,
                                                                                                PruneResult]:
    """Prune ``gaussians`` using the training ``cameras``.

    threshold None: lossless mode, remove the zero-contribution set minus any stoppers and prove every
    training render moves by < BOUND (else VerificationError). threshold T: remove contribution < T*max
    (plus zeros) and only measure the cost. ``contribution`` [N] may be passed in to skip its computation.
    """
    if not cameras:
        raise ValueError("prune_gaussians needs at least one training view")
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    stoppers: Optional[Stoppers] = None
    if contribution is None:
        contribution, stoppers = contribution_and_stoppers(gaussians, cameras, opts)
    times["contribution"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    remove = removal_mask(contribution, threshold or 0.0)
    times["select"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    restored = 0
    pruned = gaussians.subset(~remove)
    check = compare_renders(gaussians, pruned, cameras, opts,
                            tile_masks=dirty_tiles(gaussians, pruned, remove, contribution, stoppers, cameras, opts))
    if threshold is None:
        rounds = 0
        while not check.passed:
            rounds += 1
            if rounds > max_rounds:
                break
            back = find_stoppers(gaussians, remove, cameras, check.failing, opts)
            n_back = int(back.sum())
            if n_back == 0:
                break
            restored += n_back
            log(f"verify: {len(check.failing)} view(s) moved by >= 1/510 (max {check.max_abs_diff:.5f}); "
                f"restoring {n_back} hidden Gaussian(s) that stop the compositing there")
            remove &= ~back
            pruned = gaussians.subset(~remove)
            check = compare_renders(gaussians, pruned, cameras, opts, desc=f"verify (round {rounds + 1})",
                                    tile_masks=dirty_tiles(gaussians, pruned, remove, contribution, stoppers, cameras,
                                                           opts))
        if not check.passed:
            raise VerificationError(
                f"verification failed: pruning changed training view '{check.worst_view}' by "
                f"{check.max_abs_diff:.6f} >= 1/510 in {len(check.failing)} view(s) even after restoring "
                f"{restored} stopper(s); nothing was written (use --threshold to prune with a quality report)")
    times["verify"] = time.perf_counter() - t0
    return pruned, PruneResult(~remove, contribution, float(threshold or 0.0), restored, check, times)
