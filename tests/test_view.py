"""view.py without a browser: coordinates (photo <-> file pixels, canvas <-> rays), the SegmentConfig a page
prompt builds (against segment.py's own), segmentation folders, colours, runs/export and one-line errors.

The browser itself is driven in tests/test_view_browser.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from scene.cameras import Camera
from segmentation.voting import Selection
from utils.errors import UserError
from viewer import geometry
from viewer.scene_data import Segmentation, label_colours, read_segmentation, splats_of
from viewer.session import PromptState, Session, ViewerConfig, segment_argv, segment_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _camera(width=80, height=60, cx=37.0, cy=33.5, seed=0) -> Camera:
    rng = np.random.default_rng(seed)
    R = Rotation.random(random_state=seed).as_matrix()
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = rng.normal(size=3)
    return Camera(0, "IMG_1", width, height, 70.0, 72.0, cx, cy, w2c)


# ---------------------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------------------
def test_photo_plane_maps_rays_to_file_pixels():
    """A file pixel's point on the photo, reached by a ray from anywhere, maps back to that pixel; the
    rectangle's corners (viser's image frame: +x right, +y = the image's top) project onto the view's
    corners, so the photo drawn lies exactly over the camera's image."""
    cam = _camera()
    plane = geometry.PhotoPlane.of(cam, (160, 120), depth=0.7)   # file twice the view's resolution
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = rng.uniform(0, 160), rng.uniform(0, 120)
        p = plane.world_point(x, y)
        origin = cam.camera_center + rng.normal(size=3) * 0.2 - 3.0 * (cam.R.T @ np.array([0, 0, 1.0]))
        got = plane.file_pixel(origin, p - origin)
        assert got is not None and np.allclose(got, (x, y), atol=1e-6)
        # seen from the camera itself, the point is where the camera model puts the view pixel
        q = cam.R @ p + cam.T
        assert np.allclose([cam.fx * q[0] / q[2] + cam.cx, cam.fy * q[1] / q[2] + cam.cy], (x / 2, y / 2))
    wxyz, centre = plane.pose()
    Rp = geometry.rotation_of(wxyz)
    w, h = plane.render_size
    for (lx, ly), want in (((-w / 2, h / 2), (0, 0)), ((w / 2, h / 2), (cam.width, 0)),
                           ((-w / 2, -h / 2), (0, cam.height)), ((w / 2, -h / 2), (cam.width, cam.height))):
        q = cam.R @ (centre + Rp @ np.array([lx, ly, 0.0])) + cam.T
        assert np.allclose([cam.fx * q[0] / q[2] + cam.cx, cam.fy * q[1] / q[2] + cam.cy], want, atol=1e-6)
    # misses: beside the photo, pointing away, parallel to it
    forward = cam.R.T @ np.array([0, 0, 1.0])
    right = cam.R.T @ np.array([1.0, 0, 0])
    assert plane.file_pixel(cam.camera_center, forward + 2.0 * right) is None
    assert plane.file_pixel(cam.camera_center, -forward) is None
    assert plane.file_pixel(cam.camera_center, right) is None
    assert geometry.file_pixel_index(159.99, -0.2, (160, 120)) == (159, 0)


def test_screen_rays_match_viser():
    """screen_ray against a ray the viser 1.1.1 client computed for a click (headless chromium, 1200x800
    canvas, default camera), and screen_point as its inverse."""
    wxyz = (-0.1759199, 0.33985114, 0.82047324, -0.4247082)
    fov, aspect, position = 1.3089969389957472, 1.5, (3.0, 3.0, 3.0)
    origin, d = geometry.screen_ray((0.33375, 0.500625), position, wxyz, fov, aspect)
    assert np.allclose(d, (-0.2861092501105854, -0.7915825940630897, -0.5399430467905926), atol=1e-6)
    assert np.allclose(origin, position)
    uv = geometry.screen_point(origin + 2.5 * d, position, wxyz, fov, aspect)
    assert np.allclose(uv, (0.33375, 0.500625))
    assert geometry.screen_point(origin - d, position, wxyz, fov, aspect) is None


