"""Feature extraction (classic stand-in, ViT token layout, PCA, features.pt) and feature-field training."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from features.extractors import (ClassicExtractor, ExtractorConfig, ViTExtractor, build_extractor,
                                 extract_feature_maps, fit_projection, load_features, output_size, save_features)
from features.field import (FieldConfig, FrozenGaussians, TargetMaps, channel_stats, evaluate_field,
                            render_features, train_feature_field)
from segmentation.demo import gaussians_from_synthetic
from segmentation.synthetic import make_demo_scene
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(h: int = 70, w: int = 50, seed: int = 0) -> np.ndarray:  # [h, w, 3] float32 in [0, 1]
    rng = np.random.default_rng(seed)
    return rng.random((h, w, 3)).astype(np.float32)


# ----- classic extractor ----------------------------------------------------------------------------------
def test_classic_shape_dtype_and_determinism() -> None:
    ex = ClassicExtractor()
    img = _image()
    a, b = ex(img), ex(img.copy())
    assert a.shape == (ex.channels, *output_size(70, 50, 4)) == (39, 18, 12)
    assert a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert not np.allclose(a, ex(_image(seed=1)))
    with_pos = ClassicExtractor(position=True)(img)
    assert with_pos.shape[0] == 41
    np.testing.assert_allclose(with_pos[-2, 0, [0, -1]], [-1.0, 1.0])  # x channel spans the width


def test_classic_colour_and_orientation_channels() -> None:
    """Independent checks: Lab a* is positive for red and negative for green; a flat image has no
    gradient energy; a horizontal edge (vertical gradient, angle pi/2) fills orientation bins 3 and 4."""
    ex = ClassicExtractor(bins=8)
    red = np.zeros((32, 32, 3), np.float32)
    red[..., 0] = 1.0
    green = np.zeros((32, 32, 3), np.float32)
    green[..., 1] = 1.0
    fr, fg = ex(red), ex(green)
    assert fr[1].mean() > 0.5 and fg[1].mean() < -0.5          # a* / 128
    assert abs(fr[0].mean() - 0.5324) < 0.01                     # L of pure red = 53.24
    hog = slice(12, 12 + 9)                                      # first HOG scale: 8 bins + energy
    assert np.abs(fr[hog]).max() < 1e-6
    edge = np.zeros((64, 64, 3), np.float32)
    edge[32:] = 1.0
    fe = ex(edge)[hog]
    row = fe[:, 8, 8]                                            # output cell on the edge (image row 32)
    assert row[3] > 0.6 and row[4] > 0.6
    assert np.delete(row[:8], [3, 4]).max() < 0.05
    assert row[8] > 1.0                                          # log gradient energy


# ----- ViT adapter (no weights needed: a stub with DINO's token layout) -------------------------------------
class _StubViT(torch.nn.Module):
    """Token i (after one class token) = mean colour of patch i in row-major order, like a ViT's."""

    def __init__(self, patch: int = 8):
        super().__init__()
        self.patch_embed = torch.nn.Module()
        self.patch_embed.patch_size = (patch, patch)
        self.p = patch

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, 1 + P, 3]
        pooled = torch.nn.functional.avg_pool2d(x, self.p)           # [B, 3, H/p, W/p]
        tokens = pooled.flatten(2).transpose(1, 2)
        return torch.cat([torch.full_like(tokens[:, :1], 99.0), tokens], 1)


def test_vit_extractor_token_layout() -> None:
    img = np.zeros((64, 96, 3), np.float32)
    img[:, :48, 0] = 1.0   # left half red
    img[:32, 48:, 2] = 1.0  # top right blue
    ex = ViTExtractor(_StubViT(8), name="stub", description="stub", stride=4)
    f = ex(img)
    assert f.shape == (3, 16, 24)
    assert np.all(np.abs(f) < 50), "the class token must be dropped"
    norm_r = (1.0 - 0.485) / 0.229
    assert f[0, :, :10].min() > norm_r - 0.1                  # left: red channel high everywhere
    assert f[2, :6, 14:].min() > (1.0 - 0.406) / 0.225 - 0.1  # top right: blue high
    assert f[2, 10:, 14:].max() < 0.0                         # bottom right: blue low
    capped = ViTExtractor(_StubViT(8), name="stub", description="stub", stride=4, max_tokens=24)(img)
    assert capped.shape == (3, 16, 24)                        # fewer tokens, upsampled to the same grid


