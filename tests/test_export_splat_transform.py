"""extracted.ply / deleted.ply open in an independent 3DGS reader: PlayCanvas' splat-transform (npm).

Looked up on PATH, then in <repo>/.ci/node/node_modules/.bin (where .ci/run installs it); skipped when absent.
Local install: mkdir -p .ci/node && cd .ci/node && npm install @playcanvas/splat-transform@3
"""
from __future__ import annotations

import csv
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _splat_transform() -> str | None:
    found = shutil.which("splat-transform")
    if found:
        return found
    local = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "splat-transform"
    return str(local) if local.is_file() and shutil.which("node") else None


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    from segmentation.demo import write_demo_data
    from segmentation.pipeline import SegmentConfig, run_segmentation

    tool = _splat_transform()
    if tool is None:
        pytest.skip("splat-transform not installed (npm install @playcanvas/splat-transform@3 in .ci/node)")
    root = tmp_path_factory.mktemp("st")
    data = write_demo_data(root, [2, 3], num_views=8, size=48, backend="cpu")   # box + can, COCO masks
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_segmentation(SegmentConfig(model_path=str(data.model_path), masks=str(data.masks_path),
                                             out=str(root / "seg"), previews=0, gif_frames=0, backend="cpu",
                                             progress=False))
    return tool, res


def _run(tool: str, *args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.mark.parametrize("name", ["extracted_box.ply", "extracted_can.ply", "deleted.ply"])
def test_splat_transform_reads_our_plys(segmented, tmp_path, name):
    from scene.gaussian_model import GaussianModel

    tool, res = segmented
    src = res.out / name
    expected = res.summary["files"][name]
    assert expected > 100
    ours = GaussianModel(3)
    ours.load_ply(src)
    xyz = ours.get_xyz.detach().numpy()
    opacity = ours._opacity.detach().numpy()[:, 0]

    # 1. CSV: one row per Gaussian, same positions and (logit) opacities, SH degree 3 kept
    _run(tool, "-w", str(src), str(tmp_path / "out.csv"))
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == expected
    assert "f_rest_44" in rows[0]
    got = np.array([[float(r["x"]), float(r["y"]), float(r["z"])] for r in rows])
    np.testing.assert_allclose(got, xyz, rtol=0, atol=1e-6)
    np.testing.assert_allclose([float(r["opacity"]) for r in rows], opacity, rtol=1e-6, atol=1e-6)

    # 2. PLY -> PLY through splat-transform, read back by our reader: same count
    _run(tool, "-w", str(src), str(tmp_path / "round.ply"))
    back = GaussianModel(3)
    back.load_ply(tmp_path / "round.ply")
    assert len(back) == expected
