"""Few-shot affordance transfer: annotation readers (labelme polygon / base64 mask, label PNG, UMD .mat), the
cosine k-NN transfer, 2D -> 3D voting on a generated scene, evaluation numbers, and one-line CLI errors."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from affordance.annotations import (find_sources, labelme_label_map, match_key, read_class_map, read_label_mat,
                                    to_class_map)
from affordance.classes import UMD_CLASSES, parse_classes
from affordance.evaluate import ClassScores, evaluate_folder, evaluate_rendered
from affordance.pipeline import AffordanceConfig, class_colours, run_affordance
from affordance.transfer import KnnTransfer, balanced_sample, l2_normalise, majority_vote
from utils.errors import UserError
from utils.io import save_label_png

ROOT = Path(__file__).resolve().parents[1]
CLASSES4 = parse_classes("background,grasp,cut,scoop")


def _b64_png(arr: np.ndarray) -> str:
    """What labelme's img_arr_to_b64 stores: the array saved as PNG by PIL, base64-encoded."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _labelme(shapes: list[dict], width: int, height: int, image_path: str | None = None,
             image_data: str | None = None) -> dict:
    return {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": image_data,
            "imageHeight": height, "imageWidth": width}


def _poly(label: str, pts: list[list[float]], kind: str = "polygon") -> dict:
    return {"label": label, "points": pts, "group_id": None, "description": "", "shape_type": kind, "flags": {},
            "mask": None}