# ----- PCA and features.pt --------------------------------------------------------------------------------
def test_extract_maps_pca_and_metadata() -> None:
    imgs = [(f"v{i}", (lambda i=i: _image(40, 48, seed=i))) for i in range(3)]
    maps, meta = extract_feature_maps(imgs, ClassicExtractor(), ExtractorConfig(dim=8, pca_samples=3000),
                                      progress=False)
    assert list(maps) == ["v0", "v1", "v2"]
    for t in maps.values():
        assert t.shape == (8, 10, 12) and t.dtype == torch.float16
    assert meta["extractor"] == "classic" and "NOT DINO" in meta["description"]
    assert meta["dim"] == 8 and meta["raw_dim"] == 39
    allpix = torch.cat([t.float().reshape(8, -1) for t in maps.values()], 1)
    var = allpix.var(1)
    assert torch.all(var[:-1] >= var[1:] * 0.8), "principal components come in decreasing variance"
    assert allpix.mean(1).abs().max() < 0.3 * var[0].sqrt()
    # cache_mb=0: every map recomputed for the projection pass gives identical results
    again, _ = extract_feature_maps(imgs, ClassicExtractor(), ExtractorConfig(dim=8, pca_samples=3000, cache_mb=0),
                                    progress=False)
    for k in maps:
        torch.testing.assert_close(maps[k].float(), again[k].float(), atol=0, rtol=0)


def test_fit_projection_recovers_dominant_direction() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5000, 1))
    x = np.concatenate([z, z, rng.normal(scale=0.01, size=(5000, 3))], axis=1)
    proj = fit_projection(x, dim=2)
    assert proj.components.shape == (2, 5)
    c = np.abs(proj.components[0])
    np.testing.assert_allclose(c[:2], [2 ** -0.5] * 2, atol=1e-3)
    assert proj(x.T[:, :, None].astype(np.float32)).shape == (2, 5000, 1)


def test_features_file_round_trip(tmp_path: Path) -> None:
    maps = {"a": torch.randn(4, 3, 5).half(), "train/b": torch.randn(4, 6, 2).half()}
    path = tmp_path / "f.pt"
    save_features(path, maps, {"extractor": "classic", "description": "x"})
    got, meta = load_features(path)
    assert set(got) == set(maps) and meta["extractor"] == "classic" and meta["format"] == "gs-segment-features-v1"
    for k in maps:
        assert torch.equal(got[k], maps[k])
    plain = tmp_path / "plain.pt"
    torch.save({"x": torch.zeros(2, 3, 3)}, plain)                 # another tool's {name: tensor}
    assert load_features(plain)[0]["x"].shape == (2, 3, 3)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="bad.pt"):
        load_features(bad)
    torch.save({"x": torch.zeros(2, 3, 3), "y": torch.zeros(3, 3, 3)}, plain)
    with pytest.raises(UserError, match="channel counts"):
        load_features(plain)
    with pytest.raises(UserError, match="not found"):
        load_features(tmp_path / "missing.pt")


# ----- missing weights: one line, exit 2, names the file ------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "extract_features.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow
def test_missing_weights_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "dino_vits16.pth"
    res = _cli("-s", str(tmp_path), "--extractor", "dino", "--weights", str(missing))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert str(missing) in lines[0] and "dino_deitsmall16_pretrain.pth" in lines[0]
    res = _cli("-s", str(tmp_path), "--extractor", "dinov2")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "--weights" in res.stderr and "dinov2_vits14_pretrain.pth" in res.stderr


