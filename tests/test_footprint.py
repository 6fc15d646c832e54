"""Tight footprints (opacity-aware box + AccuTile, frustum cull) against Inria's 3-sigma binning, kept as the
reference mode of the same ops: every output must be BIT-identical (floats compared as int32 bit patterns, so
even -0 vs +0 would fail), the tight tile lists must be sub-lists of Inria's, and every tile left out must be
one where a dense float64 evaluation finds no pixel with alpha >= 1/255."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from gaussian_renderer import prepare_gaussians, render
from gaussian_renderer import PreparedGaussians, num_tiles
from gaussian_renderer.cpu import bin_gaussians, project
from gaussian_renderer.rasterization import rasterize, rasterize_subsets, vote_labels_tensors, vote_tensors

MARY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "maryRose"


def bits_equal(a: Tensor, b: Tensor) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == torch.float32:
        return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))
    return torch.equal(a, b)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    a = (rng.random(3) - 0.5) * 0.6
    cx, cy, cz, sx, sy, sz = np.cos(a[0]), np.cos(a[1]), np.cos(a[2]), np.sin(a[0]), np.sin(a[1]), np.sin(a[2])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_scene(seed: int, n: int, width: int, height: int, principal: tuple[float, float] | None = None,
                 elongation: float = 1.0, opacity: tuple[float, float] = (0.02, 0.995),
                 near_band: bool = False, border: bool = False) -> dict:
    """Gaussians seen by a rotated camera: partly off-screen, anisotropic (one axis stretched by `elongation`),
    optionally around the near plane and on the image border; tensors for gaussian_renderer.rasterization."""
    rng = np.random.default_rng(seed)
    f = 0.9 * max(width, height)
    cx, cy = principal if principal is not None else (0.5 * width, 0.5 * height)
    R, t = _rotation(rng), rng.random(3) - 0.5
    z = 1.0 + 6.0 * rng.random(n)
    u = (rng.random(n) - 0.5) * 2.8 * width + 0.5 * width   # pixel coordinates, many off-screen
    v = (rng.random(n) - 0.5) * 2.8 * height + 0.5 * height
    if border:
        k = n // 4
        u[:k] = rng.choice([0.0, width - 1.0], k) + rng.normal(0, 2.0, k)
        v[k:2 * k] = rng.choice([0.0, height - 1.0], k) + rng.normal(0, 2.0, k)
    if near_band:
        z[n - n // 6:] = 0.1 + 0.25 * rng.random(n // 6)  # straddling the near plane z = 0.2
    pc = np.stack([(u - cx) / f * z, (v - cy) / (1.1 * f) * z, z], 1)
    world = (pc - t) @ R  # R^T (pc - t)
    log_scale = np.log(z)[:, None] + math.log(0.015) + rng.normal(0, 0.6, (n, 3))
    log_scale[:, 0] += math.log(elongation)
    log_scale[:, 1:] -= 0.5 * math.log(elongation)
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t
    lo, hi = opacity
    return dict(
        means=torch.tensor(world, dtype=torch.float32),
        quats=torch.tensor(rng.normal(size=(n, 4)), dtype=torch.float32),
        scales=torch.tensor(np.exp(log_scale), dtype=torch.float32),
        opacities=torch.tensor(lo + (hi - lo) * rng.random(n), dtype=torch.float32),
        colors=torch.tensor(rng.random((n, 3)), dtype=torch.float32),
        viewmat=torch.tensor(w2c, dtype=torch.float32),
        K=torch.tensor([[f, 0, cx], [0, 1.1 * f, cy], [0, 0, 1]], dtype=torch.float32), width=width, height=height)


SCENES = {
    "dense": dict(seed=1, n=600, width=64, height=48),
    "elongated_low_opacity": dict(seed=2, n=500, width=72, height=40, elongation=40.0, opacity=(0.003, 0.08)),
    "needles": dict(seed=3, n=400, width=56, height=56, elongation=300.0),
    "offcentre_tiny": dict(seed=4, n=120, width=7, height=5, principal=(1.2, 4.1)),
    "offcentre_odd": dict(seed=5, n=300, width=33, height=17, principal=(30.0, 2.0), elongation=8.0),
    "near_plane_and_border": dict(seed=6, n=500, width=50, height=38, near_band=True, border=True),
}


def outputs(scene: dict, footprint: str, threads: int = 0) -> dict[str, Tensor]:
    """Everything a render and a vote produce, with gradients of a fixed random loss."""
    names = ("means", "quats", "scales", "opacities", "colors")
    ps = {k: scene[k].clone().requires_grad_(True) for k in names}
    w, h = scene["width"], scene["height"]
    out = rasterize(ps["means"], ps["quats"], ps["scales"], ps["opacities"], ps["colors"], scene["viewmat"],
                    scene["K"], w, h, torch.tensor([0.2, 0.4, 0.6]), num_threads=threads, footprint=footprint)
    g = torch.Generator().manual_seed(7)
    loss = sum((out[k] * torch.randn(out[k].shape, generator=g)).sum() for k in ("render", "alpha", "depth"))
    loss.backward()
    res = {k: out[k].detach() for k in ("render", "alpha", "depth", "radii", "visibility_filter")}
    res.update({f"d_{k}": ps[k].grad for k in names})
    res["d_viewspace"] = out["viewspace_points"].grad
    weights = torch.randn(h, w, 3, generator=g)
    geo = [scene[k] for k in ("means", "quats", "scales", "opacities", "viewmat", "K")]
    res["votes"] = vote_tensors(*geo, weights, num_threads=threads, footprint=footprint)
    labels = torch.randint(0, 4, (h, w), generator=g)
    prepared = PreparedGaussians(*geo[:4])
    res["label_votes"] = vote_labels_tensors(prepared, *geo[4:], labels, 3, num_threads=threads, footprint=footprint)
    for key, t in zip(("sparse_g", "sparse_l", "sparse_m"),
                      vote_labels_tensors(prepared, *geo[4:], labels, 3, num_threads=threads, footprint=footprint,
                                          sparse=True)):
        res[key] = t
    return res


def bins(scene: dict, footprint: str, threads: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    with torch.no_grad():
        proj = project(scene["means"], scene["quats"], scene["scales"], scene["viewmat"], scene["K"],
                       scene["width"], scene["height"], num_threads=threads, cull=footprint == "tight")
        return bin_gaussians(proj, scene["opacities"], scene["width"], scene["height"], threads, footprint)


def tile_lists(offsets: Tensor, gids: Tensor) -> list[list[int]]:
    return [gids[offsets[t]:offsets[t + 1]].tolist() for t in range(offsets.numel() - 1)]


def assert_sublists(tight: list[list[int]], inria: list[list[int]]) -> None:
    """Each tight list is the Inria list of the same tile with some Gaussians left out, order kept."""
    for t, (a, b) in enumerate(zip(tight, inria)):
        it = iter(b)
        assert all(g in it for g in a), f"tile {t}: {a} is not an ordered sub-list of {b}"


def left_out_are_transparent(scene: dict, tight: list[list[int]], inria: list[list[int]]) -> int:
    """Dense float64 check: every (tile, Gaussian) pair left out has alpha = o exp(-q/2) < 1/255 on every pixel of
    the tile (with a 1e-6 relative margin). Returns how many pairs were checked."""
    with torch.no_grad():
        proj = project(scene["means"], scene["quats"], scene["scales"], scene["viewmat"], scene["K"],
                       scene["width"], scene["height"])
    m, con, op = proj.means2d.double(), proj.conics.double(), scene["opacities"].double()
    gx = (scene["width"] + 15) // 16
    checked = 0
    for t, (a, b) in enumerate(zip(tight, inria)):
        dropped = sorted(set(b) - set(a))
        if not dropped:
            continue
        x0, y0 = (t % gx) * 16, (t // gx) * 16
        ys, xs = torch.meshgrid(torch.arange(y0, min(y0 + 16, scene["height"]), dtype=torch.float64),
                                torch.arange(x0, min(x0 + 16, scene["width"]), dtype=torch.float64), indexing="ij")
        idx = torch.tensor(dropped)
        dx = m[idx, 0, None, None] - xs
        dy = m[idx, 1, None, None] - ys
        a_, b_, c_ = (con[idx, k, None, None] for k in range(3))
        power = -0.5 * (a_ * dx * dx + c_ * dy * dy) - b_ * dx * dy
        alpha = op[idx, None, None] * torch.exp(power)
        assert (alpha.clamp(max=0.99) < (1 / 255) * (1 + 1e-6)).all() or (power > 0).all(), f"tile {t}"
        checked += len(dropped)
    return checked


@pytest.mark.parametrize("name", list(SCENES))
def test_tight_footprint_is_bit_identical_to_inria(name: str) -> None:
    scene = random_scene(**SCENES[name])
    a, b = outputs(scene, "inria"), outputs(scene, "tight")
    assert int(a["visibility_filter"].sum()) > 0 and float(a["alpha"].max()) > 0.1
    for key in a:
        assert bits_equal(a[key], b[key]), f"{name}: {key} differs between the inria and tight footprints"
    off_i, gid_i, radii_i = bins(scene, "inria")
    off_t, gid_t, radii_t = bins(scene, "tight")
    assert torch.equal(radii_i, radii_t)
    li, lt = tile_lists(off_i, gid_i), tile_lists(off_t, gid_t)
    assert_sublists(lt, li)
    assert gid_t.numel() < gid_i.numel(), "the tight footprint should leave out some tile of this scene"
    assert left_out_are_transparent(scene, lt, li) > 0


def test_elongated_ellipses_lose_box_corners() -> None:
    """AccuTile, not just the box: diagonal needles spanning many tiles keep roughly their diagonal band."""
    n = 40
    rng = np.random.default_rng(0)
    w = h = 128
    f = 100.0
    ang = rng.uniform(0.6, 0.9, n) * (np.pi / 2)  # 35-50 degrees from the x axis
    quats = np.stack([np.cos(ang / 2), 0 * ang, 0 * ang, np.sin(ang / 2)], 1)  # rotation about the optical axis
    scene = dict(means=torch.tensor(np.c_[rng.uniform(-0.3, 0.3, (n, 2)), np.full(n, 2.0)], dtype=torch.float32),
                 quats=torch.tensor(quats, dtype=torch.float32),
                 scales=torch.tensor(np.tile([0.25, 0.004, 0.004], (n, 1)), dtype=torch.float32),
                 opacities=torch.full((n,), 0.9), colors=torch.rand(n, 3), viewmat=torch.eye(4),
                 K=torch.tensor([[f, 0, 64.0], [0, f, 64.0], [0, 0, 1]]), width=w, height=h)
    off_i, gid_i, _ = bins(scene, "inria")
    off_t, gid_t, _ = bins(scene, "tight")
    assert gid_t.numel() < 0.5 * gid_i.numel()
    a, b = outputs(scene, "inria"), outputs(scene, "tight")
    for key in a:
        assert bits_equal(a[key], b[key]), key
    assert left_out_are_transparent(scene, tile_lists(off_t, gid_t), tile_lists(off_i, gid_i)) > 0


def test_binning_is_thread_count_invariant() -> None:
    scene = random_scene(seed=11, n=3000, width=96, height=80, elongation=5.0)
    first = bins(scene, "tight", threads=1)
    for threads in (2, 3, 5):
        for x, y in zip(first, bins(scene, "tight", threads=threads)):
            assert torch.equal(x, y)
    a, b = outputs(scene, "tight", threads=1), outputs(scene, "tight", threads=3)
    for key in a:
        assert bits_equal(a[key], b[key]), key


def test_frustum_cull_changes_only_culled_gaussians() -> None:
    scene = random_scene(seed=12, n=800, width=40, height=30, near_band=True)
    args = [scene[k] for k in ("means", "quats", "scales", "viewmat", "K", "width", "height")]
    with torch.no_grad():
        full, culled = project(*args), project(*args, cull=True)
    cut = (culled.radii == 0) & (full.radii > 0)
    assert int(cut.sum()) > 50, "the scene should have Gaussians off-screen"
    kept = ~cut
    for f in ("means2d", "depths"):
        assert bits_equal(getattr(full, f), getattr(culled, f))
    assert bits_equal(full.conics[kept & (culled.radii > 0)], culled.conics[kept & (culled.radii > 0)])
    assert torch.equal(full.radii[kept], culled.radii[kept])
    # everything culled touches no tile of Inria's rect with its true radius
    _, _, radii = bin_gaussians(full, scene["opacities"], scene["width"], scene["height"], 0, "inria")
    assert (radii[cut] == 0).all()


def test_tile_mask_renders_the_masked_tiles_exactly() -> None:
    scene = random_scene(seed=13, n=500, width=70, height=45)
    geo = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmat", "K", "width", "height")]
    bg = torch.tensor([0.3, 0.6, 0.9])
    full = rasterize(*geo, bg)
    t = num_tiles(scene["width"], scene["height"])
    mask = torch.zeros(t, dtype=torch.bool)
    mask[torch.randperm(t, generator=torch.Generator().manual_seed(0))[: t // 2]] = True
    part = rasterize(*geo, bg, tile_mask=mask)
    gx = (scene["width"] + 15) // 16
    pix = mask.reshape(-1, gx).repeat_interleave(16, 0).repeat_interleave(16, 1)[:scene["height"], :scene["width"]]
    assert bits_equal(part["render"][:, pix], full["render"][:, pix])
    assert bits_equal(part["alpha"][:, pix], full["alpha"][:, pix])
    assert (part["render"][:, ~pix] == bg[:, None]).all() and (part["alpha"][:, ~pix] == 0).all()
    assert torch.equal(part["radii"], full["radii"])  # Inria's radii whatever the mask
    with pytest.raises(ValueError, match="tile_mask needs the cpu backend"):
        rasterize(*geo, bg, backend="reference", tile_mask=mask)


def _subset_renders_match(scene: dict, subsets: list, bg: Tensor, dense_reference: bool) -> None:
    """rasterize_subsets' images equal rasterize on each subset's own rows bit for bit (cpu), and optionally the
    dense reference within float tolerance (the subsets' loop of the other backends; needles and near-plane
    scenes flip 1/255 cut-offs between the polynomial and torch's exp, so they are compared bit-wise only)."""
    geo = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors")]
    cam = [scene[k] for k in ("viewmat", "K", "width", "height")]
    got = rasterize_subsets(*geo, *cam, bg, subsets)
    for m, img in zip(subsets, got):
        rows = [t if m is None else t[m] for t in geo]
        own = rasterize(*rows, *cam, bg)["render"] if m is None or m.any() else \
            bg[:, None, None].expand(-1, scene["height"], scene["width"])
        assert bits_equal(img, own.contiguous())
        if not dense_reference:
            continue
        dense = rasterize_subsets(*geo, *cam, bg, [m], backend="reference")[0]
        assert torch.allclose(img, dense, atol=2e-4, rtol=0), float((img - dense).abs().max())


@pytest.mark.parametrize("name", ["dense", "needles", "near_plane_and_border"])
def test_subset_renders_equal_renders_of_the_subsets(name: str) -> None:
    scene = random_scene(**SCENES[name])
    n = scene["means"].shape[0]
    rng = torch.Generator().manual_seed(3)
    half = torch.rand(n, generator=rng) < 0.5
    few = torch.rand(n, generator=rng) < 0.05
    _subset_renders_match(scene, [None, half, ~half, few, torch.zeros(n, dtype=torch.bool)],
                          torch.tensor([0.2, 0.4, 0.6]), dense_reference=name == "dense")
    with pytest.raises(ValueError, match="bool mask"):
        rasterize_subsets(*[scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmat", "K",
                                                 "width", "height")], torch.zeros(3), [half[:-1]])