def _seg_dist(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # px [P, 2] -> [P]
    ab = b - a
    t = np.clip(((px - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(px - (a + t[:, None] * ab), axis=1)


# ---------------------------------------------------------------------------------------------------------
# Label-map I/O
# ---------------------------------------------------------------------------------------------------------
def test_labelme_polygon_rasterisation(tmp_path):
    """An axis-aligned quad covers exactly its integer box (corners included); a float triangle agrees with
    matplotlib's point-in-polygon test at every pixel more than 1 px from an edge; later shapes paint over
    earlier ones; labelme's _background_ is class 0; an unknown label names the file and the label."""
    from matplotlib.path import Path as MplPath

    w, h = 40, 32
    tri = np.array([[3.2, 2.7], [37.9, 9.4], [11.5, 29.1]])
    data = _labelme([_poly("cut", tri.tolist()), _poly("Grasp", [[2, 3], [7, 3], [7, 8], [2, 8]]),
                     _poly("_background_", [[15, 12], [16, 12], [16, 13], [15, 13]]),
                     _poly("cut", [[0, 0], [5, 5]], kind="line")], w, h)
    lm, dropped = labelme_label_map(data, CLASSES4, h, w, tmp_path / "a.json")
    assert dropped == {"line": 1}
    quad = np.zeros((h, w), bool)
    quad[3:9, 2:8] = True
    assert (lm[quad] == 1).all()                       # "Grasp" matches class "grasp", painted over "cut"
    square = np.zeros((h, w), bool)
    square[12:14, 15:17] = True
    assert (lm[square] == 0).all()                     # _background_ inside the triangle, painted last

    ys, xs = np.mgrid[0:h, 0:w]
    px = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    inside = MplPath(tri).contains_points(px).reshape(h, w)
    dist = np.min([_seg_dist(px, tri[i], tri[(i + 1) % 3]) for i in range(3)], axis=0).reshape(h, w)
    far = (dist > 1.0) & ~quad & ~square
    assert far.sum() > 300 and inside[square].all()
    np.testing.assert_array_equal(lm[far] == 2, inside[far])
    (ax, ay), (bx, by) = tri[1] - tri[0], tri[2] - tri[0]
    area = 0.5 * abs(ax * by - ay * bx)
    covered = (lm == 2) | (quad & inside) | square
    assert abs(int(covered.sum()) - area) < 0.6 * 90  # within about half the perimeter (~96 px)

    bad = _labelme([_poly("handle", [[1, 1], [5, 1], [5, 5]])], w, h)
    with pytest.raises(UserError, match=r"b\.json: unknown label 'handle'"):
        labelme_label_map(bad, CLASSES4, h, w, tmp_path / "b.json")


def test_labelme_base64_mask_and_embedded_image(tmp_path):
    """labelme >= 5.3 'mask' shapes: a base64 PNG of the box [[x1, y1], [x2, y2]] (inclusive) pasted at that box
    (labelme's shapes_to_label); the image may be embedded as imageData."""
    rng = np.random.default_rng(0)
    h, w = 24, 30
    local = rng.random((6, 8)) > 0.4                  # box x 5..12, y 4..9
    photo = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    shapes = [{"label": "scoop", "points": [[5.0, 4.0], [12.0, 9.0]], "shape_type": "mask", "group_id": None,
               "description": "", "flags": {}, "mask": _b64_png(local)},
              _poly("grasp", [[26, 20], [20, 15]], kind="rectangle")]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "v.json").write_text(json.dumps(_labelme(shapes, w, h, "missing.png", _b64_png(photo))))
    sources, skipped = find_sources(tmp_path / "src")
    assert [s.kind for s in sources] == ["labelme"] and skipped == []
    img = sources[0].load_image()
    np.testing.assert_allclose(img, photo / 255.0, atol=1e-6)
    lm, _ = sources[0].load_labels(CLASSES4, img.shape[:2])
    expected = np.zeros((h, w), np.int32)
    expected[4:10, 5:13][local] = 3
    expected[15:21, 20:27] = 1
    np.testing.assert_array_equal(lm, expected)

    shapes[0]["points"] = [[5.0, 4.0], [13.0, 9.0]]   # box one pixel wider than the mask
    with pytest.raises(UserError, match="box"):
        labelme_label_map(_labelme(shapes, w, h), CLASSES4, h, w, "c.json")


def test_label_png_mat_and_source_layout(tmp_path):
    """Integer PNGs (labels/<name>.png, <name>.png beside a JPEG; 0/255 -> class 1), UMD x_rgb.jpg + x_label.mat
    (written with scipy.io.savemat), a labelme JSON claiming its image, depth PNGs ignored, unlabelled images
    reported."""
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    (src / "labels").mkdir(parents=True)
    h, w = 12, 16

    def photo(name: str) -> None:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / name)

    ints = rng.integers(0, 4, (h, w)).astype(np.uint8)
    photo("a.jpg")
    Image.fromarray(ints).save(src / "labels" / "a.png")
    binary = np.where(rng.random((h, w)) > 0.5, 255, 0).astype(np.uint8)
    photo("b.jpg")
    Image.fromarray(binary).save(src / "b.png")
    umd = rng.integers(0, 8, (h, w)).astype(np.uint8)
    photo("knife_01_00000001_rgb.jpg")
    scipy.io.savemat(src / "knife_01_00000001_label.mat", {"gt_label": umd})
    photo("knife_01_00000001_depth.png")
    photo("d.png")
    (src / "d.json").write_text(json.dumps(_labelme([_poly("grasp", [[1, 1], [6, 1], [6, 6]])], w, h, "d.png")))
    photo("e.jpg")

    sources, skipped = find_sources(src)
    assert [(s.name, s.kind) for s in sources] == [("a", "png"), ("b", "png"), ("d", "labelme"),
                                                    ("knife_01_00000001_rgb", "mat")]
    assert skipped == ["e.jpg"]
    umd_classes = parse_classes(None)
    assert umd_classes.names == UMD_CLASSES
    got = {s.name: s.load_labels(umd_classes, (h, w))[0] for s in sources}
    np.testing.assert_array_equal(got["a"], ints)
    np.testing.assert_array_equal(got["b"], (binary == 255).astype(np.int32))
    np.testing.assert_array_equal(got["knife_01_00000001_rgb"], umd)
    assert got["d"].max() == 1 and sources[2].image_path == src / "d.png"
    assert match_key("knife_01_00000001_rgb.jpg") == match_key("knife_01_00000001_label.mat")

    np.testing.assert_array_equal(read_label_mat(src / "knife_01_00000001_label.mat"), umd)
    scipy.io.savemat(tmp_path / "f_label.mat", {"gt_label": umd.astype(np.float64)})  # MATLAB doubles
    np.testing.assert_array_equal(read_class_map(tmp_path / "f_label.mat", umd_classes), umd)
    with pytest.raises(UserError, match="label value 7 but only 4 classes"):
        to_class_map(umd.astype(np.int64) * 0 + 7, CLASSES4, "g.png")
    scipy.io.savemat(tmp_path / "h_label.mat", {"a": umd, "b": umd})
    with pytest.raises(UserError, match="no 'gt_label'"):
        read_label_mat(tmp_path / "h_label.mat")


# ---------------------------------------------------------------------------------------------------------
# 2D -> 2D
# ---------------------------------------------------------------------------------------------------------
def _noisy_onehot(labels: np.ndarray, dim: int, sigma: float, rng: np.random.Generator,
                  basis: np.ndarray) -> np.ndarray:
    return (basis[labels] + sigma * rng.normal(size=(len(labels), dim))).astype(np.float32)


def test_knn_transfer_recovers_labels_and_matches_brute_force():
    """Features = noisy one-hot of the true class (in a random orthonormal basis), sources dominated by the
    background class: after balanced subsampling the k-NN vote recovers the classes, and its predictions equal
    a brute-force numpy cosine top-k majority vote exactly."""
    rng = np.random.default_rng(0)
    num_classes, dim, k = 5, 24, 7
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:num_classes]
    src_lab = np.concatenate([np.zeros(4000, int), np.repeat(np.arange(1, num_classes), 150)])
    src = _noisy_onehot(src_lab, dim, 0.22, rng, basis)
    keep = balanced_sample(src_lab, 1000, rng)
    counts = np.bincount(src_lab[keep], minlength=num_classes)
    assert counts.tolist() == [400, 150, 150, 150, 150]     # small classes keep everything
    q_lab = rng.integers(0, num_classes, 3000)
    q = _noisy_onehot(q_lab, dim, 0.22, rng, basis)

    knn = KnnTransfer.fit(src[keep], src_lab[keep], num_classes, k=k, backend="sklearn")
    pred, share = knn.predict(q)
    assert (pred == q_lab).mean() > 0.97
    assert share.min() >= 1.0 / k and share.max() <= 1.0

    s, qq = l2_normalise(src[keep]), l2_normalise(q)
    sims = qq @ s.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    ref = []
    for row, idx in enumerate(top):
        labs = src_lab[keep][idx]
        cnt = np.bincount(labs, minlength=num_classes)
        best = np.flatnonzero(cnt == cnt.max())
        ref.append(best[np.argmax([sims[row, idx][labs == c].sum() for c in best])])
    np.testing.assert_array_equal(pred, np.array(ref))

    grid = np.arange(12).reshape(3, 4) % num_classes     # predict_map keeps the [C, h, w] pixel order
    fmap = basis[grid].transpose(2, 0, 1)
    np.testing.assert_array_equal(knn.predict_map(fmap)[0], grid)


def test_majority_vote_tie_break_and_balanced_sample_budget():
    """2 votes each for classes 1 and 2: the larger summed similarity (class 2) wins; 3 votes beat 2 whatever
    the similarities. Balanced sampling: water-filling quotas for sizes 1000/50/10 under 300."""
    lab, share = majority_vote(np.array([[1, 1, 2, 2, 0], [0, 0, 0, 1, 1]]),
                               np.array([[0.9, 0.1, 0.6, 0.6, 0.2], [0.1, 0.1, 0.1, 0.99, 0.99]]), 3)
    assert lab.tolist() == [2, 0]
    np.testing.assert_allclose(share, [0.4, 0.6])
    labels = np.concatenate([np.zeros(1000, int), np.ones(50, int), np.full(10, 2)])
    idx = balanced_sample(labels, 300, np.random.default_rng(0))
    assert np.bincount(labels[idx]).tolist() == [240, 50, 10] and len(set(idx.tolist())) == 300


# ---------------------------------------------------------------------------------------------------------
# 2D -> 3D on a generated scene (objects = "affordance parts")
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Generated scene (ball / box / can on a ground plane), a model folder, 3 annotated training views as
    sources (label PNGs from the Gaussians' object ids) and GT label maps of every view."""
    import shutil

    from segmentation.demo import gaussians_from_synthetic, write_demo_data
    from segmentation.labels import render_label_map

    from segmentation.synthetic import make_demo_scene

    root = tmp_path_factory.mktemp("aff")
    scene = make_demo_scene(num_views=12, size=64, points_per_object=800, ground_points=1500, seed=0)
    data = write_demo_data(root / "d", [1], backend="cpu", scene=scene)
    g = gaussians_from_synthetic(data.scene)
    obj = data.scene.object_ids.astype(np.int64)
    src, gt = root / "sources", root / "gt"
    (src / "labels").mkdir(parents=True)
    gt.mkdir()
    for cam in data.scene.cameras:
        lm = render_label_map(cam, g, obj, 3, "cpu")
        save_label_png(gt / f"{cam.image_name}.png", lm)
        if cam.image_name in data.train_names[:3]:
            shutil.copy(data.source_path / "train" / f"{cam.image_name}.png", src / f"{cam.image_name}.png")
            save_label_png(src / "labels" / f"{cam.image_name}.png", lm)
    cfg = AffordanceConfig(model_path=str(data.model_path), sources=str(src), classes="background,ball,box,can",
                           out=str(root / "out"), renders=2, backend="cpu", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_affordance(cfg)
    return data, g, obj, gt, result


@pytest.mark.slow
def test_voting_recovers_per_gaussian_parts(demo):
    """From 3 annotated views (of 9 training views), every object's decided Gaussians get its label (>= 90 %),
    the ground's get background (>= 90 %), and the labelling rendered into the 3 held-out views scores
    IoU >= 0.9 per part."""
    data, g, obj, gt, result = demo
    labels = result.labels
    assert labels.shape == (len(g),) and set(np.unique(labels)) <= {-1, 0, 1, 2, 3}
    for k in range(4):
        decided = (obj == k) & (labels >= 0)
        assert decided.sum() > 0.8 * (obj == k).sum()
        assert (labels[decided] == k).mean() >= 0.9, k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from scene.views import load_views
        from scene.model_folder import load_model

        params, _, _ = load_model(data.model_path)
        cams = load_views(params, "test").cameras
        scores = evaluate_rendered(g, labels, cams, gt, result.classes, backend="cpu", progress=False)
    assert len(scores.images) == 3
    iou = scores.iou()
    assert min(iou[1:]) >= 0.9, iou


def test_outputs_layout_colours_and_summary(demo):
    """labels_2d has one PNG per training view (the 3 annotated ones equal their annotation), labelled.ply's
    SH DC renders each Gaussian's class colour, extracted_<class>.ply holds that class's Gaussians."""
    from utils.ply import read_gaussian_ply
    from utils.sh import sh_to_rgb

    data, g, obj, gt, result = demo
    out = result.out
    s = json.loads((out / "summary.json").read_text())
    assert s["classes"] == ["background", "ball", "box", "can"]
    assert s["views"]["num_views"] == 9 and s["views"]["transferred"] == 6
    assert sorted(s["views"]["annotated_views"]) == sorted(f"train/{n}" for n in data.train_names[:3])
    assert len(list((out / "labels_2d").glob("*.png"))) == 9 == len(list((out / "overlays_2d").glob("*.png")))
    first = data.train_names[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "labels_2d" / f"{first}.png")),
                                  np.asarray(Image.open(gt / f"{first}.png")))
    ply = read_gaussian_ply(out / "labelled.ply")
    rgb = sh_to_rgb(ply.f_dc.astype(np.float64))
    lab = result.labels
    pal = class_colours(4)
    np.testing.assert_allclose(rgb[lab >= 0], pal[lab[lab >= 0]], atol=1e-5)
    assert np.abs(ply.f_rest).max() == 0.0
    for l, name in enumerate(["ball", "box", "can"], start=1):
        assert len(read_gaussian_ply(out / f"extracted_{name}.ply").xyz) == int((lab == l).sum())
    np.testing.assert_array_equal(np.load(out / "labels.npy"), lab)
    assert np.load(out / "votes.npy").shape == (len(g), 4)
    assert len(list((out / "renders").glob("*.png"))) == 2


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------
GT_A = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [0, 0, 0, 0]])
PRED_A = np.array([[0, 1, 1, 1], [0, 2, 0, 1], [0, 0, 0, 2]])
GT_B = np.zeros((2, 2), int)
PRED_B = np.array([[3, 0], [0, 0]])


