"""REPORT.md from reproduce.py's results.json, and README.md's generated block from a REPORT.md.

Every table names the model, protocol, K and the command it came from. The block between
``<!-- readme:begin -->`` and ``<!-- readme:end -->`` of REPORT.md holds the headline tables;
``update_readme`` copies it between ``<!-- report:begin -->`` and ``<!-- report:end -->`` in README.md.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from utils.errors import UserError

README_BEGIN, README_END = "<!-- report:begin -->", "<!-- report:end -->"
HEAD_BEGIN, HEAD_END = "<!-- readme:begin -->", "<!-- readme:end -->"
PAPER = ("the paper: Joseph, Amrutur, Bhatnagar, *Gradient-Driven 3D Segmentation and Affordance Transfer in "
         "Gaussian Splatting Using 2D Masks*, arXiv:2409.11681; its timings are on an NVIDIA A6000 GPU")


class ReadmeError(UserError):
    """A README / REPORT.md that cannot be updated (one line for the user)."""


def f3(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def f2(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def f1(x: Any) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def n0(x: Any) -> str:
    return "n/a" if x is None else f"{int(x):,}"


def secs(x: Any) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0f} s" if x >= 10 else f"{x:.2f} s"


def table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def rel(path: Optional[str], root: Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    if not path:
        return "n/a"
    repo = Path(__file__).resolve().parents[1]
    p = Path(path)
    try:
        return os.path.relpath(p, repo) if p.resolve().is_relative_to(repo) else str(p)
    except ValueError:
        return str(p)


def cmd_of(results: dict, stage: str) -> str:
    for s in results.get("run", {}).get("stages", []):
        if s["name"] == stage:
            return "; ".join(f"`{c}`" for c in s["cmds"]) or "(in-process)"
    return "n/a"


def first_cmd(results: dict, stage: str) -> str:
    """The stage's first command (a reused model has none of train.py)."""
    for s in results.get("run", {}).get("stages", []):
        if s["name"] == stage and s["cmds"]:
            return f"`{s['cmds'][0]}`" if "train.py" in s["cmds"][0] else "(reused model)"
    return ""


def first_cmd_any(results: dict, stage: str) -> str:
    st = stage_status(results, stage)
    return f"`{st['cmds'][0]}`" if st and st["cmds"] else "n/a"


def stage_status(results: dict, stage: str) -> Optional[dict]:
    return next((s for s in results.get("run", {}).get("stages", []) if s["name"] == stage), None)


def missing(results: dict, stage: str) -> str:
    st = stage_status(results, stage)
    if st is None:
        return f"*Not run (stage `{stage}` not selected, or its scene not in this run).*"
    return f"*Stage `{stage}` {st['status']}: see `{st['log']}`.*"


def environment_section(r: dict) -> str:
    e = r.get("environment", {})
    run = r.get("run", {})
    libs = ", ".join(f"{k} {v}" for k, v in e.get("libraries", {}).items() if v)
    dirty = e.get("git_dirty") or []
    load = e.get("load_average")
    load_end = e.get("load_average_end")
    rows = [("date", e.get("date")), ("git commit", f"`{e.get('git_commit')}`" + (f" (branch {e.get('git_branch')})"
                                                                                   if e.get("git_branch") else "")),
            ("uncommitted code changes", ", ".join(dirty) if dirty else "none"),
            ("CPU", f"{e.get('cpu')}, {e.get('cores')} cores; every child process ran with {e.get('threads')} "
                    f"threads (OMP_WAIT_POLICY={e.get('omp_wait_policy')})"),
            ("machine load (1-min average) at start / end",
             f"{load[0]:.1f} / {load_end[0]:.1f}" if load and load_end else "n/a"),
            ("Python", f"{e.get('python')} ({e.get('platform')})"), ("libraries", libs),
            ("command", f"`{run.get('command')}`"),
            ("mode", "quick (CI-sized: tiny resolutions, few iterations; figures are not meaningful)" if run.get("quick")
             else "full"),
            ("wall time", f"{run.get('wall_s', 0) / 60:.1f} min"
             + (f"; models reused from `{run.get('models_reused_from')}`" if run.get("models_reused_from") else ""))]
    return "## Environment\n\n" + table(("", ""), rows)


