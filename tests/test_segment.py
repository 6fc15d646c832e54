"""segment.py and its library: voting equals the paper's autograd formulation, selections recover known
objects, propagation, --views, atomic outputs, summary.json, one-line errors, and the built-in demo."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from segmentation.demo import gaussians_from_synthetic, write_demo_data
from segmentation.pipeline import SegmentConfig, run_segmentation
from segmentation.synthetic import make_demo_scene
from segmentation.voting import (accumulate_votes, decide_labels, make_selection, parse_views, propagate_labels,
                                 select_views)
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # px: small views keep the file fast


def _run(model: Path, masks: Path, out: Path, **kw) -> "object":
    cfg = SegmentConfig(model_path=str(model), masks=str(masks), out=str(out), previews=kw.pop("previews", 0),
                        gif_frames=kw.pop("gif_frames", 0), backend="cpu", progress=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_segmentation(cfg)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "segment.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _prec_recall(selected: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = int((selected & truth).sum())
    return tp / max(1, int(selected.sum())), tp / max(1, int(truth.sum()))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """Model + NeRF-synthetic source with binary masks of the ball (id 1) on 12 of 16 views."""
    root = tmp_path_factory.mktemp("single")
    return write_demo_data(root, [1], num_views=16, size=SIZE, backend="cpu")


@pytest.fixture(scope="module")
def single_run(single, tmp_path_factory):
    out = tmp_path_factory.mktemp("single_out")
    return _run(single.model_path, single.masks_path, out, previews=2, gif_frames=3)


# ---------------------------------------------------------------------------------------------------------
# Voting = the paper's autograd formulation
# ---------------------------------------------------------------------------------------------------------
def test_vote_kernel_equals_autograd_of_masked_render():
    """votes[n, k] must equal d/dx[n, k] of (render(override_color=x) * w).sum(), summed over views, computed
    here with torch autograd through the dense reference rasterizer; and the paper's signed single-label
    vote (+alpha T inside, -alpha T outside) must be votes[:, 1] - votes[:, 0]."""
    from gaussian_renderer import render

    scene = make_demo_scene(num_views=2, size=32, points_per_object=60, ground_points=100, seed=3)
    g = gaussians_from_synthetic(scene)
    n = len(g)
    rng = np.random.default_rng(0)
    items = []
    for cam in scene.cameras:
        lm = rng.integers(0, 3, size=(cam.height, cam.width)).astype(np.int32)  # labels 0..2, everywhere
        items.append((cam, lm))
    votes, names = accumulate_votes(g, items, num_labels=2, backend="cpu", progress=False)
    assert names == [c.image_name for c in scene.cameras]
    assert votes.dtype == np.float64 and votes.shape == (n, 3)

    ref = torch.zeros(n, 3, dtype=torch.float64)
    signed = torch.zeros(n, dtype=torch.float64)
    for cam, lm in items:
        x = torch.zeros(n, 3, requires_grad=True)
        out = render(cam, g, torch.zeros(3), override_color=x, backend="reference")["render"]
        w = torch.nn.functional.one_hot(torch.from_numpy(lm).long(), 3).float().permute(2, 0, 1)
        (grad,) = torch.autograd.grad((out * w).sum(), x)
        ref += grad.double()
        # the paper's single-label formulation: weights +1 in the mask (label 1), -1 elsewhere
        y = torch.zeros(n, 1, requires_grad=True)
        out1 = render(cam, g, torch.zeros(1), override_color=y, backend="reference")["render"]
        inside = torch.from_numpy(lm == 1).float()
        (g1,) = torch.autograd.grad((out1[0] * (2 * inside - 1)).sum(), y)
        signed += g1[:, 0].double()
    assert ref.abs().sum() > 10  # the scene is visible
    # tolerance: two correct rasterizers differ where the 1/255 alpha cut flips (../shared/NOTES.md)
    torch.testing.assert_close(torch.from_numpy(votes), ref, rtol=1e-3, atol=2e-3 * float(ref.abs().max()))
    # background = every pixel not of label 1: merge channels 0 and 2 for the single-label comparison
    paper = votes[:, 1] - (votes[:, 0] + votes[:, 2])
    torch.testing.assert_close(torch.from_numpy(paper), signed, rtol=1e-3, atol=2e-3 * float(signed.abs().max()))
    # and the decisions agree wherever the vote is not a near tie
    clear = np.abs(signed.numpy()) > 1e-2 * np.abs(signed.numpy()).max()
    assert ((paper > 0) == (signed.numpy() > 0))[clear].all()


def test_prefetched_votes_equal_the_sequential_sum():
    """accumulate_votes reads the next mask in a thread: same views, same order, the same float64 sums bit for bit."""
    from segmentation.voting import vote_view

    scene = make_demo_scene(num_views=4, size=32, points_per_object=60, ground_points=100, seed=5)
    g = gaussians_from_synthetic(scene)
    rng = np.random.default_rng(1)
    items = [(cam, rng.integers(0, 2, size=(cam.height, cam.width)).astype(np.int32)) for cam in scene.cameras]
    votes, names = accumulate_votes(g, iter(items), num_labels=1, backend="cpu", progress=False)
    ref = torch.zeros(len(g), 2, dtype=torch.float64)
    for cam, lm in items:
        ref += vote_view(cam, g, lm, 1, "cpu")
    assert names == [c.image_name for c in scene.cameras]
    assert np.array_equal(votes, ref.numpy()) and votes.sum() > 0


def test_preview_panels_equal_renders_of_the_subsets():
    """FrozenGaussians + the full scene's colours indexed per subset render the same pixels as subset models."""
    from segmentation import export

    scene = make_demo_scene(num_views=2, size=48, points_per_object=80, ground_points=150, seed=2)
    g = gaussians_from_synthetic(scene)
    g.active_sh_degree = g.max_sh_degree
    rows = np.random.default_rng(0).random(len(g)) < 0.4
    ctx = export.PreviewContext.of(g, rows, ~rows, (1.0, 1.0, 1.0), False, "cpu")
    cam = scene.cameras[1]
    panels = export.render_panels(ctx, cam, 480)
    bg = (1.0, 1.0, 1.0)
    assert panels.title == "render"
    assert np.array_equal(panels.original, export.render_rgb(cam, g, bg, "cpu"))
    assert np.array_equal(panels.extracted, export.render_rgb(cam, g.subset(torch.from_numpy(rows)), bg, "cpu"))
    assert np.array_equal(panels.deleted, export.render_rgb(cam, g.subset(torch.from_numpy(~rows)), bg, "cpu"))
    assert (panels.extracted != 255).any() and (panels.deleted != 255).any()
    small = export.shrink_panels(panels, cam, 20)
    want = export.preview_camera(cam, 20)
    assert small.original.shape == small.deleted.shape == (want.height, want.width, 3)


