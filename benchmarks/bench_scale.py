"""segment.py end to end on real-size models: upsampled copies of a trained model, old code vs new, side by side.

    python benchmarks/bench_scale.py                                   # 0.25, 1, 3, 6 M x 256², 1024²
    python benchmarks/bench_scale.py --sizes 1,6 --res 1024 --json scale.json
    python benchmarks/bench_scale.py --sizes 0.25 --res 256 --no-base  # quick: this tree only
    python benchmarks/bench_scale.py --sizes 3,6 --load-reps 3 --no-segment  # PLY load alone, old vs new
    python benchmarks/bench_scale.py --report a.json b.json            # the tables of earlier runs together

Not a test. For every size N (millions of Gaussians) the trained model (default /work/models/maryRose) is split
into s = round(N / n) children per Gaussian (benchmarks/upsample.py) and written once to the cache folder; for
every view size the model folder gets cameras.json scaled to R x R (no source folder: previews render the
"original" panel too, the slowest case) and the masks upscaled nearest to R x R. Then ``segment.py`` runs as a
subprocess with its real CLI, from this tree and from a copy of the base commit (``--base REV``, default the
merge-base with main; exported with ``git archive``), alternating old/new. Printed per run: the phase times of
segment.py's summary.json (timings_s), tile-Gaussian intersections per view (a probe in the same tree, mean over
a few voted views), µs per intersection (vote time / intersections voted), the child's peak RSS (wait4), and
new/old ratios. The machine is shared: ratios from one run are what to read, single times are upper bounds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.errors import UserError, cli_main  # noqa: E402

PHASES = ("load_model", "load_cameras", "open_masks", "vote", "decide", "write", "previews", "total")

# Run in a child inside the benchmarked tree (its own rasterizer): mean tile intersections over a few views, and
# one view's split into projection / binning / vote kernel where that tree's internals allow it.
_PROBE = r"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, ".")
from scene.model_folder import load_model
from scene.views import load_views
model, n_views, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
params, g, _ = load_model(model)
cams = load_views(params, "train").cameras
pick = sorted({int(round(x)) for x in np.linspace(0, len(cams) - 1, n_views)})
out = {"views": len(pick)}
with torch.no_grad():
    quats, scales, opac = g.get_rotation, g.get_scaling, g.get_opacity.reshape(-1)
    counts = []
    try:
        from benchmarks.bench_rasterizer import count_pairs
        for i in pick:
            c = cams[i]
            scene = dict(means=g.get_xyz, quats=quats, scales=scales, opacities=opac,
                         colors=torch.zeros(len(g), 3), viewmat=c.viewmat(), K=c.K(), width=c.width, height=c.height)
            counts.append(count_pairs(scene, threads) / 256)
        out["intersections_per_view"] = float(np.mean(counts))
    except Exception as e:  # another tree's internals: report what could not be measured
        out["intersections_error"] = f"{type(e).__name__}: {e}"
    try:
        from gaussian_renderer.cpu import _ops, bin_gaussians, project
        c = cams[pick[len(pick) // 2]]
        w = torch.zeros(c.height, c.width, 2)
        w[..., 0] = 1.0
        t0 = time.perf_counter()
        proj = project(g.get_xyz, quats, scales, c.viewmat(), c.K(), c.width, c.height, 0.2, threads)
        t1 = time.perf_counter()
        offsets, gids, _ = bin_gaussians(proj, c.width, c.height, threads)
        t2 = time.perf_counter()
        _ops().vote(proj.means2d.float().contiguous(), proj.conics.float().contiguous(), opac.contiguous(),
                    offsets, gids, w, threads)
        t3 = time.perf_counter()
        out["one_view_s"] = {"project": t1 - t0, "bin": t2 - t1, "vote_kernel": t3 - t2}
    except Exception as e:
        out["split_error"] = f"{type(e).__name__}: {e}"
print("PROBE " + json.dumps(out))
"""