def training_section(r: dict) -> str:
    tr = r.get("training", {})
    if not tr:
        return "## Training\n\n" + missing(r, "train/maryRose")
    rows = []
    for name, t in tr.items():
        how = f"reused `{rel(t['reused_from'], Path())}`" if t.get("reused_from") else "trained in this run"
        rows.append((name, f"`{' '.join(t['train_args'])}`", f"{t['width']}×{t['height']}",
                     f"{t['train_views']} / {t['test_views']}", n0(t.get("iterations")), secs(t.get("seconds")),
                     f2(t.get("it_per_s")), n0(t.get("gaussians")), f2(t.get("psnr")), f3(t.get("ssim")), how))
    why = "\n".join(f"- **{n}**: {t['why']}. {first_cmd(r, f'train/{n}')}" for n, t in tr.items())
    bt = r.get("bench_train")
    bench = ""
    if bt:
        phases = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in bt.get("phases_s", {}).items())
        bench = (f"\n\n**Where an iteration's time goes** (`benchmarks/bench_train.py`, {bt['scene']}, "
                 f"{bt['width']}×{bt['height']}, {bt['threads']} threads, median of {bt['iterations']} iterations): "
                 f"**{bt['it_per_s']:.2f} it/s** ({1000 * bt['median_iteration_s']:.0f} ms per iteration): {phases}. "
                 f"Command: {cmd_of(r, 'bench_train')}.")
    return ("## Training (`train.py --preset cpu`, then `render.py --skip_train` and `metrics.py`)\n\n"
            "Each shared scene is trained once; every other table uses these models. Held-out = the `--eval` "
            "split (every 8th view; lego: its test set). PSNR / SSIM from `metrics.py` (8-bit PNGs, Inria's way). "
            "Time and it/s as `train.py` printed them (time includes loading and triangulating the start points); "
            "the machine was shared, so times are upper bounds.\n\n"
            + table(("scene", "train.py flags", "size", "views (train / held-out)", "iterations", "time", "it/s",
                     "Gaussians", "held-out PSNR (dB)", "SSIM", "model"), rows)
            + "\n\nWhy these sizes (the whole report must fit in 90 min on 2 shared cores), and the commands "
              "(each followed by `render.py -m MODEL --skip_train` and `metrics.py -m MODEL`):\n\n" + why + bench)


