"""The whole segmentation job behind ``segment.py``: model + cameras + masks -> votes -> selection -> files."""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np

from arguments import Backend, flag, options
from arguments.options import Split
from segmentation import export
from segmentation.association import DEFAULT_ROUNDS, VIEW_AGREEMENT, AssociationResult
from scene.views import SPLITS, load_views
from segmentation.voting import (UNDECIDED_MODES, Selection, accumulate_votes, label_counts, make_selection,
                                 parse_views, resolve_undecided_mode, select_views)
from utils.errors import UserError
from utils.io import safe_name, save_gif, save_json, save_npy, save_png, save_summary
from utils.outputs import OutputFolder
from utils.previews import evenly_spaced
from utils.timing import Laps

SUMMARY_VERSION = 1
TOOL = "segment.py"   # the name segment.py's files are recorded under (utils.outputs)


UNDECIDED_HELP = (
    "Gaussians that no voted view saw (zero mass, e.g. hidden inside an object or outside every masked view): "
    "'keep' leaves them in deleted.ply (the paper), 'drop' removes them from both outputs, 'propagate' gives "
    "them the label of their --knn nearest voted neighbours in 3D. 'auto' (default): keep when every view "
    "has a mask and all are voted (reproduces the paper), propagate when --views subsamples or masks are "
    "missing")
_VIEWS, _MASKS, _DECIDE, _OUT, _RENDER = "model and views", "masks", "decision", "output", "rendering"
_PROMPT = "prompt (name the object in one view, in the photo file's pixel coordinates)"


@dataclass
class SegmentConfig:
    """Everything ``segment.py`` takes; each field is its flag (help, choices, aliases)."""

    model_path: str = options.model_path(required=False, group=_VIEWS)
    iteration: int = options.iteration(group=_VIEWS)
    source_path: str = options.source_path("scene folder (default: the one in MODEL/cfg_args; without it the "
                                           "cameras come from MODEL/cameras.json)", group=_VIEWS)
    images: str = options.images(group=_VIEWS)
    resolution: int = options.resolution(group=_VIEWS)
    masks: str = flag("", "mask folder, one mask image, COCO .json, or SAM automatic-mask output (<image>/<k>.png "
                      "folders: per-view proposals, named by --prompt); default: SOURCE/masks unless a prompt is "
                      "given. Masks are matched to views by image file stem", group=_MASKS)
    mask_format: Literal["auto", "binary", "ids", "sam", "sam-tracked", "coco"] = flag(
        "auto", "binary 0/255 images, id PNGs (0 = background), sam: SAM amg.py folders (proposals, ids per image), "
        "sam-tracked: the same layout with ids consistent across views (SAM2 video), COCO RLE json (default: "
        "auto-detected; SAM layouts are read as proposals)", group=_MASKS)
    labels: Optional[str] = flag(None, "ids to segment for id/SAM/COCO masks, e.g. 3,7 (COCO: category ids or "
                                 "names); one -> extracted.ply, several -> one PLY per label (default: all)",
                                 group=_MASKS)
    views: Optional[str] = flag(None, "vote on every N-th masked view (integer) or on a fraction of them (e.g. 0.1 "
                                "= 10%% of the masks, evenly spread); default all", group=_MASKS)
    split: Split = options.split("train", "views to use (default train: what the model was trained on, the --eval "
                                 "hold-out excluded)", group=_VIEWS)
    prompt: list[str] = flag(default_factory=list, help="a point on the object (repeatable); VIEW is the image file "
                             "name, X,Y its pixel column and row. With --masks SAM_DIR it picks that view's SAM "
                             "proposal; without --masks the object is cut out of the photo (GrabCut)", repeat=True,
                             metavar="VIEW:X,Y", group=_PROMPT)
    negative: list[str] = flag(default_factory=list, help="a point that is NOT the object (repeatable; on a view "
                               "with a --prompt or --prompt-box)", repeat=True, metavar="VIEW:X,Y", group=_PROMPT)
    prompt_box: list[str] = flag(default_factory=list, help="a box around the object (top-left and bottom-right "
                                 "pixels, inclusive)", repeat=True, metavar="VIEW:X0,Y0,X1,Y1", group=_PROMPT)
    proposals: str = flag("", "SAM automatic-mask output used to complete views without a mask or to associate a "
                          "prompt (default: proposals from the photos: superpixels)", metavar="SAM_DIR",
                          group=_PROMPT)
    granularity: Literal["whole", "part"] = flag(
        "whole", "which SAM proposal under a point: whole (default: the largest that covers less than half the "
        "view) or part (the smallest)", group=_PROMPT)
    complete: Optional[bool] = flag(None, "with masks for only some views, complete the others from proposals "
                                    "through the 3D model: --complete always, --no-complete never (the paper's "
                                    "rule); default: with --proposals SAM_DIR always, from the photos' superpixels "
                                    "only when one view is masked", group=_PROMPT, show_default=False)
    rounds: int = flag(DEFAULT_ROUNDS, "association rounds at most (default 4; stops earlier once the selection is "
                       "stable)", group=_PROMPT)
    allow_empty: bool = flag(False, "accept masks that are all background (the run then selects nothing) instead "
                             "of stopping", group=_DECIDE)
    everything: bool = flag(False, "every object of the scene from SAM automatic-mask output (--masks SAM_DIR): "
                            "instance ids consistent in 3D -> labels.npy, instances.json, extracted_<id>.ply, "
                            "instances.ply, masks_consistent/ (no prompt needed)", group=_PROMPT)
    min_gaussians: int = flag(100, "--everything: instances with fewer Gaussians become background (default 100)",
                              group=_PROMPT)
    pick: list[str] = flag(default_factory=list, help="on an existing --everything result in --out: write the "
                           "instances under these points as extracted.ply / deleted.ply (repeatable; no voting)",
                           repeat=True, metavar="VIEW:X,Y", group=_PROMPT)
    margin: Optional[float] = flag(None, "select a Gaussian only if (mass on its label - largest other mass) / total "
                                   "mass exceeds this; one label: (in - out) / (in + out) > margin. Default: 0 (the "
                                   "paper) when every voted mask was given, 0.2 when some were associated from "
                                   "proposals; 0.2 keeps only clear majorities (cleaner cut), negative values "
                                   "select more", group=_DECIDE)
    undecided: Literal["auto", "keep", "drop", "propagate"] = flag("auto", UNDECIDED_HELP, group=_DECIDE)
    knn: int = flag(8, "neighbours for --undecided propagate (default 8)", group=_DECIDE)
    out: str = options.out("output folder (default: MODEL/segmentation; demo: output/demo)", group=_OUT)
    previews: int = flag(4, "preview PNGs, one strip original | extracted | deleted | mask per view (default 4)",
                         group=_OUT)
    gif_frames: Optional[int] = flag(None, "frames of views.gif (default 24, and none with --previews 0; 0: no GIF)",
                                     group=_OUT)
    preview_size: int = flag(480, "longest side of a preview panel in px (default 480)", group=_OUT)
    backend: Backend = options.backend(group=_RENDER)
    num_threads: int = options.num_threads(group=_RENDER)
    device: str = options.device("device holding the Gaussians (default cpu; cuda with a CUDA backend)",
                                 group=_RENDER)
    progress: bool = options.progress(group=_OUT)
    force: bool = options.force(group=_OUT)