def test_camera_pose_and_scene_layout():
    cam = _camera()
    wxyz, pos = geometry.camera_pose(cam)
    assert np.allclose(geometry.rotation_of(wxyz), cam.R.T) and np.allclose(pos, cam.camera_center)
    cams = [_camera(seed=s) for s in range(4)]
    for c, shift in zip(cams, range(4)):  # cameras on a line, 0.5 apart, all looking the same way
        c.world_to_camera[:3, :3] = np.eye(3)
        c.world_to_camera[:3, 3] = (-0.5 * shift, 0, 0)
    assert geometry.camera_spacing(cams) == pytest.approx(0.5)
    assert np.allclose(geometry.scene_up(cams), (0, -1, 0))


# ---------------------------------------------------------------------------------------------------------
# the prompt -> segment.py's config
# ---------------------------------------------------------------------------------------------------------
def _segment_py_config(argv: list[str], monkeypatch) -> object:
    """The SegmentConfig segment.py builds from argv (run_segmentation replaced by a recorder)."""
    import segment
    import segmentation.pipeline as pipeline

    seen = []

    def record(cfg, log=None):
        seen.append(cfg)
        raise UserError("recorded")

    monkeypatch.setattr(pipeline, "run_segmentation", record)
    with pytest.raises(SystemExit):
        segment.main(argv)
    return seen[0]


def test_page_prompt_builds_segment_py_config(monkeypatch, capsys):
    cfg = ViewerConfig(model_path="/m/model", masks="/m/sam", out="/m/out", force=True, iteration=7,
                       source_path="/m/scene", images="imgs", resolution=2, backend="cpu", num_threads=1)
    p = PromptState()
    p.add_point("IMG_0002", 5, 6)          # a click on another view starts over
    p.add_point("IMG_0001", 12, 34)
    p.add_point("IMG_0001", 40, 2)
    p.add_point("IMG_0001", 7, 8, positive=False)
    p.set_box("IMG_0001", 90, 70, 10, 20)  # dragged up-left: normalised
    assert p.box == (10, 20, 90, 70) and p.describe() == "IMG_0001: +(12,34) +(40,2) -(7,8) box(10,20,90,70)"
    for granularity in ("whole", "part"):
        ours = segment_config(cfg, p, "/m/out", granularity)
        argv = segment_argv(cfg, p, "/m/out", granularity)
        assert ours == _segment_py_config(argv, monkeypatch), argv
    assert ours.prompt == ["IMG_0001:12,34", "IMG_0001:40,2"] and ours.prompt_box == ["IMG_0001:10,20,90,70"]
    # defaults: the shortest command
    plain = ViewerConfig(model_path="/m/model")
    q = PromptState()
    q.add_point("V", 1, 2)
    assert segment_argv(plain, q) == ["-m", "/m/model", "--prompt", "V:1,2"]
    assert segment_config(plain, q) == _segment_py_config(segment_argv(plain, q), monkeypatch)


def test_prompt_state_errors():
    p = PromptState()
    with pytest.raises(UserError, match="no prompt: click a point"):
        p.check()
    p.add_point("V", 3, 3, positive=False)
    with pytest.raises(UserError, match="only negative points"):
        p.check()
    p.set_box("V", 0, 0, 4, 4)
    p.check()
    p.clear()
    assert p.empty and p.view == "V"


# ---------------------------------------------------------------------------------------------------------
# what is drawn
# ---------------------------------------------------------------------------------------------------------
def test_splats_of_a_model():
    """Covariances against R diag(s^2) R^T built here from the stored scales and quaternions (scipy)."""
    from scene.gaussian_model import GaussianModel

    g = torch.Generator().manual_seed(0)
    n = 50
    rot = torch.randn(n, 4, generator=g)
    model = GaussianModel.from_tensors(torch.randn(n, 3, generator=g), torch.randn(n, 1, 3, generator=g),
                                       torch.zeros(n, 0, 3), torch.randn(n, 3, generator=g) - 2, rot,
                                       torch.randn(n, 1, generator=g))
    arr = splats_of(model)
    q = (rot / rot.norm(dim=1, keepdim=True)).numpy()
    R = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()
    s = np.exp(model._scaling.detach().numpy())
    want = R @ (s[:, :, None] ** 2 * np.transpose(R, (0, 2, 1)))
    assert np.allclose(arr.covariances, want, rtol=1e-4, atol=1e-7)
    dc = model._features_dc.detach().numpy()[:, 0]
    assert np.allclose(arr.rgbs, np.clip(0.28209479177387814 * dc + 0.5, 0, 1), atol=1e-6)
    assert np.allclose(arr.opacities[:, 0], 1 / (1 + np.exp(-model._opacity.detach().numpy()[:, 0])), atol=1e-6)
    sub = arr.subset(np.arange(n) % 2 == 0, np.zeros((n, 3), np.float32))
    assert len(sub) == 25 and not sub.rgbs.any()