def seg_sections(r: dict) -> str:
    s = r.get("segmentation")
    if not s:
        return "## Segmentation quality (maryRose)\n\n" + missing(r, "seg_quality")
    model = rel(s["model"], Path())
    head = (f"Model `{model}` ({s['gaussians']:,} Gaussians). Masks of K of the {s['train_views']} training views "
            f"in (spread evenly), the selection scored on the {s['test_views']} held-out views against their GT "
            "masks, in both protocols: **object-alone** (the selected Gaussians rendered by themselves, what a "
            "viewer shows of `extracted.ply`) and **in-scene** (the selection rendered inside the full scene, "
            "occluded by the rest). Noisy = each mask eroded or dilated by 3 px at random (seed 0). "
            f"Command: {cmd_of(r, 'seg_quality')}.")
    rows = {}
    for x in s["k_rows"]:
        rows.setdefault((x["masks"], x["K"]), {})[x["propagate"]] = x
    body = []
    for (masks, k), d in rows.items():
        a, b = d.get(False), d.get(True)
        body.append((masks, k, a["views_used"], f3(a["object_miou"]), f3(a["object_macc"]), f3(a["scene_miou"]),
                     f3(a["scene_macc"]), f3(b["object_miou"]) if b else "", f3(b["scene_miou"]) if b else "",
                     n0(a["undecided"])))
    t1 = table(("masks", "K", "views voted", "object-alone mIoU", "mAcc", "in-scene mIoU", "mAcc",
                "+ propagate: object-alone mIoU", "+ propagate: in-scene mIoU", "undecided Gaussians"), body)
    comp = table(("proposals", "K masks given", "views completed", "rounds", "object-alone mIoU", "mAcc",
                  "in-scene mIoU", "mAcc", "time"),
                 [(c["proposals"], c["K"], c["views_associated"], c["rounds"], f3(c["object_miou"]),
                   f3(c["object_macc"]), f3(c["scene_miou"]), f3(c["scene_macc"]), secs(c["seconds"]))
                  for c in s["completion"]])
    prm = table(("input", "prompt", "proposal chosen", "views associated", "object-alone mIoU", "mAcc",
                 "in-scene mIoU", "mAcc", "time"),
                [(p["method"], "`" + " ".join(f"--{k.replace('_', '-')} {' '.join(v)}"
                                              for k, v in (p.get("prompt") or {}).items() if isinstance(v, list))
                  + "`", short_choice(p.get("chose")),
                  p.get("views_associated"), f3(p["object_miou"]), f3(p["object_macc"]), f3(p["scene_miou"]),
                  f3(p["scene_macc"]), secs(p.get("seconds"))) for p in s["prompts"]])
    tm = s["timing"]
    out = ["## Segmentation quality (maryRose, gradient voting)", head,
           "### K GT masks, the paper's rule (`segment.py --masks`, undecided kept or propagated)", t1,
           f"Voting: {tm['vote_ms_per_view']:.1f} ms per view, {tm['vote_s_all_masks']:.2f} s for all "
           f"{s['train_views']} masks; peak RSS {tm.get('peak_rss_mb', 0):.0f} MB.",
           "### K GT masks completed through the 3D model from proposals (`segment.py --complete`; by default "
           "`segment.py` completes from `--proposals SAM_DIR` always and from the photos only for one masked view)",
           "Proposals: `photo` = superpixels of the photos; `sam` = the SAM-like folder "
           "(`benchmarks/sam_like.py`, seed 0: ids shuffled per view, parts, background regions, merges). "
           "Margin 0.2, undecided propagated.", comp,
           "### Prompted segmentation (one click or box on one training view)", prm]
    ev = r.get("everything")
    if ev:
        q, c = ev["quality"], ev["cost"]
        cover = q.get("views_where_best_covers_90pct")
        out += ["### `segment.py --everything` (every object from the SAM-like folder, ids consistent in 3D)",
                table(("instances", "instance matching the object (Gaussians)", "object-alone mIoU",
                       "in-scene mIoU", "largest share of the object's GT covered by another instance",
                       "training views where that instance covers >= 90 % of the GT"),
                      [(q["instances"], f"{q['best_instance']} ({q['best_gaussians']:,})", f3(q["object_alone_miou"]),
                        f3(q["in_scene_miou"]), f3(q["max_other_cover_of_gt"]),
                        "n/a" if cover is None else f"{100 * cover:.0f} %")]),
                "Cost, side by side (medians): " + ", ".join(f"{k} {v['median_s']:.2f} s (×{v['ratio']:.2f})"
                                                            for k, v in c.items())
                + f". Command: {cmd_of(r, 'everything')}."]
    else:
        out += ["### `segment.py --everything`", missing(r, "everything")]
    asc = r.get("association")
    if asc:
        out += ["**What association costs next to one voting pass** (same views, alternating, medians; "
                f"{asc['views']} views, {asc['gaussians']:,} Gaussians): "
                + ", ".join(f"{k} {v['median_s']:.2f} s (×{v['ratio']:.2f})" for k, v in asc["rows"].items())
                + f". Command: {cmd_of(r, 'association')}."]
    al = r.get("alpha_segmentation")
    if al:
        out += ["### lego (alpha masks as GT)",
                f"Model `{rel(al['model'], Path())}`; masks = {al['masks']} (`segment.py`, the paper's rule), "
                "scored on the 8 test views against their alpha masks. The scene is one object on an empty "
                "background, so nearly every Gaussian is the object: an easy case, a check of the pipeline on a "
                "second scene rather than a hard benchmark.",
                table(("protocol", "views", "mIoU", "mAcc"),
                      [(p, al[p]["views"], f3(al[p]["miou"]), f3(al[p]["macc"])) for p in ("object", "scene")]),
                f"Commands: {cmd_of(r, 'alpha_seg/lego')}."]
    return "\n\n".join(out)


def short_choice(text: Any) -> str:
    """segment.py's explanation of the chosen proposal, up to its first closing parenthesis."""
    if not isinstance(text, str):
        return "see results.json"
    return text[: text.index(")") + 1] if ")" in text else text