@pytest.mark.slow
def test_previews_render_each_view_once(single, tmp_path, monkeypatch):
    """A view in both the PNG strips and the GIF is rendered once; the GIF gets every frame."""
    from segmentation import export

    calls = []
    real = export.render_panels
    monkeypatch.setattr(export, "render_panels", lambda ctx, cam, side: calls.append(cam.image_name) or
                        real(ctx, cam, side))
    res = _run(single.model_path, single.masks_path, tmp_path / "out", previews=2, gif_frames=3)
    import imageio.v3 as iio

    assert sorted(calls) == sorted(set(calls)) and len(calls) == 3  # views 0 and 11 shared, 6 only in the GIF
    assert iio.imread(res.out / "views.gif").shape[0] == 3


@pytest.mark.slow
def test_previews_0_skips_the_gif_unless_asked(single, tmp_path, monkeypatch):
    """--previews 0 renders nothing (the GIF's 24 views cost as much as voting 15-20 at 1 M+ Gaussians); an
    explicit --gif-frames still gets its GIF."""
    from segmentation import export
    from segmentation.pipeline import gif_frame_count

    assert gif_frame_count(SegmentConfig(previews=0)) == 0 and gif_frame_count(SegmentConfig()) == 24
    assert gif_frame_count(SegmentConfig(previews=0, gif_frames=5)) == 5
    calls = []
    real = export.render_panels
    monkeypatch.setattr(export, "render_panels", lambda ctx, cam, side: calls.append(cam.image_name) or
                        real(ctx, cam, side))
    res = _run(single.model_path, single.masks_path, tmp_path / "none", previews=0, gif_frames=None)
    assert calls == [] and not list(res.out.glob("*.gif")) and not list(res.out.glob("preview_*.png"))
    res = _run(single.model_path, single.masks_path, tmp_path / "gif", previews=0, gif_frames=2)
    assert len(calls) == 2 and (res.out / "views.gif").is_file() and not list(res.out.glob("preview_*.png"))


