"""Prompts, per-view proposals and their association through the 3D model (segment.py without consistent masks).

Oracles: atom votes against direct votes of the same masks and against a direct render of the selection;
recovered objects against the synthetic scene's own object ids and its held-out ground-truth masks.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segmentation.association import AtomVotes, atoms_of, decide_view, vote_atoms
from segmentation.demo import write_demo_data
from segmentation.evaluate import EvalConfig, run_evaluation
from segmentation.pipeline import SegmentConfig, run_segmentation
from segmentation.prompts import Prompt, choose_seed, parse_prompts, prompt_in_view, Seed
from segmentation.voting import vote_view
from utils.errors import UserError
from utils.masks import ViewProposals, open_mask_source

SIZE = 96


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sam_like):
    """Demo scene (ball = object 1) with binary train masks, GT masks of the held-out views, and a SAM-like
    proposal folder made from the train masks (whole, parts, background regions, merges, ids shuffled)."""
    root = tmp_path_factory.mktemp("assoc")
    data = write_demo_data(root, [1], num_views=16, size=SIZE, backend="cpu")
    kinds = sam_like.make_folder(data.source_path / "train", data.masks_path, root / "sam", seed=1)
    return data, root / "sam", kinds


def _centre(mask_png: Path) -> tuple[int, int]:
    """A pixel deep inside the object of a binary mask (file pixel coordinates)."""
    import cv2

    m = (np.asarray(Image.open(mask_png)) > 127).astype(np.uint8)
    d = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(d.argmax()), d.shape)
    return int(x), int(y)


def _run(data, out: Path, **kw):
    cfg = SegmentConfig(model_path=str(data.model_path), out=str(out), previews=kw.pop("previews", 0),
                        gif_frames=0, backend="cpu", progress=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_segmentation(cfg)


def _held_out_iou(data, labels_npy: Path, render: str = "scene") -> float:
    cfg = EvalConfig(model_path=str(data.model_path), labels=str(labels_npy), gt_masks=str(data.gt_masks_path),
                     split="test", backend="cpu", progress=False, render=render,
                     out=str(labels_npy.parent / f"eval_{render}.json"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_evaluation(cfg).miou


# ---------------------------------------------------------------------------------------------------------
# atoms and their votes
# ---------------------------------------------------------------------------------------------------------
def test_atoms_split_by_membership_and_connectivity():
    h, w = 100, 120   # slivers: < 2e-4 of the view = 2.4 px here
    a = np.zeros((h, w), bool)
    a[10:60, 10:80] = True
    b = np.zeros((h, w), bool)
    b[30:90, 50:110] = True
    vp = ViewProposals(camera=None, masks=np.stack([a, b]), ids=[0, 1])
    atoms = atoms_of(vp)
    # regions: a only, a&b, b only, neither (one connected background region)
    assert atoms.max() + 1 == 4
    for m in (a & ~b, a & b, b & ~a, ~a & ~b):
        assert len(np.unique(atoms[m])) == 1
    # a sliver (1 px of a third mask) is absorbed by its neighbour
    c = np.zeros((h, w), bool)
    c[0, 0] = True
    atoms2 = atoms_of(ViewProposals(camera=None, masks=np.stack([a, b, c]), ids=[0, 1, 2]))
    assert atoms2.max() + 1 == 4 and atoms2[0, 0] == atoms2[0, 1]
    # a disconnected membership class becomes two atoms
    d = np.zeros((h, w), bool)
    d[:, :3] = True
    d[:, -3:] = True
    atoms3 = atoms_of(ViewProposals(camera=None, masks=d[None], ids=[0]))
    assert atoms3[0, 0] != atoms3[0, -1]
    # a partition (superpixels) is used as it is
    part = np.repeat(np.arange(3), 40)[None].repeat(h, 0).astype(np.int32)
    np.testing.assert_array_equal(atoms_of(ViewProposals(camera=None, partition=part)), part)


@pytest.mark.slow
def test_atom_votes_equal_direct_votes_and_renders(demo):
    """A union of atoms votes exactly what vote_view votes for that mask; the per-atom rendered selection is the
    direct render of the selection summed over each atom's pixels."""
    from gaussian_renderer import render
    from scene.model_folder import load_model
    from scene.views import load_views

    data, sam, _ = demo
    params, g, _ = load_model(data.model_path)
    views = load_views(params, "train")
    cam = views.cameras[3]
    src = open_mask_source(sam, [cam], other_views=[c.image_name for c in views.cameras if c is not cam])
    vp = src.view(cam.image_name)
    atoms = atoms_of(vp)
    av = vote_atoms(cam, g, atoms, cam.image_name, backend="cpu")
    rng = np.random.default_rng(0)
    inside = rng.random(len(av.area)) < 0.5
    direct = vote_view(cam, g, inside[atoms].astype(np.int32), 1, backend="cpu").numpy()
    np.testing.assert_allclose(av.vote(inside.astype(np.int64), len(g), 1), direct, rtol=1e-5, atol=1e-6)
    sel = (rng.random(len(g)) < 0.3).astype(np.float64)
    with torch.no_grad():
        img = render(cam, g, torch.zeros(1), override_color=torch.from_numpy(sel).float()[:, None],
                     backend="cpu")["render"][0].numpy()
    per_atom = np.bincount(atoms.ravel(), weights=img.ravel().astype(np.float64), minlength=len(av.area))
    np.testing.assert_allclose(av.render(sel[:, None])[:, 0], per_atom, rtol=1e-4, atol=1e-3)