@dataclass
class SegmentResult:
    out: Path
    summary: dict
    selection: Selection
    votes: np.ndarray                     # [N, L+1] float64
    label_names: list[str]
    outputs: list[str] = field(default_factory=list)


# Margin of the decision when some views' masks were associated from proposals rather than given: those
# masks are the model's own guesses snapped to proposal edges, so a Gaussian needs a clearer majority
# (measured on maryRose: object-alone mIoU +0.01 with SAM-like proposals, in-scene unchanged; README).
ASSOCIATED_MARGIN = 0.2


def _check_config(cfg: SegmentConfig) -> None:
    from segmentation.prompts import GRANULARITIES

    if cfg.undecided not in UNDECIDED_MODES:
        raise UserError(f"--undecided {cfg.undecided!r}: use one of {', '.join(UNDECIDED_MODES)}")
    if cfg.margin is not None and not -1.0 < cfg.margin < 1.0:
        raise UserError(f"--margin {cfg.margin}: must lie in (-1, 1); 0 reproduces the paper")
    if cfg.granularity not in GRANULARITIES:
        raise UserError(f"--granularity {cfg.granularity!r}: use one of {', '.join(GRANULARITIES)}")
    if cfg.rounds < 1:
        raise UserError(f"--rounds {cfg.rounds}: must be >= 1")
    if cfg.knn < 1:
        raise UserError(f"--knn {cfg.knn}: must be >= 1")
    if cfg.split not in SPLITS:
        raise UserError(f"--split {cfg.split!r}: use one of {', '.join(SPLITS)}")
    if cfg.previews < 0 or (cfg.gif_frames or 0) < 0 or cfg.preview_size < 16:
        raise UserError("--previews and --gif-frames must be >= 0 and --preview-size >= 16")


def run_segmentation(cfg: SegmentConfig, log: Callable[[str], None] = lambda s: None) -> SegmentResult:
    """Run the job; every user-fixable problem raises a one-line UserError. Outputs are staged and swapped
    into ``cfg.out`` at the end (utils.outputs): a failed or interrupted run leaves the folder as it was."""
    from scene.model_folder import find_iteration

    t_start = time.perf_counter()
    _check_config(cfg)
    model_path = Path(cfg.model_path)
    iteration = find_iteration(model_path, None if cfg.iteration < 0 else cfg.iteration)
    out, inputs = output_folder(cfg)
    with OutputFolder(out, TOOL, inputs, cfg.force) as folder:
        result = _segment(cfg, model_path, iteration, folder.dir, t_start, log)
        folder.commit()
    result.out = out
    return result


def output_folder(cfg: SegmentConfig) -> tuple[Path, list]:
    """(where the job writes, what it reads): ``--out`` (default MODEL/segmentation) and the inputs that
    utils.outputs keeps it out of (model, scene, masks, proposals). view.py's export uses the same pair."""
    from scene.model_folder import model_inputs
    from scene.model_sources import model_output_dir

    model_path = Path(cfg.model_path)
    out = Path(cfg.out) if cfg.out else model_output_dir(model_path) / "segmentation"
    inputs = model_inputs(model_path, cfg.source_path)
    masks = cfg.masks or (str(inputs[1] / "masks") if len(inputs) > 1 else "")
    return out, [*inputs, masks, cfg.proposals]


