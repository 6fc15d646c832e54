"""Per-Gaussian labels (labels.npy) read back, and rendered into a view as a label map: the picture a selection
makes in a camera.

Shared by the jobs that score or show per-Gaussian labels (segmentation's evaluation, --everything's
consistent masks, affordance transfer and its evaluation). Two protocols (``mode``):

- ``object`` (object-alone): only the selected Gaussians are rendered, as a viewer shows ``extracted.ply``;
  predicted mask = their accumulated alpha > 0.5. Several labels: each label's Gaussians alone, the label
  with the largest alpha where it exceeds 0.5.
- ``scene`` (in-scene): the selection is rendered as a mask *inside the full scene* (override colour =
  indicator of the selected Gaussians, every other Gaussian still occludes); one label: rendered indicator
  > 0.5; several labels: one-hot colours, argmax where the summed label mass > 0.5.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UserError

RENDER_MODES = ("object", "scene")


def render_label_map(camera: Any, gaussians: Any, labels: np.ndarray, num_labels: int, backend: str = "auto",
                     num_threads: int = 0, mode: str = "scene") -> np.ndarray:  # [H, W] int32
    """Predicted label map of ``camera`` (0 background, l label l) for per-Gaussian ``labels``, in the
    ``object`` or ``scene`` protocol (module docstring).

    labels: np.ndarray  # [N] int, values <= 0 are not selected
    """
    if mode == "object":
        return _render_object_alone(camera, gaussians, labels, num_labels, backend, num_threads)
    if mode != "scene":
        raise ValueError(f"render mode must be one of {RENDER_MODES}, got {mode!r}")
    import torch

    from gaussian_renderer import render

    lab = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if lab.shape != (len(gaussians),):
        raise ValueError(f"labels must be [{len(gaussians)}], got {tuple(lab.shape)}")
    device = gaussians.get_xyz.device
    if num_labels == 1:
        colors = (lab == 1).float()[:, None]                                     # [N, 1]
    else:
        colors = torch.zeros(len(lab), num_labels)                               # [N, L]
        sel = lab >= 1
        colors[sel, lab[sel] - 1] = 1.0
    with torch.no_grad():
        out = render(camera, gaussians, torch.zeros(colors.shape[1]), override_color=colors.to(device),
                     backend=backend, num_threads=num_threads)["render"].cpu()  # [C, H, W]
    if num_labels == 1:
        return (out[0] > 0.5).numpy().astype(np.int32)
    mass = out.sum(0)
    return torch.where(mass > 0.5, out.argmax(0) + 1, 0).numpy().astype(np.int32)


def _render_object_alone(camera: Any, gaussians: Any, labels: np.ndarray, num_labels: int, backend: str,
                         num_threads: int) -> np.ndarray:  # [H, W] int32
    import torch

    from gaussian_renderer import render

    lab = np.asarray(labels)
    if lab.shape != (len(gaussians),):
        raise ValueError(f"labels must be [{len(gaussians)}], got {lab.shape}")
    alphas = np.zeros((num_labels, camera.height, camera.width), np.float32)
    for l in range(1, num_labels + 1):
        keep = lab == l
        if not keep.any():
            continue
        sub = gaussians.subset(torch.from_numpy(keep))
        with torch.no_grad():
            out = render(camera, sub, torch.zeros(1), override_color=torch.ones(len(sub), 1, device=sub.get_xyz.device),
                         backend=backend, num_threads=num_threads)
        alphas[l - 1] = out["alpha"][0].cpu().numpy()
    best = alphas.argmax(0)
    return np.where(alphas.max(0) > 0.5, best + 1, 0).astype(np.int32)


def load_labels(path: str | Path, num_gaussians: int) -> np.ndarray:  # [N] int64
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: labels file not found; pass the labels.npy written by segment.py")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy file ({str(e).splitlines()[0]}); re-run segment.py") from None
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise UserError(f"{path}: expected a 1-D integer array, got {arr.dtype} {arr.shape}; pass labels.npy")
    if arr.shape[0] != num_gaussians:
        raise UserError(f"{path}: {arr.shape[0]} labels but the model has {num_gaussians} Gaussians; pass the model "
                        "(and --iteration) the labels were computed for")
    return arr.astype(np.int64)