def test_missing_timm_names_pip_command(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed here")
    weights = tmp_path / "w.pth"
    torch.save({}, weights)
    with pytest.raises(UserError, match="pip install timm"):
        build_extractor(ExtractorConfig(extractor="dino", weights=str(weights)))
    with pytest.raises(UserError, match="hubconf.py"):
        build_extractor(ExtractorConfig(extractor="dino", weights=str(weights), hub_repo=str(tmp_path)))


# ----- feature field ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_scene():
    scene = make_demo_scene(num_views=8, size=48, points_per_object=500, ground_points=900, seed=1)
    return scene, FrozenGaussians.of(gaussians_from_synthetic(scene))


def _identity_maps(scene, gaussians, down: int = 2) -> dict[str, torch.Tensor]:
    onehot = torch.nn.functional.one_hot(torch.from_numpy(scene.object_ids).long(), 4).float()
    out = {}
    for cam in scene.cameras:
        with torch.no_grad():
            m = render_features(cam, gaussians, onehot, backend="cpu")
        out[cam.image_name] = torch.nn.functional.avg_pool2d(m[None], down)[0]
    return out


def test_channel_stats_match_numpy() -> None:
    maps = [torch.randn(3, 4, 5) * 2 + 1, torch.randn(3, 2, 2)]
    mean, std = channel_stats(maps)
    flat = np.concatenate([m.numpy().reshape(3, -1) for m in maps], 1)
    np.testing.assert_allclose(mean.numpy(), flat.mean(1), atol=1e-5)
    np.testing.assert_allclose(std.numpy(), flat.std(1), atol=1e-5)


@pytest.mark.slow
def test_training_lowers_the_loss(small_scene) -> None:
    scene, g = small_scene
    targets = TargetMaps(_identity_maps(scene, g))
    cfg = FieldConfig(iterations=60, lr=0.05, backend="cpu")
    zero = torch.zeros(len(g), 4)
    before = evaluate_field(g, scene.cameras, targets, zero, cfg)
    res = train_feature_field(g, scene.cameras, targets, cfg, progress=False)
    after = evaluate_field(g, scene.cameras, targets, res.features, cfg)
    assert after < 0.5 * before, (before, after)
    assert res.features.shape == (len(g), 4) and len(res.losses) == 60
    assert 0.5 < float(res.seen.float().mean()) <= 1.0
    # geometry stays frozen: a second run from the same seed gives the same features
    res2 = train_feature_field(g, scene.cameras, targets, cfg, progress=False)
    torch.testing.assert_close(res.features, res2.features)


def test_inria_chunking_equals_one_pass(small_scene, monkeypatch) -> None:
    """The 3-channel chunking used for the Inria rasterizer gives the one-pass render (CPU stands in)."""
    import gaussian_renderer

    scene, g = small_scene
    feats = torch.randn(len(g), 7, requires_grad=True)
    cam = scene.cameras[0]
    ref = render_features(cam, g, feats, backend="cpu")
    real_render = gaussian_renderer.render
    seen_channels = []

    def fake_render(camera, gaussians, background, override_color=None, backend="auto", num_threads=0):
        seen_channels.append(override_color.shape[1])
        return real_render(camera, gaussians, background, override_color=override_color, backend="cpu")

    monkeypatch.setattr(gaussian_renderer, "resolve_backend", lambda b, d: "inria")
    monkeypatch.setattr(gaussian_renderer, "render", fake_render)
    chunked = render_features(cam, g, feats, backend="inria")
    assert seen_channels == [3, 3, 3]
    torch.testing.assert_close(chunked, ref, atol=1e-5, rtol=1e-5)
    chunked.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


def test_feature_loss_terms() -> None:
    from features.field import feature_loss

    t = torch.randn(5, 6, 7)
    assert float(feature_loss(t, t, cosine_weight=1.0)) < 1e-6
    assert abs(float(feature_loss(2 * t, t, cosine_weight=1.0)) - float(t.abs().mean())) < 1e-5  # cos = 1
    assert abs(float(feature_loss(-t, t, cosine_weight=0.5)) - (2 * float(t.abs().mean()) + 1.0)) < 1e-5
    alpha = torch.zeros(1, 6, 7)  # nothing rendered: the consistent target is zero
    assert float(feature_loss(torch.zeros_like(t), t, alpha=alpha)) == 0.0


def test_field_file_round_trip(tmp_path: Path) -> None:
    from features.field import FieldResult, load_field, save_field

    res = FieldResult(features=torch.randn(10, 3), seen=torch.arange(10) % 2 == 0, channel_mean=torch.zeros(3),
                      channel_std=torch.ones(3), losses=[1.0, 0.5], view_names=["a"])
    path, cfg = tmp_path / "features" / "gaussian_features.pt", tmp_path / "features" / "config.json"
    save_field(path, res, {"extractor": "classic"}, cfg, FieldConfig())
    feats, seen, meta = load_field(path, num_gaussians=10)
    assert torch.equal(feats, res.features) and torch.equal(seen, res.seen) and meta["extractor"] == "classic"
    assert '"seen_gaussians": 5' in cfg.read_text()
    with pytest.raises(UserError, match="11"):
        load_field(path, num_gaussians=11)
    with pytest.raises(UserError, match="not a gaussian_features.pt"):
        torch.save({"features": torch.zeros(2)}, tmp_path / "x.pt")
        load_field(tmp_path / "x.pt")