def test_scores_on_hand_made_maps():
    """Counted by hand. Image A: background TP 5 / GT 7 / pred 6 -> IoU 5/8; grasp 3/3/4 -> 3/4, recall 1;
    cut 1/2/2 -> 1/3, recall 1/2; scoop absent. Pooling image B (all background, one pixel predicted scoop):
    background 8/11/9 -> 2/3; scoop IoU 0 but not in the GT, so it stays out of the means."""
    s = ClassScores(list(CLASSES4.names))
    s.add("a", PRED_A, GT_A)
    np.testing.assert_allclose(s.iou()[:3], [5 / 8, 3 / 4, 1 / 3])
    assert s.iou()[3] is None and s.recall()[3] is None
    np.testing.assert_allclose(s.recall()[:3], [5 / 7, 1.0, 0.5])
    assert s.mean_iou == pytest.approx((3 / 4 + 1 / 3) / 2)
    assert s.mean_recall == pytest.approx(0.75)
    assert s.mean_iou_all == pytest.approx((5 / 8 + 3 / 4 + 1 / 3) / 3)
    s.add("b", PRED_B, GT_B)
    assert s.iou()[0] == pytest.approx(2 / 3) and s.recall()[0] == pytest.approx(8 / 11)
    assert s.iou()[3] == 0.0 and s.recall()[3] is None
    assert s.mean_iou == pytest.approx((3 / 4 + 1 / 3) / 2)
    assert s.mean_iou_all == pytest.approx((2 / 3 + 3 / 4 + 1 / 3) / 3)
    assert s.mean_recall_all == pytest.approx((8 / 11 + 1 + 0.5) / 3)


