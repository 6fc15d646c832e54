"""A model recoloured for viewers: every Gaussian one flat colour (clusters, classes), view-independent."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def recoloured(gaussians: Any, colors: np.ndarray) -> Any:
    """A copy of ``gaussians`` whose SH DC renders ``colors`` [N, 3] in [0, 1] and higher SH are zero."""
    from scene.gaussian_model import GaussianModel
    from utils.sh import rgb_to_sh

    d = gaussians.to_ply_data()
    t = torch.from_numpy
    dc = rgb_to_sh(t(np.asarray(colors, dtype=np.float32)))[:, None, :]
    return GaussianModel.from_tensors(t(d.xyz), dc, torch.zeros_like(t(d.f_rest)), t(d.scale), t(d.rotation),
                                      t(d.opacity), device=gaussians.device)