# PLY reading alone, in a child inside the benchmarked tree: read_gaussian_ply, then read + GaussianModel (what
# segment.py's load does), each in a fresh process so neither profits from memory the other freed.
_LOAD_PROBE = r"""
import json, resource, sys, time
sys.path.insert(0, ".")
what, path = sys.argv[1], sys.argv[2]
from scene.gaussian_model import GaussianModel  # imports (torch) before the clock starts
from utils.ply import read_gaussian_ply
def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime
t0, c0 = time.perf_counter(), cpu()
if what == "read":
    n = len(read_gaussian_ply(path))
else:
    m = GaussianModel(3)
    m.load_ply(path)
    n = len(m)
print("LOAD " + json.dumps({"what": what, "s": time.perf_counter() - t0, "cpu_s": cpu() - c0, "n": n,
                            "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def time_loads(trees: list[tuple[str, Path]], ply: Path, reps: int) -> list[dict[str, Any]]:
    """read_gaussian_ply and read + GaussianModel of ``ply`` per tree, alternating trees, ``reps`` times."""
    rows = []
    for rep in range(reps):
        for code, tree in (trees if rep % 2 == 0 else trees[::-1]):
            for what in ("read", "model"):
                r = subprocess.run([sys.executable, "-c", _LOAD_PROBE, what, str(ply)], cwd=tree, capture_output=True,
                                   text=True, env=dict(os.environ, PYTHONPATH=str(tree)))
                line = [x for x in r.stdout.splitlines() if x.startswith("LOAD ")]
                if not line:
                    raise UserError(f"{ply}: loading failed in {tree} ({(r.stderr.strip().splitlines() or ['?'])[-1]})")
                rows.append(dict(json.loads(line[0][5:]), code=code, rep=rep))
                print(f"  {code} {what}: {rows[-1]['s']:.2f} s (CPU {rows[-1]['cpu_s']:.2f} s), peak RSS "
                      f"{rows[-1]['rss_gb']:.2f} GB", flush=True)
    return rows


def print_loads(rows: list[dict[str, Any]]) -> None:
    print("\nPLY load (median over reps, wall and user+sys CPU seconds; a fresh process each)")
    print("N | what | old s | new s | old / new | old CPU s | new CPU s | old / new CPU | old RSS GB | new RSS GB")
    print("---|---|---|---|---|---|---|---|---|---")
    for n in sorted({r["n"] for r in rows}):
        for what in ("read", "model"):
            got = {c: [r for r in rows if r["n"] == n and r["what"] == what and r["code"] == c] for c in ("old", "new")}
            med = {c: float(np.median([r["s"] for r in v])) if v else None for c, v in got.items()}
            cpu = {c: float(np.median([r.get("cpu_s", np.nan) for r in v])) if v else None for c, v in got.items()}
            rss = {c: max(r["rss_gb"] for r in v) if v else None for c, v in got.items()}
            ratio = med["old"] / med["new"] if med["old"] and med["new"] else None
            cpu_ratio = cpu["old"] / cpu["new"] if cpu["old"] and cpu["new"] else None
            print(f"{n / 1e6:.2f} M | {what} | {_fmt(med['old'], '.2f')} | {_fmt(med['new'], '.2f')} | "
                  f"{_fmt(ratio, '.2f')} | {_fmt(cpu['old'], '.2f')} | {_fmt(cpu['new'], '.2f')} | "
                  f"{_fmt(cpu_ratio, '.2f')} | {_fmt(rss['old'], '.2f')} | {_fmt(rss['new'], '.2f')}")


def parse_list(text: str, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{what} {text!r}: expected comma-separated numbers") from None
    if not vals or any(v <= 0 for v in vals):
        raise UserError(f"--{what} {text!r}: expected positive numbers")
    return vals


def base_tree(rev: str, cache: Path) -> Path:
    """The base commit's files (git archive) under the cache; reused when already there."""
    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
        if r.returncode != 0:
            raise UserError(f"{REPO}: git {' '.join(a)} failed ({r.stderr.strip().splitlines()[-1:]}); pass --base "
                            "with a commit of this repository")
        return r.stdout.strip()

    if not rev:
        rev = git("merge-base", "HEAD", "main")
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    tree = cache / f"base_{sha[:10]}"
    if not (tree / "segment.py").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=".base.", dir=cache))
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        os.replace(tmp, tree)
    return tree


def build_ply(model: Path, size_m: float, cache: Path, seed: int) -> tuple[Path, int, int]:
    """(cached upsampled PLY, s, N) for about size_m million Gaussians."""
    from scene.model_folder import find_iteration, ply_path
    from utils.ply import read_gaussian_ply, write_gaussian_ply

    from benchmarks.upsample import upsample

    src = ply_path(model, find_iteration(model))
    n0 = _ply_count(src)
    s = max(1, int(round(size_m * 1e6 / n0)))
    out = cache / "ply" / f"{model.name}_s{s}_seed{seed}.ply"
    if not out.is_file():
        print(f"building {out.name}: {n0:,} x {s} Gaussians", flush=True)
        write_gaussian_ply(out, upsample(read_gaussian_ply(src), s, seed))
    return out, s, _ply_count(out)


def _ply_count(path: Path) -> int:
    with open(path, "rb") as f:
        m = re.search(rb"element vertex (\d+)", f.read(4096))
    if not m:
        raise UserError(f"{path}: no vertex count in the header; pass an Inria model")
    return int(m.group(1))