def test_gif_frames_snap_to_the_png_views():
    from utils.previews import evenly_spaced
    from segmentation.pipeline import _snap

    frames = _snap(evenly_spaced(60, 24), evenly_spaced(60, 4))
    assert len(frames) == 24 and {0, 20, 39, 59} <= set(frames)
    assert max(abs(a - b) for a, b in zip(frames, evenly_spaced(60, 24))) <= 1  # still evenly spread
    assert _snap([0, 5, 9], [9]) == [0, 5, 9] and _snap([], [3]) == []


def test_save_gif_one_palette(tmp_path):
    from utils.io import save_gif

    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 64 * 96 * 3).reshape(64, 96, 3).astype(np.uint8)
    frames = [np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(5)]
    save_gif(tmp_path / "a.gif", frames)
    back = iio.imread(tmp_path / "a.gif")[..., :3]
    assert back.shape == (5, 64, 96, 3)
    assert np.abs(back.astype(int) - np.stack(frames)).mean() < 8  # 256 colours + dithering


def test_decide_labels_rules():
    votes = np.array([[0.0, 0.0], [1.0, 3.0], [3.0, 1.0], [1.0, 1.0], [0.0, 0.5]])
    assert decide_labels(votes).tolist() == [-1, 1, 0, 0, 1]        # vote > 0 (tie -> background)
    # margin on (in - out) / (in + out): 0.5, -0.5, 0, 1
    assert decide_labels(votes, margin=0.6).tolist() == [-1, 0, 0, 0, 1]
    assert decide_labels(votes, margin=-0.6).tolist() == [-1, 1, 1, 1, 1]
    multi = np.array([[1.0, 2.0, 3.0], [5.0, 2.0, 3.0], [1.0, 3.0, 3.0]])
    assert decide_labels(multi).tolist() == [2, 0, 0]               # argmax; tie between labels -> no majority
    with pytest.raises(UserError):
        decide_labels(votes, margin=1.0)


# ---------------------------------------------------------------------------------------------------------
# Selections on the synthetic scene
# ---------------------------------------------------------------------------------------------------------
def test_single_label_recovers_the_object(single, single_run):
    labels = single_run.selection.labels
    seen = single_run.votes.sum(1) > 0
    truth = np.asarray(single.scene.object_ids) == 1
    p, r = _prec_recall((labels == 1) & seen, truth & seen)
    assert p >= 0.95 and r >= 0.95, (p, r)
    assert seen.mean() > 0.8


def test_multi_label_argmax_recovers_all_three_objects(tmp_path):
    data = write_demo_data(tmp_path / "multi", [1, 2, 3], num_views=12, size=SIZE, backend="cpu")
    res = _run(data.model_path, data.masks_path, tmp_path / "out")
    assert res.label_names == ["ball", "box", "can"]                   # COCO category names
    assert {"extracted_ball.ply", "extracted_box.ply", "extracted_can.ply", "deleted.ply"} <= set(res.outputs)
    obj = np.asarray(data.scene.object_ids)
    seen = res.votes.sum(1) > 0
    for l in (1, 2, 3):
        p, r = _prec_recall((res.selection.labels == l) & seen, (obj == l) & seen)
        assert p >= 0.95 and r >= 0.95, (l, p, r)
    bg_p, bg_r = _prec_recall((res.selection.labels == 0) & seen, (obj == 0) & seen)
    assert bg_p >= 0.95 and bg_r >= 0.95