def _mary_rose(model_dir: Path):  # -> (GaussianModel, list[Camera]) of the newest iteration
    from scene.gaussian_model import GaussianModel
    from scene.model_folder import read_cameras_json

    ply = max((model_dir / "point_cloud").glob("iteration_*/point_cloud.ply"),
              key=lambda q: int(q.parent.name.split("_")[1]))
    model = GaussianModel()
    model.load_ply(ply)
    return model, read_cameras_json(model_dir / "cameras.json")


@pytest.mark.slow
def test_real_scene_is_bit_identical(tmp_path: Path, mary_rose_model: Path) -> None:
    """A trained maryRose model (tests/conftest.py): renders with SH colours, gradients and votes of three views,
    one of them upscaled to 512 px with an off-centre crop of the principal point."""
    model, cams = _mary_rose(mary_rose_model)
    views = [cams[0], cams[33], cams[60].scaled(512, 512)]
    views[2].cx += 37.0
    g = prepare_gaussians(model)
    for cam in views:
        scene = dict(means=g.means, quats=g.quats, scales=g.scales, opacities=g.opacities,
                     colors=torch.rand(len(g), 3, generator=torch.Generator().manual_seed(cam.uid)),
                     viewmat=cam.viewmat(), K=cam.K(), width=cam.width, height=cam.height)
        a, b = outputs(scene, "inria"), outputs(scene, "tight")
        for key in a:
            assert bits_equal(a[key], b[key]), f"{cam.image_name}: {key}"
        with torch.no_grad():
            ra = render(cam, model, torch.ones(3), footprint="inria")
            rb = render(cam, model, torch.ones(3), footprint="tight")
        assert bits_equal(ra["render"], rb["render"])
        n_i, n_t = bins(scene, "inria")[1].numel(), bins(scene, "tight")[1].numel()
        assert n_t < 0.8 * n_i, (n_t, n_i)


