"""--object_masks: views become RGBA with alpha = mask, composited on the background, in both splits."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scene.cameras import Camera
from scene.object_masks import apply_object_masks
from scene.types import SceneInfo
from utils.errors import UserError

H, W = 12, 16


def _info(tmp_path: Path, names: list[str], background=(1.0, 1.0, 1.0)) -> SceneInfo:
    rng = np.random.default_rng(0)
    cams = []
    for k, name in enumerate(names):
        img = rng.integers(0, 256, (2 * H, 2 * W, 3), dtype=np.uint8)     # raw images at twice the view size
        path = tmp_path / f"{name}.png"
        Image.fromarray(img).save(path)
        cams.append(Camera(uid=k, image_name=name, width=W, height=H, fx=20.0, fy=20.0, cx=W / 2, cy=H / 2,
                           world_to_camera=np.eye(4), image_path=str(path), background=background))
    return SceneInfo("llff", str(tmp_path), cams[:-1], cams[-1:], None, {"translate": np.zeros(3), "radius": 1.0},
                     np.array([[-1.0] * 3, [1.0] * 3]))


def _write_masks(folder: Path, names: list[str]) -> None:
    folder.mkdir()
    for name in names:
        m = np.zeros((H, W), np.uint8)      # masks at the view size: left half is the object
        m[:, : W // 2] = 255
        Image.fromarray(m).save(folder / f"{name}.png")


@pytest.mark.parametrize("background", [(1.0, 1.0, 1.0), (0.0, 0.0, 0.0)])
def test_outside_becomes_background_inside_unchanged(tmp_path: Path, background) -> None:
    names = ["a", "b", "c"]
    info = _info(tmp_path, names, background)
    _write_masks(tmp_path / "masks", names)
    masked = apply_object_masks(info, tmp_path / "masks")
    assert len(masked.train_cameras) == 2 and len(masked.test_cameras) == 1   # both splits, order kept
    for before, after in zip(info.train_cameras + info.test_cameras, masked.train_cameras + masked.test_cameras):
        ref = before.prepare_image(before.read_raw())          # [H, W, 3] the plain view
        got = after.prepare_image(after.read_raw())
        np.testing.assert_allclose(got[:, : W // 2], ref[:, : W // 2], atol=1e-6)
        np.testing.assert_allclose(got[:, W // 2:], np.broadcast_to(background, got[:, W // 2:].shape), atol=1e-6)
        assert dataclasses.replace(after, loader=None) == before      # geometry and names untouched


def test_missing_mask_is_one_clear_error(tmp_path: Path) -> None:
    names = ["a", "b", "c"]
    info = _info(tmp_path, names)
    _write_masks(tmp_path / "masks", names[:2])
    with pytest.raises(UserError, match=r"no mask for view c"):
        apply_object_masks(info, tmp_path / "masks")
    with pytest.raises(UserError, match="does not exist"):
        apply_object_masks(info, tmp_path / "nope")


MARY = Path(__file__).resolve().parents[2] / "shared" / "data" / "maryRose"


@pytest.mark.slow
@pytest.mark.skipif(not MARY.is_dir(), reason="../shared/data/maryRose not present")
def test_train_and_render_with_object_masks(tmp_path: Path) -> None:
    """train.py --object_masks records the (absolute) mask folder in cfg_args; render.py then writes ground
    truth that is white outside each held-out view's mask and the photo inside it."""
    import subprocess
    import sys

    from arguments import read_cfg_args
    from utils.masks import read_binary_mask, resize_nearest

    repo = Path(__file__).resolve().parents[1]
    model = tmp_path / "m"
    common = ["--threads", "1", "--quiet"]
    res = subprocess.run([sys.executable, "train.py", "-s", str(MARY), "-m", str(model), "-r", "64", "--eval",
                          "-w", "--preset", "cpu", "--iterations", "20", "--random_init", "images",
                          "--random_init_points", "500", "--object_masks", str(MARY / "masks"), *common],
                         cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert read_cfg_args(model / "cfg_args")["object_masks"] == str((MARY / "masks").resolve())
    res = subprocess.run([sys.executable, "render.py", "-m", str(model), "--skip_train", *common],
                         cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    gt = np.asarray(Image.open(model / "test" / "ours_20" / "gt" / "00000.png")).astype(np.float64) / 255
    first_test = sorted((MARY / "images").iterdir())[0]          # --eval holds out views 0, 8, 16, ...
    mask = resize_nearest(read_binary_mask(MARY / "masks" / (first_test.stem + ".png")), 64, 64)
    photo = np.asarray(Image.open(first_test).convert("RGB").resize((64, 64), Image.BOX)).astype(np.float64) / 255
    core = mask & np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    outside = ~mask & ~np.roll(mask, 1, 0) & ~np.roll(mask, -1, 0) & ~np.roll(mask, 1, 1) & ~np.roll(mask, -1, 1)
    assert np.abs(gt[outside] - 1.0).max() < 1e-6
    assert np.abs(gt[core] - photo[core]).mean() < 0.03