def comparison_section(r: dict) -> str:
    c = r.get("comparison")
    if not c:
        return "## Gradient voting vs the feature-field baseline\n\n" + missing(r, "compare_methods")
    rows = []
    for x in c["rows"]:
        st = ", ".join(f"{k} {v:.0f} s" for k, v in x["stage_s"].items())
        rows.append((x["method"], x["masks"], f3(x.get("object_miou")), f3(x.get("object_macc")),
                     f3(x.get("scene_miou")), f3(x.get("scene_macc")), st))
    return ("## Gradient voting vs the feature-field baseline (maryRose)\n\n"
            f"Model `{rel(c['model'], Path())}`, the same held-out views and GT masks for both. Baseline: "
            f"`extract_features.py` ({c['extractor']}) → `dino_train.py` ({c['field_iterations']} iterations) → "
            "`cluster.py` (KMeans k, clusters picked by the K training masks). Both scored by "
            "`eval_segmentation.py` in both protocols. Times are wall times of each script (process start "
            f"included). Command: {cmd_of(r, 'compare_methods')}.\n\n"
            + table(("method", "training masks", "object-alone mIoU", "mAcc", "in-scene mIoU", "mAcc",
                     "stage wall times"), rows)
            + f"\n\nFeature extraction {c['times_s'].get('extract', 0):.0f} s, feature-field training "
              f"{c['times_s'].get('field', 0):.0f} s (shared by every baseline row).")


def timing_section(r: dict) -> str:
    t = r.get("timing")
    if not t:
        return "## Timing (the paper's table)\n\n" + missing(r, "timing")
    rows = [(x["row"], x["what"], x["views"], f"{x['seconds']:.2f}", f"{x['ms_per_view']:.1f}",
             "" if x.get("paper_a6000_s") is None else f"{x['paper_a6000_s']:.2f}") for x in t["rows"]]
    prune = next((x for x in t["rows"] if "percent_removed" in x), None)
    extra = (f"\n\nLossless pruning removed {prune['percent_removed']:.2f} % of the Gaussians here, largest change "
             f"of a training pixel {prune['max_abs_diff']:.6f} (bound 1/510).") if prune else ""
    return ("## Timing (the paper's table)\n\n"
            f"Model `{rel(t['scene'], Path())}` ({t['gaussians']:,} Gaussians, {t['training_views']} training views at "
            f"{t['resolution']}), backend {t['backend']}, {t['threads']} threads, model loading excluded. "
            "*Voting only* = the vote kernel calls; *end-to-end* = mask files to labels and the extracted subset. "
            f"The paper's column is {PAPER}. Command: {cmd_of(r, 'timing')}.\n\n"
            + table(("row", "what", "views", "s / scene (ours, CPU)", "ms / view (ours)", "paper, A6000 (s / scene)"),
                    rows) + extra)


def pruning_section(r: dict) -> str:
    p = r.get("pruning", {})
    if not p:
        return "## Pruning\n\n" + missing(r, "prune/maryRose")
    rows = []
    for name, d in p.items():
        x = d["lossless"]
        rows.append((name, n0(x["gaussians"]), n0(x["removed"]), f2(x["percent_removed"]),
                     "n/a" if x["max_abs_diff"] is None else f"{x['max_abs_diff']:.6f}",
                     f"{f2(x['heldout_psnr_before'])} → {f2(x['heldout_psnr_after'])}",
                     f"{f3(x['heldout_ssim_before'])} → {f3(x['heldout_ssim_after'])}", secs(x["seconds"])))
    parts = ["## Pruning (`prune.py --sweep`)",
             "Lossless mode: Gaussians whose α·T summed over every pixel of every training view is 0, removed with "
             "the render check (every training pixel moves by < 1/510). Then the lossy sweep: remove contribution "
             "< T × the largest contribution, held-out PSNR / SSIM against the photos.",
             table(("scene", "Gaussians", "removed (lossless)", "%", "largest training-pixel change",
                    "held-out PSNR before → after (dB)", "SSIM before → after", "time"), rows)]
    for name, d in p.items():
        sw = table(("threshold T", "removed", "%", "held-out PSNR (dB)", "SSIM"),
                   [(f"{x['threshold']:g}", n0(x["removed"]), f2(x["percent_removed"]), f2(x["psnr"]), f3(x["ssim"]))
                    for x in d["sweep"]])
        parts += [f"**{name}** (model `{rel(d['model'], Path())}`, held-out split {d['heldout_split']} vs "
                  f"{d['reference']}; command {cmd_of(r, f'prune/{name}')}):", sw,
                  f"![pruning sweep, {name}]({d['figure']})"]
    return "\n\n".join(parts)


