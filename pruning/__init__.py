"""Inference-time pruning of Gaussians by their total contribution (sum of alpha*T) to the training views.

Library behind prune.py: :mod:`pruning.prune` (contribution, selection, verification with the lossless
guarantee and why it holds), :mod:`pruning.quality` (held-out PSNR/SSIM), :mod:`pruning.pipeline` (model
folders, report, threshold sweep).
"""
from pruning.prune import (BOUND, DEFAULT_SWEEP, PruneResult, RenderCheck, RenderOptions, Stoppers,
                           VerificationError, compare_renders, contribution_and_stoppers, dirty_tiles, find_stoppers,
                           prune_gaussians, removal_mask, total_contribution)

__all__ = ["BOUND", "DEFAULT_SWEEP", "PruneResult", "RenderCheck", "RenderOptions", "Stoppers", "VerificationError",
           "compare_renders", "contribution_and_stoppers", "dirty_tiles", "find_stoppers", "prune_gaussians",
           "removal_mask", "total_contribution"]
