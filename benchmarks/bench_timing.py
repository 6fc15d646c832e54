"""The paper's timing table on this machine: segmentation with all / 10 % of the masks, and pruning.

    python benchmarks/bench_timing.py                                  # built-in synthetic scene
    python benchmarks/bench_timing.py -m output/garden --masks data/garden/masks --json timing.json

Rows (per scene seconds and per view milliseconds; per view = scene time / views used):
  segmentation, all masks      voting only (the vote kernel calls) and end-to-end (mask files -> labels)
  segmentation, 10 % of masks  the same on every 10th masked view
  pruning                      contribution pass only, and end-to-end lossless pruning (with verification)
The model load is timed separately and not included. Reference (paper, A6000 GPU): 3.35 s / 0.35 s per scene
for segmentation with all / 10 % of masks, 3.68 s for pruning.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, like Inria's scripts

from gaussian_renderer import render, resolve_backend, vote  # noqa: E402
from pruning.pipeline import prune_views  # noqa: E402
from pruning.prune import RenderOptions, prune_gaussians, total_contribution  # noqa: E402
from scene.cameras import Camera  # noqa: E402
from scene.gaussian_model import GaussianModel  # noqa: E402
from scene.model_folder import load_model  # noqa: E402
from utils.errors import UserError, cli_main  # noqa: E402
from segmentation.voting import select_views  # noqa: E402
from utils.masks import MaskSet, open_masks  # noqa: E402
from utils.sh import rgb_to_sh  # noqa: E402

PAPER_A6000_S = {"segmentation, all masks": 3.35, "segmentation, 10% of masks": 0.35, "pruning": 3.68}


def synthetic_model(num_views: int, size: int) -> tuple[GaussianModel, list[Camera], Any]:
    from segmentation.synthetic import make_demo_scene

    s = make_demo_scene(num_views=num_views, size=size)
    n = len(s.means)
    t = torch.from_numpy
    opacity_logits = torch.logit(t(s.opacities).double()).float()[:, None]
    g = GaussianModel.from_tensors(t(s.means), rgb_to_sh(t(s.colors))[:, None, :], torch.zeros(n, 0, 3),
                                   torch.log(t(s.scales)), t(s.quats), opacity_logits)
    return g, s.cameras, s


def write_synthetic_masks(scene: Any, gaussians: GaussianModel, folder: Path, backend: str) -> None:
    """Object-id PNGs (0 = ground/empty) rendered from the scene's own per-Gaussian object ids."""
    from PIL import Image

    ids = torch.from_numpy(scene.object_ids).long()
    onehot = torch.nn.functional.one_hot(ids, len(scene.object_names)).float()  # [N, L+1]
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for cam in scene.cameras:
            out = render(cam, gaussians, torch.zeros(onehot.shape[1]), override_color=onehot, backend=backend)
            lab = out["render"].argmax(0)
            lab[out["alpha"][0] < 0.5] = 0
            Image.fromarray(lab.numpy().astype(np.uint8)).save(folder / f"{cam.image_name}.png")


def time_segmentation(masks: MaskSet, gaussians: GaussianModel, opts: RenderOptions) -> dict[str, float]:
    """Voting-only and end-to-end seconds over the views of ``masks``, with segment.py's own per-view vote
    (segmentation.voting.vote_view: one-hot weights, one kernel call per view) and decision rule."""
    from segmentation.voting import decide_labels, vote_view

    t_start = time.perf_counter()
    vote_s = 0.0
    num_labels = masks.num_labels
    acc = torch.zeros(len(gaussians), num_labels + 1, dtype=torch.float64)
    with torch.no_grad():
        for cam, label_map in masks.items():  # reading each mask is part of end-to-end only
            t1 = time.perf_counter()
            acc += vote_view(cam, gaussians, label_map, num_labels, opts.backend, opts.num_threads).cpu()
            vote_s += time.perf_counter() - t1
    labels = torch.from_numpy(decide_labels(acc.numpy()))
    for lab in range(1, num_labels + 1):  # the extracted objects, as segment.py would save them
        gaussians.subset(labels == lab)
    return {"voting_s": vote_s, "end_to_end_s": time.perf_counter() - t_start, "views": len(masks)}


def _row(name: str, kind: str, seconds: float, views: int) -> dict[str, Any]:
    return {"row": name, "what": kind, "seconds": seconds, "views": views,
            "ms_per_view": 1000.0 * seconds / max(1, views), "paper_a6000_s": PAPER_A6000_S.get(name)}