@pytest.mark.slow
@pytest.mark.skipif(not MARY.is_dir(), reason="../shared/data/maryRose not present")
def test_training_writes_a_byte_identical_ply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training reads radii / visibility_filter (densification statistics, max radii): a cpu-preset run with
    densification writes the same PLY bytes with either footprint."""
    import gaussian_renderer
    from training.config import parse_train_args
    from training.trainer import run_train

    original = gaussian_renderer.render
    plys, counts = {}, {}
    for fp in ("inria", "tight"):
        monkeypatch.setattr(gaussian_renderer, "render", functools.partial(original, footprint=fp))
        model = tmp_path / fp
        cfg = parse_train_args(["-s", str(MARY), "-m", str(model), "-r", "64", "--preset", "cpu",
                                        "--iterations", "120", "--random_init", "images", "--random_init_points",
                                        "2000", "--backend", "cpu", "--threads", "1", "--quiet",
                                        "--test_iterations", "120", "--densify_from_iter", "30",
                                        "--densification_interval", "30", "--densify_until_iter", "120"])
        result = run_train(cfg)
        counts[fp] = [(d["cloned"], d["split"], d["pruned"]) for d in result.densification]
        plys[fp] = (model / "point_cloud" / "iteration_120" / "point_cloud.ply").read_bytes()
    assert counts["tight"] and any(c[0] + c[1] for c in counts["tight"]), "densification never fired"
    assert counts["inria"] == counts["tight"]
    assert plys["inria"] == plys["tight"]