def test_shown_subsets_are_segment_py_files():
    """extracted / deleted against segmentation.voting.Selection, the rule segment.py writes its PLYs by."""
    labels = np.array([-1, 0, 1, 2, 0, -1, 3])
    for mode in ("keep", "drop", "propagate"):
        seg, sel = Segmentation(labels, mode), Selection(labels, mode, 0, 0)
        assert (seg.mask("extracted") == sel.extracted_mask()).all()
        assert (seg.mask("deleted") == sel.deleted_mask()).all(), mode
        assert seg.mask("full scene").all()


def test_label_colours_tell_many_ids_apart():
    ids = np.arange(-1, 201)                                             # labels 1..200
    c = label_colours(ids)
    assert np.allclose(c[0], 0.55) and np.allclose(c[1], 0.85)          # undecided, background
    rows = {tuple(np.round(v, 3)) for v in c[2:]}
    assert len(rows) == 200                                              # every instance its own colour
    from segmentation.export import PALETTE

    assert np.allclose(c[2] * 255, PALETTE[0])                           # label 1: segment.py's preview colour


def test_read_segmentation_errors(tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        read_segmentation(tmp_path / "nope", 5)
    with pytest.raises(UserError, match="labels.npy: not found"):
        read_segmentation(tmp_path, 5)
    np.save(tmp_path / "labels.npy", np.zeros(4, np.int64))
    with pytest.raises(UserError, match="4 labels for a model of 5"):
        read_segmentation(tmp_path, 5)
    np.save(tmp_path / "labels.npy", np.zeros(5, np.float32))
    with pytest.raises(UserError, match="one integer label per Gaussian"):
        read_segmentation(tmp_path, 5)
    np.save(tmp_path / "labels.npy", np.array([0, 1, -2, 1, 1]))
    with pytest.raises(UserError, match="label -2"):
        read_segmentation(tmp_path, 5)
    (tmp_path / "labels.npy").write_bytes(b"not npy")
    with pytest.raises(UserError, match="not a readable .npy"):
        read_segmentation(tmp_path, 5)
    np.save(tmp_path / "labels.npy", np.array([0, 1, -1, 7, 7]))
    (tmp_path / "summary.json").write_text(json.dumps({"parameters": {"undecided_resolved": "drop"},
                                                       "labels": {"names": ["cup"]}}))
    seg = read_segmentation(tmp_path, 5)
    assert seg.undecided_mode == "drop" and seg.label_names == ["cup"] and not seg.mask("deleted")[2]
    assert seg.counts() == "3 selected (2 labels), 1 background, 1 undecided"


# ---------------------------------------------------------------------------------------------------------
# a session on the demo scene: runs, export, errors (no browser)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_session_exports_what_segment_py_writes(view_demo, segment_py, tmp_path):
    data, sam, view, (x, y) = view_demo
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cfg = ViewerConfig(model_path=str(data.model_path), masks=str(sam), out=str(foreign), backend="cpu")
    lines: list[str] = []
    session = Session(cfg, log=lines.append)
    try:
        with pytest.raises(UserError, match="nothing to export yet"):
            session.export(log=lines.append)
        with pytest.raises(UserError, match="no prompt"):
            session.run(log=lines.append)
        cam = session.camera(view)
        assert session.file_size(cam) == (64, 64) and session.photo(cam).shape == (64, 64, 3)
        session.prompt.add_point(view, x, y)
        seg = session.run(log=lines.append)
        assert any(ln.startswith("same as: python segment.py") for ln in lines)
        assert any(ln.startswith("selected ") for ln in lines)   # the summary reached the log
        # the folder holds someone else's file: refused like segment.py refuses it, nothing touched
        with pytest.raises(UserError, match="holds no output of segment.py"):
            session.export(log=lines.append)
        assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
        out, files = session.export(str(tmp_path / "page"), log=lines.append)
    finally:
        session.close()
    assert out == tmp_path / "page" and "labels.npy" in files and "extracted.ply" in files
    cli = tmp_path / "cli"
    segment_py(["-m", str(data.model_path), "--masks", str(sam), "--prompt", f"{view}:{x},{y}", "--out",
                    str(cli), "--backend", "cpu", "--no-progress"])
    labels = np.load(out / "labels.npy")
    assert (labels == np.load(cli / "labels.npy")).all() and (labels == seg.labels).all() and (labels >= 1).any()
    assert (out / "extracted.ply").read_bytes() == (cli / "extracted.ply").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in cli.iterdir())
    record = json.loads((out / ".gs_outputs.json").read_text())
    assert sorted(record["tools"]["segment.py"]["files"]) == sorted(files)