def _segment(cfg: SegmentConfig, model_path: Path, iteration: int, out: Path, t_start: float,
             log: Callable[[str], None]) -> SegmentResult:
    """The job, writing into ``out`` (the staging folder)."""
    from scene.model_folder import load_model

    laps = Laps()
    lap, timings = laps.lap, laps.timings
    view_spec = parse_views(cfg.views)

    t = time.perf_counter()
    params, gaussians, iteration = load_model(model_path, iteration, device=cfg.device)
    n = len(gaussians)
    log(f"model    {model_path} (iteration {iteration}, {n:,} Gaussians)")
    t = lap("load_model", t)

    views = load_views(params, cfg.split, cfg.source_path, cfg.images, cfg.resolution)
    cam0 = views.cameras[0]
    log(f"views    {len(views.cameras)} {cfg.split} views from "
        f"{views.source_path if views.cameras_from == 'source' else 'cameras.json'} ({cam0.width}x{cam0.height})")
    t = lap("load_cameras", t)

    inputs = _resolve_inputs(cfg, views, model_path)
    t = lap("open_masks", t)
    if inputs.mode == "everything":
        return _segment_everything(cfg, model_path, iteration, params, gaussians, views, inputs, out, laps, t,
                                   t_start, log)
    if inputs.mode == "masks":
        votes, voted, mask_items, used = _vote_given_masks(cfg, gaussians, inputs, view_spec, log)
        t = lap("vote", t)
        all_used = not inputs.labels.skipped_views and len(used) == len(inputs.labels)
        association = None
    else:
        votes, voted, mask_items, association = _vote_associated(cfg, gaussians, inputs, log)
        t = lap("vote", t)
        used = mask_items
        all_used = False  # --undecided auto: associated selections take their hidden interior (propagate)
    label_names, label_ids, masks_path = inputs.label_names, inputs.label_ids, inputs.path
    num_labels = len(label_names)
    _check_coverage(cfg, inputs, votes, len(voted), views)

    mode = resolve_undecided_mode(cfg.undecided, all_used)
    margin = cfg.margin if cfg.margin is not None else (0.0 if association is None else ASSOCIATED_MARGIN)
    xyz = gaussians.get_xyz.detach().cpu().numpy()
    selection = make_selection(votes, xyz, margin, mode, cfg.knn)
    counts = label_counts(selection.labels, num_labels)
    t = lap("decide", t)
    empty = [name for name, c in zip(label_names, counts[2:]) if c == 0]
    if empty and len(empty) == num_labels and not cfg.allow_empty:
        raise UserError(f"{masks_path}: no Gaussian was selected (the masks cover no Gaussian's majority mass); "
                        "check that the masks show the object, or pass --allow-empty to write the empty result")
    for name in empty:
        warnings.warn(f"{masks_path}: label {name!r} got no Gaussian (its masks cover no Gaussian's majority "
                      "mass); check the masks of that label", stacklevel=2)

    # PLYs first: the largest files, the likeliest to fail (disk full)
    written = export.write_scenes(out, gaussians, selection, label_names)
    save_npy(out / "labels.npy", selection.labels)
    save_npy(out / "votes.npy", votes)
    outputs = [*written, "labels.npy", "votes.npy"]
    t = lap("write", t)

    if association is not None:
        outputs += _write_associated_masks(out, mask_items, label_ids)
    outputs += _write_previews(cfg, out, gaussians, selection, views, mask_items, used, params.white_background,
                               log)
    t = lap("previews", t)

    n_und = selection.num_undecided
    summary = {
        "version": SUMMARY_VERSION,
        "model_path": str(model_path),
        "iteration": int(iteration),
        "num_gaussians": n,
        "cameras": {"from": views.cameras_from, "source_path": views.source_path, "split": cfg.split,
                    "num_views": len(views.cameras), "width": cam0.width, "height": cam0.height},
        "model_frame": views.model_frame,   # None: Inria folder; else the trainer and the transform applied
        "masks": inputs.summary(),
        "labels": {"ids": [i if isinstance(i, int) else str(i) for i in label_ids], "names": label_names,
                   "values": "labels.npy: -1 undecided, 0 background, l >= 1 = names[l - 1]"},
        "views": {"spec": cfg.views or "all", "masked": inputs.masked_views, "used": len(voted),
                  "used_names": voted},
        "parameters": {"margin": margin, "margin_requested": cfg.margin, "undecided": cfg.undecided,
                       "undecided_resolved": mode,
                       "knn": cfg.knn, "backend": cfg.backend, "resolution": cfg.resolution or params.resolution,
                       "mask_format": cfg.mask_format, "requested_labels": cfg.labels},
        "gaussians": {
            "undecided": n_und,
            "propagated": selection.num_propagated,
            "background": counts[1],
            "per_label": {name: c for name, c in zip(label_names, counts[2:])},
            "extracted": int(selection.extracted_mask().sum()),
            "deleted_scene": int(selection.deleted_mask().sum()),
            "dropped": n_und if mode == "drop" else 0,
        },
        "association": None if association is None else _association_summary(association, inputs),
        "files": written,
        "timings_s": {},
        "outputs": outputs + ["summary.json"],
    }
    timings["total"] = time.perf_counter() - t_start
    summary = save_summary(out / "summary.json", summary, timings, SUMMARY_VERSION)
    return SegmentResult(out, summary, selection, votes, label_names, summary["outputs"])


# The default completes from the photos' superpixels only up to this many masked views. Measured on maryRose
# (report/REPORT.md, benchmarks/seg_quality.py, held-out mIoU object-alone / in-scene): 1 mask 0.944 / 0.819
# plain, 0.939 / 0.929 completed; 3 masks 0.941 / 0.930 vs 0.938 / 0.929; 5 masks 0.926 / 0.942 vs 0.924 /
# 0.931. SAM proposals give 0.937-0.939 / 0.938 at K = 1, 3, 5, so --proposals always completes by default.
PHOTO_COMPLETION_MAX_MASKED = 1


@dataclass
class Inputs:
    """What names the object: label masks (possibly of a few views) and/or prompts, plus the proposals that
    complete the other views. ``mode`` is "masks" (plain voting of given masks, the paper) or "associate"."""

    mode: str
    path: Path                                   # what the user gave (masks, proposals or "<prompt>")
    labels: Any = None                           # LabelMasks or None
    proposals: Any = None                        # ProposalMasks (SAM or photos) or None
    prompts: list = field(default_factory=list)  # segmentation.prompts.Prompt
    label_names: list[str] = field(default_factory=list)
    label_ids: list = field(default_factory=list)
    fmt: str = ""
    seeds: list[dict] = field(default_factory=list)  # what each prompt chose (summary)
    coverage: Any = None                             # CoverageStats of the masks read (label masks)
    other_views: list[str] = field(default_factory=list)  # views outside the split (prompts there are refused)

    @property
    def masked_views(self) -> int:
        return len(self.labels) if self.labels is not None else len(self.prompts)

    def summary(self) -> dict:
        out: dict[str, Any] = {"path": str(self.path), "format": self.fmt, "mode": self.mode}
        if self.labels is not None:
            out.update({"matched_views": len(self.labels), "views_without_mask": len(self.labels.skipped_views),
                        "unmatched_mask_files": len(self.labels.unmatched_files)})
        if self.proposals is not None:
            out["proposals"] = {"path": str(self.proposals.path), "format": self.proposals.fmt,
                                "views": len(self.proposals)}
        if self.prompts:
            out["prompts"] = self.seeds
        return out


