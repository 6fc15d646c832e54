"""prune.py: zero-contribution pruning is exactly the unseen Gaussians and provably invisible in training views.

Scenes are built from tensors so every Gaussian's fate is known in advance: fully occluded behind an opaque
wall, behind every camera, outside every frustum, transparent everywhere, and visible. The lossless bound is
checked here by rendering independently of pruning/prune.py's own verification.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arguments import ModelParams, read_cfg_args, write_cfg_args
from gaussian_renderer import available_backends, render
from pruning import (BOUND, RenderOptions, VerificationError, prune_gaussians, removal_mask,
                     total_contribution)
from pruning.pipeline import PruneConfig, run_prune
from scene.cameras import Camera
from scene.dataset_readers import read_scene
from scene.gaussian_model import GaussianModel
from scene.model_folder import load_model, save_model, write_cameras_json
from segmentation.synthetic import make_demo_scene
from utils.errors import UserError
from utils.sh import rgb_to_sh

REPO = Path(__file__).resolve().parents[1]
BACKEND = "cpu" if "cpu" in available_backends() else "reference"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(means, scales, opacities, colors, quats=None) -> GaussianModel:
    """GaussianModel (SH degree 0) from activated values. means/scales/colors: [N, 3]; opacities: [N]."""
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    n = len(means)
    q = t(quats) if quats is not None else torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)
    return GaussianModel.from_tensors(t(means), rgb_to_sh(t(colors))[:, None, :], torch.zeros(n, 0, 3),
                                      torch.log(t(scales)), q, torch.logit(t(opacities).double()).float()[:, None])


def pinhole(x: float, y: float, z: float, size: int, uid: int) -> Camera:
    """Identity-rotation camera at (x, y, z) looking along +z (OpenCV axes), 90-ish degree field of view."""
    w2c = np.eye(4)
    w2c[:3, 3] = [-x, -y, -z]
    return Camera(uid=uid, image_name=f"v{uid}", width=size, height=size, fx=float(size), fy=float(size),
                  cx=size / 2, cy=size / 2, world_to_camera=w2c)


def max_render_diff(a: GaussianModel, b: GaussianModel, cameras, background=torch.zeros(3)) -> float:
    """Independent check of the bound: max |render_a - render_b| over every pixel of every camera."""
    worst = 0.0
    with torch.no_grad():
        for cam in cameras:
            ra = render(cam, a, background, backend=BACKEND)["render"]
            rb = render(cam, b, background, backend=BACKEND)["render"]
            worst = max(worst, float((ra - rb).abs().max()))
    return worst


def prune_cfg(model_path: Path, **kw) -> PruneConfig:
    return PruneConfig(str(model_path), backend=BACKEND, num_threads=1, progress=False, **kw)


def opts() -> RenderOptions:
    return RenderOptions(torch.zeros(3), backend=BACKEND, num_threads=1, progress=False)


# ---------------------------------------------------------------------------------------------------------
# (a)-(d) + visible
# ---------------------------------------------------------------------------------------------------------
def wall_scene():
    """Four cameras at z=0 looking +z; returns (model, cameras, kind per Gaussian).

    The wall: two full-frame flat layers (alpha 0.99 then 0.9: T = 0.001) and a central layer whose core
    (alpha > 0.9) stops the compositing, while its tail still contributes. Hidden Gaussians sit behind that
    core in every view; the wall layers themselves all contribute somewhere, so they must be kept.
    """
    rng = np.random.default_rng(3)
    rows = []  # (mean, scale, opacity, colour, kind)
    flat = [1000.0, 1000.0, 0.01]
    rows.append(([0, 0, 4.0], flat, 0.9999, [0.5, 0.5, 0.5], "wall"))
    rows.append(([0, 0, 4.2], flat, 0.9, [0.4, 0.4, 0.6], "wall"))
    rows.append(([0, 0, 4.4], [1.1, 1.1, 0.01], 0.9999, [0.7, 0.3, 0.3], "wall"))
    for _ in range(12):  # visible, in front of the wall
        rows.append(([*rng.uniform(-0.6, 0.6, 2), rng.uniform(2.0, 3.0)], [rng.uniform(0.05, 0.1)] * 3,
                     rng.uniform(0.4, 0.7), rng.uniform(0, 1, 3), "visible"))
    for _ in range(5):   # (a) occluded: behind the wall's stopping core in every view
        rows.append(([*rng.uniform(-0.08, 0.08, 2), 6.0], [0.02] * 3, 0.9, [1.0, 1.0, 1.0], "occluded"))
    for _ in range(4):   # (b) behind every camera
        rows.append(([*rng.uniform(-1, 1, 2), -2.0], [0.1] * 3, 0.9, [1.0, 0.0, 0.0], "behind"))
    for x, y in ((8, 0), (-8, 0), (0, 8), (0, -8)):  # (c) outside every frustum (x/z = 4, far off-screen)
        rows.append(([x, y, 2.0], [0.05] * 3, 0.9, [0.0, 1.0, 0.0], "outside"))
    for _ in range(4):   # (d) transparent: opacity < 1/255, so alpha < 1/255 at every pixel
        rows.append(([*rng.uniform(-0.5, 0.5, 2), 2.5], [0.1] * 3, 0.003, [0.0, 0.0, 1.0], "transparent"))
    means, scales, ops, cols, kinds = map(list, zip(*rows))
    corners = ((1, 1), (-1, 1), (1, -1), (-1, -1))
    cams = [pinhole(sx * 0.15, sy * 0.15, 0.0, 48, i) for i, (sx, sy) in enumerate(corners)]
    return make_model(means, scales, ops, cols), cams, np.array(kinds)


def test_default_mode_removes_exactly_the_unseen_gaussians():
    model, cams, kinds = wall_scene()
    pruned, res = prune_gaussians(model, cams, opts())
    expected_removed = np.isin(kinds, ["occluded", "behind", "outside", "transparent"])
    removed = (~res.keep).numpy()
    for kind in np.unique(kinds):
        sel = kinds == kind
        assert (removed[sel] == expected_removed[sel]).all(), f"{kind}: removed {removed[sel].tolist()}"
    assert res.num_removed == 17 and len(pruned) == len(model) - 17
    assert res.restored == 0
    assert (res.contribution[torch.from_numpy(~expected_removed)] > 0).all()
    # (a) is hidden by the wall, not by anything else: without the wall every occluded Gaussian contributes
    no_wall = kinds != "wall"
    alone = total_contribution(model.subset(torch.from_numpy(no_wall)), cams, opts())
    assert (alone[torch.from_numpy(kinds[no_wall] == "occluded")] > 0).all()
    # the guarantee, measured independently of the module's own verification
    diff = max_render_diff(model, pruned, cams)
    assert diff < BOUND
    assert res.check.passed and res.check.max_abs_diff == pytest.approx(diff, abs=1e-7)
    # the kept Gaussians are the right rows, unchanged
    assert torch.equal(pruned.get_xyz, model.get_xyz[res.keep])


def test_contributions_sum_to_the_rendered_alpha():
    """Sum over Gaussians of sum(alpha*T) over pixels = sum over pixels of (1 - final T), per view."""
    model, cams, _ = wall_scene()
    total = total_contribution(model, cams, opts())
    with torch.no_grad():
        alpha = sum(float(render(c, model, torch.zeros(3), backend=BACKEND)["alpha"].double().sum()) for c in cams)
    assert total.dtype == torch.float64
    assert float(total.sum()) == pytest.approx(alpha, rel=1e-4)


# ---------------------------------------------------------------------------------------------------------
# The early-termination case: a zero-contribution Gaussian whose removal is visible
# ---------------------------------------------------------------------------------------------------------
def stopper_scene():
    """Camera A at z=0 sees layers alpha 0.99 (z=2) and 0.5 (z=2.5): T = 0.005. The blocker (z=3, alpha 0.99)
    then fails T*(1 - alpha) >= 1e-4, so the loop stops before it: zero contribution everywhere. The white
    Gaussian at z=5 is kept because camera B (z=4, the rest behind it) sees it; without the blocker, A
    composites it with alpha*T = 0.9 * 0.005 = 0.0045 > 1/510. Plus one transparent Gaussian (removable)."""
    flat = [1000.0, 1000.0, 0.01]
    means = [[0, 0, 2.0], [0, 0, 2.5], [0, 0, 3.0], [0, 0, 5.0], [0.1, 0.1, 1.5]]
    ops = [0.9999, 0.5, 0.9999, 0.9, 0.002]
    cols = [[0.2] * 3, [0.2] * 3, [0.0] * 3, [1.0] * 3, [1.0] * 3]
    model = make_model(means, [flat] * 4 + [[0.1] * 3], ops, cols)
    return model, [pinhole(0, 0, 0.0, 32, 0), pinhole(0, 0, 4.0, 32, 1)]


def test_hidden_stopper_is_detected_and_kept():
    model, cams = stopper_scene()
    contrib = total_contribution(model, cams, opts())
    assert contrib[2] == 0 and contrib[4] == 0 and (contrib[[0, 1, 3]] > 0).all()
    naive = model.subset(contrib > 0)
    assert max_render_diff(model, naive, cams) > BOUND  # the naive argument really fails here
    pruned, res = prune_gaussians(model, cams, opts())
    assert res.keep.tolist() == [True, True, True, True, False]
    assert res.restored == 1
    assert max_render_diff(model, pruned, cams) < BOUND


def test_unrepaired_failure_is_an_error():
    model, cams = stopper_scene()
    with pytest.raises(VerificationError, match="1/510"):
        prune_gaussians(model, cams, opts(), max_rounds=0)
    # threshold mode reports the cost instead of failing
    _, res = prune_gaussians(model, cams, opts(), threshold=0.0)
    assert not res.check.passed and res.check.max_abs_diff > BOUND and res.check.min_psnr < 60


# ---------------------------------------------------------------------------------------------------------
# Threshold mode
# ---------------------------------------------------------------------------------------------------------
def demo_model(num_views=6, size=48, seed=0):
    s = make_demo_scene(num_views=num_views, size=size, points_per_object=150, ground_points=300, seed=seed)
    return make_model(s.means, s.scales, s.opacities, s.colors, s.quats), s.cameras


def test_threshold_mode_is_monotone():
    model, cams = demo_model()
    contrib = total_contribution(model, cams, opts())
    thresholds = [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0]
    masks = [removal_mask(contrib, t) for t in thresholds]
    for lo, hi in zip(masks, masks[1:]):
        assert bool((lo <= hi).all()), "a higher threshold must remove a superset"
    counts = [int(m.sum()) for m in masks]
    assert counts[0] == int((contrib == 0).sum()) and counts[-2] > counts[0] and counts[-1] == len(model) - 1
    # the definition: below T x max contribution, independently recomputed in numpy
    c = contrib.numpy()
    assert counts[4] == int(((c < 1e-3 * c.max()) | (c == 0)).sum())
    # lossy pruning costs quality on the training views, and more with a higher threshold
    _, r_lo = prune_gaussians(model, cams, opts(), threshold=1e-3, contribution=contrib)
    _, r_hi = prune_gaussians(model, cams, opts(), threshold=1e-1, contribution=contrib)
    assert r_hi.check.mean_psnr < r_lo.check.mean_psnr
    with pytest.raises(ValueError):
        removal_mask(contrib, -0.1)


# ---------------------------------------------------------------------------------------------------------
# The verification renders only the tiles where the two models can differ: same numbers as full renders
# ---------------------------------------------------------------------------------------------------------
def _same_check(a, b) -> None:
    for f in ("num_views", "max_abs_diff", "worst_view", "changed_pixels", "min_psnr", "mean_psnr"):
        assert getattr(a, f) == getattr(b, f), f
    assert a.failing.keys() == b.failing.keys()
    for k in a.failing:
        assert torch.equal(a.failing[k], b.failing[k])


@pytest.mark.parametrize("scene,threshold", [("wall", None), ("stopper", None), ("stopper", 0.0), ("demo", 0.01),
                                             ("demo", 0.05)])
def test_restricted_verification_reports_what_full_renders_report(scene: str, threshold) -> None:
    from pruning import compare_renders, contribution_and_stoppers, dirty_tiles

    if BACKEND != "cpu":
        pytest.skip("stopper reports need the cpu backend")
    model, cams = {"wall": lambda: wall_scene()[:2], "stopper": stopper_scene, "demo": demo_model}[scene]()
    contrib, stoppers = contribution_and_stoppers(model, cams, opts())
    assert stoppers is not None and torch.equal(contrib, total_contribution(model, cams, opts()))
    remove = removal_mask(contrib, threshold or 0.0)
    pruned = model.subset(~remove)
    masks = dirty_tiles(model, pruned, remove, contrib, stoppers, cams, opts())
    full = compare_renders(model, pruned, cams, opts())
    part = compare_renders(model, pruned, cams, opts(), tile_masks=masks)
    _same_check(full, part)
    assert full.max_abs_diff > 0  # something to find (a stopper, a composited Gaussian or a re-rounded one)
    if scene == "wall":  # nothing stopped by a removed Gaussian: only re-rounded kept ones need a look
        assert sum(int(m.sum()) for m in masks) < 0.5 * sum(m.numel() for m in masks)


def test_contribution_kernel_equals_the_unit_vote_and_finds_the_stopper() -> None:
    from gaussian_renderer import contribution

    if BACKEND != "cpu":
        pytest.skip("stopper reports need the cpu backend")
    model, cams = stopper_scene()
    c, stop, tiles, ids = contribution(cams[0], model, backend="cpu")
    ones = torch.ones(cams[0].height, cams[0].width, 1)
    from gaussian_renderer import vote
    assert torch.equal(c.view(torch.int32), vote(cams[0], model, ones, backend="cpu")[:, 0].view(torch.int32))
    assert stop.shape == (32, 32) and stop.dtype == torch.int32
    assert (stop == 2).float().mean() > 0.9  # the blocker stops camera A's loop nearly everywhere
    _, stop_b, tiles_b, _ = contribution(cams[1], model, backend="cpu")
    assert (stop_b == -1).all() and tiles_b.numel() == 0  # camera B never reaches T < 1e-4
    # the pairs are the distinct (tile, stopper) of the map, sorted
    ys, xs = torch.nonzero(stop >= 0, as_tuple=True)
    key = torch.unique((ys // 16 * 2 + xs // 16).long() * 8 + stop[ys, xs].long())
    assert torch.equal(tiles.long() * 8 + ids.long(), key)


def test_native_per_gaussian_kernels_do_not_depend_on_position() -> None:
    """The restricted verification relies on a Gaussian's projection, SH colour and footprint being functions of
    its own values only, wherever it sits in the tensors (unlike torch's vectorised activations)."""
    from gaussian_renderer import prepare_gaussians, sh_colors
    from gaussian_renderer.cpu import bin_gaussians, project

    model, cams = demo_model(num_views=2, size=40)
    g = prepare_gaussians(model)
    idx = torch.randperm(len(g), generator=torch.Generator().manual_seed(0))[: len(g) - 37]
    part = g.subset(idx)
    sub = model.subset(idx)
    for cam in cams:
        for cull in (False, True):
            a = project(g.means, g.quats, g.scales, cam.viewmat(), cam.K(), cam.width, cam.height, cull=cull)
            b = project(part.means, part.quats, part.scales, cam.viewmat(), cam.K(), cam.width, cam.height, cull=cull)
            for f in ("means2d", "conics", "depths", "radii"):
                assert torch.equal(getattr(a, f)[idx], getattr(b, f)), f
        _, _, ra = bin_gaussians(a, g.opacities, cam.width, cam.height)
        _, _, rb = bin_gaussians(b, part.opacities, cam.width, cam.height)
        assert torch.equal(ra[idx], rb)
        assert torch.equal(sh_colors(cam, model, native=True)[idx], sh_colors(cam, sub, native=True))


# ---------------------------------------------------------------------------------------------------------
# Model folders and the script
# ---------------------------------------------------------------------------------------------------------
def _write_blender_source(root: Path, model: GaussianModel, train, test) -> None:
    """A NeRF-synthetic scene whose images are renders of ``model`` (the readers' own format, OpenGL c2w)."""
    for split, cams in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True)
        frames = []
        for cam in cams:
            with torch.no_grad():
                img = render(cam, model, torch.zeros(3), backend=BACKEND)["render"].clamp(0, 1)
            Image.fromarray((img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(
                root / split / f"{cam.image_name}.png")
            c2w = np.linalg.inv(cam.world_to_camera)
            c2w[:3, 1:3] *= -1
            frames.append({"file_path": f"{split}/{cam.image_name}", "transform_matrix": c2w.tolist()})
        fov = 2 * math.atan(cams[0].width / (2 * cams[0].fx))
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": fov, "frames": frames}))


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """Inria model folder (trained with --eval) + its NeRF-synthetic source. The model is the demo scene plus
    junk that no view sees: 30 transparent Gaussians and 10 far above every camera's field of view."""
    root = tmp_path_factory.mktemp("prune")
    s = make_demo_scene(num_views=8, size=48, points_per_object=150, ground_points=300)
    scene_model, cams = make_model(s.means, s.scales, s.opacities, s.colors, s.quats), s.cameras
    rng = np.random.default_rng(1)
    junk_means = np.concatenate([rng.uniform(-1, 1, (30, 3)) + [0, 0, 0.5], rng.uniform(-1, 1, (10, 3)) + [0, 0, 30]])
    junk_ops = np.r_[np.full(30, 0.002), np.full(10, 0.9)]
    model = make_model(np.concatenate([s.means, junk_means]), np.concatenate([s.scales, np.full((40, 3), 0.05)]),
                       np.r_[s.opacities, junk_ops], np.concatenate([s.colors, np.full((40, 3), 0.5)]),
                       np.concatenate([s.quats, np.tile([1.0, 0, 0, 0], (40, 1))]))
    src = root / "scene"
    _write_blender_source(src, scene_model, cams[:6], cams[6:])
    mp = root / "model"
    mp.mkdir()
    info = read_scene(str(src), eval=True)
    write_cfg_args(mp / "cfg_args", ModelParams(sh_degree=0, source_path=str(src), model_path=str(mp), eval=True))
    write_cameras_json(mp / "cameras.json", info.train_cameras + info.test_cameras)
    save_model(mp, 700, model)
    return mp


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "prune.py"), *args, "--backend", BACKEND, "--quiet", "--threads", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


@pytest.mark.slow
def test_cli_writes_a_new_inria_folder_and_leaves_the_input_alone(model_folder: Path, tmp_path: Path):
    before = _hashes(model_folder)
    out = tmp_path / "pruned"
    res = _run("-m", str(model_folder), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "max |diff|" in res.stdout and "PASSED" in res.stdout
    assert _hashes(model_folder) == before
    assert sorted(_hashes(out)) == [".gs_outputs.json", "cameras.json", "cfg_args",
                                    "point_cloud/iteration_700/point_cloud.ply", "prune_report.json"]
    assert (out / "cameras.json").read_bytes() == (model_folder / "cameras.json").read_bytes()
    cfg, cfg_in = read_cfg_args(out / "cfg_args"), read_cfg_args(model_folder / "cfg_args")
    assert cfg["model_path"] == str(out) and {**cfg, "model_path": None} == {**cfg_in, "model_path": None}

    rep = json.loads((out / "prune_report.json").read_text())
    _, orig, _ = load_model(model_folder)
    _, new, it = load_model(out)
    assert it == 700 and len(new) == rep["gaussians"]["after"] == len(orig) - rep["gaussians"]["removed"]
    assert rep["gaussians"]["removed"] >= 40  # at least the junk
    assert rep["verification"]["passed"] and rep["verification"]["max_abs_diff"] < BOUND
    assert rep["ply_bytes"]["after"] < rep["ply_bytes"]["before"]
    assert rep["heldout"]["split"] == "test" and rep["heldout"]["num_views"] == 2
    assert rep["heldout"]["psnr_after"] == pytest.approx(rep["heldout"]["psnr_before"], abs=0.05)
    assert set(rep["timings_s"]) >= {"load", "contribution", "verify", "quality", "write", "total"}
    assert rep["version"] == 1
    # the pruned model, rendered independently, matches the input on every training view
    train = read_scene(cfg["source_path"], eval=True).train_cameras
    assert max_render_diff(orig, new, train) < BOUND

    # refusals are one-line UserErrors (the script turns them into exit 2; see the bad -m test)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("not prune.py's")
    with pytest.raises(UserError, match="--force"):
        run_prune(prune_cfg(model_folder, out=str(theirs)))
    with pytest.raises(UserError, match="is the input"):
        run_prune(prune_cfg(model_folder, out=str(model_folder)))
    rep2 = run_prune(prune_cfg(model_folder, out=str(out), threshold=1e-3)).report   # its own folder: no --force
    assert rep2["gaussians"]["removed"] >= rep["gaussians"]["removed"]
    assert json.loads((out / "prune_report.json").read_text())["threshold"] == 1e-3
    assert _hashes(model_folder) == before


def test_threshold_outputs_nest(model_folder: Path, tmp_path: Path):
    """The folder written with a higher threshold holds a subset of the Gaussians of a lower one."""
    kept = {}
    for t in (1e-4, 1e-2):
        run_prune(prune_cfg(model_folder, out=str(tmp_path / f"t{t:g}"), threshold=t))
        _, g, _ = load_model(tmp_path / f"t{t:g}")
        kept[t] = {tuple(r) for r in g.get_xyz.detach().numpy().tolist()}
    assert kept[1e-2] < kept[1e-4]


@pytest.mark.slow
def test_sweep_writes_table_and_png(model_folder: Path, tmp_path: Path):
    out = tmp_path / "sw"
    lines: list[str] = []
    run_prune(prune_cfg(model_folder, out=str(out), sweep=True, sweep_thresholds=(0.0, 1e-4, 1e-2, 0.1)),
              log=lines.append)
    sweep = json.loads((out / "sweep.json").read_text())
    rows = sweep["rows"]
    assert [r["threshold"] for r in rows] == [0.0, 1e-4, 1e-2, 0.1]
    removed = [r["percent_removed"] for r in rows]
    assert removed == sorted(removed) and removed[-1] > removed[0]
    assert rows[-1]["psnr"] < rows[0]["psnr"] <= sweep["unpruned"]["psnr"] + 0.05
    assert sweep["heldout_split"] == "test" and sweep["reference"] == "ground truth"
    png = Image.open(out / "sweep.png")
    assert png.format == "PNG" and png.size[0] > 300
    assert any("threshold" in ln and "PSNR" in ln for ln in lines)
    assert not list(out.glob("**/iteration_*/point_cloud.ply"))[1:]  # one model only, not one per threshold


@pytest.mark.slow
def test_bad_model_path_is_one_line_exit_2(tmp_path: Path):
    res = _run("-m", str(tmp_path / "nope"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1 and "nope" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="point_cloud"):
        run_prune(prune_cfg(empty))
    assert not (tmp_path / "empty_pruned").exists()


@pytest.mark.parametrize("against_original", [False, True])
def test_quality_of_the_pruned_model_needs_one_full_render_per_view(against_original: bool) -> None:
    """evaluate_pruned renders the pruned model only on the tiles that can differ and reports exactly what two
    full evaluations report (lossless and lossy removal; photos or the original's renders as reference)."""
    from pruning.quality import evaluate, evaluate_pruned

    model, cams = demo_model(num_views=5, size=48, seed=2)
    for c in cams:  # photos: the model's own renders, blurred a little
        with torch.no_grad():
            img = render(c, model, torch.zeros(3), backend=BACKEND)["render"].clamp(0, 1)
        arr = (torch.nn.functional.avg_pool2d(img[None], 3, 1, 1)[0].permute(1, 2, 0).numpy() * 255 + 0.5)
        c.loader = lambda a=arr.astype(np.uint8): a
    contrib = total_contribution(model, cams[:2], opts())
    for threshold in (0.0, 0.02):
        remove = removal_mask(contrib, threshold)
        assert 0 < int(remove.sum()) < len(model)
        pruned = model.subset(~remove)
        ref = model if against_original else None
        want_b = None if against_original else evaluate(model, cams, opts())
        want_a = evaluate(pruned, cams, opts(), ref)
        got_b, got_a = evaluate_pruned(model, pruned, remove, cams, opts(), against_original)
        assert (got_a.psnr, got_a.ssim, got_a.num_views) == (want_a.psnr, want_a.ssim, want_a.num_views)
        if want_b is not None:
            assert (got_b.psnr, got_b.ssim) == (want_b.psnr, want_b.ssim)
        else:
            assert math.isnan(got_b.psnr) and got_b.num_views == len(cams)
