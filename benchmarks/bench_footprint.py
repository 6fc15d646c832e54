"""Tight footprints vs Inria's 3-sigma binning on upsampled real models, side by side in one process, and
prune.py end to end against a checkout of the code before this change.

Not a test. Models: a trained model with every Gaussian split into s children (benchmarks/upsample.py, the
helper bench_scale.py shares) and its cameras at WxW (-r W: the source images upscaled). Per scene and mode:
tile intersections per view and ms per view for project / bin / vote (label map) / forward / backward (the
native ops alone, min over --repeats, alternating the modes), and the ratio inria / tight. Timings on a shared
machine: compare the ratios, not the milliseconds.

    python benchmarks/bench_footprint.py --gaussians 0.25 1 --sizes 256 1024 --threads 2
    python benchmarks/bench_footprint.py --prune --base ../wt_kernel_base --gaussians 1 --sizes 1024
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arguments import model_params_from_cfg, read_cfg_args, write_cfg_args  # noqa: E402
from benchmarks.upsample import upsample  # noqa: E402
from scene.model_folder import find_iteration, ply_path, read_cameras_json, write_cameras_json  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402
from utils.ply import read_gaussian_ply, write_gaussian_ply  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "models" / "maryRose"


def write_upsampled_model(src: Path, dst: Path, s: int, size: int, seed: int = 0) -> Path:
    """A model folder at dst: src's newest PLY with every Gaussian split into s children, cameras.json at
    size x size and cfg_args with resolution = size (so training views load at that size from the source).
    Reused when dst already holds it. Returns dst."""
    iteration = find_iteration(src)
    out_ply = ply_path(dst, iteration)
    if out_ply.is_file() and (dst / "cfg_args").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    write_gaussian_ply(out_ply, upsample(read_gaussian_ply(ply_path(src, iteration)), s, seed))
    write_cameras_json(dst / "cameras.json", [c.scaled(size, size) for c in read_cameras_json(src / "cameras.json")])
    params = model_params_from_cfg(read_cfg_args(src / "cfg_args"))
    params.model_path, params.resolution = str(dst), size
    write_cfg_args(dst / "cfg_args", params)
    return dst


def children_for(n_target: float, n_parent: int) -> int:
    return max(1, int(round(n_target / n_parent)))


CLOCK = time.perf_counter


def _min_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = CLOCK()
        out = fn()
        best = min(best, CLOCK() - t0)
    return best, out


def _label_map(cam: Any, source: str) -> torch.Tensor:  # [H, W] int32: the view's object mask, else a disc
    from PIL import Image

    path = Path(source) / "masks" / f"{cam.image_name}.png"
    if path.is_file():
        m = Image.open(path).convert("L").resize((cam.width, cam.height), Image.NEAREST)
        return torch.from_numpy((torch.ByteTensor(bytearray(m.tobytes())).numpy() > 127).astype("int32")
                                .reshape(cam.height, cam.width))
    ys, xs = torch.meshgrid(torch.arange(cam.height), torch.arange(cam.width), indexing="ij")
    r2 = (ys - cam.height / 2) ** 2 + (xs - cam.width / 2) ** 2
    return (r2 < (0.3 * min(cam.width, cam.height)) ** 2).int()


def time_view(g: Any, cam: Any, labels: torch.Tensor, footprint: str, threads: int,
              repeats: int) -> dict[str, float]:
    """ms of the native ops of one view in one footprint mode, and the tile intersections."""
    from gaussian_renderer.cpu import _ops, bin_gaussians, project

    ops, w, h = _ops(), cam.width, cam.height
    res: dict[str, float] = {}
    with torch.no_grad():
        t, proj = _min_time(lambda: project(g.means, g.quats, g.scales, cam.viewmat(), cam.K(), w, h, 0.2, threads,
                                            cull=footprint == "tight"), repeats)
        res["project"] = t
        t, (off, gids, _) = _min_time(lambda: bin_gaussians(proj, g.opacities, w, h, threads, footprint), repeats)
        res["bin"] = t
        res["intersections"] = gids.numel()
        m2, con, op = proj.means2d.contiguous(), proj.conics.contiguous(), g.opacities.contiguous()
        res["vote"], _ = _min_time(lambda: ops.vote_labels(m2, con, op, off, gids, labels, 1, threads), repeats)
        feats = torch.cat([torch.rand(len(g), 3, generator=torch.Generator().manual_seed(0)), proj.depths[:, None]],
                          1).contiguous()
        res["forward"], (_, t_final, last) = _min_time(
            lambda: ops.forward(m2, con, op, feats, off, gids, w, h, threads), repeats)
        d_out = torch.randn(3, h, w, generator=torch.Generator().manual_seed(1))
        d_t = torch.zeros(h, w)
        res["backward"], _ = _min_time(lambda: ops.backward(m2, con, op, feats, off, gids, t_final, last, d_out, d_t,
                                                           threads), repeats)
    return res


OPS = ("project", "bin", "vote", "forward", "backward")


def bench_modes(model: Path, n_target: float, size: int, views: int, threads: int, repeats: int) -> dict[str, Any]:
    """Both footprints on the same upsampled model and views, alternating the modes per view."""
    from gaussian_renderer import prepare_gaussians
    from scene.gaussian_model import GaussianModel

    iteration = find_iteration(model)
    base = read_gaussian_ply(ply_path(model, iteration))
    s = children_for(n_target, len(base))
    data = upsample(base, s)
    gm = GaussianModel()
    gm._set_parameters(*(torch.from_numpy(a) for a in (data.xyz, data.f_dc[:, None, :], data.f_rest, data.scale,
                                                       data.rotation, data.opacity)))
    g = prepare_gaussians(gm)
    cams = read_cameras_json(model / "cameras.json")
    source = read_cfg_args(model / "cfg_args").get("source_path", "")
    picked = [cams[int(i)].scaled(size, size) for i in torch.linspace(0, len(cams) - 1, views).round().tolist()]
    sums = {m: {k: 0.0 for k in OPS + ("intersections",)} for m in ("inria", "tight")}
    for cam in picked:
        labels = _label_map(cam, source)
        for mode in ("inria", "tight"):
            for k, v in time_view(g, cam, labels, mode, threads, repeats).items():
                sums[mode][k] += v / len(picked)
    return {"gaussians": len(g), "children": s, "size": size, "views": len(picked), **sums}


def print_modes(rows: list[dict[str, Any]]) -> None:
    head = (f"{'N':>9} {'size':>5} | {'isect/view inria':>17} {'tight':>10} {'ratio':>6} | "
            + " | ".join(f"{k + ' ms i/t':>17} {'x':>5}" for k in OPS))
    print(head)
    print("-" * len(head))
    for r in rows:
        i, t = r["inria"], r["tight"]
        cells = " | ".join(f"{i[k] * 1e3:>8.1f}/{t[k] * 1e3:<8.1f} {i[k] / t[k]:>5.2f}" for k in OPS)
        ni, ntight = i["intersections"], t["intersections"]
        print(f"{r['gaussians']:>9,} {r['size']:>5} | {ni / 1e6:>15.2f}M {ntight / 1e6:>9.2f}M {ni / ntight:>6.2f} | "
              f"{cells}")


# ----- prune.py end to end, this checkout against another (the code before the change) ----------------------
def run_prune(repo: Path, model: Path, out: Path, threads: int) -> dict[str, Any]:
    """One prune.py run in a fresh process from `repo`; returns wall time, the times line and the report."""
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "prune.py", "-m", str(model.resolve()), "--out", str(out.resolve()),
                          "--threads", str(threads), "--quiet"], cwd=repo, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{repo}: prune.py failed:\n{res.stderr[-2000:]}")
    rep = json.loads((out / "prune_report.json").read_text())
    keep_bytes = ply_path(out, rep["iteration"]).read_bytes()
    times = rep.get("timings_s") or rep["times"]  # prune_report.json said 'times' before the job kit
    return {"wall_s": wall, "times": times, "removed": rep["gaussians"]["removed"],
            "verification": rep["verification"], "restored": rep["restored_stoppers"], "ply": keep_bytes}


def bench_prune(base: Path, model: Path, out_dir: Path, threads: int, repeats: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    for r in range(repeats):  # alternate: old, new, old, new ... (shared machine: same conditions for both)
        for name, repo in (("old", base), ("new", REPO)):
            runs[name].append(run_prune(repo, model, out_dir / f"prune_{name}_{r}", threads))
            print(f"  prune.py {name} run {r}: {runs[name][-1]['wall_s']:.1f} s  "
                  + " | ".join(f"{k} {v:.1f}" for k, v in runs[name][-1]["times"].items()), flush=True)
    old, new = runs["old"][0], runs["new"][0]
    same = {"removed": old["removed"] == new["removed"], "ply_bytes": old["ply"] == new["ply"],
            "verification": old["verification"] == new["verification"], "restored": old["restored"] == new["restored"]}
    best = {k: min(x["wall_s"] for x in v) for k, v in runs.items()}
    for v in runs.values():
        for x in v:
            x.pop("ply")
    return {"runs": runs, "best_wall_s": best, "speedup": best["old"] / best["new"], "identical": same}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="trained model folder to upsample")
    ap.add_argument("--gaussians", type=float, nargs="+", default=[0.25, 1.0], help="millions of Gaussians")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--views", type=int, default=3, help="views per scene (spread over the cameras)")
    ap.add_argument("--threads", type=int, default=0, help="kernel threads (0: all cores)")
    ap.add_argument("--repeats", type=int, default=3, help="min over this many calls per op")
    ap.add_argument("--prune", action="store_true", help="also time prune.py end to end against --base")
    ap.add_argument("--no-modes", action="store_true", help="skip the per-op table (prune.py only)")
    ap.add_argument("--base", type=Path, default=None, help="checkout of the code before the change (git worktree)")
    ap.add_argument("--prune-repeats", type=int, default=1)
    ap.add_argument("--work", type=Path, default=REPO / "output" / "bench_footprint", help="models and outputs")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time the ops with process CPU time and 1 thread (a busy machine inflates wall-clock)")
    args = ap.parse_args(argv)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
        args.threads = 1
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    from gaussian_renderer import native

    native.ops()
    print(f"threads {threads}; clock {'process CPU time' if args.cpu_time else 'wall'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at start (shared machine: compare ratios)")
    rows = []
    for n in ([] if args.no_modes else args.gaussians):
        for size in args.sizes:
            rows.append(bench_modes(args.model, n * 1e6, size, args.views, threads, args.repeats))
            print(f"  done {rows[-1]['gaussians']:,} Gaussians at {size}^2", flush=True)
    if rows:
        print_modes(rows)
    result: dict[str, Any] = {"threads": threads, "clock": "process" if args.cpu_time else "wall", "modes": rows}
    if args.prune:
        if args.base is None:
            ap.error("--prune needs --base (e.g. git worktree add ../base <commit>)")
        base_model = read_gaussian_ply(ply_path(args.model, find_iteration(args.model)))
        for n in args.gaussians:
            for size in args.sizes:
                s = children_for(n * 1e6, len(base_model))
                model = write_upsampled_model(args.model, args.work / f"model_s{s}_r{size}", s, size)
                print(f"prune.py at {len(base_model) * s:,} Gaussians, {size}^2 (old = {args.base})", flush=True)
                p = bench_prune(args.base, model, args.work, threads, args.prune_repeats)
                p.update(gaussians=len(base_model) * s, size=size)
                result.setdefault("prune", []).append(p)
                print(f"  best old {p['best_wall_s']['old']:.1f} s, new {p['best_wall_s']['new']:.1f} s: "
                      f"{p['speedup']:.2f}x; identical {p['identical']}")
    result["load_average_end"] = os.getloadavg()[0]
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