def _resolve_inputs(cfg: SegmentConfig, views: Any, model_path: Path) -> Inputs:
    """Sort out what the flags name (rules in segment.py --help and the README); one-line errors."""
    from segmentation.prompts import parse_prompts
    from utils.masks import LabelMasks, ProposalMasks, open_mask_source
    from utils.masks.photo import PhotoProposals

    prompts = parse_prompts(cfg.prompt, cfg.negative, cfg.prompt_box)
    source = None
    if cfg.masks:
        source = open_mask_source(cfg.masks, views.cameras, cfg.mask_format, cfg.labels, views.other_names)
    elif not prompts:
        default = Path(views.source_path) / "masks" if views.source_path else None
        if (default is None or not default.exists()) and views.mask_dir:
            default = Path(views.mask_dir)  # per-frame masks named by the scene (nerfstudio's mask_path)
        if default is None or not default.exists():
            raise UserError(f"{model_path}: no --masks given and no masks/ folder in the source; pass --masks with "
                            "the mask folder, SAM folder or COCO json, or name the object with --prompt VIEW:X,Y")
        source = open_mask_source(default, views.cameras, cfg.mask_format, cfg.labels, views.other_names)
    proposals = None
    if cfg.proposals:
        proposals = open_mask_source(cfg.proposals, views.cameras, "auto", None, views.other_names)
        if not isinstance(proposals, ProposalMasks):
            raise UserError(f"{cfg.proposals}: --proposals takes SAM automatic-mask output (<image>/<k>.png "
                            "folders); label masks go to --masks")
    if isinstance(source, ProposalMasks):
        if proposals is not None:
            raise UserError(f"{cfg.masks}: SAM proposals given twice (--masks and --proposals); pass one")
        proposals, source = source, None
    if cfg.everything:
        if prompts or source is not None or proposals is None:
            raise UserError(f"{cfg.masks or model_path}: --everything finds every object in SAM automatic-mask "
                            "output: pass --masks SAM_DIR (<image>/<k>.png folders), without prompts or label masks")
        return Inputs("everything", proposals.path, None, proposals, [], [], [], proposals.fmt,
                      other_views=list(views.other_names))
    if prompts:
        if source is not None:
            raise UserError(f"{source.path}: --prompt names the object, and so do these label masks; pass "
                            "either the masks or a prompt (with SAM proposals in --masks, or none: the photos)")
        if proposals is None:
            proposals = PhotoProposals(views.cameras, views.has_images)
        return Inputs("associate", Path(cfg.masks or cfg.proposals or "<photos>"), None, proposals, prompts,
                      ["object"], [1], proposals.fmt, other_views=list(views.other_names))
    if source is None:
        raise UserError(f"{proposals.path}: SAM automatic-mask output numbers its masks per image, so it names no "
                        "object by itself; add --prompt VIEW:X,Y (a click on the object in one photo) or "
                        "--prompt-box VIEW:X0,Y0,X1,Y1")
    assert isinstance(source, LabelMasks)
    label_names = source.label_names        # resolves --labels now: a bad id fails before any work
    if not label_names:
        raise UserError(f"{source.path}: the masks hold no label (all background); check the mask folder")
    if cfg.labels and source.fmt == "ids":
        _check_ids_present(source, cfg.labels)
    missing = bool(source.skipped_views)
    complete = missing and cfg.views is None and (
        cfg.complete if cfg.complete is not None else
        proposals is not None or len(source) <= PHOTO_COMPLETION_MAX_MASKED)
    if complete and proposals is None:
        if views.has_images:
            proposals = PhotoProposals(views.cameras, True)
        else:
            warnings.warn(f"{source.path}: {len(source.skipped_views)} views have no mask and no photos or "
                          "--proposals can complete them (cameras from cameras.json); voting the masked views "
                          "only", stacklevel=3)
            complete = False
    return Inputs("associate" if complete else "masks", source.path, source, proposals if complete else None,
                  [], label_names, source.label_ids, source.fmt)


def _vote_given_masks(cfg: SegmentConfig, gaussians: Any, inputs: Inputs, view_spec: Any,
                      log: Callable[[str], None]) -> tuple[np.ndarray, list[str], Any, Any]:
    """The paper's rule: vote every (picked) masked view."""
    mask_set = inputs.labels
    num_labels = len(inputs.label_names)
    picked = select_views(len(mask_set), view_spec)
    used = mask_set.subset(picked)
    names = inputs.label_names
    log(f"masks    {mask_set.path} ({mask_set.fmt}, {num_labels} label{'s' if num_labels > 1 else ''}: "
        f"{', '.join(names[:8])}{'...' if num_labels > 8 else ''}); {len(mask_set)} views have a mask"
        + (f", {len(mask_set.skipped_views)} have none" if mask_set.skipped_views else "")
        + (", not completed (--complete: from the photos; --proposals SAM_DIR: from SAM masks)"
           if mask_set.skipped_views and cfg.complete is None and cfg.views is None else "")
        + (f"; voting on {len(used)} (--views {cfg.views})" if len(used) != len(mask_set) else ""))
    votes, voted = accumulate_votes(gaussians, used.items(), num_labels, cfg.backend, cfg.num_threads,
                                    total=len(used), progress=cfg.progress)
    inputs.coverage = used.stats  # the voted pass's coverage (degenerate-mask checks)
    return votes, voted, mask_set, used


