"""Writing a segmentation: PLYs in Inria's layout and the preview strips (original | extracted | deleted | mask).

Every file goes through :func:`utils.io.atomic_path` (a reader never sees a half-written file), into the
staging folder of a :class:`utils.outputs.OutputFolder`, so a failed run leaves the previous outputs intact.
The writers (NPY, JSON, PNG, GIF) are :mod:`utils.io`'s and the overlay, caption and palette
:mod:`utils.previews`', shared with the other jobs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from utils.errors import UserError
from utils.io import safe_name
from utils.previews import PALETTE, caption, overlay, to_uint8


def extracted_file_names(label_names: Sequence[str]) -> list[str]:
    """``extracted.ply`` for one label, else ``extracted_<name>.ply`` per label (unique)."""
    if len(label_names) == 1:
        return ["extracted.ply"]
    out: list[str] = []
    for i, n in enumerate(label_names):
        base = safe_name(n)
        cand = f"extracted_{base}.ply"
        if cand in out:
            cand = f"extracted_{base}_{i + 1}.ply"
        out.append(cand)
    return out


# ---------------------------------------------------------------------------------------------------------
# Scenes and arrays
# ---------------------------------------------------------------------------------------------------------
def write_scenes(out: Path, gaussians: Any, selection: Any, label_names: Sequence[str],
                 deleted_name: str = "deleted.ply", file_names: Optional[Sequence[str]] = None) -> dict[str, int]:
    """extracted PLY(s) and the rest (deleted.ply): the selected rows written straight from the model (the
    bytes of ``subset(rows).save_ply``, without a copy of the scene per file); a label with no Gaussian gets
    no file (viewers refuse empty PLYs). Returns {file name: count}."""
    written: dict[str, int] = {}
    for l, fname in enumerate(file_names or extracted_file_names(label_names), start=1):
        keep = selection.extracted_mask(l)
        if not keep.any():
            continue
        gaussians.save_ply(out / fname, rows=keep)
        written[fname] = int(keep.sum())
    keep = selection.deleted_mask()
    if keep.any():
        gaussians.save_ply(out / deleted_name, rows=keep)
        written[deleted_name] = int(keep.sum())
    return written


def save_ply_coloured(path: Path, gaussians: Any, labels: np.ndarray, grey: float = 0.75) -> None:
    """The whole scene with every labelled Gaussian in its label's palette colour (view-independent: higher
    SH zeroed) and the rest light grey: an Inria PLY any viewer shows (instances.ply).

    labels: np.ndarray  # [N] int, <= 0 = not labelled
    """
    import torch

    from utils.sh import rgb_to_sh

    lab = np.asarray(labels)
    rgb = np.full((len(lab), 3), grey, dtype=np.float64)
    pos = lab > 0
    rgb[pos] = PALETTE[(lab[pos] - 1) % len(PALETTE)] / 255.0
    coloured = gaussians.subset(torch.ones(len(lab), dtype=torch.bool))
    with torch.no_grad():
        coloured._features_dc.data[:] = rgb_to_sh(torch.from_numpy(rgb)).float()[:, None, :]
        coloured._features_rest.data.zero_()
    coloured.save_ply(path)


# ---------------------------------------------------------------------------------------------------------
# Previews
# ---------------------------------------------------------------------------------------------------------
def preview_camera(camera: Any, max_side: int) -> Any:
    """The camera scaled so its longest side is at most ``max_side`` px."""
    longest = max(camera.width, camera.height)
    if longest <= max_side:
        return camera
    s = max_side / longest
    return camera.scaled(max(1, round(camera.width * s)), max(1, round(camera.height * s)))


def render_rgb(camera: Any, gaussians: Any, background: Sequence[float], backend: str = "auto",
               num_threads: int = 0, colors: Any = None) -> np.ndarray:  # [H, W, 3] uint8
    """colors: Tensor  # [N, 3] precomputed view colours (default: the model's SH for this camera)"""
    import torch

    from gaussian_renderer import render

    bg = torch.tensor(list(background), dtype=torch.float32)
    if len(gaussians) == 0:
        img = np.broadcast_to(np.asarray(background, dtype=np.float32), (camera.height, camera.width, 3))
    else:
        with torch.no_grad():
            img = render(camera, gaussians, bg, override_color=colors, backend=backend,
                         num_threads=num_threads)["render"]
        img = img.permute(1, 2, 0).cpu().numpy()
    return to_uint8(img)


class FrozenGaussians:
    """A model's activations computed once, for many renders that never change it (previews).

    ``gaussian_renderer.render`` reads ``get_scaling`` (exp), ``get_rotation`` (normalise) and ``get_opacity``
    (sigmoid) on every call; a preview renders the same model ~30 times. The SH coefficients are views of the
    model's own tensors (no copy)."""

    def __init__(self, gaussians: Any):
        import torch

        with torch.no_grad():
            self.get_xyz = gaussians.get_xyz.detach()                          # [N, 3]
            self.get_rotation = gaussians.get_rotation.detach()                # [N, 4] unit
            self.get_scaling = gaussians.get_scaling.detach()                  # [N, 3]
            self.get_opacity = gaussians.get_opacity.detach()                  # [N, 1]
            self.get_features_dc = gaussians.get_features_dc.detach()          # [N, 1, 3]
            self.get_features_rest = gaussians.get_features_rest.detach()      # [N, K, 3]
        self.active_sh_degree = gaussians.active_sh_degree

    @property
    def get_features(self) -> Any:  # [N, (D+1)^2, 3], for renderers without the native SH path
        import torch

        return torch.cat((self.get_features_dc, self.get_features_rest), dim=1)

    def __len__(self) -> int:
        return int(self.get_xyz.shape[0])