def test_session_errors_reach_the_caller(view_demo, tmp_path):
    data, sam, view, _ = view_demo
    with pytest.raises(UserError, match="4 labels for a model of"):
        bad = tmp_path / "seg"
        bad.mkdir()
        np.save(bad / "labels.npy", np.zeros(4, np.int64))
        Session(ViewerConfig(model_path=str(data.model_path), segmentation=str(bad)), log=lambda m: None)
    lines: list[str] = []
    s = Session(ViewerConfig(model_path=str(data.model_path), masks=str(sam), backend="cpu",
                             out=str(data.model_path / "point_cloud")), log=lines.append)
    try:
        assert any("Export will fail" in ln and "input" in ln for ln in lines), lines
        with pytest.raises(UserError, match="not a training view"):
            s.camera("nope")
        s.prompt.add_point(view, 0, 0)
        s.prompt.add_point(view, 0, 0, positive=False)
        with pytest.raises(UserError, match="no SAM proposal"):
            s.run(log=lines.append)
        assert s.result_dir is None
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------------------
# view.py: one-line errors
# ---------------------------------------------------------------------------------------------------------
def _view_error(capsys, argv: list[str]) -> str:
    import view

    with pytest.raises(SystemExit) as e:
        view.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_view_py_errors(capsys, monkeypatch, tmp_path):
    pytest.importorskip("viser")
    assert "--model_path" in _view_error(capsys, [])
    assert str(tmp_path / "none") in _view_error(capsys, ["-m", str(tmp_path / "none")])
    monkeypatch.setitem(sys.modules, "viser", None)   # import viser -> ImportError
    line = _view_error(capsys, ["-m", str(tmp_path)])
    assert 'pip install -e ".[viewer]"' in line


def test_draw_prompt_marks_file_pixels():
    from viewer.app import draw_prompt

    p = PromptState()
    p.add_point("V", 10, 5)
    p.add_point("V", 30, 25, positive=False)
    img = draw_prompt(np.zeros((400, 600, 3), np.uint8), (60, 40), p)   # shown at 10x the file's size
    # markers of radius 7 centred on the pixels' centres, (10.5, 5.5) * 10 and (30.5, 25.5) * 10
    assert img[55, 110, 1] > 200 and img[55, 110, 0] < 100 and not img[55, 117].any()
    assert img[255, 310, 0] > 200 and img[255, 310, 1] < 100 and not img[255, 317].any()
    assert not img[350:, :50].any()


def test_app_binds_localhost_and_prints_its_url(view_demo, tmp_path):
    """The page's server (no browser): 127.0.0.1 unless --host says otherwise, the URL names localhost."""
    import socket

    pytest.importorskip("viser")
    import view
    from viewer.app import ViewerApp

    from arguments import parse_config

    cfg, _ = parse_config(view.build_parser(), ["-m", "M"])
    assert (cfg.host, cfg.port) == ("127.0.0.1", 8080)
    data, sam, view_name, _ = view_demo
    session = Session(ViewerConfig(model_path=str(data.model_path), masks=str(sam), out=str(tmp_path / "o")),
                      log=lambda m: None)
    app = ViewerApp(session, port=19080, log=lambda m: None)
    try:
        port = app.server.get_port()
        assert app.server.get_host() == "127.0.0.1" and app.url == f"http://localhost:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert app.status_value == "ready" and app.view.value == session.views.cameras[0].image_name
    finally:
        app.stop()
        session.close()