def test_decide_view_rule():
    """Atoms covered >= 0.5 (superpixels: 0.6) join, (0.1, that) abstain, <= 0.1 vote outside; agreement is the
    soft IoU."""
    area = np.array([100, 100, 100, 100])
    # one Gaussian per atom, mass = area (fully opaque, fills its atom)
    av = AtomVotes("v", area, np.arange(4, dtype=np.int32), np.arange(4, dtype=np.int32),
                   area.astype(np.float32), np.zeros((2, 2), np.uint16))
    s = np.array([[1.0], [0.0], [0.0], [0.0]])
    d = decide_view(av, s)
    assert d.used and d.agreement == pytest.approx(1.0) and list(d.atom_label) == [1, 0, 0, 0]
    av.mass = np.array([100, 30, 5, 0], np.float32)  # atom 1 is 30 % covered: uncertain
    d = decide_view(av, np.ones((4, 1)))
    assert list(d.atom_label) == [1, -1, 0, 0]
    assert d.agreement == pytest.approx(100 / (100 + 135 - 100))
    votes = av.vote(d.atom_label, 4, 1)
    np.testing.assert_allclose(votes, [[0, 100], [0, 0], [5, 0], [0, 0]])  # the uncertain atom does not vote
    # an atom 55 % covered joins a view of SAM masks (member given) but not a superpixel partition (member None)
    av.mass = np.array([100, 55, 5, 0], np.float32)
    assert list(decide_view(av, np.ones((4, 1))).atom_label) == [1, -1, 0, 0]
    assert list(decide_view(av, np.ones((4, 1)), band=False).atom_label) == [1, 0, 0, 0]
    av.member = np.eye(4, dtype=bool)
    assert list(decide_view(av, np.ones((4, 1))).atom_label) == [1, 1, 0, 0]