@dataclass
class PreviewContext:
    """What every preview panel needs: the full scene (FrozenGaussians) and the rows of the two scenes
    written (extracted, deleted)."""

    gaussians: Any              # the full scene
    extracted: Any              # Tensor [N] bool: rows with label >= 1
    deleted: Any                # Tensor [N] bool: rows written to deleted.ply
    background: tuple[float, float, float]
    has_images: bool
    backend: str = "auto"
    num_threads: int = 0

    @classmethod
    def of(cls, gaussians: Any, extracted_rows: np.ndarray, deleted_rows: np.ndarray,
           background: tuple[float, float, float], has_images: bool, backend: str = "auto",
           num_threads: int = 0) -> "PreviewContext":
        """extracted_rows, deleted_rows: [N] bool"""
        import torch

        device = gaussians.get_xyz.device
        rows = [torch.as_tensor(np.asarray(r, dtype=bool), device=device) for r in (extracted_rows, deleted_rows)]
        return cls(FrozenGaussians(gaussians), rows[0], rows[1], background, has_images, backend, num_threads)


@dataclass
class PreviewPanels:
    """The three pictures of one view, before captions and the mask overlay ([h, w, 3] uint8 each)."""

    original: np.ndarray
    title: str                  # "original" (the photo) or "render" (no photo: the full scene rendered)
    extracted: np.ndarray
    deleted: np.ndarray


def render_panels(ctx: PreviewContext, camera: Any, max_side: int) -> PreviewPanels:
    """Photo (or full render), extracted render and deleted render of ``camera`` at preview size: the view's
    SH colours are evaluated once and the scene is projected and binned once for the two or three images
    (gaussian_renderer.render_subsets; each equals a render of that scene alone)."""
    import torch

    from gaussian_renderer import render_subsets, resolve_backend, sh_colors

    cam = preview_camera(camera, max_side)
    full = ctx.gaussians
    original = None
    title = "original"
    if ctx.has_images:
        try:
            original = (cam.load_image().permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        except (UserError, OSError, ValueError):
            original = None
    subsets = [ctx.extracted, ctx.deleted] + ([None] if original is None else [])
    with torch.no_grad():
        colors = sh_colors(cam, full, native=resolve_backend(ctx.backend, full.get_xyz.device) == "cpu",
                           num_threads=ctx.num_threads)  # [N, 3]
        bg = torch.tensor(list(ctx.background), dtype=torch.float32)
        images = [to_uint8(img.permute(1, 2, 0).cpu().numpy())
                  for img in render_subsets(cam, full, colors, subsets, bg, ctx.backend, ctx.num_threads)]
    if original is None:
        original = images[2]
        title = "render"
    return PreviewPanels(original, title, images[0], images[1])


def shrink_panels(panels: PreviewPanels, camera: Any, max_side: int) -> PreviewPanels:
    """The panels resized (area average) to the size ``render_panels(ctx, camera, max_side)`` would render:
    a view in both the PNG strips and the GIF is rendered once."""
    import cv2

    cam = preview_camera(camera, max_side)
    size = (cam.width, cam.height)

    def fit(img: np.ndarray) -> np.ndarray:
        return img if img.shape[1::-1] == size else cv2.resize(img, size, interpolation=cv2.INTER_AREA)

    return PreviewPanels(fit(panels.original), panels.title, fit(panels.extracted), fit(panels.deleted))


def compose_row(panels: PreviewPanels, camera: Any, label_map: Optional[np.ndarray],
                name_caption: bool = True) -> np.ndarray:
    """One [h, 4w, 3] uint8 strip: original (or render) | extracted | deleted | mask overlay.

    label_map: [H, W] int at any size (resized nearest to the panels), or None."""
    from utils.masks import resize_nearest

    h, w = panels.original.shape[:2]
    lm = np.zeros((h, w), np.int32) if label_map is None else \
        resize_nearest(np.asarray(label_map, dtype=np.int32), w, h)
    return np.concatenate([caption(panels.original, panels.title), caption(panels.extracted, "extracted"),
                           caption(panels.deleted, "deleted"),
                           caption(overlay(panels.original, lm),
                                   "mask" + (f" {camera.image_name}" if name_caption else ""))], axis=1)


def preview_row(ctx: PreviewContext, camera: Any, label_map: Optional[np.ndarray], max_side: int) -> np.ndarray:
    """One [h, 4w, 3] uint8 strip: original (or render) | extracted | deleted | mask overlay."""
    return compose_row(render_panels(ctx, camera, max_side), camera, label_map, max_side >= 200)
