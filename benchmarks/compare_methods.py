"""Gradient voting (segment.py) against the feature-field baseline (extract_features.py -> dino_train.py ->
cluster.py --select-by-mask) on one real scene, scored identically by eval_segmentation.py on held-out views.

Not a test. Every stage runs as the user would run it (a subprocess of the real script), so wall times
include process start-up (~2-3 s each). Steps:

1. train (or reuse ``--model``) at the dataset's 256 px with --eval (every 8th view held out);
2. gradient voting with ALL training masks, and with the same few masks the baseline gets (``--masks-k``);
3. baseline: classic features (NOT DINO: the weight-free stand-in) -> per-Gaussian feature field ->
   KMeans for each ``--clusters`` k -> clusters selected by the few training masks;
4. eval_segmentation.py --split test for every selection: mIoU / mAcc over the held-out views.

    python benchmarks/compare_methods.py --source ../shared/data/maryRose --json compare.json
    python benchmarks/compare_methods.py --source ../shared/data/maryRose --model output/maryRose
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.io import atomic_write_text  # noqa: E402


def run(script: str, *args: str, quiet: bool = True) -> float:
    """Run a top-level script; returns its wall time; stops the benchmark with its stderr if it fails."""
    t = time.perf_counter()
    res = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=quiet, text=True)
    dt = time.perf_counter() - t
    if res.returncode != 0:
        tail = (res.stderr or "").strip().splitlines()[-5:] if quiet else []
        raise SystemExit(f"{script} {' '.join(args)} failed ({res.returncode}):\n" + "\n".join(tail))
    return dt


def train_views(model: Path, source: str) -> list[str]:
    """Image names of the training split (what train.py trained on), in sorted order."""
    from scene.model_folder import load_model
    from scene.views import load_views

    params, _, _ = load_model(model)
    return sorted(c.image_name for c in load_views(params, "train", source).cameras)


def pick(names: list[str], k: int) -> list[str]:
    """k views spread evenly over ``names`` (centred: k=1 takes the middle one)."""
    n = len(names)
    return [names[min(n - 1, int((i + 0.5) * n / k))] for i in range(k)]


def mask_subset(masks: Path, names: list[str], dest: Path) -> Path:
    """A folder holding only the masks of ``names`` (segment.py skips views without a mask)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for n in names:
        src = next((p for p in masks.iterdir() if p.stem == Path(n).stem), None)
        if src is None:
            raise SystemExit(f"{masks}: no mask for view {n}")
        shutil.copy2(src, dest / src.name)
    return dest