class LabelMapSet:
    """(camera, label map) pairs held in memory, with the streamed set's ``items``/``subset`` (previews)."""

    def __init__(self, pairs: list[tuple[Any, np.ndarray]]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def cameras(self) -> list:
        return [c for c, _ in self.pairs]

    def items(self):  # -> Iterator[tuple[Camera, np.ndarray]]
        return iter(self.pairs)

    def subset(self, indices) -> "LabelMapSet":
        return LabelMapSet([self.pairs[i] for i in indices])


def _vote_associated(cfg: SegmentConfig, gaussians: Any, inputs: Inputs, log: Callable[[str], None]
                     ) -> tuple[np.ndarray, list[str], LabelMapSet, AssociationResult]:
    """Seeds (prompts' first masks, or the given masks) + association of every other view's proposals."""
    from segmentation.association import associate, atom_label_map, build_atom_views, seed_votes_of

    num_labels = len(inputs.label_names)
    if inputs.prompts:
        candidates = _prompt_candidates(inputs)
        seed_names: set[str] = set()  # the prompt's view is associated too (its first mask only starts)
    else:
        seeds = list(inputs.labels.items())
        inputs.coverage = inputs.labels.stats
        seed_names = {cam.image_name for cam, _ in seeds}
        log(f"masks    {inputs.labels.path} ({inputs.labels.fmt}): {len(seeds)} views have a mask, "
            f"{len(inputs.labels.skipped_views)} are completed from {inputs.proposals.fmt} proposals "
            "(--no-complete: vote the masked views only)")
    atom_views, t_atoms = build_atom_views(gaussians, inputs.proposals.items(), seed_names, cfg.backend,
                                           cfg.num_threads, cfg.progress, total=len(inputs.proposals))
    log(f"proposals {inputs.proposals.path} ({inputs.proposals.fmt}): {len(atom_views)} views to associate "
        f"({sum(len(a.area) for a in atom_views) / max(1, len(atom_views)):.0f} atoms per view, {t_atoms:.1f} s)")
    if inputs.prompts:
        seeds = _choose_seeds(cfg, gaussians, inputs, candidates, atom_views, log)
    votes0 = seed_votes_of(gaussians, seeds, num_labels, cfg.backend, cfg.num_threads)
    margin = cfg.margin if cfg.margin is not None else ASSOCIATED_MARGIN
    result = associate(gaussians, votes0, atom_views, num_labels, margin, cfg.rounds,
                       keep_seeds=not inputs.prompts, log=lambda m: log("         " + m))
    result.seconds_atoms = t_atoms
    result.atom_bytes = sum(a.nbytes for a in atom_views)
    if inputs.prompts and not result.used_views:
        raise UserError(f"{inputs.proposals.path}: no view confirms the prompt's first mask (in none of "
                        f"{len(atom_views)} views do its Gaussians match a mask, IoU >= {VIEW_AGREEMENT:.2f}): the "
                        "model may be undertrained (few Gaussians, blurry renders) or the prompt missed the object; "
                        "try --prompt-box VIEW:X0,Y0,X1,Y1, another view, or --masks")
    pairs = [] if inputs.prompts else list(seeds)
    by_name = {a.name: a for a in atom_views}
    for name in result.used_views:
        av = by_name[name]
        pairs.append((next(c for c in inputs.proposals.cameras if c.image_name == name),
                      atom_label_map(av, result.decisions[name].atom_label)))
    order = {c.image_name: i for i, c in enumerate(inputs.proposals.cameras)}
    pairs.sort(key=lambda p: order.get(p[0].image_name, -1))
    return result.votes, [c.image_name for c, _ in pairs], LabelMapSet(pairs), result


def _prompt_candidates(inputs: Inputs) -> list[list]:
    """Each prompt's candidate first masks (SAM proposals under it, or GrabCut on the photo)."""
    from segmentation.prompts import file_size, find_view, prompt_in_view, seed_candidates, seed_from_photo
    from utils.masks import SamProposals
    from utils.masks.photo import view_rgb

    props = inputs.proposals
    out = []
    for prompt in inputs.prompts:
        cam = find_view(prompt, props.cameras, inputs.other_views)
        if isinstance(props, SamProposals):
            vp = props.view(cam.image_name)
            pts, neg, box = prompt_in_view(prompt, cam, file_size(cam, vp.file_size))
            out.append(seed_candidates(prompt, cam, vp, pts, neg, box))
        else:
            pts, neg, box = prompt_in_view(prompt, cam, file_size(cam))
            out.append([seed_from_photo(prompt, cam, view_rgb(cam), pts, neg, box)])
    return out


def _choose_seeds(cfg: SegmentConfig, gaussians: Any, inputs: Inputs, candidates: list[list], atom_views: list,
                  log: Callable[[str], None]) -> list[tuple[Any, np.ndarray]]:
    """One seed per prompt: the candidate the other views confirm (segmentation.prompts.choose_seed)."""
    from segmentation.association import consistency, nearest_views, seed_votes_of
    from segmentation.prompts import choose_seed

    cameras = {c.image_name: c for c in inputs.proposals.cameras}
    margin = cfg.margin if cfg.margin is not None else ASSOCIATED_MARGIN
    seeds = []
    for prompt, cands in zip(inputs.prompts, candidates):
        near = nearest_views(cands[0].camera, atom_views, cameras)
        scores = [1.0] if len(cands) == 1 else [
            consistency(gaussians, seed_votes_of(gaussians, [(c.camera, c.mask.astype(np.int32))], 1, cfg.backend,
                                                 cfg.num_threads), atom_views, near, margin) for c in cands]
        seed, why = choose_seed(cands, scores, cfg.granularity)
        log(f"prompt   {prompt.describe()} -> {why}")
        inputs.seeds.append({"prompt": prompt.describe(), "view": seed.camera.image_name, "chose": why,
                             "pixels": int(seed.mask.sum()),
                             "candidates": [{"what": c.description, "pixels": int(c.mask.sum()),
                                             "consistency": round(q, 4)} for c, q in zip(cands, scores)]})
        seeds.append((seed.camera, seed.mask.astype(np.int32)))
    return seeds


def _association_summary(result: AssociationResult, inputs: Inputs) -> dict:
    from segmentation.association import ATOM_MAJORITY, PARTITION_MAJORITY, STOP_FRACTION

    majority = PARTITION_MAJORITY if inputs.proposals.fmt == "photo" else ATOM_MAJORITY
    return {
        "rule": {"atom_majority": majority, "view_agreement": VIEW_AGREEMENT, "stop_fraction": STOP_FRACTION},
        "proposals": inputs.proposals.fmt,
        "views_associated": result.used_views,
        "views_rejected": {n: round(d.agreement, 4) for n, d in result.decisions.items() if not d.used},
        "rounds": [vars(r) for r in result.rounds],
        "seconds_atoms": round(result.seconds_atoms, 4),
        "atom_megabytes": round(result.atom_bytes / 2 ** 20, 2),
    }


def _write_associated_masks(out: Path, items: LabelMapSet, label_ids: list, folder: str = "masks_associated"
                            ) -> list[str]:
    """<folder>/<view>.png for every voted view: 0/255 for one label, else the label ids (or indices) as an
    8/16-bit PNG, readable back with --masks (--mask-format ids)."""
    written = []
    ints = all(isinstance(i, int) and 0 < i < 65536 for i in label_ids)
    for cam, lm in items.items():
        name = f"{folder}/{safe_name(Path(cam.image_name).name)}.png"  # matched back by image stem
        if len(label_ids) == 1:
            img = (lm > 0).astype(np.uint8) * 255
        else:
            lut = np.asarray([0] + [int(i) for i in label_ids] if ints else range(len(label_ids) + 1))
            img = lut[lm].astype(np.uint8 if lut.max() < 256 else np.uint16)
        save_png(out / name, img)
        written.append(name)
    return written


def _check_coverage(cfg: SegmentConfig, inputs: Inputs, votes: np.ndarray, n_voted: int, views: Any) -> None:
    """Degenerate masks: all background -> error (unless --allow-empty); everything -> warning."""
    stats = inputs.coverage
    if stats is not None and stats.all_empty and not cfg.allow_empty:
        raise UserError(f"{inputs.path}: every matched mask is empty (no object pixel in {stats.views} views); "
                        "check the masks (0 = background), or pass --allow-empty")
    if stats is not None and stats.all_full:
        warnings.warn(f"{inputs.path}: the masks cover at least 95 % of every view ({stats.views} views): they select "
                      "the whole scene; check that they are object masks, not inverted or all white", stacklevel=3)
    if not (votes.sum(axis=1) > 0).any():
        raise UserError(f"{inputs.path}: no Gaussian is visible in any of the {n_voted} voted views; check that "
                        f"the model, the cameras ({views.cameras_from}) and the masks belong together")


def _check_ids_present(mask_set, requested: str) -> None:
    """Id masks name no labels up front: a mistyped --labels id would silently select nothing, so check
    that every requested id occurs in some mask (one extra read of the masks, cheap next to voting)."""
    seen = np.zeros(mask_set.num_labels + 1, dtype=bool)
    with warnings.catch_warnings():  # the real pass warns about mask problems
        warnings.simplefilter("ignore")
        for _, lm in mask_set.items():
            seen |= np.bincount(lm.ravel(), minlength=seen.size)[: seen.size] > 0
    missing = [name for name, s in zip(mask_set.label_names, seen[1:]) if not s]
    if missing:
        raise UserError(f"{mask_set.path}: --labels {requested}: id {missing[0]} occurs in no mask of the "
                        f"{len(mask_set)} matched views; pass ids that the masks contain (0/255 binary masks "
                        "need no --labels)")


def _write_previews(cfg: SegmentConfig, out: Path, gaussians, selection: Selection, views, mask_set, used,
                    white_background: bool, log: Callable[[str], None] = lambda s: None) -> list[str]:
    """preview_<view>.png for a few voted views and views.gif through all masked views.

    Each view is rendered once (a view in both the PNGs and the GIF is shrunk for the GIF), from models
    whose activations are computed once (export.FrozenGaussians)."""
    gif_frames = gif_frame_count(cfg)
    if cfg.previews == 0 and gif_frames == 0:
        return []
    from tqdm import tqdm

    png_idx = evenly_spaced(len(used), cfg.previews)
    png_views = used.subset(png_idx)
    position = {c.image_name: i for i, c in enumerate(mask_set.cameras)}
    gif_idx = _snap(evenly_spaced(len(mask_set), gif_frames),
                    [position[c.image_name] for c in png_views.cameras if c.image_name in position])
    gif_views = mask_set.subset(gif_idx)
    names = {c.image_name for c in png_views.cameras} | {c.image_name for c in gif_views.cameras}
    renders = 2 if views.has_images else 3
    log(f"previews {len(png_idx)} PNG strips, {len(gif_idx)} GIF frames: {len(names)} views x {renders} renders of "
        f"{len(gaussians):,} Gaussians (--previews 0 skips this)")
    bg = (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)
    ctx = export.PreviewContext.of(gaussians, selection.extracted_mask(), selection.deleted_mask(), bg,
                                   views.has_images, cfg.backend, cfg.num_threads)
    bar = tqdm(total=len(names), desc=f"previews ({renders} renders/view)", unit="view",
               disable=None if cfg.progress else True, leave=False)
    with warnings.catch_warnings():  # mask warnings were given while voting; a few views would repeat them
        warnings.simplefilter("ignore")
        written = _preview_files(cfg, out, ctx, png_views, gif_views, bar)
    bar.close()
    return written


DEFAULT_GIF_FRAMES = 24


def gif_frame_count(cfg: SegmentConfig) -> int:
    """--gif-frames as given, else 24, or 0 with --previews 0 (which then skips every preview render: at 1 M+
    Gaussians the GIF's 24 views cost as much as voting 15-20 views)."""
    if cfg.gif_frames is not None:
        return cfg.gif_frames
    return 0 if cfg.previews == 0 else DEFAULT_GIF_FRAMES


def _snap(frames: list[int], wanted: list[int]) -> list[int]:
    """Evenly spaced GIF frame indices with each ``wanted`` index (the PNG views) replacing the nearest
    frame not already wanted: the same number of frames, and the PNG views are rendered for both."""
    out = list(frames)
    keep: set[int] = set()
    for w in wanted:
        if w in out:
            keep.add(w)
            continue
        free = [i for i, f in enumerate(out) if f not in keep]
        if not free:
            break
        j = min(free, key=lambda i: abs(out[i] - w))
        out[j] = w
        keep.add(w)
    return sorted(set(out))


def _preview_files(cfg: SegmentConfig, out: Path, ctx, png_views, gif_views, bar) -> list[str]:
    written = []
    gif_side = min(cfg.preview_size, 256)
    in_gif = {c.image_name for c in gif_views.cameras}
    shared: dict[str, export.PreviewPanels] = {}  # GIF-size panels of views already rendered for a PNG
    for cam, lm in png_views.items():
        panels = export.render_panels(ctx, cam, cfg.preview_size)
        name = f"preview_{safe_name(cam.image_name)}.png"
        save_png(out / name, export.compose_row(panels, cam, lm, cfg.preview_size >= 200))
        written.append(name)
        if cam.image_name in in_gif:
            shared[cam.image_name] = export.shrink_panels(panels, cam, gif_side)
        bar.update()
    if len(gif_views):
        frames = []
        for cam, lm in gif_views.items():
            panels = shared.pop(cam.image_name, None)
            if panels is None:
                panels = export.render_panels(ctx, cam, gif_side)
                bar.update()
            frames.append(export.compose_row(panels, cam, lm, gif_side >= 200))
        h = min(f.shape[0] for f in frames)
        w = min(f.shape[1] for f in frames)
        save_gif(out / "views.gif", [f[:h, :w] for f in frames])
        written.append("views.gif")
    return written


def format_summary(summary: dict, indent: str = "") -> str:
    """The lines segment.py prints after a run (shared by the CLI and the demo)."""
    g = summary["gaussians"]
    if summary.get("mode") == "everything":
        e = summary["everything"]
        per = ", ".join(f"{k}: {v:,}" for k, v in list(g["per_label"].items())[:8])
        return "\n".join(indent + s for s in [
            f"{e['instances']} instances ({per}{', ...' if e['instances'] > 8 else ''}); background "
            f"{g['background']:,}, undecided {g['undecided']:,} of {summary['num_gaussians']:,} Gaussians",
            f"instances from {e['proposals']:,} SAM masks in {e['seconds']['total']:.2f} s after the atom votes "
            f"({e['seconds_atoms']:.1f} s); total {summary['timings_s']['total']:.1f} s"])
    n = summary["num_gaussians"]
    t = summary["timings_s"]
    lines = []
    per = ", ".join(f"{name} {c:,}" for name, c in g["per_label"].items())
    per = f" ({per})" if len(g["per_label"]) > 1 else ""
    lines.append(f"selected {g['extracted']:,} of {n:,} Gaussians{per}; deleted scene keeps "
                 f"{g['deleted_scene']:,}")
    mode = summary["parameters"]["undecided_resolved"]
    if g["undecided"]:
        what = {"keep": "kept in deleted.ply (paper's rule; --undecided propagate assigns them from their "
                        "nearest voted neighbours)",
                "drop": "dropped from both scenes",
                "propagate": f"labelled from their {summary['parameters']['knn']} nearest voted neighbours"}[mode]
        lines.append(f"{g['undecided']:,} Gaussians were seen by no voted view: {what}")
    lines.append(f"voted {summary['views']['used']} views in {t.get('vote', 0):.2f} s; total {t['total']:.1f} s "
                 f"(load {t.get('load_model', 0):.2f}, write {t.get('write', 0):.2f}, "
                 f"previews {t.get('previews', 0):.2f})")
    return "\n".join(indent + s for s in lines)


# ---------------------------------------------------------------------------------------------------------
# --everything and --pick
# ---------------------------------------------------------------------------------------------------------
def _segment_everything(cfg: SegmentConfig, model_path: Path, iteration: int, params: Any, gaussians: Any,
                        views: Any, inputs: Inputs, out: Path, laps: Laps, t: float, t_start: float,
                        log: Callable[[str], None]) -> SegmentResult:
    """Every object from SAM proposals (segmentation/everything.py) and its files."""
    from segmentation.association import build_atom_views
    from segmentation.everything import find_instances

    lap, timings = laps.lap, laps.timings
    props = inputs.proposals
    ids: dict[str, list[int]] = {}

    def items():  # keeps each view's SAM ids for instances.json
        for cam, vp in props.items():
            ids[cam.image_name] = list(vp.ids)
            yield cam, vp

    atom_views, t_atoms = build_atom_views(gaussians, items(), set(), cfg.backend, cfg.num_threads, cfg.progress,
                                           total=len(props))
    log(f"proposals {props.path} ({props.fmt}): {len(atom_views)} views, "
        f"{sum(a.member.shape[1] for a in atom_views):,} masks, "
        f"{sum(len(a.area) for a in atom_views) / max(1, len(atom_views)):.0f} atoms per view ({t_atoms:.1f} s)")
    t = lap("vote", t)
    res = find_instances(gaussians, atom_views, {c.image_name: c for c in views.cameras}, ids, cfg.min_gaussians,
                         cfg.granularity, log=lambda m: log("instances " + m))
    t = lap("instances", t)
    if not res.instances:
        raise UserError(f"{props.path}: no object was proposed consistently in 3 or more views; check that the SAM "
                        "folder belongs to these views (names, sizes)")
    n = len(gaussians)
    names = [str(i.id) for i in res.instances]
    n_und = int((res.labels < 0).sum())
    selection = Selection(res.labels, "keep", n_und, 0)
    written = export.write_scenes(out, gaussians, selection, names, deleted_name="background.ply",
                                  file_names=[f"extracted_{i}.ply" for i in names])
    export.save_ply_coloured(out / "instances.ply", gaussians, res.labels)
    save_npy(out / "labels.npy", res.labels)
    save_npy(out / "votes.npy", res.votes)
    save_json(out / "instances.json", {"instances": [i.to_json() for i in res.instances],
                                       "values": "labels.npy: -1 undecided, 0 background, i >= 1 instance i"})
    outputs = [*written, "instances.ply", "labels.npy", "votes.npy", "instances.json"]
    t = lap("write", t)
    consistent = _consistent_masks(cfg, gaussians, res.labels, len(names), views.cameras)
    outputs += _write_associated_masks(out, consistent, list(range(1, len(names) + 1)), "masks_consistent")
    t = lap("masks_consistent", t)
    outputs += _write_previews(cfg, out, gaussians, selection, views, consistent, consistent, params.white_background,
                               log)
    t = lap("previews", t)
    counts = np.bincount(res.labels[res.labels > 0], minlength=len(names) + 1)
    summary = {
        "version": SUMMARY_VERSION, "mode": "everything", "model_path": str(model_path), "iteration": int(iteration),
        "num_gaussians": n,
        "cameras": {"from": views.cameras_from, "source_path": views.source_path, "split": cfg.split,
                    "num_views": len(views.cameras)},
        "model_frame": views.model_frame,
        "masks": inputs.summary(),
        "labels": {"ids": list(range(1, len(names) + 1)), "names": names,
                   "values": "labels.npy: -1 undecided, 0 background, i >= 1 instance i (instances.json)"},
        "everything": {"proposals": res.proposals, "matches": res.matches, "instances": len(res.instances),
                       "dropped_unstable_groups": res.dropped_unstable, "merged_parts": res.merged_parts,
                       "dropped_small": res.dropped_small, "granularity": cfg.granularity,
                       "min_gaussians": cfg.min_gaussians, "seconds": res.seconds,
                       "seconds_atoms": round(t_atoms, 4)},
        "gaussians": {"undecided": n_und, "background": int((res.labels == 0).sum()),
                      "per_label": {nm: int(c) for nm, c in zip(names, counts[1:])},
                      "extracted": int((res.labels > 0).sum())},
        "files": written,
        "timings_s": {},
        "outputs": outputs + ["summary.json"],
    }
    timings["total"] = time.perf_counter() - t_start
    summary = save_summary(out / "summary.json", summary, timings, SUMMARY_VERSION)
    return SegmentResult(out, summary, selection, res.votes, names, summary["outputs"])


def _consistent_masks(cfg: SegmentConfig, gaussians: Any, labels: np.ndarray, num: int, cameras: list
                      ) -> LabelMapSet:
    """Per view, the instance ids rendered in the scene (occlusion-aware, like SAM sees them)."""
    from tqdm import tqdm

    from segmentation.labels import render_label_map

    pairs = []
    for cam in tqdm(cameras, desc="masks_consistent", unit="view", disable=None if cfg.progress else True,
                    leave=False):
        pairs.append((cam, render_label_map(cam, gaussians, labels, num, cfg.backend, cfg.num_threads)))
    return LabelMapSet(pairs)


@dataclass
class PickResult:
    """What ``--pick`` wrote beside an --everything result (pick.json holds the same)."""

    out: Path
    picks: list[str]
    instances: list[int]
    extracted: int
    deleted: int


def run_pick(cfg: SegmentConfig, log: Callable[[str], None] = lambda s: None) -> PickResult:
    """``--pick VIEW:X,Y``: the instances under the points, from an existing --everything result in ``cfg.out``
    (its labels.npy), written as extracted.ply / deleted.ply (+ pick.json) beside it; no voting."""
    from scene.model_folder import find_iteration, load_model, model_inputs
    from scene.model_sources import model_output_dir
    from segmentation.labels import render_label_map
    from segmentation.prompts import file_size, find_view, parse_prompts, prompt_in_view

    model_path = Path(cfg.model_path)
    out = Path(cfg.out) if cfg.out else model_output_dir(model_path) / "segmentation"
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        labels = np.load(out / "labels.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{out}: no readable --everything result here ({type(e).__name__}); run segment.py -m MODEL "
                        "--masks SAM_DIR --everything --out DIR first, then --pick with the same --out") from None
    if summary.get("mode") != "everything":
        raise UserError(f"{out}/summary.json: not an --everything result; --pick picks instances of one")
    prompts = parse_prompts(cfg.pick)
    iteration = find_iteration(model_path, summary.get("iteration"))
    params, gaussians, _ = load_model(model_path, iteration, device=cfg.device)
    if labels.shape != (len(gaussians),):
        raise UserError(f"{out}/labels.npy: {labels.shape[0]} labels for {len(gaussians)} Gaussians; re-run "
                        "--everything for this model")
    views = load_views(params, cfg.split, cfg.source_path, cfg.images, cfg.resolution)
    num = int(labels.max(initial=0))
    picked: list[int] = []
    for prompt in prompts:
        cam = find_view(prompt, views.cameras, views.other_names)
        pts, _, _ = prompt_in_view(prompt, cam, file_size(cam))
        lm = render_label_map(cam, gaussians, labels, num, cfg.backend, cfg.num_threads)
        for x, y in pts:
            i = int(lm[min(cam.height - 1, int(y)), min(cam.width - 1, int(x))])
            if i <= 0:
                raise UserError(f"--pick {prompt.view}:...: no instance at ({x:.0f}, {y:.0f}) in view "
                                f"{cam.image_name} (background there); pick a point on an object")
            if i not in picked:
                picked.append(i)
    log(f"picked instances {', '.join(map(str, picked))}")
    keep = np.isin(labels, picked)
    inputs = model_inputs(model_path, cfg.source_path)
    with OutputFolder(out, TOOL, inputs, cfg.force, keep_previous=True) as folder:
        gaussians.subset(keep).save_ply(folder.path("extracted.ply"))
        gaussians.subset(~keep).save_ply(folder.path("deleted.ply"))
        info = {"picks": cfg.pick, "instances": picked, "extracted": int(keep.sum()), "deleted": int((~keep).sum())}
        save_json(folder.path("pick.json"), info)
        folder.commit()
    return PickResult(out, **info)