def test_propagation_labels_gaussians_no_mask_saw(single, tmp_path):
    """Hide much of the scene from the masks by voting on 3 of the 12 views only: the Gaussians no voted
    view sees (object interiors, far sides) must get their object's label from their 3D neighbours."""
    keep = _run(single.model_path, single.masks_path, tmp_path / "keep", views="4", undecided="keep")
    prop = _run(single.model_path, single.masks_path, tmp_path / "prop", views="4")   # auto -> propagate
    assert keep.summary["views"]["used"] == 3
    assert prop.summary["parameters"]["undecided_resolved"] == "propagate"
    obj = np.asarray(single.scene.object_ids)
    unseen = keep.selection.labels == -1
    assert (unseen & (obj == 1)).sum() >= 50, "the test needs ball Gaussians that no voted view saw"
    assert keep.summary["gaussians"]["undecided"] == int(unseen.sum())
    got = prop.selection.labels[unseen]
    assert (got >= 0).all()
    accuracy = ((got == 1) == (obj[unseen] == 1)).mean()
    assert accuracy >= 0.95, accuracy
    # keep: undecided stay in deleted.ply; drop: in neither output
    drop = _run(single.model_path, single.masks_path, tmp_path / "drop", views="4", undecided="drop")
    n_bg = int((keep.selection.labels == 0).sum())
    assert keep.summary["files"]["deleted.ply"] == n_bg + int(unseen.sum())
    assert drop.summary["files"]["deleted.ply"] == n_bg
    assert drop.summary["gaussians"]["dropped"] == int(unseen.sum())


def test_propagate_labels_unit():
    xyz = np.array([[0, 0, 0], [0.1, 0, 0], [5, 0, 0], [5.1, 0, 0], [0.05, 0, 0], [5.05, 0, 0]], float)
    labels = np.array([1, 1, 0, 0, -1, -1])
    assert propagate_labels(xyz, labels, k=2).tolist() == [1, 1, 0, 0, 1, 0]
    sel = make_selection(np.array([[0, 1.0], [0, 1.0], [1.0, 0], [1.0, 0], [0, 0], [0, 0]]), xyz,
                         undecided="propagate", knn=2)
    assert sel.labels.tolist() == [1, 1, 0, 0, 1, 0] and sel.num_propagated == 2


# ---------------------------------------------------------------------------------------------------------
# --views
# ---------------------------------------------------------------------------------------------------------
def test_views_spec_parsing_and_selection():
    assert parse_views(None) is None and parse_views("all") is None
    assert parse_views("4") == 4 and parse_views("0.1") == 0.1 and parse_views("1.0") == 1
    for bad in ("0", "-2", "1.5", "abc", "nan", "0.0"):
        with pytest.raises(UserError):
            parse_views(bad)
    assert select_views(24, 4) == [0, 4, 8, 12, 16, 20]
    assert select_views(24, None) == list(range(24))
    assert len(select_views(100, 0.1)) == 10                         # the paper's "10 % of the masks"
    assert select_views(100, 0.1)[0] == 0 and select_views(100, 0.1)[-1] == 99
    assert select_views(5, 0.01) == [0]                              # never zero views
    assert select_views(3, 5) == [0]


def test_views_subsetting_counts(single, tmp_path):
    res = _run(single.model_path, single.masks_path, tmp_path, views="0.25")
    v = res.summary["views"]
    assert v["masked"] == 12 and v["used"] == 3 and len(v["used_names"]) == 3
    # view names are NeRF-synthetic paths (train/view_001); the picked ones are evenly spread
    assert [n.split("/")[-1] for n in v["used_names"]] == [single.train_names[i] for i in select_views(12, 0.25)]