# ---------------------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------------------
def test_prompt_parsing_and_coordinates(demo):
    from scene.views import load_views
    from scene.model_folder import load_model

    ps = parse_prompts(["a.jpg:10,20", "a.jpg:11,21"], ["a.jpg:1,2"], ["b:0,0,9,9"])
    assert [p.view for p in ps] == ["a.jpg", "b"] and ps[0].points == [(10, 20), (11, 21)]
    assert ps[0].negatives == [(1, 2)] and ps[1].box == (0, 0, 9, 9)
    for bad in (["a:1"], ["a:1,2,3"], ["nocolon"], ["a:x,y"]):
        with pytest.raises(UserError, match="expected VIEW:X,Y"):
            parse_prompts(bad)
    with pytest.raises(UserError, match="X1,Y1 must be right of"):
        parse_prompts(boxes=["a:5,5,1,9"])
    with pytest.raises(UserError, match="needs a --prompt"):
        parse_prompts(negatives=["a:1,1"])
    data, _, _ = demo
    params, _, _ = load_model(data.model_path)
    cam = load_views(params, "train").cameras[0]
    half = cam.scaled(cam.width // 2, cam.height // 2)  # a view at half the file's resolution
    p = Prompt(cam.image_name, points=[(10, 20)], box=(4, 6, 9, 11))
    pts, _, box = prompt_in_view(p, half, (cam.width, cam.height))
    assert pts == [(5.25, 10.25)] and box == (2.0, 3.0, 5.0, 6.0)
    with pytest.raises(UserError, match="outside the"):
        prompt_in_view(Prompt(cam.image_name, points=[(cam.width, 3)]), cam, (cam.width, cam.height))


def test_choose_seed_prefers_consistent_then_size():
    def seed(n):
        m = np.zeros((10, 10), bool)
        m.flat[:n] = True
        return Seed(None, m, f"SAM mask {n} (x)")

    cands = [seed(80), seed(40), seed(10)]
    assert choose_seed(cands, [0.2, 0.7, 0.72])[0] is cands[1]           # the merged 80 px mask is inconsistent
    assert choose_seed(cands, [0.2, 0.7, 0.72], "part")[0] is cands[2]
    assert choose_seed(cands, [0.9, 0.7, 0.72])[0] is cands[0]


# ---------------------------------------------------------------------------------------------------------
# end to end on the demo scene
# ---------------------------------------------------------------------------------------------------------
def _truth_scores(data, labels):
    obj = np.asarray(data.scene.object_ids) == 1
    sel = labels >= 1
    tp = int((sel & obj).sum())
    return tp / max(1, int(sel.sum())), tp / max(1, int(obj.sum()))


@pytest.mark.slow
def test_sam_folder_and_one_click_recover_the_ball(demo, tmp_path):
    data, sam, kinds = demo
    assert any("merged" in k for k in kinds.values()) and any("part" in k for k in kinds.values())
    view = data.train_names[0]
    x, y = _centre(data.masks_path / f"{view}.png")
    res = _run(data, tmp_path / "out", masks=str(sam), prompt=[f"{view}:{x},{y}"], previews=1)
    precision, recall = _truth_scores(data, res.selection.labels)
    assert precision > 0.97 and recall > 0.85, (precision, recall)
    assert _held_out_iou(data, tmp_path / "out" / "labels.npy", "scene") > 0.95
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["masks"]["mode"] == "associate" and s["masks"]["prompts"][0]["view"].endswith(view)
    assert s["association"]["rounds"] and len(s["association"]["views_associated"]) >= 8
    assigned = sorted((tmp_path / "out" / "masks_associated").iterdir())
    assert len(assigned) == len(s["views"]["used_names"]) and (tmp_path / "out" / "extracted.ply").is_file()


@pytest.mark.slow
def test_photos_and_one_box_find_the_ball(demo, tmp_path):
    """Photos only (no SAM): GrabCut in the box, then superpixels. Weaker than SAM proposals on this scene of
    occluding objects (segmentation/association.py: known limit), but the ball is found, precisely."""
    data, _, _ = demo
    view = data.train_names[4]
    m = np.asarray(Image.open(data.masks_path / f"{view}.png")) > 127
    ys, xs = np.nonzero(m)
    box = f"{view}:{xs.min() - 2},{ys.min() - 2},{xs.max() + 2},{ys.max() + 2}"
    res = _run(data, tmp_path / "box", prompt_box=[box])
    precision, recall = _truth_scores(data, res.selection.labels)
    assert precision > 0.9 and recall > 0.8, (precision, recall)
    assert _held_out_iou(data, tmp_path / "box" / "labels.npy", "scene") > 0.7
    assert res.summary["masks"]["format"] == "photo" and "GrabCut in the box" in res.summary["masks"]["prompts"][0]["chose"]


@pytest.mark.slow
def test_one_mask_file_is_completed_from_the_photos(demo, tmp_path):
    """--masks FILE (one view's mask) segments from that view and completes the others; --no-complete votes
    that view only (the paper's rule), which misses what the view does not see."""
    data, _, _ = demo
    one = data.masks_path / f"{data.train_names[1]}.png"
    res = _run(data, tmp_path / "one", masks=str(one))
    assert res.summary["masks"]["mode"] == "associate" and res.summary["views"]["used"] > 8
    plain = _run(data, tmp_path / "plain", masks=str(one), complete=False)
    assert plain.summary["masks"]["mode"] == "masks" and plain.summary["views"]["used"] == 1
    iou_completed = _held_out_iou(data, tmp_path / "one" / "labels.npy")
    iou_plain = _held_out_iou(data, tmp_path / "plain" / "labels.npy")
    assert iou_completed > 0.8 and iou_completed > iou_plain + 0.05, (iou_completed, iou_plain)


@pytest.mark.slow
def test_photo_completion_by_default_only_for_one_masked_view(demo, tmp_path):
    """Two masked views: the default votes them only (photo completion measured worse from 3 masks on, see
    PHOTO_COMPLETION_MAX_MASKED); --complete asks for it."""
    import shutil

    data, _, _ = demo
    two = tmp_path / "two"
    two.mkdir()
    for name in data.train_names[1:3]:
        shutil.copy2(data.masks_path / f"{name}.png", two / f"{name}.png")
    res = _run(data, tmp_path / "auto", masks=str(two))
    assert res.summary["masks"]["mode"] == "masks" and res.summary["views"]["used"] == 2
    forced = _run(data, tmp_path / "forced", masks=str(two), complete=True)
    assert forced.summary["masks"]["mode"] == "associate" and forced.summary["views"]["used"] > 8


def test_object_protocol_ignores_occluders(demo, tmp_path):
    """The ball alone vs the ball in the scene: an occluder in front lowers only the in-scene score."""
    data, _, _ = demo
    obj = np.asarray(data.scene.object_ids)
    labels = np.where(obj == 1, 1, 0).astype(np.int64)
    (tmp_path / "labels.npy").write_bytes(b"")
    np.save(tmp_path / "labels.npy", labels)
    scene = _held_out_iou(data, tmp_path / "labels.npy", "scene")
    alone = _held_out_iou(data, tmp_path / "labels.npy", "object")
    # GT masks are occlusion-aware silhouettes: in-scene the true labels are perfect; alone, the parts of the
    # ball hidden behind the box in a held-out view show and count against it
    assert scene > 0.99 and alone < scene


# ---------------------------------------------------------------------------------------------------------
# bad inputs: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------------------------
def _cli_error(capsys, argv: list[str]) -> str:
    import segment

    with pytest.raises(SystemExit) as e:
        segment.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, err
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_bad_prompts_are_one_line_errors(demo, tmp_path, capsys):
    data, sam, _ = demo
    view = data.train_names[0]
    out = tmp_path / "never"
    base = ["-m", str(data.model_path), "--out", str(out), "--no-progress", "--previews", "0", "--gif-frames", "0"]
    cases = {
        "outside the": ["--masks", str(sam), "--prompt", f"{view}:{SIZE + 5},3"],
        "no such view": ["--masks", str(sam), "--prompt", "nope_123:3,3"],
        "not in the voted split": ["--masks", str(sam), "--prompt", f"{data.test_names[0]}:3,3"],
        "contains the point": ["--masks", str(sam), "--prompt", f"{view}:0,0", "--negative", f"{view}:0,0"],
        "names no object by itself": ["--masks", str(sam)],
        "numbered per image": ["--masks", str(sam), "--labels", "3", "--prompt", f"{view}:3,3"],
        "and so do these label masks": ["--masks", str(data.masks_path), "--prompt", f"{view}:3,3"],
        "expected VIEW:X,Y": ["--masks", str(sam), "--prompt", "3,3"],
        "no mask images, SAM sub-folders": ["--masks", str(tmp_path / "empty")],
    }
    (tmp_path / "empty").mkdir()
    for what, args in cases.items():
        line = _cli_error(capsys, base + args)
        assert what in line, (what, line)
        assert not out.exists(), what


def test_a_prompt_no_view_confirms_is_one_line_error(demo, tmp_path, capsys, monkeypatch):
    """An undertrained model (CI's 150-iteration maryRose): no view agrees with the click's first mask. Said as
    such, not as 'no Gaussian is visible' after an empty selection."""
    from segmentation import association

    data, sam, _ = demo
    view = data.train_names[0]
    x, y = _centre(data.masks_path / f"{view}.png")
    monkeypatch.setattr(association, "VIEW_AGREEMENT", 2.0)   # an IoU never reaches it: no view is used
    out = tmp_path / "never"
    line = _cli_error(capsys, ["-m", str(data.model_path), "--out", str(out), "--no-progress", "--masks", str(sam),
                               "--prompt", f"{view}:{x},{y}"])
    assert "no view confirms the prompt's first mask" in line and "--prompt-box" in line, line
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------
# --everything and --pick
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three(tmp_path_factory, sam_like):
    """The demo scene with a SAM-like folder of all three objects (ids from the generator's object ids)."""
    from scene.model_folder import load_model
    from segmentation.labels import render_label_map
    from scene.views import load_views

    root = tmp_path_factory.mktemp("three")
    data = write_demo_data(root, [1], num_views=16, size=SIZE, backend="cpu")
    params, g, _ = load_model(data.model_path)
    obj = np.asarray(data.scene.object_ids)
    ids = root / "ids"
    ids.mkdir()
    for cam in load_views(params, "train").cameras:
        lm = render_label_map(cam, g, obj, 3, backend="cpu").astype(np.uint8)
        Image.fromarray(lm).save(ids / f"{Path(cam.image_name).name}.png")
    sam_like.make_folder(data.source_path / "train", ids, root / "sam", seed=2)
    return data, root / "sam", g


@pytest.mark.slow
def test_everything_finds_each_object_once(three, tmp_path):
    from scene.model_folder import load_model
    from segmentation.evaluate import score_view
    from segmentation.labels import render_label_map
    from scene.views import load_views

    data, sam, g = three
    res = _run(data, tmp_path / "every", masks=str(sam), everything=True, min_gaussians=50)
    out = tmp_path / "every"
    inst = json.loads((out / "instances.json").read_text())["instances"]
    labels = np.load(out / "labels.npy")
    obj = np.asarray(data.scene.object_ids)
    params, _, _ = load_model(data.model_path)
    test = load_views(params, "test").cameras
    for k in (1, 2, 3):
        # exactly one instance holds most of object k, and it is recovered in the held-out views
        owners = [i for i in inst if (obj[labels == i["id"]] == k).mean() > 0.5]
        assert len(owners) == 1, (k, [(i["id"], np.bincount(obj[labels == i["id"]], minlength=4)) for i in inst])
        sel = labels == owners[0]["id"]
        ious = []
        for cam in test:
            gt = render_label_map(cam, g, (obj == k).astype(np.int64), 1, backend="cpu")
            iou, _ = score_view(render_label_map(cam, g, sel.astype(np.int64), 1, backend="cpu"), gt, 1)
            ious.append(1.0 if iou[0] is None else iou[0])
        assert np.mean(ious) >= 0.95, (k, ious)
        assert owners[0]["views_seen"] >= 3 and owners[0]["sam_ids"]
    for name in ("instances.ply", "labels.npy", "votes.npy", "summary.json", "background.ply"):
        assert (out / name).is_file(), name
    assert all((out / f"extracted_{i['id']}.ply").is_file() for i in inst)
    consistent = sorted((out / "masks_consistent").iterdir())
    assert len(consistent) == 12
    # masks_consistent reads back as id masks (--mask-format ids)
    again = _run(data, tmp_path / "again", masks=str(out / "masks_consistent"), mask_format="ids")
    assert again.summary["masks"]["format"] == "ids" and len(again.label_names) == len(inst)
    assert res.summary["mode"] == "everything" and res.summary["everything"]["instances"] == len(inst)


@pytest.mark.slow
def test_pick_extracts_the_instance_under_a_click(three, tmp_path, capsys):
    import segment

    data, sam, g = three
    out = tmp_path / "every"
    _run(data, out, masks=str(sam), everything=True, min_gaussians=50)
    labels = np.load(out / "labels.npy")
    obj = np.asarray(data.scene.object_ids)
    view = data.train_names[0]
    # a click on the ball in that view (its centre in the GT ids used for the SAM-like folder)
    import cv2

    ids = np.asarray(Image.open(sam.parent / "ids" / f"{view}.png"))
    d = cv2.distanceTransform((ids == 1).astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(d.argmax()), d.shape)
    try:
        code = segment.main(["-m", str(data.model_path), "--out", str(out), "--pick", f"{view}:{x},{y}", "--no-progress"])
    except SystemExit as e:
        code = e.code
    assert code in (0, None)
    pick = json.loads((out / "pick.json").read_text())
    assert len(pick["instances"]) == 1
    ball = labels == pick["instances"][0]
    assert (obj[ball] == 1).mean() > 0.95
    assert (out / "extracted.ply").is_file() and (out / "deleted.ply").is_file() and (out / "instances.json").is_file()
    # background under the point: one line, exit 2
    yb, xb = np.argwhere(ids == 0)[0]
    line = _cli_error(capsys, ["-m", str(data.model_path), "--out", str(out), "--pick", f"{view}:{xb},{yb}"])
    assert "no instance at" in line
    line = _cli_error(capsys, ["-m", str(data.model_path), "--out", str(tmp_path / "nothing"), "--pick", f"{view}:1,1"])
    assert "no readable --everything result" in line


def test_everything_needs_sam_proposals(demo, tmp_path, capsys):
    data, sam, _ = demo
    base = ["-m", str(data.model_path), "--out", str(tmp_path / "x"), "--everything"]
    assert "--everything finds every object" in _cli_error(capsys, base + ["--masks", str(data.masks_path)])
    assert "--everything finds every object" in _cli_error(capsys, base + ["--masks", str(sam), "--prompt",
                                                                              f"{data.train_names[0]}:3,3"])
    assert not (tmp_path / "x").exists()