def affordance_section(r: dict) -> str:
    a = r.get("affordance")
    if not a:
        return "## Few-shot affordance transfer\n\n" + missing(r, "affordance")
    rows = [(x["name"], x["images"], f3(x["iou_object"]), f3(x["recall_object"]), f3(x["iou_background"]),
             f3(x["mean_iou_all"]), f3(x["median_view_iou_object"])) for x in a["rows"]]
    return ("## Few-shot affordance transfer, 2D → 2D → 3D (maryRose as a stand-in)\n\n"
            f"Model `{rel(a['model'], Path())}`. No affordance data set and no DINO weights exist here, so maryRose's "
            f"object masks play the annotations: {len(a['sources'])} annotated training views "
            f"({', '.join(a['sources'])}), `{a['extractor']}` features (weight-free, **not DINO**), cosine k-NN "
            "(k = 5). 2D rows score the transferred label maps of the other training views; 3D rows render the "
            f"per-Gaussian labels into views. Pooled per-class IoU. {a['seconds']:.0f} s for `affordance.py`'s "
            f"pipeline. Command: {cmd_of(r, 'affordance')}.\n\n"
            + table(("setting", "images", "IoU object", "recall object", "IoU background", "mean IoU",
                     "median view IoU object"), rows))


def pictures_section(r: dict) -> str:
    pics = r.get("pictures", {})
    if not pics:
        return "## Pictures\n\n" + missing(r, "picture/maryRose")
    parts = ["## Pictures: original | extracted | deleted | mask (`segment.py` preview strips)"]
    for name, p in pics.items():
        if p.get("figure"):
            stage = f"picture/{name}" if stage_status(r, f"picture/{name}") else f"alpha_seg/{name}"
            parts.append(f"**{name}** ({p['how']}; view {p['view']}; command {first_cmd_any(r, stage)}):\n\n"
                         f"![{name}]({p['figure']})")
        else:
            parts.append(f"**{name}**: no picture ({p['how']}).")
    return "\n\n".join(parts)


def stages_section(r: dict) -> str:
    rows = [(s["name"], s["status"], secs(s["seconds"]) if s["status"] != "skipped" else "",
             f"`{s['log']}`") for s in r.get("run", {}).get("stages", [])]
    return ("## Stages\n\nCached stages show the time of the run that produced them. Logs are under the report "
            "folder.\n\n" + table(("stage", "status", "time", "log"), rows))


def headline(r: dict) -> str:
    """The compact tables that README.md shows (copied by --update-readme)."""
    parts = []
    tr = r.get("training", {})
    if tr:
        parts.append(table(("scene", "size", "time", "it/s", "Gaussians", "held-out PSNR", "SSIM"),
                           [(n, f"{t['width']}×{t['height']}", secs(t.get("seconds")), f2(t.get("it_per_s")),
                             n0(t.get("gaussians")), f2(t.get("psnr")), f3(t.get("ssim"))) for n, t in tr.items()]))
    s = r.get("segmentation")
    if s:
        rows = [(x["masks"], x["K"], f3(x["object_miou"]), f3(x["scene_miou"]), f3(x["scene_macc"]))
                for x in s["k_rows"] if not x["propagate"]]
        prop = {(x["masks"], x["K"]): x for x in s["k_rows"] if x["propagate"]}
        rows = [row + (f3(prop[(row[0], row[1])]["scene_miou"]) if (row[0], row[1]) in prop else "",) for row in rows]
        parts.append(f"Segmentation, maryRose held-out views (`{rel(s['model'], Path())}`):\n\n"
                     + table(("masks", "K", "object-alone mIoU", "in-scene mIoU", "in-scene mAcc",
                              "in-scene mIoU + propagate"), rows))
    c = r.get("comparison")
    if c:
        parts.append("Gradient voting vs feature field + KMeans (maryRose):\n\n"
                     + table(("method", "masks", "object-alone mIoU", "in-scene mIoU"),
                             [(x["method"], x["masks"], f3(x.get("object_miou")), f3(x.get("scene_miou")))
                              for x in c["rows"]]))
    t = r.get("timing")
    if t:
        parts.append(f"Timing ({t['gaussians']:,} Gaussians, {t['training_views']} views at {t['resolution']}, "
                     f"{t['threads']} CPU threads) vs the paper's A6000:\n\n"
                     + table(("row", "what", "s / scene", "ms / view", "paper (A6000)"),
                             [(x["row"], x["what"], f"{x['seconds']:.2f}", f"{x['ms_per_view']:.1f}",
                               "" if x.get("paper_a6000_s") is None else f"{x['paper_a6000_s']:.2f} s")
                              for x in t["rows"]]))
    p = r.get("pruning", {})
    if p:
        parts.append("Lossless pruning (`prune.py`, every training pixel moves by < 1/510):\n\n" + table(
            ("scene", "removed", "held-out PSNR before → after"),
            [(n, f"{n0(d['lossless']['removed'])} of {n0(d['lossless']['gaussians'])} "
                 f"({f2(d['lossless']['percent_removed'])} %)",
              f"{f2(d['lossless']['heldout_psnr_before'])} → {f2(d['lossless']['heldout_psnr_after'])} dB")
             for n, d in p.items()]))
    a = r.get("affordance")
    if a:
        parts.append("Few-shot transfer (maryRose stand-in, classic features, not DINO):\n\n"
                     + table(("setting", "IoU object", "recall object"),
                             [(x["name"], f3(x["iou_object"]), f3(x["recall_object"])) for x in a["rows"][:4]]))
    return "\n\n".join(parts)