def build_model_folder(model: Path, ply: Path, res: int, cache: Path) -> Path:
    """A model folder: the upsampled PLY (symlink), cfg_args without a source, cameras.json scaled to res x res."""
    folder = cache / "models" / f"{ply.stem}_r{res}"
    cams = json.loads((model / "cameras.json").read_text())
    for c in cams:
        sx, sy = res / c["width"], res / c["height"]
        c["fx"], c["fy"], c["width"], c["height"] = c["fx"] * sx, c["fy"] * sy, res, res
        for k, f in (("cx", sx), ("cy", sy)):
            if k in c:
                c[k] *= f
    cfg = (model / "cfg_args").read_text()
    cfg = re.sub(r"source_path='[^']*'", "source_path=''", cfg)
    cfg = re.sub(r"model_path='[^']*'", f"model_path='{folder}'", cfg)
    it = folder / "point_cloud" / "iteration_1"
    it.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.json").write_text(json.dumps(cams))
    (folder / "cfg_args").write_text(cfg)
    link = it / "point_cloud.ply"
    if not link.exists():
        link.symlink_to(ply.resolve())
    return folder


def build_masks(masks: Path, res: int, cache: Path) -> Path:
    """The masks upscaled (nearest) to res x res; the original folder when they already have that size."""
    import cv2

    files = sorted(p for p in masks.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise UserError(f"{masks}: no PNG masks; pass --masks with the model's mask folder")
    first = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    if first.shape[:2] == (res, res):
        return masks
    out = cache / f"masks_{masks.parent.name}_{res}"
    if not out.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".masks.", dir=cache))
        for p in files:
            m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(tmp / p.name), cv2.resize(m, (res, res), interpolation=cv2.INTER_NEAREST))
        os.replace(tmp, out)
    return out


def run_child(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float, int]:
    """(wall s, peak RSS GB of that child, exit code), output to ``log``."""
    env = dict(os.environ, PYTHONPATH=str(cwd))  # the tree's own packages, not the editable install's
    with open(log, "w") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1e6, proc.returncode  # ru_maxrss is in KiB on Linux


def run_segment(tree: Path, model: Path, masks: Path, out: Path, extra: list[str], threads: int) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "segment.py", "-m", str(model), "--masks", str(masks), "--out", str(out),
           "--no-progress", *extra] + (["--num_threads", str(threads)] if threads else [])
    log = out.parent / f"{out.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    wall, rss, rc = run_child(cmd, tree, log)
    if rc != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"{log}: segment.py failed in {tree} (exit {rc}: {tail[0]}); see the log")
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "peak_rss_gb": rss, "timings_s": summary["timings_s"],
            "views_used": summary["views"]["used"], "num_gaussians": summary["num_gaussians"]}


