"""render.py and metrics.py: Inria's folders and JSON, metrics checked against an independent computation."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MARY = DATA / "maryRose"
ITERS = 20

pytestmark = pytest.mark.skipif(not MARY.is_dir(), reason="../shared/data/maryRose not present")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """maryRose at 32 px, 20 iterations from 800 random points, --eval (60 train / 9 test views)."""
    from training.config import build_parser, config_from_args
    from training.trainer import run_train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = tmp_path_factory.mktemp("rm") / "mary"
        ns = build_parser().parse_args(["-s", str(MARY), "-m", str(model), "-r", "32", "--eval", "--iterations",
                                        str(ITERS), "--random_init_points", "800", "--backend", "cpu",
                                        "--threads", "1", "--quiet", "--test_iterations", str(ITERS)])
        result = run_train(config_from_args(ns))
        assert result.last_iteration == ITERS
    finally:
        torch.set_num_threads(threads)
    return model


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with scipy's Gaussian filter: 11 taps (radius 5), sigma 1.5, zero padding, per channel mean."""
    kw = dict(sigma=1.5, mode="constant", cval=0.0, truncate=5 / 1.5)
    vals = []
    for c in range(3):
        x, y = a[..., c], b[..., c]
        mx, my = gaussian_filter(x, **kw), gaussian_filter(y, **kw)
        sxx = gaussian_filter(x * x, **kw) - mx * mx
        syy = gaussian_filter(y * y, **kw) - my * my
        sxy = gaussian_filter(x * y, **kw) - mx * my
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        vals.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2)))
    return float(np.mean(vals))


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def test_render_writes_inria_folders(trained: Path) -> None:
    import render

    assert render.main(["-m", str(trained), "--quiet", "--threads", "1"]) == 0
    for split, count in (("train", 60), ("test", 9)):
        base = trained / split / f"ours_{ITERS}"
        renders = sorted(p.name for p in (base / "renders").iterdir())
        gts = sorted(p.name for p in (base / "gt").iterdir())
        assert renders == gts == [f"{i:05d}.png" for i in range(count)]
        assert Image.open(base / "renders" / "00000.png").size == (32, 32)
    # gt 00000 of the test split is the first held-out view (index 0 of the sorted images), resized to 32 px
    from scene.dataset_readers import read_scene

    cam = read_scene(str(MARY), resolution=32, eval=True).test_cameras[0]
    expected = cam.load_image().permute(1, 2, 0).numpy()
    got = _png(trained / "test" / f"ours_{ITERS}" / "gt" / "00000.png")
    assert np.abs(got - expected).max() <= 0.5 / 255 + 1e-6


def test_render_skip_flags_and_iteration(trained: Path, tmp_path: Path) -> None:
    import render

    with pytest.raises(SystemExit) as e:
        render.main(["-m", str(trained), "--iteration", "7", "--quiet"])
    assert e.value.code == 2
    assert render.main(["-m", str(trained), "--iteration", str(ITERS), "--skip_train", "--skip_test",
                        "--quiet"]) == 0


def test_metrics_json_matches_independent_computation(trained: Path, capsys: pytest.CaptureFixture) -> None:
    import metrics
    import render

    if not (trained / "test" / f"ours_{ITERS}" / "renders").is_dir():
        assert render.main(["-m", str(trained), "--quiet", "--skip_train", "--threads", "1"]) == 0
    assert metrics.main(["-m", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "LPIPS skipped:" in out or "LPIPS" in out
    results = json.loads((trained / "results.json").read_text())
    per_view = json.loads((trained / "per_view.json").read_text())
    method = f"ours_{ITERS}"
    assert set(results) == {method} and {"SSIM", "PSNR"} <= set(results[method])
    names = [f"{i:05d}.png" for i in range(9)]
    assert sorted(per_view[method]["PSNR"]) == names
    base = trained / "test" / method
    psnrs, ssims = [], []
    for name in names:
        r, g = _png(base / "renders" / name), _png(base / "gt" / name)
        psnrs.append(10 * np.log10(1.0 / np.mean((r - g) ** 2)))
        ssims.append(_ssim_reference(r, g))
        assert per_view[method]["PSNR"][name] == pytest.approx(psnrs[-1], abs=1e-3)
        assert per_view[method]["SSIM"][name] == pytest.approx(ssims[-1], abs=1e-4)
    assert results[method]["PSNR"] == pytest.approx(float(np.mean(psnrs)), abs=1e-3)
    assert results[method]["SSIM"] == pytest.approx(float(np.mean(ssims)), abs=1e-4)
    assert f"{results[method]['PSNR']:.4f}"[:5] in out


@pytest.mark.parametrize("script, args, needle", [
    ("render.py", ["-m", "/nonexistent/model"], "/nonexistent/model"),
    ("metrics.py", ["-m", "/nonexistent/model"], "/nonexistent/model"),
])
@pytest.mark.slow
def test_bad_model_path_one_line_exit_2(script: str, args: list[str], needle: str) -> None:
    res = subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr


@pytest.mark.slow
def test_metrics_without_renders_is_a_user_error(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(REPO / "metrics.py"), "-m", str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "render.py" in res.stderr and len(res.stderr.strip().splitlines()) == 1