# ---------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------
def test_outputs_layout_and_summary(single, single_run):
    from scene.gaussian_model import GaussianModel

    out = single_run.out
    s = json.loads((out / "summary.json").read_text())
    n = len(single.scene.means)
    assert s["num_gaussians"] == n
    assert s["labels"]["names"] == ["object"] and s["masks"]["format"] == "binary"
    assert s["views"]["masked"] == 12 and s["views"]["used"] == 12 and s["masks"]["views_without_mask"] == 0
    assert s["cameras"]["from"] == "source" and s["cameras"]["split"] == "train"
    assert s["parameters"]["margin"] == 0.0 and s["parameters"]["undecided_resolved"] == "keep"  # paper setting
    g = s["gaussians"]
    assert g["extracted"] + g["background"] + g["undecided"] == n
    assert g["per_label"]["object"] == g["extracted"] == s["files"]["extracted.ply"]
    assert s["files"]["deleted.ply"] == g["background"] + g["undecided"]
    for k in ("load_model", "load_cameras", "open_masks", "vote", "decide", "write", "previews", "total"):
        assert s["timings_s"][k] >= 0
    names = set(p.name for p in out.iterdir())
    assert set(s["outputs"]) == names - {"eval.json", ".gs_outputs.json"}
    assert {"labels.npy", "votes.npy", "extracted.ply", "deleted.ply", "summary.json", "views.gif"} <= names
    assert len([x for x in names if x.startswith("preview_")]) == 2
    labels = np.load(out / "labels.npy")
    votes = np.load(out / "votes.npy")
    assert labels.shape == (n,) and votes.shape == (n, 2) and votes.dtype == np.float64
    assert set(np.unique(labels)) <= {-1, 0, 1}
    np.testing.assert_array_equal(labels, decide_labels(votes))
    # PLYs in Inria's layout with the right rows
    model = GaussianModel(3)
    model.load_ply(out / "extracted.ply")
    assert len(model) == int((labels == 1).sum()) and model.max_sh_degree == 3
    src = GaussianModel(3)
    src.load_ply(single.model_path / "point_cloud" / "iteration_0" / "point_cloud.ply")
    np.testing.assert_array_equal(model.get_xyz.detach().numpy(), src.get_xyz.detach().numpy()[labels == 1])
    # preview strip: 4 panels side by side
    import imageio.v3 as iio
    png = iio.imread(next(out.glob("preview_*.png")))
    assert png.shape == (SIZE, 4 * SIZE, 3)
    assert iio.imread(out / "views.gif").shape[0] == 3