def _eval_folders(root: Path) -> tuple[Path, Path]:
    pred, gt = root / "run" / "labels_2d", root / "gt"
    pred.mkdir(parents=True)
    gt.mkdir()
    save_label_png(pred / "a.png", PRED_A)
    save_label_png(pred / "b.png", PRED_B)
    save_label_png(pred / "c.png", PRED_B)                          # annotated view: excluded via summary.json
    scipy.io.savemat(gt / "a_label.mat", {"gt_label": GT_A.astype(np.uint8)})
    save_label_png(gt / "b.png", GT_B)
    save_label_png(gt / "c.png", GT_B + 1)
    (root / "run" / "summary.json").write_text(json.dumps({"classes": list(CLASSES4.names),
                                                           "views": {"annotated_views": ["train/c"]}}))
    return pred, gt


def test_evaluate_folder_matches_names_and_excludes_annotated(tmp_path):
    pred, gt = _eval_folders(tmp_path)
    s = evaluate_folder(pred, gt, CLASSES4, exclude={"train/c"})
    assert sorted(s.images) == ["a", "b"]
    assert s.mean_iou == pytest.approx((3 / 4 + 1 / 3) / 2) and s.iou()[0] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------------------
# CLI: one line, exit 2, no traceback; eval_affordance.py end to end
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    bad = d / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "v.png")
    (bad / "v.json").write_text(json.dumps(_labelme([_poly("handle", [[1, 1], [5, 1], [5, 5]])], 8, 8, "v.png")))
    good = d / "good"
    (good / "labels").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good / "v.png")
    Image.fromarray(np.eye(8, dtype=np.uint8)).save(good / "labels" / "v.png")
    pred, gt = _eval_folders(d / "ev")
    cases = {
        "unknown_label": ["affordance.py", "-m", str(d / "nomodel"), "--sources", str(bad)],
        "no_model": ["affordance.py", "-m", str(d / "nomodel"), "--sources", str(good)],
        "dup_classes": ["affordance.py", "-m", str(d), "--sources", str(bad), "--classes", "background,grasp,Grasp"],
        "eval_no_gt": ["eval_affordance.py", "--gt", str(d / "nogt"), "--pred", str(pred)],
        "eval_ok": ["eval_affordance.py", "--gt", str(gt), "--pred", str(pred), "--out", str(d / "e.json")],
    }
    procs = {k: subprocess.Popen([sys.executable, *a], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for k, a in cases.items()}
    out = {k: (p.wait(timeout=300), *p.communicate()) for k, p in procs.items()}
    return d, out


@pytest.mark.parametrize("case,needle", [
    ("unknown_label", "v.json: unknown label 'handle'"),
    ("no_model", "model folder not found"),
    ("dup_classes", "is listed twice"),
    ("eval_no_gt", "ground truth folder not found"),
])
@pytest.mark.slow
def test_cli_errors_are_one_line(cli_runs, case, needle):
    _, out = cli_runs
    rc, stdout, stderr = out[case]
    assert rc == 2, (stdout, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr


@pytest.mark.slow
def test_eval_cli_writes_json(cli_runs):
    d, out = cli_runs
    rc, stdout, stderr = out["eval_ok"]
    assert rc == 0, stderr
    res = json.loads((d / "e.json").read_text())
    assert res["classes"] == list(CLASSES4.names)                   # from summary.json beside labels_2d/
    assert res["2d"]["excluded_annotated"] == ["train/c"] and sorted(res["2d"]["images"]) == ["a", "b"]
    assert res["2d"]["mean_iou"] == pytest.approx((3 / 4 + 1 / 3) / 2)
    assert res["2d"]["per_class"]["cut"]["recall"] == pytest.approx(0.5)
    assert "mean (affordances in GT)" in stdout
