"""The 3D Gaussian model: Inria's parameters, activations, PLY I/O and training machinery, device-explicit.

Stored (pre-activation) parameters, as in Inria, so Inria PLYs and checkpoints map one to one:

    _xyz            [N, 3]             positions
    _features_dc    [N, 1, 3]          SH DC coefficient per channel
    _features_rest  [N, (D+1)^2-1, 3]  higher SH coefficients (coefficient-major in memory, channel-major on disk)
    _scaling        [N, 3]             log scales            -> get_scaling = exp
    _rotation       [N, 4]             (w, x, y, z) quaternion -> get_rotation = normalised
    _opacity        [N, 1]             logit                 -> get_opacity = sigmoid

Densification follows Inria's code exactly, including its quirk that ``densification_postfix`` zeroes
``max_radii2D`` before pruning, so the screen-size criterion never removes anything inside
``densify_and_prune`` (the world-size criterion does).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from scene.types import BasicPointCloud
from utils.general import (build_rotation, build_scaling_rotation, get_expon_lr_func, inverse_sigmoid,
                           mean_sq_knn_dist, strip_symmetric)
from utils.ply import GaussianPlyData, read_gaussian_ply, write_gaussian_ply
from utils.sh import rgb_to_sh, sh_to_rgb

_PARAM_NAMES = ("xyz", "f_dc", "f_rest", "opacity", "scaling", "rotation")  # Inria's optimiser group names
_CAPTURE_FORMAT = "gs-segment-gaussians-v1"


def random_point_cloud(bounds: np.ndarray, n: int, seed: int = 0) -> BasicPointCloud:
    """Inria-style random initialisation for datasets without points (NeRF-synthetic, LLFF without sparse/).

    Positions are uniform in the box; colours are Inria's ``SH2RGB(random / 255)``, i.e. near-grey (the
    colours are learnt quickly, a grey start avoids bright floaters).

    bounds: np.ndarray  # [2, 3] min and max corners
    """
    bounds = np.asarray(bounds, dtype=np.float64).reshape(2, 3)
    rng = np.random.default_rng(seed)
    xyz = bounds[0] + rng.random((n, 3)) * (bounds[1] - bounds[0])
    shs = rng.random((n, 3)) / 255.0
    colors = sh_to_rgb(torch.from_numpy(shs)).numpy()
    return BasicPointCloud(points=xyz.astype(np.float32), colors=colors.astype(np.float32),
                           normals=np.zeros((n, 3), dtype=np.float32))


class GaussianModel:
    """Inria's GaussianModel with the device passed in, snake_case names and typed checkpoints."""

    def __init__(self, sh_degree: int = 3, device: torch.device | str = "cpu"):
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
        self.device = torch.device(device)
        self.active_sh_degree = 0
        self.max_sh_degree = int(sh_degree)
        self.optimizer: Optional[torch.optim.Adam] = None
        self.percent_dense = 0.0
        self.spatial_lr_scale = 0.0
        self.xyz_scheduler = None
        self._set_parameters(torch.zeros(0, 3), torch.zeros(0, 1, 3), torch.zeros(0, self._n_rest(), 3),
                             torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 1))

    # ----- construction ---------------------------------------------------------------------------
    def _n_rest(self) -> int:
        return (self.max_sh_degree + 1) ** 2 - 1

    def _set_parameters(self, xyz: Tensor, features_dc: Tensor, features_rest: Tensor, scaling: Tensor,
                        rotation: Tensor, opacity: Tensor, copy: bool = True) -> None:
        """Install raw values as fresh leaf parameters; training statistics are reset, the optimiser dropped.

        ``copy=False`` adopts tensors nobody else holds (just read or gathered) without cloning them: at
        6 M Gaussians a clone is 1.4 GB.

        xyz: [N, 3]; features_dc: [N, 1, 3]; features_rest: [N, K, 3]; scaling: [N, 3] log;
        rotation: [N, 4] wxyz; opacity: [N, 1] logit
        """

        def p(t: Tensor) -> nn.Parameter:
            t = t.detach()
            own = t.to(self.device, torch.float32).contiguous()
            if copy and own.data_ptr() == t.data_ptr():  # still the caller's storage: copy it once
                own = own.clone()
            return nn.Parameter(own, requires_grad=True)

        n = xyz.shape[0]
        shapes = {"xyz": (xyz, (n, 3)), "features_dc": (features_dc, (n, 1, 3)),
                  "features_rest": (features_rest, (n, self._n_rest(), 3)), "scaling": (scaling, (n, 3)),
                  "rotation": (rotation, (n, 4)), "opacity": (opacity, (n, 1))}
        for name, (t, shape) in shapes.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
        self._xyz = p(xyz)
        self._features_dc = p(features_dc)
        self._features_rest = p(features_rest)
        self._scaling = p(scaling)
        self._rotation = p(rotation)
        self._opacity = p(opacity)
        self.max_radii2D = torch.zeros(n, device=self.device)
        self.xyz_gradient_accum = torch.zeros(n, 1, device=self.device)
        self.denom = torch.zeros(n, 1, device=self.device)
        self.optimizer = None

    @classmethod
    def from_tensors(cls, xyz: Tensor, features_dc: Tensor, features_rest: Tensor, scaling: Tensor,
                     rotation: Tensor, opacity: Tensor, active_sh_degree: Optional[int] = None,
                     device: torch.device | str = "cpu") -> "GaussianModel":
        """A model from raw (pre-activation) values; the SH degree follows ``features_rest``.

        xyz: Tensor            # [N, 3]
        features_dc: Tensor    # [N, 1, 3]
        features_rest: Tensor  # [N, (D+1)^2-1, 3]
        scaling: Tensor        # [N, 3] log scales
        rotation: Tensor       # [N, 4] (w, x, y, z)
        opacity: Tensor        # [N, 1] logits
        """
        k = features_rest.shape[1]
        degree = {0: 0, 3: 1, 8: 2, 15: 3}.get(k)
        if degree is None:
            raise ValueError(f"features_rest has {k} coefficients per channel; expected 0, 3, 8 or 15")
        model = cls(degree, device)
        model._set_parameters(xyz, features_dc, features_rest, scaling, rotation, opacity)
        model.active_sh_degree = degree if active_sh_degree is None else int(active_sh_degree)
        return model

    def create_from_pcd(self, pcd: BasicPointCloud, spatial_lr_scale: float) -> None:
        """Inria's initialisation: isotropic scales from simple-knn's distCUDA2 (mean squared distance to the
        3 nearest neighbours), identity rotations, opacity 0.1, DC from the point colours, zero higher SH."""
        points = np.asarray(pcd.points, dtype=np.float32).reshape(-1, 3)
        colors = np.asarray(pcd.colors, dtype=np.float32).reshape(-1, 3)
        ok = np.isfinite(points).all(1) & np.isfinite(colors).all(1)
        if not ok.all():
            warnings.warn(f"create_from_pcd: dropped {int((~ok).sum())} of {len(ok)} points with NaN/Inf values",
                          stacklevel=2)
            points, colors = points[ok], colors[ok]
        if points.shape[0] == 0:
            raise ValueError("create_from_pcd: the point cloud is empty")
        self.spatial_lr_scale = float(spatial_lr_scale)
        n = points.shape[0]
        xyz = torch.from_numpy(points)
        dc = rgb_to_sh(torch.from_numpy(colors))[:, None, :]  # [N, 1, 3]
        dist2 = torch.clamp_min(torch.from_numpy(mean_sq_knn_dist(points)), 1e-7)
        scales = torch.log(torch.sqrt(dist2))[:, None].repeat(1, 3)
        rots = torch.zeros(n, 4)
        rots[:, 0] = 1.0
        opacities = inverse_sigmoid(0.1 * torch.ones(n, 1))
        self._set_parameters(xyz, dc, torch.zeros(n, self._n_rest(), 3), scales, rots, opacities)

    # ----- activations ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._xyz.shape[0])

    @property
    def num_points(self) -> int:
        return len(self)

    @property
    def get_xyz(self) -> Tensor:  # [N, 3]
        return self._xyz

    @property
    def get_features(self) -> Tensor:  # [N, (D+1)^2, 3], DC first
        return torch.cat((self._features_dc, self._features_rest), dim=1)

    @property
    def get_features_dc(self) -> Tensor:  # [N, 1, 3]
        return self._features_dc

    @property
    def get_features_rest(self) -> Tensor:  # [N, (D+1)^2-1, 3]
        return self._features_rest

    @property
    def get_scaling(self) -> Tensor:  # [N, 3]
        return torch.exp(self._scaling)

    @property
    def get_rotation(self) -> Tensor:  # [N, 4] unit (w, x, y, z)
        return torch.nn.functional.normalize(self._rotation, dim=-1)

    @property
    def get_opacity(self) -> Tensor:  # [N, 1]
        return torch.sigmoid(self._opacity)

    def get_covariance(self, scaling_modifier: float = 1.0) -> Tensor:  # [N, 6] upper triangle
        """World covariance R·S·Sᵀ·Rᵀ with scales multiplied by ``scaling_modifier`` (Inria's layout)."""
        m = build_scaling_rotation(scaling_modifier * self.get_scaling, self._rotation)
        return strip_symmetric(m @ m.transpose(1, 2))

    def oneup_sh_degree(self) -> None:
        if self.active_sh_degree < self.max_sh_degree:
            self.active_sh_degree += 1

    # ----- I/O ------------------------------------------------------------------------------------
    def to_ply_data(self) -> GaussianPlyData:
        def a(t: Tensor) -> np.ndarray:
            return t.detach().to("cpu", torch.float32).numpy()

        return GaussianPlyData(xyz=a(self._xyz), f_dc=a(self._features_dc)[:, 0, :], f_rest=a(self._features_rest),
                               opacity=a(self._opacity), scale=a(self._scaling), rotation=a(self._rotation))

    def save_ply(self, path: str | Path, rows: Optional[Tensor | np.ndarray] = None) -> None:
        """Write Inria's point_cloud.ply (atomically); ``rows`` ([N] bool or [M] indices) writes only those
        Gaussians, the same bytes as ``subset(rows).save_ply`` without building the subset."""
        if rows is not None:
            rows = rows.detach().cpu().numpy() if isinstance(rows, Tensor) else np.asarray(rows)
        write_gaussian_ply(path, self.to_ply_data(), rows)

    def load_ply(self, path: str | Path) -> None:
        """Load an Inria PLY. The file's SH degree (from its f_rest count) replaces ``max_sh_degree``, and
        all of it is active, as Inria does after loading."""
        g = read_gaussian_ply(path)
        self.max_sh_degree = g.sh_degree
        t = torch.from_numpy
        self._set_parameters(t(g.xyz), t(g.f_dc)[:, None, :], t(g.f_rest), t(g.scale), t(g.rotation),
                             t(g.opacity), copy=False)  # the arrays are ours: no second copy
        self.active_sh_degree = self.max_sh_degree

    def subset(self, mask: Tensor | np.ndarray) -> "GaussianModel":
        """A new, untrained model holding the selected rows (for extracted / pruned scenes).

        mask: Tensor  # [N] bool, or [M] int64 indices
        """
        idx = torch.as_tensor(mask, device=self.device)
        if idx.dtype == torch.bool and idx.shape != (len(self),):
            raise ValueError(f"mask has shape {tuple(idx.shape)}, expected ({len(self)},)")
        out = GaussianModel(self.max_sh_degree, self.device)
        with torch.no_grad():  # indexing already copies: install the gathered rows as they are
            out._set_parameters(self._xyz[idx], self._features_dc[idx], self._features_rest[idx],
                                self._scaling[idx], self._rotation[idx], self._opacity[idx], copy=False)
        out.active_sh_degree = self.active_sh_degree
        out.spatial_lr_scale = self.spatial_lr_scale
        return out

    # ----- training -------------------------------------------------------------------------------
    def _params(self) -> dict[str, nn.Parameter]:
        return {"xyz": self._xyz, "f_dc": self._features_dc, "f_rest": self._features_rest,
                "opacity": self._opacity, "scaling": self._scaling, "rotation": self._rotation}

    def _install(self, tensors: dict[str, Tensor]) -> None:
        self._xyz = tensors["xyz"]
        self._features_dc = tensors["f_dc"]
        self._features_rest = tensors["f_rest"]
        self._opacity = tensors["opacity"]
        self._scaling = tensors["scaling"]
        self._rotation = tensors["rotation"]

    def training_setup(self, training_args: Any) -> None:
        """Adam with Inria's groups and rates (``training_args``: arguments.OptimizationParams)."""
        self.percent_dense = float(training_args.percent_dense)
        n = len(self)
        self.xyz_gradient_accum = torch.zeros(n, 1, device=self.device)
        self.denom = torch.zeros(n, 1, device=self.device)
        if self.max_radii2D.shape[0] != n:
            self.max_radii2D = torch.zeros(n, device=self.device)
        lrs = {"xyz": training_args.position_lr_init * self.spatial_lr_scale,
               "f_dc": training_args.feature_lr, "f_rest": training_args.feature_lr / 20.0,
               "opacity": training_args.opacity_lr, "scaling": training_args.scaling_lr,
               "rotation": training_args.rotation_lr}
        params = self._params()
        groups = [{"params": [params[name]], "lr": lrs[name], "name": name} for name in _PARAM_NAMES]
        # The fused kernel (CPU since torch 2.4) does the same update in one pass: ~4x faster step on CPU.
        fused = self.device.type == "cuda" or (self.device.type == "cpu" and
                                                tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4))
        self.optimizer = torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=fused)
        self.xyz_scheduler = get_expon_lr_func(lr_init=training_args.position_lr_init * self.spatial_lr_scale,
                                               lr_final=training_args.position_lr_final * self.spatial_lr_scale,
                                               lr_delay_mult=training_args.position_lr_delay_mult,
                                               max_steps=training_args.position_lr_max_steps)

    def update_learning_rate(self, iteration: int) -> float:
        """Set the position learning rate for ``iteration``; returns it."""
        assert self.optimizer is not None and self.xyz_scheduler is not None, "call training_setup first"
        lr = self.xyz_scheduler(iteration)
        for group in self.optimizer.param_groups:
            if group["name"] == "xyz":
                group["lr"] = lr
        return lr

    def add_densification_stats(self, viewspace_point_tensor_grad: Tensor, update_filter: Tensor) -> None:
        """Accumulate the norm of the NDC-scaled screen-space gradient of the visible Gaussians.

        viewspace_point_tensor_grad: Tensor  # [N, 3] (or [N, 2]); only x, y are used
        update_filter: Tensor                # [N] bool, visible in this view
        """
        # Masked arithmetic instead of boolean indexing (same values: the others get + 0): no nonzero/gather.
        mask = update_filter.to(self.device)[:, None]
        norm = torch.norm(viewspace_point_tensor_grad[:, :2].to(self.device), dim=-1, keepdim=True)
        self.xyz_gradient_accum += torch.where(mask, norm, torch.zeros_like(norm))
        self.denom += mask.to(self.denom.dtype)

    def update_max_radii(self, radii: Tensor, visibility_filter: Tensor) -> None:
        """Inria's train.py step: keep the largest screen radius seen per Gaussian.

        radii: Tensor              # [N] int or float pixels
        visibility_filter: Tensor  # [N] bool
        """
        r = radii.to(self.device, self.max_radii2D.dtype)
        mask = visibility_filter.to(self.device)
        self.max_radii2D = torch.where(mask, torch.maximum(self.max_radii2D, r), self.max_radii2D)

    def replace_tensor_to_optimizer(self, tensor: Tensor, name: str) -> dict[str, nn.Parameter]:
        """Swap one parameter for ``tensor`` (same shape) and zero its Adam moments (Inria's reset).

        tensor: Tensor  # same shape as the parameter called ``name``
        """
        assert self.optimizer is not None, "call training_setup first"
        out: dict[str, nn.Parameter] = {}
        for group in self.optimizer.param_groups:
            if group["name"] != name:
                continue
            old = group["params"][0]
            state = self.optimizer.state.pop(old, None)
            new = nn.Parameter(tensor.detach().contiguous().requires_grad_(True))
            group["params"][0] = new
            if state is not None:
                state["exp_avg"] = torch.zeros_like(new)
                state["exp_avg_sq"] = torch.zeros_like(new)
                self.optimizer.state[new] = state
            out[name] = new
        return out

    def _prune_optimizer(self, keep: Tensor) -> dict[str, nn.Parameter]:
        """Keep the rows ``keep`` [N] bool of every parameter and of its Adam moments."""
        assert self.optimizer is not None, "call training_setup first"
        out: dict[str, nn.Parameter] = {}
        for group in self.optimizer.param_groups:
            old = group["params"][0]
            state = self.optimizer.state.pop(old, None)
            new = nn.Parameter(old.detach()[keep].contiguous().requires_grad_(True))
            group["params"][0] = new
            if state is not None:
                state["exp_avg"] = state["exp_avg"][keep]
                state["exp_avg_sq"] = state["exp_avg_sq"][keep]
                self.optimizer.state[new] = state
            out[group["name"]] = new
        return out

    def prune_points(self, mask: Tensor) -> None:
        """Remove the rows where ``mask`` [N] bool is True (parameters, Adam moments and statistics)."""
        keep = ~mask
        self._install(self._prune_optimizer(keep))
        self.xyz_gradient_accum = self.xyz_gradient_accum[keep]
        self.denom = self.denom[keep]
        self.max_radii2D = self.max_radii2D[keep]

    def cat_tensors_to_optimizer(self, tensors: dict[str, Tensor]) -> dict[str, nn.Parameter]:
        """Append rows to every parameter; the new rows start with zero Adam moments (Inria).

        tensors: name -> Tensor  # [M, ...] rows to append, per group name
        """
        assert self.optimizer is not None, "call training_setup first"
        out: dict[str, nn.Parameter] = {}
        for group in self.optimizer.param_groups:
            assert len(group["params"]) == 1
            ext = tensors[group["name"]].detach()
            old = group["params"][0]
            state = self.optimizer.state.pop(old, None)
            new = nn.Parameter(torch.cat((old.detach(), ext), dim=0).contiguous().requires_grad_(True))
            group["params"][0] = new
            if state is not None:
                state["exp_avg"] = torch.cat((state["exp_avg"], torch.zeros_like(ext)), dim=0)
                state["exp_avg_sq"] = torch.cat((state["exp_avg_sq"], torch.zeros_like(ext)), dim=0)
                self.optimizer.state[new] = state
            out[group["name"]] = new
        return out

    def densification_postfix(self, new_xyz: Tensor, new_features_dc: Tensor, new_features_rest: Tensor,
                              new_opacities: Tensor, new_scaling: Tensor, new_rotation: Tensor) -> None:
        """Append new Gaussians and reset all densification statistics (Inria).

        new_xyz [M, 3], new_features_dc [M, 1, 3], new_features_rest [M, K, 3], new_opacities [M, 1],
        new_scaling [M, 3], new_rotation [M, 4] (raw values)
        """
        self._install(self.cat_tensors_to_optimizer({
            "xyz": new_xyz, "f_dc": new_features_dc, "f_rest": new_features_rest, "opacity": new_opacities,
            "scaling": new_scaling, "rotation": new_rotation}))
        n = len(self)
        self.xyz_gradient_accum = torch.zeros(n, 1, device=self.device)
        self.denom = torch.zeros(n, 1, device=self.device)
        self.max_radii2D = torch.zeros(n, device=self.device)

    def densify_and_split(self, grads: Tensor, grad_threshold: float, scene_extent: float, n_split: int = 2,
                          generator: Optional[torch.Generator] = None) -> int:
        """Replace each large, high-gradient Gaussian by ``n_split`` samples drawn from it, scales / (0.8·N).

        grads: Tensor  # [N0, 1] mean screen-space gradient norms, N0 <= N (rows appended by cloning get 0)
        Returns the number of Gaussians split.
        """
        n_init = len(self)
        padded = torch.zeros(n_init, device=self.device)
        padded[:grads.shape[0]] = grads.squeeze(-1)
        selected = padded >= grad_threshold
        selected &= torch.max(self.get_scaling, dim=1).values > self.percent_dense * scene_extent
        with torch.no_grad():
            stds = self.get_scaling[selected].repeat(n_split, 1)
            samples = torch.normal(mean=torch.zeros_like(stds), std=stds, generator=generator)
            rots = build_rotation(self._rotation[selected]).repeat(n_split, 1, 1)
            new_xyz = torch.bmm(rots, samples.unsqueeze(-1)).squeeze(-1) + self.get_xyz[selected].repeat(n_split, 1)
            new_scaling = torch.log(self.get_scaling[selected].repeat(n_split, 1) / (0.8 * n_split))
            new_rotation = self._rotation[selected].repeat(n_split, 1)
            new_dc = self._features_dc[selected].repeat(n_split, 1, 1)
            new_rest = self._features_rest[selected].repeat(n_split, 1, 1)
            new_opacity = self._opacity[selected].repeat(n_split, 1)
        self.densification_postfix(new_xyz, new_dc, new_rest, new_opacity, new_scaling, new_rotation)
        n_sel = int(selected.sum())
        prune = torch.cat((selected, torch.zeros(n_split * n_sel, device=self.device, dtype=torch.bool)))
        self.prune_points(prune)
        return n_sel

    def densify_and_clone(self, grads: Tensor, grad_threshold: float, scene_extent: float) -> int:
        """Duplicate each small, high-gradient Gaussian in place. Returns the number cloned.

        grads: Tensor  # [N, 1] mean screen-space gradient norms
        """
        selected = torch.norm(grads, dim=-1) >= grad_threshold
        selected &= torch.max(self.get_scaling, dim=1).values <= self.percent_dense * scene_extent
        self.densification_postfix(self._xyz[selected], self._features_dc[selected], self._features_rest[selected],
                                   self._opacity[selected], self._scaling[selected], self._rotation[selected])
        return int(selected.sum())

    def densify_and_prune(self, max_grad: float, min_opacity: float, extent: float,
                          max_screen_size: Optional[float],
                          generator: Optional[torch.Generator] = None) -> dict[str, int]:
        """Inria's densification step: clone, split, then prune transparent / too-large Gaussians.

        ``generator`` seeds the split samples (None: torch's default generator, like Inria).
        Returns counts {"cloned", "split", "pruned", "total"} for logging.
        """
        grads = self.xyz_gradient_accum / self.denom
        grads[grads.isnan()] = 0.0
        n_clone = self.densify_and_clone(grads, max_grad, extent)
        n_split = self.densify_and_split(grads, max_grad, extent, generator=generator)
        prune = self.get_opacity[:, 0] < min_opacity
        if max_screen_size:
            big_vs = self.max_radii2D > max_screen_size
            big_ws = self.get_scaling.max(dim=1).values > 0.1 * extent
            prune = prune | big_vs | big_ws
        n_prune = int(prune.sum())
        self.prune_points(prune)
        return {"cloned": n_clone, "split": n_split, "pruned": n_prune, "total": len(self)}

    def reset_opacity(self) -> None:
        """Clamp opacities to at most 0.01 and zero their Adam moments (Inria's periodic reset)."""
        new = inverse_sigmoid(torch.min(self.get_opacity, torch.ones_like(self.get_opacity) * 0.01))
        self._opacity = self.replace_tensor_to_optimizer(new, "opacity")["opacity"]

    # ----- checkpoints ----------------------------------------------------------------------------
    def capture(self) -> dict[str, Any]:
        """Everything needed to resume training, as tensors / numbers / dicts only (loads with
        ``torch.load(..., weights_only=True)``)."""
        return {
            "format": _CAPTURE_FORMAT,
            "active_sh_degree": int(self.active_sh_degree),
            "max_sh_degree": int(self.max_sh_degree),
            "xyz": self._xyz.detach().clone(),
            "features_dc": self._features_dc.detach().clone(),
            "features_rest": self._features_rest.detach().clone(),
            "scaling": self._scaling.detach().clone(),
            "rotation": self._rotation.detach().clone(),
            "opacity": self._opacity.detach().clone(),
            "max_radii2D": self.max_radii2D.detach().clone(),
            "xyz_gradient_accum": self.xyz_gradient_accum.detach().clone(),
            "denom": self.denom.detach().clone(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "spatial_lr_scale": float(self.spatial_lr_scale),
            "percent_dense": float(self.percent_dense),
        }

    def restore(self, model_args: dict[str, Any] | Sequence[Any], training_args: Any) -> None:
        """Resume from :meth:`capture` (or Inria's 12-tuple checkpoint) and set up training."""
        if isinstance(model_args, (tuple, list)):
            if len(model_args) != 12:
                raise ValueError(f"checkpoint tuple has {len(model_args)} entries; expected Inria's 12")
            keys = ("active_sh_degree", "xyz", "features_dc", "features_rest", "scaling", "rotation", "opacity",
                    "max_radii2D", "xyz_gradient_accum", "denom", "optimizer", "spatial_lr_scale")
            state = dict(zip(keys, model_args))
        else:
            state = dict(model_args)
            if state.get("format") != _CAPTURE_FORMAT:
                raise ValueError(f"unknown checkpoint format {state.get('format')!r}")
        k = state["features_rest"].shape[1]
        self.max_sh_degree = {0: 0, 3: 1, 8: 2, 15: 3}[k]
        self._set_parameters(state["xyz"], state["features_dc"], state["features_rest"], state["scaling"],
                             state["rotation"], state["opacity"])
        self.active_sh_degree = int(state["active_sh_degree"])
        self.spatial_lr_scale = float(state["spatial_lr_scale"])
        self.max_radii2D = state["max_radii2D"].detach().to(self.device, torch.float32).clone()
        self.training_setup(training_args)
        self.xyz_gradient_accum = state["xyz_gradient_accum"].detach().to(self.device, torch.float32).clone()
        self.denom = state["denom"].detach().to(self.device, torch.float32).clone()
        if state.get("optimizer") is not None:
            assert self.optimizer is not None
            self.optimizer.load_state_dict(state["optimizer"])
