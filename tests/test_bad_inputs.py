"""Every script, fed what a new user gets wrong: one line on stderr, the documented exit code, no traceback, the
inputs byte-identical, nothing left behind (no staging folder, no new empty folder) and other tools' or the
user's files untouched; signals at precise points of a run leave the previous result intact.

The scripts run in-process (``main(argv)``) on a tiny generated scene; a few real subprocess kills and a
real full disk (a small tmpfs, skipped when it cannot be mounted) check the same outside the test harness.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest

from cli_helpers import load_script, run_script
from utils.outputs import RECORD_NAME

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # the scripts at the root are imported as modules (main(argv) in-process)
    sys.path.insert(0, str(ROOT))
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch) -> None:
    """Run from the test's folder: a default output relative to the current folder is seen by the checks."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def sigint_as_in_a_terminal() -> None:
    """A terminal's Ctrl-C: a test run launched in the background (``cmd &``, nohup) inherits SIGINT ignored,
    which the scripts rightly respect; the interrupt cases need Python's default handler."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


# ---------------------------------------------------------------------------------------------------------
# Fixtures: one tiny scene (model + source + masks + GT), a segmentation of it, shared read-only by all cases
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Scene:
    root: Path        # the demo folder: model/ and scene/
    model: Path
    source: Path
    masks: Path
    gt: Path
    labels: Path      # a segment.py labels.npy of this model (in its own folder)


@pytest.fixture(scope="module")
def sc(tmp_path_factory) -> Scene:
    from segmentation.demo import write_demo_data
    from segmentation.pipeline import SegmentConfig, run_segmentation
    from segmentation.synthetic import make_demo_scene

    root = tmp_path_factory.mktemp("scene")
    scene = make_demo_scene(num_views=8, size=32, points_per_object=150, ground_points=300)
    d = write_demo_data(root / "demo", [1], backend="cpu", scene=scene)
    seg = root / "seg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_segmentation(SegmentConfig(model_path=str(d.model_path), masks=str(d.masks_path), out=str(seg),
                                       previews=0, gif_frames=0, backend="cpu", progress=False))
    return Scene(d.root, d.model_path, d.source_path, d.masks_path, d.gt_masks_path, seg / "labels.npy")


def snapshot(*roots: Path) -> dict[str, str]:
    """path -> sha256 of every file (and 'dir' for every folder) below ``roots``."""
    out = {}
    for r in roots:
        if not r.exists():
            continue
        for p in [r, *r.rglob("*")]:
            out[str(p)] = "dir" if p.is_dir() and not p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(*roots: Path) -> list[str]:
    """Staging / moved-aside folders and temp files of utils.outputs and utils.io below ``roots``."""
    return [str(p) for r in roots if r.exists() for p in r.rglob("*")
            if "gs_staging" in p.name or "gs_old" in p.name or p.name.endswith(".tmp")]


script = load_script
run = run_script


def one_line(err: str, out: str = "") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err + out
    return lines[0]


def foreign(folder: Path, name: str = "user_notes.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("the user's own file\n")
    return folder


def copy_model(sc: Scene, dst: Path) -> Path:
    shutil.copytree(sc.model, dst)   # a plain model folder (the demo's record is one level up)
    return dst


def fake_renders(model: Path) -> None:
    import cv2

    for sub in ("renders", "gt"):
        d = model / "test" / "ours_0" / sub
        d.mkdir(parents=True)
        cv2.imwrite(str(d / "00000.png"), np.full((8, 8, 3), 128, np.uint8))


# ---------------------------------------------------------------------------------------------------------
# The cases: (script, argv, expected exit code, what the one line must say); setup builds per-case files
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Case:
    script: str
    argv: Callable[[Scene, Path], list[str]]
    code: int
    needle: str
    setup: Optional[Callable[[Scene, Path], None]] = None


SEG = ["--previews", "0", "--gif-frames", "0", "--backend", "cpu", "--no-progress"]


def seg(*extra: str) -> Callable[[Scene, Path], list[str]]:
    return lambda s, t: ["-m", str(s.model), "--masks", str(s.masks), *SEG, *[x.format(t=t, s=s) for x in extra]]


def fmt(*args: str) -> Callable[[Scene, Path], list[str]]:
    return lambda s, t: [a.format(t=t, s=s) for a in args]


CASES = {
    # ----- segment.py
    "segment: --out is the masks folder": Case("segment", seg("--out", "{s.masks}"), 2, "is the input"),
    "segment: --out inside the masks": Case("segment", seg("--out", "{s.masks}/out"), 2, "lies inside the input"),
    "segment: --out contains the source": Case("segment", seg("--out", "{s.root}"), 2, "contains the input"),
    "segment: --out is the model folder": Case("segment", seg("--out", "{s.model}"), 2, "contains the input"),
    "segment: --out the source folder": Case("segment", seg("--out", "{s.source}"), 2, "is the input"),
    "segment: --out is a file": Case("segment", seg("--out", "{t}/f.txt"), 2, "is a file",
                                     lambda s, t: (t / "f.txt").write_text("x")),
    "segment: --out below a file": Case("segment", seg("--out", "{t}/f.txt/sub"), 2, "lies inside the file",
                                        lambda s, t: (t / "f.txt").write_text("x")),
    "segment: --out a user's folder": Case("segment", seg("--out", "{t}/mine"), 2, "--force",
                                           lambda s, t: foreign(t / "mine")),
    "segment: --out affordance.py's folder": Case(
        "segment", seg("--out", "{t}/aff"), 2, "written by affordance.py",
        lambda s, t: _affordance_like(t / "aff")),
    "segment: --device cuda (CPU-only torch)": Case("segment", seg("--device", "cuda"), 2, "--device cuda"),
    "segment: --device nonsense": Case("segment", seg("--device", "gpu0"), 2, "--device gpu0"),
    "segment: --backend inria unavailable": Case("segment", seg("--backend", "inria"), 2, "--backend inria"),
    "segment: --backend gsplat unavailable": Case("segment", seg("--backend", "gsplat"), 2, "--backend gsplat"),
    "segment: --margin not a number": Case("segment", seg("--margin", "abc"), 2, "--margin"),
    "segment: unknown flag": Case("segment", seg("--frobnicate"), 2, "--frobnicate"),
    "segment: masks missing, deep --out": Case(
        "segment", fmt("-m", "{s.model}", "--masks", "{t}/nomasks", "--out", "{t}/a/b/c", "--backend", "cpu"), 2,
        "nomasks"),
    "segment: model missing": Case("segment", fmt("-m", "{t}/nomodel", "--masks", "{s.masks}", "--out", "{t}/o"), 2,
                                   "model folder not found"),
    "segment: foreign record file": Case("segment", seg("--out", "{t}/o"), 2, "not an output record",
                                         lambda s, t: foreign(t / "o", RECORD_NAME)),
    # ----- the demo (segment.py without -m)
    "demo: --out a user's folder": Case("segment", fmt("--out", "{t}/mine", "--no-progress"), 2, "--force",
                                        lambda s, t: foreign(t / "mine")),
    "demo: bad --demo-objects": Case("segment", fmt("--demo", "--out", "{t}/d", "--demo-objects", "teapot"), 2,
                                     "teapot"),
    # ----- prune.py
    "prune: --out is the model": Case("prune", fmt("-m", "{s.model}", "--out", "{s.model}", "--quiet"), 2,
                                      "is the input"),
    "prune: --out inside the model": Case("prune", fmt("-m", "{s.model}", "--out", "{s.model}/pruned"), 2,
                                          "lies inside the input"),
    "prune: --out a user's folder": Case("prune", fmt("-m", "{s.model}", "--out", "{t}/mine"), 2, "--force",
                                         lambda s, t: foreign(t / "mine")),
    "prune: --device cuda": Case("prune", fmt("-m", "{s.model}", "--out", "{t}/p", "--device", "cuda"), 2,
                                 "--device cuda"),
    "prune: --backend gsplat": Case("prune", fmt("-m", "{s.model}", "--out", "{t}/p", "--backend", "gsplat"), 2,
                                    "--backend gsplat"),
    "prune: --threshold out of range": Case("prune", fmt("-m", "{s.model}", "--out", "{t}/x/p", "--threshold", "2"),
                                            2, "--threshold 2"),
    "prune: foreign newer iteration with --force": Case(
        "prune", fmt("-m", "{s.model}", "--out", "{t}/p", "--force", "--backend", "cpu", "--quiet"), 2,
        "iteration_99", lambda s, t: foreign(t / "p" / "point_cloud" / "iteration_99", "point_cloud.ply")),
    # ----- train.py
    "train: -m inside -s": Case("train", fmt("-s", "{s.source}", "-m", "{s.source}/model", "--iterations", "2"), 2,
                                "lies inside the input"),
    "train: -m is -s": Case("train", fmt("-s", "{s.source}", "-m", "{s.source}", "--iterations", "2"), 2,
                            "is the input"),
    "train: -m a user's folder": Case("train", fmt("-s", "{s.source}", "-m", "{t}/mine", "--iterations", "2"), 2,
                                      "--force", lambda s, t: foreign(t / "mine")),
    "train: -m a model train.py did not write": Case(
        "train", fmt("-s", "{s.source}", "-m", "{t}/m", "--iterations", "2"), 2, "holds no output of train.py",
        lambda s, t: copy_model(s, t / "m") and None),
    "train: --device cuda": Case("train", fmt("-s", "{s.source}", "-m", "{t}/m", "--device", "cuda"), 2,
                                 "--device cuda"),
    "train: --backend inria": Case("train", fmt("-s", "{s.source}", "-m", "{t}/m", "--backend", "inria"), 2,
                                   "--backend inria"),
    "train: --iterations 0": Case("train", fmt("-s", "{s.source}", "-m", "{t}/x/m", "--iterations", "0"), 2,
                                  "--iterations 0"),
    "train: missing source": Case("train", fmt("-s", "{t}/nosource", "-m", "{t}/x/m", "--iterations", "2"), 2,
                                  "nosource"),
    "train: -m is a file": Case("train", fmt("-s", "{s.source}", "-m", "{t}/f", "--iterations", "2"), 2, "is a file",
                                lambda s, t: (t / "f").write_text("x")),
    # ----- render.py
    "render: --backend inria": Case("render", fmt("-m", "{t}/m", "--backend", "inria", "--quiet"), 2,
                                    "--backend inria", lambda s, t: copy_model(s, t / "m") and None),
    "render: missing model": Case("render", fmt("-m", "{t}/nomodel", "--quiet"), 2, "model folder not found"),
    "render: a user's ours_0 folder": Case("render", fmt("-m", "{t}/m", "--quiet", "--skip_train"), 2, "--force",
                                           lambda s, t: foreign(copy_model(s, t / "m") / "test" / "ours_0")),
    # ----- metrics.py
    "metrics: nothing rendered": Case("metrics", fmt("-m", "{t}/m"), 2, "run render.py",
                                      lambda s, t: copy_model(s, t / "m") and None),
    "metrics: a results.json it did not write": Case(
        "metrics", fmt("-m", "{t}/m", "--no_lpips"), 2, "results.json: exists and was not written by metrics.py",
        lambda s, t: (copy_model(s, t / "m"), fake_renders(t / "m"), foreign(t / "m", "results.json")) and None),
    # ----- extract_features.py
    "extract_features: --out inside the source": Case("extract_features", fmt("-s", "{s.source}", "--out",
                                                                              "{s.source}/features.pt"), 2,
                                                      "lies inside the input"),
    "extract_features: --out is a folder": Case("extract_features", fmt("-s", "{s.source}", "--out", "{t}/d"), 2,
                                                "is a folder", lambda s, t: (t / "d").mkdir()),
    "extract_features: --device cuda": Case("extract_features", fmt("-s", "{s.source}", "--out", "{t}/f.pt",
                                                                    "--device", "cuda"), 2, "--device cuda"),
    "extract_features: dino without weights": Case("extract_features", fmt("-s", "{s.source}", "--out", "{t}/f.pt",
                                                                           "--extractor", "dino"), 2, "--weights"),
    # ----- dino_train.py
    "dino_train: default features missing": Case("dino_train", fmt("-m", "{s.model}"), 2, "extract_features.py"),
    "dino_train: --features missing": Case("dino_train", fmt("-m", "{s.model}", "--features", "{t}/no.pt"), 2,
                                           "no.pt"),
    "dino_train: --device cuda": Case("dino_train", fmt("-m", "{s.model}", "--device", "cuda"), 2, "--device cuda"),
    # ----- cluster.py
    "cluster: features missing": Case("cluster", fmt("-m", "{s.model}", "--k", "3", "--out", "{t}/c"), 2,
                                      "dino_train.py"),
    "cluster: --out is the point_cloud": Case("cluster", fmt("-m", "{s.model}", "--k", "3", "--out",
                                                             "{s.model}/point_cloud"), 2, "is the input"),
    "cluster: --k 0": Case("cluster", fmt("-m", "{s.model}", "--k", "0"), 2, "--k 0"),
    # ----- affordance.py
    "affordance: --out is the sources": Case("affordance", fmt("-m", "{s.model}", "--sources", "{t}/src", "--out",
                                                               "{t}/src", "--renders", "0"), 2, "is the input",
                                             lambda s, t: _annotated_sources(s, t / "src")),
    "affordance: sources missing": Case("affordance", fmt("-m", "{s.model}", "--sources", "{t}/nosrc", "--out",
                                                          "{t}/a"), 2, "nosrc"),
    "affordance: --backend inria": Case("affordance", fmt("-m", "{s.model}", "--sources", "{s.masks}",
                                                          "--backend", "inria"), 2, "--backend inria"),
    # ----- eval_segmentation.py
    "eval_segmentation: --out inside the GT": Case("eval_segmentation", fmt(
        "-m", "{s.model}", "--labels", "{s.labels}", "--gt-masks", "{s.gt}", "--out", "{s.gt}/eval.json"), 2,
        "lies inside the input"),
    "eval_segmentation: --out is labels.npy": Case("eval_segmentation", fmt(
        "-m", "{s.model}", "--labels", "{s.labels}", "--gt-masks", "{s.gt}", "--out", "{s.labels}"), 2,
        "is the input"),
    "eval_segmentation: --out a user's file": Case("eval_segmentation", fmt(
        "-m", "{s.model}", "--labels", "{s.labels}", "--gt-masks", "{s.gt}", "--out", "{t}/user_notes.txt"), 2,
        "--force", lambda s, t: foreign(t) and None),
    "eval_segmentation: labels missing": Case("eval_segmentation", fmt(
        "-m", "{s.model}", "--labels", "{t}/no.npy", "--gt-masks", "{s.gt}"), 2, "labels file not found"),
    # ----- eval_affordance.py
    "eval_affordance: nothing to evaluate": Case("eval_affordance", fmt("--gt", "{s.gt}"), 2, "nothing to evaluate"),
    "eval_affordance: --out inside the GT": Case("eval_affordance", fmt(
        "--gt", "{s.gt}", "--pred", "{s.masks}", "--out", "{s.gt}/e.json"), 2, "lies inside the input"),
}


def _annotated_sources(sc: Scene, folder: Path) -> None:
    """One annotated image for affordance.py: a photo and its label map (labels/<name>.png, 0/1)."""
    import cv2

    (folder / "labels").mkdir(parents=True)
    photo = next((sc.source / "train").glob("*.png"))
    cv2.imwrite(str(folder / "view.jpg"), cv2.imread(str(photo)))
    lm = np.zeros((32, 32), np.uint8)
    lm[8:24, 8:24] = 1
    cv2.imwrite(str(folder / "labels" / "view.png"), lm)


def _affordance_like(folder: Path) -> None:
    """What affordance.py leaves (its record, labelled.ply, summary.json, extracted_grasp.ply)."""
    from utils.outputs import OutputFolder

    with OutputFolder(folder, "affordance.py") as o:
        for name in ("labelled.ply", "extracted_grasp.ply", "summary.json", "labels.npy"):
            o.path(name).write_text(f"affordance output {name}\n")
        o.commit()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(sc: Scene, tmp_path: Path, capsys, name: str) -> None:
    case = CASES[name]
    if case.setup:
        case.setup(sc, tmp_path)
    argv = case.argv(sc, tmp_path)
    before = snapshot(sc.root, sc.labels.parent, tmp_path)
    code, out, err = run(case.script, argv, capsys)
    assert code == case.code, (name, out, err)
    line = one_line(err, out)
    assert line.startswith("error: ") and case.needle in line, (name, line)
    assert snapshot(sc.root, sc.labels.parent, tmp_path) == before, "an input changed or something was left"
    assert not leftovers(sc.root.parent, tmp_path)


def test_at_least_40_cases_over_every_script() -> None:
    scripts = {c.script for c in CASES.values()}
    assert len(CASES) >= 40
    assert scripts == {"segment", "prune", "train", "render", "metrics", "extract_features", "dino_train",
                       "cluster", "affordance", "eval_segmentation", "eval_affordance"}


def test_every_script_takes_debug_and_force(capsys) -> None:
    for script in ("segment", "prune", "train", "render", "metrics", "extract_features", "dino_train", "cluster",
                   "affordance", "eval_segmentation", "eval_affordance"):
        code, out, _ = run(script, ["--help"], capsys)
        assert code == 0 and "--debug" in out and "--force" in out, script


# ---------------------------------------------------------------------------------------------------------
# Output folders: what is deleted, what stays, --force
# ---------------------------------------------------------------------------------------------------------
def test_force_into_affordance_folder_keeps_its_files(sc: Scene, tmp_path: Path, capsys) -> None:
    aff = tmp_path / "aff"
    _affordance_like(aff)
    theirs = {p.name: p.read_bytes() for p in aff.iterdir() if p.name != RECORD_NAME}
    code, out, err = run("segment", seg("--out", str(aff), "--force")(sc, tmp_path), capsys)
    assert code == 0, err
    assert err.count("warning:") == 2 and "stay untouched" in err and "--force replaced" in err, err
    for name in ("labelled.ply", "extracted_grasp.ply"):
        assert (aff / name).read_bytes() == theirs[name]
    assert (aff / "extracted.ply").is_file()
    record = json.loads((aff / RECORD_NAME).read_text())["tools"]
    assert "labelled.ply" in record["affordance.py"]["files"]
    assert "summary.json" in record["segment.py"]["files"]            # replaced with --force: now segment.py's
    assert "summary.json" not in record["affordance.py"]["files"]
    # a re-run needs no --force now, and still leaves affordance.py's files alone
    code, _, err = run("segment", seg("--out", str(aff), "--margin", "0.3")(sc, tmp_path), capsys)
    assert code == 0, err
    assert (aff / "labelled.ply").read_bytes() == theirs["labelled.ply"]
    assert not leftovers(tmp_path)


def test_rerun_replaces_own_files_and_deletes_own_stale_ones(sc: Scene, tmp_path: Path, capsys) -> None:
    out = tmp_path / "seg"
    code, _, err = run("segment", seg("--out", str(out), "--previews", "2")(sc, tmp_path), capsys)
    assert code == 0, err
    previews = sorted(p.name for p in out.glob("preview_*.png"))
    assert len(previews) == 2
    (out / "my_notes.txt").write_text("mine")
    code, _, err = run("segment", seg("--out", str(out))(sc, tmp_path), capsys)   # --previews 0 now
    assert code == 0, err
    assert not list(out.glob("preview_*.png")), "own stale previews must go"
    assert (out / "my_notes.txt").read_text() == "mine"
    assert one_line(err).startswith("warning: ") and "my_notes.txt" in err
    assert not leftovers(tmp_path)


def test_early_error_leaves_no_new_folder(sc: Scene, tmp_path: Path, capsys) -> None:
    out = tmp_path / "a" / "b" / "out"
    code, _, err = run("segment", seg("--out", str(out), "--labels", "9")(sc, tmp_path), capsys)
    assert code == 2 and "--labels" in one_line(err)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# Errors that are not the user's input: internal errors, --debug, a full disk, a read-only disk
# ---------------------------------------------------------------------------------------------------------
def test_internal_error_is_one_line_and_debug_shows_it(sc: Scene, tmp_path: Path, capsys, monkeypatch) -> None:
    import segmentation.pipeline as pipeline

    def broken(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(pipeline, "make_selection", broken)
    argv = seg("--out", str(tmp_path / "o"))(sc, tmp_path)
    code, out, err = run("segment", argv, capsys)
    line = one_line(err, out)
    assert code == 1 and "internal error (RuntimeError: boom)" in line and "--debug" in line
    with pytest.raises(RuntimeError, match="boom"):
        script("segment").main(argv + ["--debug"])
    assert list(tmp_path.iterdir()) == [] and not leftovers(sc.root.parent)


@pytest.fixture
def tmpfs(tmp_path: Path):
    """Mount a small tmpfs (we run as root); skip when mounting is not possible here."""
    mounted = []

    def mount(name: str, options: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.mark.parametrize("script", ["segment", "extract_features", "train"])
def test_disk_full_is_one_line_naming_the_output(sc: Scene, tmp_path: Path, capsys, tmpfs, script: str) -> None:
    disk = tmpfs("disk", "size=48k")
    argv = {"segment": seg("--out", f"{disk}/out")(sc, tmp_path),
            "extract_features": ["-s", str(sc.source), "--out", f"{disk}/out/f.pt", "--stride", "1", "--no-progress"],
            "train": ["-s", str(sc.source), "-m", f"{disk}/out", "--iterations", "2", "--random_init_points", "3000",
                      "--quiet"]}[script]
    before = snapshot(sc.root)
    code, out, err = run(script, argv, capsys)
    line = one_line(err, out)
    assert code == 2 and "No space left on device (ENOSPC)" in line and f"{disk}/out/" in line, line
    assert "gs_staging" not in line                         # the path the user asked for, not the staging twin
    assert list(disk.iterdir()) == [], "staging left on the full disk"
    assert snapshot(sc.root) == before


def test_read_only_disk_is_one_line(sc: Scene, tmp_path: Path, capsys, tmpfs) -> None:
    ro = tmpfs("ro", "ro,size=64k")
    code, out, err = run("segment", seg("--out", f"{ro}/out")(sc, tmp_path), capsys)
    line = one_line(err, out)
    assert code == 2 and "Read-only file system" in line and "--out" in line, line


# ---------------------------------------------------------------------------------------------------------
# Signals at precise points: the previous result stays intact, nothing is left behind
# ---------------------------------------------------------------------------------------------------------
def _kill_after(monkeypatch, target: object, attr: str, sig: int, nth: int = 1) -> None:
    """Make ``target.attr`` send ``sig`` to this process after its nth call returns."""
    original = getattr(target, attr)
    calls = []

    def wrapped(*a, **k):
        result = original(*a, **k)
        calls.append(1)
        if len(calls) == nth:
            os.kill(os.getpid(), sig)
        return result

    monkeypatch.setattr(target, attr, wrapped)


@pytest.fixture
def previous_seg(sc: Scene, tmp_path: Path, capsys) -> tuple[Path, dict[str, str]]:
    out = tmp_path / "seg"
    code, _, err = run("segment", seg("--out", str(out))(sc, tmp_path), capsys)
    assert code == 0, err
    return out, snapshot(out)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("point", ["after voting", "after the first PLY", "after summary.json"])
def test_segment_interrupted(sc, tmp_path, capsys, monkeypatch, previous_seg, point, sig, code) -> None:
    import segmentation.pipeline as pipeline
    from scene.gaussian_model import GaussianModel

    out, before = previous_seg
    where = {"after voting": (pipeline, "accumulate_votes"), "after the first PLY": (GaussianModel, "save_ply"),
             "after summary.json": (pipeline, "save_summary")}[point]
    _kill_after(monkeypatch, *where, sig)
    code_, out_, err = run("segment", seg("--out", str(out), "--margin", "0.5")(sc, tmp_path), capsys)
    line = one_line(err, out_)
    assert code_ == code and line.startswith("interrupted (SIGINT)" if sig == signal.SIGINT else "terminated (SIGTERM)")
    assert snapshot(out) == before, "the previous result changed"
    assert not leftovers(tmp_path)


def test_prune_terminated_keeps_previous_result(sc: Scene, tmp_path: Path, capsys, monkeypatch) -> None:
    import pruning.pipeline as pp

    out = tmp_path / "pruned"
    argv = ["-m", str(sc.model), "--out", str(out), "--backend", "cpu", "--quiet"]
    code, _, err = run("prune", argv, capsys)
    assert code == 0, err
    before = snapshot(out)
    _kill_after(monkeypatch, pp, "write_output", signal.SIGTERM)
    code, o, err = run("prune", argv + ["--threshold", "0.5"], capsys)
    assert code == 143 and one_line(err, o).startswith("terminated (SIGTERM)")
    assert snapshot(out) == before and not leftovers(tmp_path)


@pytest.mark.slow
def test_train_signals_save_a_checkpoint_and_a_second_one_discards(sc: Scene, tmp_path: Path, capsys,
                                                                   monkeypatch) -> None:
    import training.trainer as trainer

    model = tmp_path / "model"
    argv = ["-s", str(sc.source), "-m", str(model), "--iterations", "6", "--random_init_points", "300", "--quiet"]
    _kill_after(monkeypatch, trainer, "densification_step", signal.SIGTERM, nth=2)
    code, o, err = run("train", argv, capsys)
    assert code == 143 and one_line(err, o).startswith("terminated (SIGTERM) at iteration 2"), err
    assert (model / "chkpnt2.pth").is_file() and (model / "point_cloud" / "iteration_2" / "point_cloud.ply").is_file()
    before = snapshot(model)
    # resume; two SIGINTs at iteration 4 (the second quits at once): nothing of that run is kept
    monkeypatch.undo()
    original = trainer.densification_step

    def twice(*a, **k):
        if a[2] == 4:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)
        return original(*a, **k)

    monkeypatch.setattr(trainer, "densification_step", twice)
    code, o, err = run("train", argv + ["--start_checkpoint", str(model / "chkpnt2.pth")], capsys)
    assert code == 130 and one_line(err, o).startswith("interrupted (SIGINT)")
    assert snapshot(model) == before and not leftovers(tmp_path)
    # and the resumed run, uninterrupted, keeps the first run's files beside its own
    monkeypatch.undo()
    code, _, err = run("train", argv + ["--start_checkpoint", str(model / "chkpnt2.pth")], capsys)
    assert code == 0, err
    assert (model / "chkpnt2.pth").is_file() and (model / "point_cloud" / "iteration_6").is_dir()


# ---------------------------------------------------------------------------------------------------------
# Real processes: SIGTERM from outside, SIGKILL and the next run's clean-up
# ---------------------------------------------------------------------------------------------------------
DRIVER = r"""
import sys, time
import segmentation.pipeline as p
real = p.make_selection
def slow(*a, **k):
    print("VOTED", flush=True)
    time.sleep(60)
    return real(*a, **k)
p.make_selection = slow
import segment
sys.exit(segment.main(sys.argv[1:]))
"""


def _start(argv: list[str]) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", DRIVER, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    for line in p.stdout:          # wait until voting is done (the staging folder holds nothing yet)
        if line.startswith("VOTED"):
            return p
    raise AssertionError(p.stderr.read() if p.stderr else "no output")


@pytest.mark.slow
def test_real_sigterm_and_sigkill(sc: Scene, tmp_path: Path, capsys, previous_seg) -> None:
    out, before = previous_seg
    argv = seg("--out", str(out), "--margin", "0.5")(sc, tmp_path)
    p = _start(argv)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and one_line(err).startswith("terminated (SIGTERM)"), err
    assert snapshot(out) == before and not leftovers(tmp_path)

    p = _start(argv)
    p.kill()
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    left = leftovers(tmp_path)
    assert len(left) == 1 and "gs_staging-segment.py" in left[0], left   # SIGKILL cannot clean up ...
    assert snapshot(out) == before
    code, _, err = run("segment", argv, capsys)                            # ... the next run does
    assert code == 0 and "left by a killed run of segment.py" in err, err
    assert not leftovers(tmp_path) and snapshot(out) != before
