"""What association costs next to one voting pass over the same views (issue: <= 3x), measured side by side.

    python benchmarks/bench_association.py --model output/maryRose --source ../shared/data/maryRose \
        --sam output/sam_like/maryRose --prompt IMG_9670:152,114

Per repetition, alternating: (a) one voting pass, the paper's rule with a binary mask per view (read, resized,
voted: what segment.py --masks does); (b) association from a prompt over SAM proposals (read the proposals,
cut them into atoms, the one label-map vote pass of the atoms, the seed choice and the rounds: what
segment.py --masks SAM_DIR --prompt does between opening the inputs and deciding); (c) the same with proposals
from the photos (superpixels) when --photos is given. Prints medians and ratios; --json writes them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from arguments import ModelParams  # noqa: E402
from scene.model_folder import load_model  # noqa: E402
from scene.views import load_views  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="trained model folder (trained with --eval)")
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "maryRose"),
                    help="scene with a masks/ folder (one binary mask per view) for the voting pass")
    ap.add_argument("--sam", required=True, help="SAM-like proposal folder (benchmarks/sam_like.py)")
    ap.add_argument("--prompt", required=True, help="VIEW:X,Y click for the association")
    ap.add_argument("--photos", action="store_true", help="also time association over photo superpixels")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    from segmentation.pipeline import SegmentConfig, _resolve_inputs, _vote_associated
    from segmentation.voting import accumulate_votes
    from utils.masks import open_masks

    params, g, _ = load_model(args.model)
    params = ModelParams(**{**params.__dict__, "source_path": str(args.source)})
    views = load_views(params, "train")
    cams = views.cameras

    def voting_pass() -> float:
        t = time.perf_counter()
        ms = open_masks(Path(args.source) / "masks", cams, fmt="binary")
        accumulate_votes(g, ms.items(), 1, "cpu", args.threads, total=len(ms), progress=False)
        return time.perf_counter() - t

    def association(masks: str) -> float:
        cfg = SegmentConfig(model_path=args.model, masks=masks, prompt=[args.prompt] if masks else [],
                            prompt_box=[] if masks else [_box_of(args)], source_path=str(args.source),
                            backend="cpu", num_threads=args.threads, progress=False)
        t = time.perf_counter()
        inputs = _resolve_inputs(cfg, views, Path(args.model))
        _vote_associated(cfg, g, inputs, lambda s: None)
        return time.perf_counter() - t

    rows: dict[str, list[float]] = {"voting pass": [], "association (SAM)": []}
    if args.photos:
        rows["association (photos)"] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        voting_pass()  # warm-up: native build, caches
        for _ in range(args.repeat):
            rows["voting pass"].append(voting_pass())
            rows["association (SAM)"].append(association(args.sam))
            if args.photos:
                rows["association (photos)"].append(association(""))
    base = statistics.median(rows["voting pass"])
    print(f"{len(cams)} views, {len(g):,} Gaussians, {args.repeat} repetitions alternating (median s, ratio to "
          "one voting pass)")
    out = {}
    for name, ts in rows.items():
        med = statistics.median(ts)
        out[name] = {"median_s": med, "all_s": ts, "ratio": med / base}
        print(f"  {name:<22} {med:8.2f} s   x{med / base:5.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"views": len(cams), "gaussians": len(g), "rows": out}, indent=2))
    return 0


def _box_of(args: argparse.Namespace) -> str:
    """A box around the prompt view's GT mask (the photo-proposal timing needs a box prompt)."""
    import numpy as np
    from PIL import Image

    view = args.prompt.rsplit(":", 1)[0]
    m = np.asarray(Image.open(Path(args.source) / "masks" / f"{Path(view).stem}.png")) > 127
    ys, xs = np.nonzero(m)
    return f"{view}:{xs.min()},{ys.min()},{xs.max()},{ys.max()}"


if __name__ == "__main__":
    sys.exit(main())