def run_probe(tree: Path, model: Path, views: int, threads: int, log: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-c", _PROBE, str(model), str(views), str(threads)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    r = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)
    log.write_text(r.stdout + r.stderr)
    for line in r.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    return {"intersections_error": f"probe failed (exit {r.returncode}); see {log}"}


def _fmt(v: Optional[float], spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = ["N", "res", "code", *PHASES, "isect/view", "us/isect", "rss GB", "0.5+0.6KB/G"]
    print("\n" + " | ".join(head))
    print("|".join("---" for _ in head))
    for r in rows:
        t = r["timings_s"]
        isect = r.get("intersections_per_view")
        us = (1e6 * t["vote"] / (isect * r["views_used"])) if isect else None
        budget = 0.5 + 0.6e3 * r["num_gaussians"] / 1e9
        print(" | ".join([f"{r['num_gaussians'] / 1e6:.2f} M", f"{r['res']}²", r["code"],
                          *(_fmt(t.get(p)) for p in PHASES), _fmt(isect and isect / 1e6, ".2f") + " M",
                          _fmt(us, ".3f"), _fmt(r["peak_rss_gb"], ".2f"), f"{budget:.2f}"]))
    old = {(r["num_gaussians"], r["res"], r.get("run", 0), r["rep"]): r for r in rows if r["code"] == "old"}
    ratios = [(r, old[k]) for r in rows if r["code"] == "new"
              and (k := (r["num_gaussians"], r["res"], r.get("run", 0), r["rep"])) in old]
    if ratios:
        print("\nold / new (speed-up; > 1 = new faster) and preview share of the wall time")
        print(" | ".join(["N", "res", *PHASES, "rss new/old", "previews % (old, new)"]))
        print("|".join("---" for _ in range(len(PHASES) + 4)))
        for new, o in ratios:
            sp = [_fmt(o["timings_s"].get(p, 0) / max(new["timings_s"].get(p, 0), 1e-9), ".2f") for p in PHASES]
            share = [100 * x["timings_s"].get("previews", 0) / x["timings_s"]["total"] for x in (o, new)]
            print(" | ".join([f"{new['num_gaussians'] / 1e6:.2f} M", f"{new['res']}²", *sp,
                              f"{new['peak_rss_gb'] / o['peak_rss_gb']:.2f}", f"{share[0]:.0f} %, {share[1]:.0f} %"]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_scale.py", description=__doc__.split("\n\n")[1].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default="/work/models/maryRose", help="trained model folder to upsample")
    p.add_argument("--masks", default=str(REPO.parent / "shared" / "data" / "maryRose" / "masks"),
                   help="its masks (binary PNGs named like the views)")
    p.add_argument("--sizes", default="0.25,1,3,6", help="millions of Gaussians (default 0.25,1,3,6)")
    p.add_argument("--res", default="256,1024", help="view sizes R (R x R), default 256,1024")
    p.add_argument("--base", default="", help="commit to compare with (default: merge-base of HEAD and main)")
    p.add_argument("--no-base", action="store_true", help="run this tree only")
    p.add_argument("--reps", type=int, default=1, help="old/new pairs per configuration (default 1)")
    p.add_argument("--old-first", action="store_true", help="start each configuration with the old code (the "
                   "order alternates per repetition; use this for a second invocation)")
    p.add_argument("--probe-views", type=int, default=4, help="views the intersection probe averages (0: none)")
    p.add_argument("--threads", type=int, default=0, help="segment.py --num_threads (0: all cores)")
    p.add_argument("--segment-args", default="", help="extra segment.py arguments, e.g. '--views 0.1'")
    p.add_argument("--cache", default=str(REPO / "output" / "bench_scale"),
                   help="folder for upsampled models (6 M ~ 1.4 GB), scaled masks, the base tree and run outputs")
    p.add_argument("--load-reps", type=int, default=0,
                   help="also time PLY reading alone (read, read + GaussianModel) this many times per tree and size")
    p.add_argument("--no-segment", action="store_true", help="skip the segment.py runs (with --load-reps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the rows to this JSON file")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="run nothing: print the tables of earlier --json files together")
    return p


@cli_main
def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report:
        rows, loads = [], []
        for run, f in enumerate(args.report):
            try:
                data = json.loads(Path(f).read_text())
                rows += [dict(r, run=run) for r in data["rows"]]
                loads += data.get("loads", [])
            except (OSError, ValueError, KeyError) as e:
                raise UserError(f"{f}: not a bench_scale.py --json file ({e}); pass the files it wrote") from None
        if rows:
            print_table(rows)
        if loads:
            print_loads(loads)
        return 0
    sizes = parse_list(args.sizes, "sizes")
    res_list = [int(r) for r in parse_list(args.res, "res")]
    model, masks, cache = Path(args.model), Path(args.masks), Path(args.cache)
    if not (model / "cameras.json").is_file():
        raise UserError(f"{model}: no cameras.json; pass -m with a trained model folder")
    if not masks.is_dir():
        raise UserError(f"{masks}: mask folder not found; pass --masks")
    cache.mkdir(parents=True, exist_ok=True)
    trees = [("new", REPO)] + ([] if args.no_base else [("old", base_tree(args.base, cache))])
    extra = args.segment_args.split()
    rows: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    for size in sizes:
        ply, s, n = build_ply(model, size, cache, args.seed)
        if args.load_reps:
            print(f"PLY load {ply.name} ...", flush=True)
            loads += time_loads(trees, ply, args.load_reps)
        for res in ([] if args.no_segment else res_list):
            folder = build_model_folder(model, ply, res, cache)
            mdir = build_masks(masks, res, cache)
            for rep in range(args.reps):
                order = trees if (rep + args.old_first) % 2 == 0 else trees[::-1]  # alternate who runs first
                for code, tree in order:
                    tag = f"{code}_n{n}_r{res}_rep{rep}"
                    print(f"run {tag} ...", flush=True)
                    r = run_segment(tree, folder, mdir, cache / "runs" / tag, extra, args.threads)
                    r.update(code=code, res=res, s=s, rep=rep)
                    if args.probe_views and rep == 0:
                        r.update(run_probe(tree, folder, args.probe_views, args.threads,
                                           cache / "runs" / f"{tag}.probe.log"))
                    print(f"  wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GB, "
                          f"timings {json.dumps(r['timings_s'])}", flush=True)
                    rows.append(r)
    if rows:
        print_table(rows)
    if loads:
        print_loads(loads)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "loads": loads, "argv": sys.argv[1:]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
