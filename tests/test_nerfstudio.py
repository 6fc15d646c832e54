"""nerfstudio's transforms.json reader and the foreign-model entry points, on small generated folders."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scene.dataset_readers import detect_scene_type, read_scene
from utils.errors import UserError

W, H = 40, 30


def _c2w_gl(angle: float) -> list[list[float]]:
    """An OpenGL camera-to-world on a circle of radius 4 around the origin, looking at it."""
    eye = np.array([4 * math.sin(angle), 0.5, 4 * math.cos(angle)])
    back = eye / np.linalg.norm(eye)          # OpenGL: the camera looks down -z
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, back, eye
    return m.tolist()


def make_folder(root: Path, n: int = 4, shared: bool = True, masks: bool = False, **top) -> Path:
    (root / "images").mkdir(parents=True)
    frames = []
    for i in range(n):
        Image.fromarray(np.full((H, W, 3), (25 * i) % 256, np.uint8)).save(root / "images" / f"frame_{i:05d}.png")
        f = {"file_path": f"images/frame_{i:05d}.png", "transform_matrix": _c2w_gl(0.4 * i)}
        if not shared:
            f.update({"fl_x": 30.0 + i, "fl_y": 31.0 + i, "cx": 20.5, "cy": 15.0, "w": W, "h": H})
        if masks:
            (root / "masks").mkdir(exist_ok=True)
            Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "masks" / f"frame_{i:05d}.png")
            f["mask_path"] = f"masks/frame_{i:05d}.png"
        frames.append(f)
    meta = {"frames": frames[::-1], **top}   # reversed: the reader sorts by file name like nerfstudio
    if shared:
        meta.update({"fl_x": 30.0, "fl_y": 32.0, "cx": 19.5, "cy": 15.5, "w": W, "h": H})
    (root / "transforms.json").write_text(json.dumps(meta))
    return root


def test_reads_intrinsics_poses_and_names(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "a")
    assert detect_scene_type(src) == "nerfstudio"
    info = read_scene(str(src), resolution=1)
    cams = info.train_cameras
    assert [c.image_name for c in cams] == [f"frame_{i:05d}" for i in range(4)]
    c = cams[1]
    assert (c.width, c.height, c.fx, c.fy, c.cx, c.cy) == (W, H, 30.0, 32.0, 19.5, 15.5)
    # OpenGL c2w -> OpenCV w2c: the origin is in front of every camera (positive depth), on its optical axis
    for cam in cams:
        uv, z = cam.project(np.zeros((1, 3)))
        assert z[0] == pytest.approx(math.sqrt(16.25)) and uv[0] == pytest.approx([cam.cx, cam.cy], abs=1e-9)
    np.testing.assert_allclose(cams[2].camera_center, np.array(_c2w_gl(0.8))[:3, 3], atol=1e-12)
    assert info.extra["applied_transform"] is None and info.extra["mask_dir"] is None
    # per-frame intrinsics; eval holds out every 8th view of the sorted names like the other readers
    info = read_scene(str(make_folder(tmp_path / "b", n=9, shared=False)), resolution=1, eval=True)
    assert [c.image_name for c in info.test_cameras] == ["frame_00000", "frame_00008"]
    assert info.train_cameras[0].fx == 31.0 and info.train_cameras[0].cx == 20.5


def test_distortion_and_refusals(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "a", camera_model="OPENCV", k1=0.05, k2=-0.01, p1=0.001, p2=0.0)
    cam = read_scene(str(src), resolution=1).train_cameras[0]
    assert cam.distortion is not None and cam.distortion.coeffs == (0.05, -0.01, 0.001, 0.0, 0.0)
    assert read_scene(str(make_folder(tmp_path / "b", camera_model="OPENCV", k1=0.0)),
                      resolution=1).train_cameras[0].distortion is None
    refused = [({"camera_model": "OPENCV_FISHEYE"}, "camera_model OPENCV_FISHEYE is not supported"),
               ({"camera_model": "EQUIRECTANGULAR"}, "EQUIRECTANGULAR is not supported"),
               ({"k4": 0.1}, "k4 = 0.1 is not supported")]
    for i, (extra, msg) in enumerate(refused):
        with pytest.raises(UserError, match=msg):
            read_scene(str(make_folder(tmp_path / f"bad{i}", **extra)))
    src = make_folder(tmp_path / "c")
    meta = json.loads((src / "transforms.json").read_text())
    del meta["fl_x"]
    (src / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="no fl_x .neither in the frame nor at the top level"):
        read_scene(str(src))


def test_downscaled_images_and_masks(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "a", masks=True, applied_transform=np.eye(4)[:3].tolist())
    (src / "images_2").mkdir()
    (src / "masks_2").mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((H // 2, W // 2, 3), np.uint8)).save(src / "images_2" / f"frame_{i:05d}.png")
        Image.fromarray(np.zeros((H // 2, W // 2), np.uint8)).save(src / "masks_2" / f"frame_{i:05d}.png")
    info = read_scene(str(src), images="images_2", resolution=1)
    c = info.train_cameras[0]
    assert (c.width, c.height, c.fx) == (W // 2, H // 2, 15.0) and c.image_path.endswith("images_2/frame_00000.png")
    assert info.extra["mask_dir"] == str(src / "masks_2") and info.extra["applied_transform_given"]
    assert read_scene(str(src), resolution=1).extra["mask_dir"] == str(src / "masks")


def test_mask_paths_reach_segment_views(tmp_path: Path) -> None:
    """Per-frame masks in a folder not called masks/ become segment.py's default; one lens mask shared by
    every frame does not."""
    from arguments import ModelParams
    from scene.views import load_views

    src = make_folder(tmp_path / "a", masks=True)
    (src / "masks").rename(src / "seg")
    meta = json.loads((src / "transforms.json").read_text())
    for f in meta["frames"]:
        f["mask_path"] = f["mask_path"].replace("masks/", "seg/")
    (src / "transforms.json").write_text(json.dumps(meta))
    views = load_views(ModelParams(source_path=str(src), model_path=str(tmp_path / "m")), "all")
    assert views.mask_dir == str(src / "seg") and views.model_frame is None
    # segment.py without --masks takes them (a small model in front of the cameras, masks covering half of it)
    from arguments import write_cfg_args
    from scene.gaussian_model import GaussianModel
    from scene.types import BasicPointCloud
    from segmentation.pipeline import SegmentConfig, run_segmentation

    for i in range(4):
        m = np.zeros((H, W), np.uint8)
        m[:, : W // 2] = 255
        Image.fromarray(m).save(src / "seg" / f"frame_{i:05d}.png")
    model = tmp_path / "m"
    g = GaussianModel(0)
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (200, 3)).astype(np.float32)
    g.create_from_pcd(BasicPointCloud(pts, np.full_like(pts, 0.5)), 1.0)
    g.save_ply(model / "point_cloud" / "iteration_1" / "point_cloud.ply")
    write_cfg_args(model / "cfg_args", ModelParams(sh_degree=0, source_path=str(src), model_path=str(model)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_segmentation(SegmentConfig(model_path=str(model), previews=0, gif_frames=0, progress=False))
    assert res.summary["masks"]["path"] == str(src / "seg") and res.summary["masks"]["matched_views"] == 4
    assert 0 < res.summary["gaussians"]["extracted"] < 200
    for f in meta["frames"]:
        f["mask_path"] = "seg/frame_00000.png"
    (src / "transforms.json").write_text(json.dumps(meta))
    assert read_scene(str(src)).extra["mask_dir"] is None


# ----- foreign model entry points: one-line errors naming what is missing --------------------------------
def _gsplat_ckpt(path: Path, n: int = 10, **override) -> Path:
    splats = {"means": torch.randn(n, 3), "scales": torch.zeros(n, 3), "quats": torch.tensor([[1.0, 0, 0, 0]] * n),
              "opacities": torch.zeros(n), "sh0": torch.zeros(n, 1, 3), "shN": torch.zeros(n, 3, 3)}
    splats.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 99, "splats": {k: v for k, v in splats.items() if v is not None}}, path)
    return path


def test_foreign_model_errors_name_what_is_missing(tmp_path: Path) -> None:
    from scene.model_folder import find_iteration, load_model
    from scene.views import load_views

    ply = tmp_path / "exports" / "splat.ply"
    ply.parent.mkdir()
    ply.write_bytes(b"")
    with pytest.raises(UserError, match="splat.ply: no dataparser_transforms.json or config.yml beside it"):
        load_model(ply)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yml").write_text("a: 1\n")
    with pytest.raises(UserError, match="run: no PLY and no nerfstudio_models/step-.*ckpt; export the model"):
        load_model(run)
    (run / "splat.ply").write_bytes(b"")
    with pytest.raises(UserError, match="run: no dataparser_transforms.json; splatfacto writes it"):
        load_model(run)
    ckpt = _gsplat_ckpt(tmp_path / "res" / "ckpts" / "ckpt_99_rank0.pt")
    assert find_iteration(tmp_path / "res") == 99 and find_iteration(ckpt) == 99
    with pytest.raises(UserError, match="no ckpt_<step>_rank.*pt for step 5; available: 99"):
        find_iteration(tmp_path / "res", 5)
    params, g, it = load_model(tmp_path / "res")
    assert (len(g), g.max_sh_degree, it, params.eval) == (10, 1, 99, True)
    with pytest.raises(UserError, match="gsplat checkpoint: no cfg.yml names its data folder; pass -s with gsplat's "
                                        "COLMAP data folder"):
        load_views(params, "train")
    (tmp_path / "res" / "cfg.yml").write_text(f"data_dir: {tmp_path / 'gone'}\nnormalize_world_space: true\n")
    params, _, _ = load_model(ckpt)
    with pytest.raises(UserError, match=r"data folder .*gone \(from .*cfg.yml\) not found; pass -s"):
        load_views(params, "train")
    app = _gsplat_ckpt(tmp_path / "app" / "ckpt_1.pt", sh0=None, shN=None, features=torch.zeros(10, 32),
                       colors=torch.zeros(10, 3))
    with pytest.raises(UserError, match="splats lack sh0, shN .appearance-optimised"):
        load_model(app)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt: cannot read the checkpoint"):
        load_model(tmp_path / "junk.pt")


def test_multi_gpu_ranks_are_concatenated(tmp_path: Path) -> None:
    from scene.model_folder import load_model

    _gsplat_ckpt(tmp_path / "ckpts" / "ckpt_9_rank0.pt", n=5)
    _gsplat_ckpt(tmp_path / "ckpts" / "ckpt_9_rank1.pt", n=7)
    _, g, _ = load_model(tmp_path / "ckpts" / "ckpt_9_rank0.pt")
    assert len(g) == 12
    _gsplat_ckpt(tmp_path / "nan" / "ckpt_3.pt", means=torch.tensor([[0.0, 0, 0]] * 9 + [[math.nan, 0, 0]]))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _, g, _ = load_model(tmp_path / "nan" / "ckpt_3.pt")
    assert len(g) == 9 and any("dropped 1 of 10 Gaussians" in str(x.message) for x in w)


def test_yaml_configs_are_read_without_executing_them(tmp_path: Path) -> None:
    from scene.model_sources import read_yaml_config

    f = tmp_path / "config.yml"
    f.write_text("!!python/object:nerfstudio.engine.trainer.TrainerConfig\n"
                 "data: !!python/object/apply:pathlib.PosixPath\n- /abs\n- data\n"
                 "hook: !!python/object/apply:os.system\n- echo pwned > " + str(tmp_path / "pwned") + "\n"
                 "cls: !!python/name:builtins.eval ''\n")
    cfg = read_yaml_config(f)
    assert cfg["data"] == "/abs/data" and cfg["cls"] == "builtins.eval"
    assert cfg["__class__"] == "nerfstudio.engine.trainer.TrainerConfig" and not (tmp_path / "pwned").exists()