def run(gaussians: GaussianModel, train: Sequence[Camera], mask_dir: Path, mask_format: str, opts: RenderOptions,
        fraction: float) -> list[dict[str, Any]]:
    rows = []
    t0 = time.perf_counter()
    masks = open_masks(mask_dir, list(train), fmt=mask_format)
    open_s = time.perf_counter() - t0
    if len(masks) == 0:
        raise UserError(f"{mask_dir}: no mask matches a training view; check --masks")
    # warm-up (first native call builds / loads the extension); not timed
    cam0 = train[0]
    vote(cam0, gaussians, torch.ones(cam0.height, cam0.width, 1), backend=opts.backend, num_threads=opts.num_threads)

    full = time_segmentation(masks, gaussians, opts)
    rows.append(_row("segmentation, all masks", "voting only", full["voting_s"], full["views"]))
    rows.append(_row("segmentation, all masks", "end-to-end", full["end_to_end_s"] + open_s, full["views"]))
    picked = select_views(len(masks), None if fraction == 1 else fraction)  # segment.py --views 0.1
    t0 = time.perf_counter()
    few_masks = masks.subset(picked)
    few = time_segmentation(few_masks, gaussians, opts)
    few_total = time.perf_counter() - t0 + open_s  # listing the folder is part of either run
    name = f"segmentation, {round(100 * fraction)}% of masks"
    rows.append(_row(name, "voting only", few["voting_s"], few["views"]))
    rows.append(_row(name, "end-to-end", few_total, few["views"]))

    t0 = time.perf_counter()
    total_contribution(gaussians, train, opts)  # timed: the pass itself, its result is not needed here
    contrib_s = time.perf_counter() - t0
    rows.append(_row("pruning", "contribution pass", contrib_s, len(train)))
    t0 = time.perf_counter()
    pruned, res = prune_gaussians(gaussians, train, opts)
    rows.append(_row("pruning", "end-to-end lossless (contribution + verification)", time.perf_counter() - t0,
                     len(train)))
    rows[-1]["percent_removed"] = res.percent_removed
    rows[-1]["max_abs_diff"] = res.check.max_abs_diff
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    out = [f"{'row':30}{'what':52}{'views':>6}{'s/scene':>10}{'ms/view':>10}{'paper (A6000) s':>17}"]
    for r in rows:
        paper = f"{r['paper_a6000_s']:.2f}" if r["paper_a6000_s"] is not None else ""
        out.append(f"{r['row']:30}{r['what']:52}{r['views']:>6}{r['seconds']:>10.3f}{r['ms_per_view']:>10.1f}"
                   f"{paper:>17}")
    return "\n".join(out)


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model_path", default="", help="model folder (default: built-in synthetic scene)")
    p.add_argument("--masks", default="", help="mask folder / COCO json for -m (matched to training views)")
    p.add_argument("--mask-format", "--mask_format", dest="mask_format", default="auto",
                   help="auto | binary | ids | sam | coco (as segment.py --mask-format)")
    p.add_argument("--iteration", type=int, default=-1)
    p.add_argument("-s", "--source_path", default="", help="scene folder (default: cfg_args' source_path)")
    p.add_argument("--fraction", type=float, default=0.1, help="fraction of masked views for the second row")
    p.add_argument("--views", type=int, default=24, help="synthetic scene: number of views")
    p.add_argument("--size", type=int, default=128, help="synthetic scene: image size (px)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", dest="num_threads", type=int, default=0)
    p.add_argument("--json", default="", help="also write the rows here")
    args = p.parse_args(argv)
    if not 0 < args.fraction <= 1:
        raise UserError(f"--fraction {args.fraction}: must lie in (0, 1]")
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    backend = resolve_backend(args.backend, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.model_path:
            if not args.masks:
                raise UserError("-m given without --masks; pass the mask folder matching the training views")
            params, gaussians, _ = load_model(args.model_path, args.iteration)
            train = prune_views(Path(args.model_path), params, args.source_path).train
            background = torch.ones(3) if params.white_background else torch.zeros(3)
            mask_dir, fmt, scene_name = Path(args.masks), args.mask_format, args.model_path
        else:
            gaussians, train, scene = synthetic_model(args.views, args.size)
            background = torch.zeros(3)
            mask_dir, fmt = Path(tmp) / "masks", "ids"
            write_synthetic_masks(scene, gaussians, mask_dir, backend)
            scene_name = f"synthetic demo scene ({args.views} views, {args.size} px)"
        load_s = time.perf_counter() - t0  # synthetic: building the scene and rendering its masks
        opts = RenderOptions(background, backend, args.num_threads, progress=False)
        rows = run(gaussians, train, mask_dir, fmt, opts, args.fraction)
    info = {"scene": scene_name, "gaussians": len(gaussians), "training_views": len(train),
            "resolution": f"{train[0].width}x{train[0].height}", "backend": backend,
            "threads": args.num_threads or torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "load_s": load_s, "rows": rows}
    print(f"{scene_name}: {len(gaussians):,} Gaussians, {len(train)} views at {info['resolution']}, backend "
          f"{backend}, setup {load_s:.2f} s (not included)")
    print(format_table(rows))
    if args.json:
        from utils.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