def test_outputs_are_atomic(single, single_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(single_run.out, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert not [p for p in out.iterdir() if (p.name.startswith(".") and p.name != ".gs_outputs.json")
                or p.suffix == ".tmp"]

    import utils.ply

    def broken_write(path, header, body):  # noqa: ANN001
        Path(path).write_bytes(header)  # half a file, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(utils.ply, "_write_file", broken_write)
    with pytest.raises(OSError):
        _run(single.model_path, single.masks_path, out, margin=0.5)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(after) == set(before), "a temp file was left behind"
    assert after == before            # the failure hit the first file written: every previous file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "the staging folder was left behind"


def test_inputs_untouched_and_default_out(single, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(single.model_path, model)
    snapshot = {p: p.read_bytes() for p in model.rglob("*") if p.is_file()}
    masks_snapshot = {p: p.stat().st_mtime_ns for p in single.masks_path.iterdir()}
    cfg = SegmentConfig(model_path=str(model), masks=str(single.masks_path), previews=0, gif_frames=0,
                        backend="cpu", progress=False)
    res = run_segmentation(cfg)
    assert res.out == model / "segmentation" and (res.out / "extracted.ply").is_file()
    assert {p: p.read_bytes() for p in snapshot} == snapshot
    assert {p: p.stat().st_mtime_ns for p in single.masks_path.iterdir()} == masks_snapshot


def test_cameras_json_fallback_when_source_is_gone(single, tmp_path):
    """A model copied without its source: cameras come from cameras.json, previews show renders."""
    from arguments import read_cfg_args

    model = tmp_path / "model"
    shutil.copytree(single.model_path, model)
    cfg_text = (model / "cfg_args").read_text().replace(str(single.source_path), str(tmp_path / "gone"))
    (model / "cfg_args").write_text(cfg_text)
    assert read_cfg_args(model / "cfg_args")["source_path"] == str(tmp_path / "gone")
    with pytest.warns(UserWarning, match="cameras.json"):
        res = run_segmentation(SegmentConfig(model_path=str(model), masks=str(single.masks_path),
                                             out=str(tmp_path / "out"), previews=1, gif_frames=0, split="all",
                                             backend="cpu", progress=False))
    assert res.summary["cameras"]["from"] == "cameras.json"
    assert res.summary["views"]["used"] == 12        # the 4 held-out views have no mask and are skipped
    assert res.summary["masks"]["views_without_mask"] == 4


# ---------------------------------------------------------------------------------------------------------
# One-line errors from the command line
# ---------------------------------------------------------------------------------------------------------
ERROR_CASES = ["missing model folder", "no PLY", "corrupt PLY", "masks folder missing", "masks folder empty",
               "masks match no view", "bad --labels", "bad --views", "--out not writable"]


@pytest.fixture(scope="module")
def error_runs(single, tmp_path_factory):
    """Run every error case (and one run with stretched masks) as its own `python segment.py ...` process;
    the processes are started together because each spends most of its time importing torch."""
    d = tmp_path_factory.mktemp("errors")
    m, masks = str(single.model_path), str(single.masks_path)
    (d / "empty").mkdir()
    (d / "nomatch").mkdir()
    (d / "nomatch" / "other_image.png").write_bytes((single.masks_path / f"{single.train_names[0]}.png").read_bytes())
    (d / "noply" / "point_cloud" / "iteration_7").mkdir(parents=True)
    bad = d / "corrupt"
    (bad / "point_cloud" / "iteration_0").mkdir(parents=True)
    (bad / "cfg_args").write_bytes((single.model_path / "cfg_args").read_bytes())
    (bad / "point_cloud" / "iteration_0" / "point_cloud.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\n"
                                                                          b"element vertex 10\nend_header\n\x00")
    (d / "a_file").write_text("x")
    import cv2

    stretched = d / "stretched"      # masks twice as wide as their views: a warning, not an error
    stretched.mkdir()
    for p in single.masks_path.iterdir():
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(stretched / p.name), cv2.resize(img, (SIZE * 2, SIZE), interpolation=cv2.INTER_NEAREST))
    args = {
        "missing model folder": ["-m", str(d / "nope"), "--masks", masks],
        "no PLY": ["-m", str(d / "noply"), "--masks", masks],
        "corrupt PLY": ["-m", str(bad), "--masks", masks],
        "masks folder missing": ["-m", m, "--masks", str(d / "no_masks")],
        "masks folder empty": ["-m", m, "--masks", str(d / "empty")],
        "masks match no view": ["-m", m, "--masks", str(d / "nomatch")],
        "bad --labels": ["-m", m, "--masks", masks, "--labels", "7"],   # binary masks hold no id 7
        "bad --views": ["-m", m, "--masks", masks, "--views", "1.5"],
        "--out not writable": ["-m", m, "--masks", masks, "--out", str(d / "a_file" / "sub")],
        "aspect": ["-m", m, "--masks", str(stretched), "--previews", "0", "--gif-frames", "0", "--backend", "cpu"],
    }
    assert set(args) == set(ERROR_CASES) | {"aspect"}
    procs = {k: subprocess.Popen([sys.executable, "segment.py", *a, "--out", str(d / "out" / str(i)), "--no-progress"]
                                 if "--out" not in a else [sys.executable, "segment.py", *a, "--no-progress"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, (k, a) in enumerate(args.items())}
    results = {}
    for k, p in procs.items():
        out, err = p.communicate(timeout=300)
        results[k] = (p.returncode, out, err)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case", ERROR_CASES)
def test_cli_errors_are_one_line(error_runs, case):
    code, out, err = error_runs[case]
    assert code == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
    assert "Traceback" not in err + out


@pytest.mark.slow
def test_cli_warns_on_mask_aspect_mismatch(error_runs):
    code, out, err = error_runs["aspect"]
    assert code == 0, err
    warn = [ln for ln in err.splitlines() if "aspect ratio" in ln]
    assert len(warn) == 1 and warn[0].startswith("warning: ") and "12 of 12" in warn[0], err
    assert "Traceback" not in err and "selected" in out


# ---------------------------------------------------------------------------------------------------------
# The built-in demo, as the README runs it
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    r = _cli("--out", str(tmp_path / "demo"), "--no-progress", "--gif-frames", "6")  # fewer GIF renders: speed
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    m = re.search(r"Held-out views: mIoU ([0-9.]+)", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) >= 0.9
    out = tmp_path / "demo" / "segmentation"
    assert json.loads((out / "eval.json").read_text())["miou"] >= 0.9
    assert {"extracted.ply", "deleted.ply", "labels.npy", "votes.npy", "summary.json", "views.gif"} <= \
        {p.name for p in out.iterdir()}
    assert (tmp_path / "demo" / "model" / "point_cloud" / "iteration_0" / "point_cloud.ply").is_file()
    assert (tmp_path / "demo" / "scene" / "transforms_train.json").is_file()
