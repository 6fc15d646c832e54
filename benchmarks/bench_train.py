"""Training-iteration speed on the CPU and where the time goes.

    python benchmarks/bench_train.py                         # maryRose 256², 100k random Gaussians
    python benchmarks/bench_train.py --model output/maryRose # a trained model's Gaussians instead
    python benchmarks/bench_train.py --json /tmp/bench_train.json

One iteration is timed phase by phase, as train.py runs it: SH colours + projection (native), binning
(native), compositing forward (native), loss (L1 + D-SSIM), backward (native compositing backward + torch
autograd), Adam step, densification statistics; plus one densify_and_prune call. The phases are reached
through the CPU backend (gaussian_renderer.cpu); if it changes shape the script
falls back to timing render() as a whole. Falls back to a generated scene when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arguments import OptimizationParams  # noqa: E402
from scene.gaussian_model import GaussianModel, random_point_cloud  # noqa: E402
from utils.loss_utils import training_loss  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def _load_cameras(source: Path, resolution: int) -> tuple[list, np.ndarray, float, str]:
    """(train cameras, bounds [2, 3], extent, description); a generated orbit when the data is absent."""
    if source.is_dir():
        from scene.dataset_readers import read_scene

        info = read_scene(str(source), resolution=resolution, eval=True)
        return info.train_cameras, info.bounds, float(info.nerf_normalization["radius"]), str(source)
    from segmentation.synthetic import orbit_cameras

    cams = orbit_cameras(16, resolution)
    rng = np.random.default_rng(0)
    for c in cams:
        img = (rng.random((resolution, resolution, 3)) * 255).astype(np.uint8)
        c.loader = lambda img=img: img
    return cams, np.array([[-1.5, -1.5, -0.5], [1.5, 1.5, 1.5]]), 4.4, "generated orbit (noise images)"


def _phase_step(cam: Any, g: GaussianModel, gt: torch.Tensor, bg: torch.Tensor, threads: int,
                times: dict[str, list[float]]) -> None:
    """One training iteration with the CPU backend's stages timed separately."""
    from gaussian_renderer import sh_colors
    from gaussian_renderer.cpu import bin_gaussians, composite, project

    def tick(name: str, t0: float) -> float:
        t1 = time.perf_counter()
        times.setdefault(name, []).append(t1 - t0)
        return t1

    t = time.perf_counter()
    w, h = cam.width, cam.height
    colors = sh_colors(cam, g, native=True, num_threads=threads)
    proj = project(g.get_xyz, g.get_rotation, g.get_scaling, cam.viewmat(), cam.K(), w, h, num_threads=threads,
                   cull=True)
    t = tick("projection+sh", t)
    offsets, gids, radii = bin_gaussians(proj, g.get_opacity, w, h, threads)
    t = tick("binning", t)
    vp = torch.zeros(g.get_xyz.shape[0], 3, requires_grad=True)
    means2d = proj.means2d + vp[:, :2] * torch.tensor([0.5 * w, 0.5 * h])
    feats = torch.cat([colors, proj.depths[:, None]], -1)
    out, t_final = composite(means2d, proj.conics, g.get_opacity.reshape(-1), feats, offsets, gids, w, h, threads)
    image = out[:3] + t_final[None] * bg[:, None, None]
    t = tick("forward", t)
    loss = training_loss(image, gt, 0.2)
    t = tick("loss", t)
    loss.backward()
    t = tick("backward", t)
    visible = radii > 0
    with torch.no_grad():
        g.update_max_radii(radii, visible)
        g.add_densification_stats(vp.grad, visible)
    t = tick("densify_stats", t)
    g.optimizer.step()
    g.optimizer.zero_grad(set_to_none=True)
    tick("optimizer", t)
    times.setdefault("intersections", []).append(float(gids.numel()))


def _whole_step(cam: Any, g: GaussianModel, gt: torch.Tensor, bg: torch.Tensor, threads: int,
                times: dict[str, list[float]]) -> None:
    from gaussian_renderer import render

    t0 = time.perf_counter()
    pkg = render(cam, g, bg, backend="cpu", num_threads=threads)
    t1 = time.perf_counter()
    loss = training_loss(pkg["render"], gt, 0.2)
    t2 = time.perf_counter()
    loss.backward()
    t3 = time.perf_counter()
    g.optimizer.step()
    g.optimizer.zero_grad(set_to_none=True)
    t4 = time.perf_counter()
    for k, v in (("render_forward", t1 - t0), ("loss", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3)):
        times.setdefault(k, []).append(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=str(DATA / "maryRose"), help="scene folder (default: maryRose)")
    p.add_argument("--resolution", type=int, default=256, help="image width in px (default: 256)")
    p.add_argument("--points", type=int, default=100_000, help="random Gaussians when no --model (default: 100k)")
    p.add_argument("--model", default="", help="trained model folder: benchmark its newest PLY instead")
    p.add_argument("--iterations", type=int, default=20, help="timed iterations (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default: 3)")
    p.add_argument("--threads", type=int, default=2, help="rasterizer and torch threads (default: 2)")
    p.add_argument("--json", default="", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    cams, bounds, extent, what = _load_cameras(Path(args.source), args.resolution)
    opt = OptimizationParams()
    if args.model:
        from scene.model_folder import load_model

        _, g, it = load_model(args.model)
        g.spatial_lr_scale = extent
        what += f", {args.model} iteration {it}"
    else:
        g = GaussianModel(3)
        g.create_from_pcd(random_point_cloud(bounds, args.points, seed=0), extent)
        g.active_sh_degree = 3
        what += f", {args.points} random Gaussians (SH degree 3 active)"
    g.training_setup(opt)
    bg = torch.zeros(3)
    gts = [c.load_image() for c in cams]

    step: Callable[..., None] = _phase_step
    try:
        from gaussian_renderer.cpu import bin_gaussians, composite, project  # noqa: F401
    except ImportError:
        step = _whole_step
    times: dict[str, list[float]] = {}
    for i in range(args.warmup + args.iterations):
        k = i % len(cams)
        if i == args.warmup:
            times.clear()
        t0 = time.perf_counter()
        step(cams[k], g, gts[k], bg, args.threads, times)
        times.setdefault("iteration", []).append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    counts = g.densify_and_prune(0.0002, 0.005, extent, 20)
    densify_s = time.perf_counter() - t0

    it_s = statistics.median(times["iteration"])
    phases = {k: statistics.median(v) for k, v in times.items() if k not in ("iteration", "intersections")}
    report = {
        "scene": what, "width": cams[0].width, "height": cams[0].height, "gaussians": len(g) + counts["pruned"]
        - counts["cloned"] - counts["split"], "threads": args.threads, "iterations": args.iterations,
        "median_iteration_s": it_s, "it_per_s": 1.0 / it_s, "phases_s": phases,
        "tile_intersections": statistics.median(times["intersections"]) if "intersections" in times else None,
        "densify_and_prune_s": densify_s, "densify_counts": counts, "torch": torch.__version__,
    }
    print(f"{what}: {report['width']}x{report['height']}, {report['gaussians']} Gaussians, {args.threads} threads")
    print(f"  {1.0 / it_s:.2f} it/s (median iteration {it_s * 1000:.1f} ms)")
    for k, v in phases.items():
        print(f"  {k:<14} {v * 1000:8.1f} ms  {100 * v / it_s:5.1f} %")
    if report["tile_intersections"] is not None:
        print(f"  tile intersections (median): {report['tile_intersections']:.0f}")
    print(f"  densify_and_prune: {densify_s * 1000:.1f} ms ({counts})")
    if args.json:
        from utils.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