def evaluate(model: Path, labels: Path, gt: Path, source: str, protocols: tuple[str, ...] = ("scene",)
             ) -> dict[str, Any]:
    """eval_segmentation.py once per protocol; miou / macc are the first protocol's, ``protocols`` has all."""
    res: dict[str, Any] = {"protocols": {}, "eval_s": 0.0}
    for proto in protocols:
        out = labels.parent / f"eval_{proto}.json"
        dt = run("eval_segmentation.py", "-m", str(model), "--labels", str(labels), "--gt-masks", str(gt), "--split",
                 "test", "-s", source, "--render", proto, "--out", str(out), "--no-progress")
        data = json.loads(out.read_text())
        res["protocols"][proto] = {"miou": data["miou"], "macc": data["macc"]}
        res["views"] = data["num_views"]
        res["eval_s"] = round(res["eval_s"] + dt, 2)
    res.update(res["protocols"][protocols[0]])
    return res


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "maryRose"))
    p.add_argument("--model", default="", help="reuse this trained model (trained with --eval) instead of training")
    p.add_argument("--work", default="", help="working folder (default: output/compare_methods)")
    p.add_argument("--iterations", type=int, default=3000, help="train.py iterations (cpu preset)")
    p.add_argument("--masks-k", default="1,3", help="numbers of training masks given to the few-mask runs")
    p.add_argument("--clusters", default="8,16,32", help="KMeans k values for the baseline")
    p.add_argument("--field-iterations", type=int, default=1500)
    p.add_argument("--field-lr", type=float, default=0.05)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--xyz-weight", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=0, help="--num_threads for every script (0: all cores)")
    p.add_argument("--render", default="scene", help="evaluation protocols, comma-separated: scene (in-scene, "
                   "default) and/or object (object-alone); the table shows the first")
    p.add_argument("--json", default="", help="write all numbers to this file")
    a = p.parse_args(argv)
    protocols = tuple(x.strip() for x in a.render.split(",") if x.strip())
    if not protocols or any(x not in ("scene", "object") for x in protocols):
        raise SystemExit(f"--render {a.render}: expected scene, object or scene,object")

    source = str(Path(a.source).resolve())
    masks = Path(source) / "masks"
    if not masks.is_dir():
        raise SystemExit(f"{masks}: no masks folder; --source must be a scene with per-view binary masks")
    work = Path(a.work or ROOT / "output" / "compare_methods").resolve()
    work.mkdir(parents=True, exist_ok=True)
    th = ["--num_threads", str(a.threads)] if a.threads else []
    times: dict[str, float] = {}

    model = Path(a.model).resolve() if a.model else work / "model"
    if not a.model:
        times["train"] = run("train.py", "-s", source, "-m", str(model), "-r", "1", "--eval", "--preset", "cpu",
                             "--iterations", str(a.iterations), "--quiet", *th, quiet=False)
    names = train_views(model, source)
    ks = [int(x) for x in a.masks_k.split(",") if x.strip()]
    rows: list[dict[str, Any]] = []

    # --- gradient voting -------------------------------------------------------------------------------------
    for k in [None] + ks:
        used = names if k is None else pick(names, k)
        folder = masks if k is None else mask_subset(masks, used, work / f"masks_{k}")
        out = work / ("vote_all" if k is None else f"vote_{k}")
        t = run("segment.py", "-m", str(model), "-s", source, "--masks", str(folder), "--out", str(out),
                "--previews", "0", "--gif-frames", "0", "--no-progress", *th)
        ev = evaluate(model, out / "labels.npy", masks, source, protocols)
        rows.append({"method": "gradient voting (segment.py)", "masks": len(used), "mask_views": used if k else "all",
                     **ev, "stage_s": {"segment": round(t, 2)}})
        print(f"voting, {len(used)} masks: mIoU {ev['miou']:.4f}  mAcc {ev['macc']:.4f}  ({t:.1f} s)", flush=True)

    # --- feature-field baseline ------------------------------------------------------------------------------
    feats = work / "features_classic.pt"
    times["extract"] = run("extract_features.py", "-s", source, "--extractor", "classic", "--dim", str(a.dim),
                           "--out", str(feats), "--no-progress")
    times["field"] = run("dino_train.py", "-m", str(model), "-s", source, "--features", str(feats), "--iterations",
                         str(a.field_iterations), "--lr", str(a.field_lr), "--no-progress", *th)
    for nclust in [int(x) for x in a.clusters.split(",") if x.strip()]:
        for k in ks:
            used = pick(names, k)
            out = work / f"clusters_k{nclust}_m{k}"
            sel: list[str] = []
            for n in used:
                mask = next(p for p in masks.iterdir() if p.stem == Path(n).stem)
                sel += ["--select-by-mask", n, str(mask)]
            t = run("cluster.py", "-m", str(model), "-s", source, "--k", str(nclust), "--xyz-weight",
                    str(a.xyz_weight), "--out", str(out), "--render-views", "0", "--no-cluster-plys", *sel, *th)
            ev = evaluate(model, out / "selection" / "labels.npy", masks, source, protocols)
            rows.append({"method": f"feature field (classic) + KMeans k={nclust}", "masks": k, "mask_views": used,
                         **ev, "stage_s": {"extract": round(times["extract"], 2), "field": round(times["field"], 2),
                                           "cluster_select": round(t, 2)}})
            print(f"features k={nclust}, {k} masks: mIoU {ev['miou']:.4f}  mAcc {ev['macc']:.4f}  ({t:.1f} s)",
                  flush=True)

    # --- table -----------------------------------------------------------------------------------------------
    head = f"| method | training masks | mIoU (test, {protocols[0]}) | mAcc (test) | stage wall times (s) |"
    lines = [head, "|---|---|---|---|---|"]
    for r in rows:
        st = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_s"].items())
        lines.append(f"| {r['method']} | {r['masks']} | {r['miou']:.4f} | {r['macc']:.4f} | "
                     f"{st}; eval {r['eval_s']:.1f} |")
    if "train" in times:
        lines.append(f"\ntrain.py ({a.iterations} iterations, cpu preset, shared by both methods): "
                     f"{times['train']:.0f} s")
    table = "\n".join(lines)
    print("\n" + table)
    if a.json:
        atomic_write_text(a.json, json.dumps({
            "source": source, "model": str(model), "work": str(work), "train_views": len(names),
            "iterations": a.iterations if not a.model else None, "field_iterations": a.field_iterations,
            "field_lr": a.field_lr, "dim": a.dim, "xyz_weight": a.xyz_weight,
            "extractor": "classic (NOT DINO: weight-free colour + texture stand-in)", "protocols": list(protocols),
            "times_s": {k: round(v, 2) for k, v in times.items()}, "rows": rows, "table": table,
            "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
