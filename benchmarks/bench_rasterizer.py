"""Throughput of the CPU rasterizer (native) against the dense reference, plus one realistic-size scene.

Not a test. Pairs are counted as Inria counts its work: per-tile intersections x 256 (every pixel of every
tile a Gaussian's rectangle touches). The native kernel skips pixels where alpha < 1/255 is certain, so
pairs/s is "Inria-equivalent work per second". Times are whole calls: forward = projection + binning +
compositing (autograd on), backward = loss.backward() through everything, vote = projection + binning + vote.

    python benchmarks/bench_rasterizer.py --threads 2 --json bench.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gaussian_renderer.rasterization import rasterize, vote_tensors  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402


def make_scene(n: int, width: int, height: int, seed: int = 0, sh_degree: int = 0) -> dict[str, Any]:
    """Gaussians filling the view frustum between depth 2 and 12, log-normal sizes, varied opacities."""
    g = torch.Generator().manual_seed(seed)
    f = 0.9 * max(width, height)
    z = 2.0 + 10.0 * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 2.2 * torch.tensor([0.5 * width / f, 0.5 * height / f])
    means = torch.cat([xy * z[:, None], z[:, None]], 1)
    # size ~ the spacing of n points spread over the image, in world units at depth z
    spacing = z / f * math.sqrt(width * height / n)
    scales = spacing[:, None] * 0.6 * torch.exp(torch.randn(n, 3, generator=g) * 0.5)
    return dict(
        means=means, quats=torch.randn(n, 4, generator=g), scales=scales,
        opacities=torch.rand(n, generator=g) ** 0.5 * 0.98, colors=torch.rand(n, 3, generator=g),
        viewmat=torch.eye(4), K=torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]]),
        width=width, height=height,
    )


def count_pairs(scene: dict[str, Any], threads: int) -> int:
    from gaussian_renderer.cpu import bin_gaussians
    from gaussian_renderer.projection import project_gaussians

    with torch.no_grad():
        proj = project_gaussians(scene["means"], scene["quats"], scene["scales"], scene["viewmat"], scene["K"],
                                 scene["width"], scene["height"])
        _, gids, _ = bin_gaussians(proj, scene["opacities"], scene["width"], scene["height"], threads, "inria")
    return int(gids.numel()) * 256


CLOCK = time.perf_counter  # --cpu-time switches to time.process_time (meaningful with --threads 1 only)


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times)


def time_kernels(scene: dict[str, Any], threads: int, repeats: int) -> dict[str, float]:
    """The native ops alone (binning excluded), wall-clock best-of-N: what the C++ achieves."""
    from gaussian_renderer.cpu import _ops, bin_gaussians
    from gaussian_renderer.projection import project_gaussians

    ops = _ops()
    w, h = scene["width"], scene["height"]
    with torch.no_grad():
        proj = project_gaussians(scene["means"], scene["quats"], scene["scales"], scene["viewmat"], scene["K"], w, h)
        off, gids, _ = bin_gaussians(proj, scene["opacities"], w, h, threads)
        m2, con, op = proj.means2d.contiguous(), proj.conics.contiguous(), scene["opacities"].contiguous()
        feats = torch.cat([scene["colors"], proj.depths[:, None]], 1).contiguous()  # RGB + depth, as render does
        res: dict[str, Any] = {}
        res["forward_s"] = best_of(lambda: res.setdefault("out", ops.forward(m2, con, op, feats, off, gids, w, h,
                                                                             threads)), repeats)
        _, t_final, last = res.pop("out")
        d_out = torch.randn(feats.shape[1], h, w, generator=torch.Generator().manual_seed(2))
        d_t = torch.zeros(h, w)
        res["backward_s"] = best_of(lambda: ops.backward(m2, con, op, feats, off, gids, t_final, last, d_out, d_t,
                                                         threads), repeats)
        ones = torch.ones(h, w, 1)
        res["vote_s"] = best_of(lambda: ops.vote(m2, con, op, off, gids, ones, threads), repeats)
    return res


def time_backend(scene: dict[str, Any], backend: str, threads: int, repeats: int) -> dict[str, float]:
    params = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities", "colors")}
    bg = torch.zeros(3)
    w, h = scene["width"], scene["height"]
    up = torch.randn(3, h, w, generator=torch.Generator().manual_seed(1))
    weights = torch.ones(h, w, 1)

    def forward() -> dict[str, torch.Tensor]:
        return rasterize(params["means"], params["quats"], params["scales"], params["opacities"], params["colors"],
                         scene["viewmat"], scene["K"], w, h, bg, backend=backend, num_threads=threads)

    fwd_t, bwd_t = [], []
    for _ in range(repeats):
        for p in params.values():
            p.grad = None
        t0 = CLOCK()
        out = forward()
        t1 = CLOCK()
        (out["render"] * up).sum().backward()
        t2 = CLOCK()
        fwd_t.append(t1 - t0)
        bwd_t.append(t2 - t1)
    vote_t = best_of(lambda: vote_tensors(scene["means"], scene["quats"], scene["scales"], scene["opacities"],
                                          scene["viewmat"], scene["K"], weights, backend=backend,
                                          num_threads=threads), repeats)
    return {"forward_s": min(fwd_t), "backward_s": min(bwd_t), "vote_s": vote_t}


def realistic(threads: int, n: int, width: int, height: int) -> dict[str, Any]:
    """Render + backward + vote of a large scene (SH degree 3 colours) in this process; reports peak RSS."""
    from gaussian_renderer.cpu import bin_gaussians
    from gaussian_renderer.projection import project_gaussians
    from utils.sh import eval_sh

    scene = make_scene(n, width, height, seed=5)
    pairs = count_pairs(scene, threads)
    sh = torch.randn(n, 3, 16, generator=torch.Generator().manual_seed(2)) * 0.2
    params = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities")}
    sh.requires_grad_(True)
    t0 = CLOCK()
    dirs = torch.nn.functional.normalize(params["means"], dim=-1)
    colors = torch.clamp_min(eval_sh(3, sh, dirs) + 0.5, 0.0)
    out = rasterize(params["means"], params["quats"], params["scales"], params["opacities"], colors,
                    scene["viewmat"], scene["K"], width, height, torch.zeros(3), num_threads=threads)
    t1 = CLOCK()
    (out["render"].sum() + out["depth"].mean()).backward()
    t2 = CLOCK()
    votes = vote_tensors(scene["means"], scene["quats"], scene["scales"], scene["opacities"], scene["viewmat"],
                         scene["K"], torch.ones(height, width, 1), num_threads=threads)
    t3 = CLOCK()
    with torch.no_grad():
        proj = project_gaussians(scene["means"], scene["quats"], scene["scales"], scene["viewmat"], scene["K"],
                                 width, height)
        tb = CLOCK()
        bin_gaussians(proj, scene["opacities"], width, height, threads)
        tb = CLOCK() - tb
    return {"gaussians": n, "width": width, "height": height, "pairs": pairs, "forward_s": t1 - t0,
            "backward_s": t2 - t1, "vote_s": t3 - t2, "binning_s": tb,
            "visible": int(out["visibility_filter"].sum()), "contributing": int((votes[:, 0] > 0).sum()),
            "peak_rss_gb": peak_rss_gb()}


def peak_rss_gb() -> float:
    """Peak resident set size of this process: VmHWM (Linux; reset by exec, unlike getrusage's ru_maxrss,
    which a child inherits from its parent), else resource.getrusage."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="threads for the native kernels (0: all cores)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--gaussians-per-pixel", type=float, default=0.3)
    ap.add_argument("--reference-max-pairs", type=float, default=1.5e8,
                    help="skip the dense reference when pixels x Gaussians exceeds this (time, not memory: "
                         "its pixel chunks are checkpointed)")
    ap.add_argument("--realistic", type=str, default="1000000x1000x750", help="NxWxH, or 'none'")
    ap.add_argument("--realistic-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=str, default=None, help="write all figures to this path")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with process CPU time instead of wall-clock (use with --threads 1 on a busy "
                         "machine: approximates an idle core)")
    args = ap.parse_args(argv)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
        torch.set_num_threads(1)
    threads = args.threads if args.threads > 0 else torch.get_num_threads()

    if args.realistic_only:
        n, w, h = (int(v) for v in args.realistic.split("x"))
        torch.set_num_threads(threads)
        print(json.dumps(realistic(threads, n, w, h)))
        return 0

    from gaussian_renderer import native

    t0 = time.perf_counter()
    native.ops()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"native extension ready in {time.perf_counter() - t0:.1f} s; threads = {threads}; "
          f"load average at start {load:.1f} on {os.cpu_count()} cores (other processes inflate wall-clock)")
    print("cpu = whole calls (projection + binning + kernels + autograd); cpu-kernel = the C++ ops alone; "
          f"clock = {'process CPU time' if args.cpu_time else 'wall'}")
    big: Any = None
    if args.realistic != "none":  # first, in its own process, so its peak RSS is its own
        cmd = [sys.executable, __file__, "--realistic-only", "--realistic", args.realistic,
               "--threads", str(threads)] + (["--cpu-time"] if args.cpu_time else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            return 1
        big = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"\nrealistic scene (native only, separate process): {big['gaussians']} Gaussians, "
              f"{big['width']}x{big['height']}, {big['visible']} visible, {big['pairs'] / 1e6:.0f} M pairs")
        print(f"  forward {big['forward_s']:.2f} s ({big['pairs'] / big['forward_s'] / 1e6:.0f} M pairs/s), "
              f"backward {big['backward_s']:.2f} s ({big['pairs'] / big['backward_s'] / 1e6:.0f} M pairs/s), "
              f"vote {big['vote_s']:.2f} s, binning {big['binning_s']:.2f} s, "
              f"peak RSS {big['peak_rss_gb']:.2f} GB")
    rows = []
    header = (f"{'size':>5} {'N':>7} {'pairs':>9} | {'backend':>10} {'fwd ms':>8} {'bwd ms':>8} {'vote ms':>8} | "
              f"{'fwd Mp/s':>9} {'bwd Mp/s':>9} {'vote Mp/s':>9} | {'vote/(f+b)':>10}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        n = int(args.gaussians_per_pixel * size * size)
        scene = make_scene(n, size, size, seed=size)
        pairs = count_pairs(scene, threads)
        row: dict[str, Any] = {"size": size, "gaussians": n, "pairs": pairs}
        for backend in ("cpu", "reference"):
            dense = size * size * n
            if backend == "reference" and dense > args.reference_max_pairs:
                row[backend] = "skipped"
                print(f"{size:>5} {n:>7} {pairs / 1e6:>8.1f}M | {backend:>10} skipped ({dense / 1e6:.0f} M dense "
                      f"pairs > --reference-max-pairs)")
                continue
            runs = [(backend, time_backend(scene, backend, threads, args.repeats if backend == "cpu" else 1))]
            if backend == "cpu":
                runs.append(("cpu-kernel", time_kernels(scene, threads, args.repeats)))
            for label, t in runs:
                rate = {k.replace("_s", "_pairs_per_s"): pairs / v for k, v in t.items()}
                t.update(rate)
                t["vote_speedup_vs_fwd_bwd"] = (t["forward_s"] + t["backward_s"]) / t["vote_s"]
                row[label] = t
                print(f"{size:>5} {n:>7} {pairs / 1e6:>8.1f}M | {label:>10} {t['forward_s'] * 1e3:>8.1f} "
                      f"{t['backward_s'] * 1e3:>8.1f} {t['vote_s'] * 1e3:>8.1f} | "
                      f"{rate['forward_pairs_per_s'] / 1e6:>9.0f} {rate['backward_pairs_per_s'] / 1e6:>9.0f} "
                      f"{rate['vote_pairs_per_s'] / 1e6:>9.0f} | {t['vote_speedup_vs_fwd_bwd']:>9.2f}x")
        if isinstance(row.get("reference"), dict):
            ref, nat = row["reference"], row["cpu"]
            row["native_over_reference"] = {k: ref[k] / nat[k] for k in ("forward_s", "backward_s", "vote_s")}
            r = row["native_over_reference"]
            print(f"{'':>26}native/reference speed-up: fwd {r['forward_s']:.0f}x, bwd {r['backward_s']:.0f}x, "
                  f"vote {r['vote_s']:.0f}x")
        rows.append(row)

    result: dict[str, Any] = {"threads": threads, "clock": "process_time" if args.cpu_time else "wall",
                              "pair_count": "per-tile intersections x 256", "scenes": rows,
                              "load_average_start": load,
                              "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                              "realistic": big}
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