def render(results: dict, out: Path) -> str:
    e = results.get("environment", {})
    title = ("# gs-segment: measured results" + (" (QUICK run: not meaningful numbers)" if results.get("run", {})
                                                 .get("quick") else ""))
    intro = (f"Generated by `benchmarks/reproduce.py` on {e.get('date')} from commit `{(e.get('git_commit') or '?')}`. "
             "Do not edit: rerun the command below. Every table says which model, protocol, K and command it used; "
             "`results.json` beside this file has every figure.")
    parts = [title, intro, environment_section(results),
             "## Headline tables (copied into README.md by `--update-readme`)",
             f"{HEAD_BEGIN}\n{headline(results)}\n{HEAD_END}", training_section(results), seg_sections(results),
             comparison_section(results), timing_section(results), pruning_section(results),
             affordance_section(results), pictures_section(results), stages_section(results)]
    return "\n\n".join(parts) + "\n"


def update_readme(report: Path, readme: Path, head_commit: Optional[str], allow_other_commit: bool) -> str:
    """Replace README.md's generated block with REPORT.md's headline tables; returns a one-line summary."""
    if not report.is_file():
        raise ReadmeError(f"{report}: not found; run benchmarks/reproduce.py first")
    text = report.read_text()
    m = re.search(re.escape(HEAD_BEGIN) + r"\n(.*?)\n" + re.escape(HEAD_END), text, re.S)
    if not m:
        raise ReadmeError(f"{report}: no {HEAD_BEGIN} block; is it a REPORT.md written by reproduce.py?")
    if "(QUICK run" in text.splitlines()[0]:
        raise ReadmeError(f"{report}: a --quick report; its numbers are not meaningful, run the full report")
    cm = re.search(r"from commit `([0-9a-f?]+)`", text)
    commit = cm.group(1) if cm else "?"
    date = re.search(r"on (\S+) from commit", text)
    dirty = re.search(r"\| uncommitted code changes \| (.*?) \|", text)
    if not allow_other_commit:
        if head_commit and commit != head_commit:
            raise ReadmeError(f"{report}: made at commit {commit[:10]}, but HEAD is {head_commit[:10]}; rerun "
                              "reproduce.py on this commit (or pass --allow-other-commit)")
        if dirty and dirty.group(1) != "none":
            raise ReadmeError(f"{report}: made with uncommitted code changes ({dirty.group(1)}); commit and rerun "
                              "(or pass --allow-other-commit)")
    if not readme.is_file():
        raise ReadmeError(f"{readme}: not found")
    body = readme.read_text()
    if body.count(README_BEGIN) != 1 or body.count(README_END) != 1:
        raise ReadmeError(f"{readme}: needs exactly one {README_BEGIN} ... {README_END} pair")
    where = os.path.relpath(report, readme.parent)
    stamp = (f"*Generated from `{where}` (commit `{commit[:10]}`, {date.group(1) if date else '?'}) by "
             f"`python benchmarks/reproduce.py --update-readme {where}`; do not edit by hand.*")
    block = f"{README_BEGIN}\n{stamp}\n\n{m.group(1)}\n{README_END}"
    new = re.sub(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), lambda _: block, body, flags=re.S)
    readme.write_text(new)
    return f"updated {readme} from {report} (commit {commit[:10]})"
