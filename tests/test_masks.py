"""Mask input: every format, name matching, counting, errors, streaming, resizing and vote weights."""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import utils.masks.files as mask_files
from scene.cameras import Camera, Distortion
from utils.errors import UserError
from utils.masks import (binary_weights, label_weights, onehot_weights, open_mask_source, open_masks, read_binary_mask,
                         read_label_png, resize_nearest, rle_counts_to_string, rle_decode, rle_string_to_counts,
                         votes_to_labels)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _cam(name: str, width: int = 16, height: int = 12, uid: int = 0, distortion=None) -> Camera:
    return Camera(uid, name, width, height, 20.0, 20.0, width / 2, height / 2, np.eye(4), distortion=distortion)


def _blob(h: int, w: int, seed: int = 0) -> np.ndarray:  # [h, w] bool: a random ellipse
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    return ((yy - cy) / (0.3 * h)) ** 2 + ((xx - cx) / (0.25 * w)) ** 2 < 1


def _save(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def _collect(ms):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = [(c.image_name, lm) for c, lm in ms.items()]
    return out, [str(w.message) for w in rec]


# ------------------------------------------------------------------------------------------------------
# formats
# ------------------------------------------------------------------------------------------------------
def test_binary_png(tmp_path):
    gt = {f"v{i}": _blob(12, 16, i) for i in range(3)}
    for n, m in gt.items():
        _save(tmp_path / f"{n}.png", (m * 255).astype(np.uint8))
    ms = open_masks(tmp_path, [_cam(n, uid=i) for i, n in enumerate(gt)])
    assert ms.fmt == "binary" and ms.num_labels == 1 and ms.label_names == ["object"] and len(ms) == 3
    got, warns = _collect(ms)
    assert not warns
    for n, lm in got:
        assert lm.dtype == np.int32 and lm.shape == (12, 16)
        np.testing.assert_array_equal(lm, gt[n].astype(np.int32))


def test_jpeg_masks_are_thresholded(tmp_path):
    gt = _blob(48, 64, 3)
    noisy = cv2.GaussianBlur((gt * 255).astype(np.uint8), (5, 5), 1.5)  # soft edges, then lossy
    cv2.imwrite(str(tmp_path / "a.jpg"), noisy, [cv2.IMWRITE_JPEG_QUALITY, 40])
    decoded = cv2.imread(str(tmp_path / "a.jpg"), cv2.IMREAD_GRAYSCALE)
    assert len(np.unique(decoded)) > 2  # the file really is noisy
    ms = open_masks(tmp_path, [_cam("a", 64, 48)])
    assert ms.fmt == "binary"
    (_, lm), = [(n, m) for n, m in _collect(ms)[0]]
    np.testing.assert_array_equal(lm, (decoded > 127).astype(np.int32))  # independent decoder + threshold
    assert (lm == gt).mean() > 0.98


def test_ids_8bit_auto(tmp_path):
    a = np.zeros((12, 16), np.uint8)
    a[2:6, 2:6] = 3
    a[7:10, 8:14] = 7
    b = np.zeros((12, 16), np.uint8)
    b[1:4, 1:15] = 7
    _save(tmp_path / "a.png", a)
    _save(tmp_path / "b.png", b)
    ms = open_masks(tmp_path, [_cam("a"), _cam("b", uid=1)])
    assert ms.fmt == "ids" and ms.label_names == ["3", "7"] and ms.label_ids == [3, 7]
    got = dict(_collect(ms)[0])
    lut = {0: 0, 3: 1, 7: 2}
    np.testing.assert_array_equal(got["a"], np.vectorize(lut.get)(a))
    np.testing.assert_array_equal(got["b"], np.vectorize(lut.get)(b))
    # picking + priority order: labels=[7, 3] numbers 7 first; unpicked ids become background
    ms2 = open_masks(tmp_path, [_cam("a"), _cam("b", uid=1)], labels="7")
    assert ms2.label_names == ["7"]
    np.testing.assert_array_equal(dict(_collect(ms2)[0])["a"], (a == 7).astype(np.int32))
    ms3 = open_masks(tmp_path, [_cam("a"), _cam("b", uid=1)], labels=[7, 3])
    np.testing.assert_array_equal(dict(_collect(ms3)[0])["a"], np.vectorize({0: 0, 7: 1, 3: 2}.get)(a))


def test_ids_16bit_and_palette(tmp_path):
    a = np.zeros((12, 16), np.uint16)
    a[:5, :5] = 300
    a[6:, 6:] = 1000
    assert cv2.imwrite(str(tmp_path / "a.png"), a)
    assert read_label_png(tmp_path / "a.png").dtype == np.uint16
    p = np.zeros((12, 16), np.uint8)
    p[3:9, 3:9] = 2
    img = Image.fromarray(p, mode="L").convert("P")
    img.putpalette([0, 0, 0, 255, 255, 255, 200, 30, 30] + [0] * (3 * 253))  # index 2 is dark red
    img.save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "P"
    np.testing.assert_array_equal(read_label_png(tmp_path / "b.png"), p)  # indices, not colours
    ms = open_masks(tmp_path, [_cam("a"), _cam("b", uid=1)])
    assert ms.fmt == "ids" and ms.label_names == ["2", "300", "1000"]
    got = dict(_collect(ms)[0])
    np.testing.assert_array_equal(got["a"], np.select([a == 300, a == 1000], [2, 3], 0))
    np.testing.assert_array_equal(got["b"], (p == 2).astype(np.int32))


def test_fmt_override(tmp_path):
    m = _blob(12, 16)
    _save(tmp_path / "a.png", (m * 255).astype(np.uint8))
    ids = open_masks(tmp_path, [_cam("a")], fmt="ids")
    assert ids.fmt == "ids" and ids.label_names == ["255"]
    np.testing.assert_array_equal(_collect(ids)[0][0][1], m.astype(np.int32))
    # 0/1/2 PNGs auto-detect as ids; forced binary they threshold to nothing, and that is warned about
    d2 = tmp_path / "small"
    d2.mkdir()
    _save(d2 / "a.png", (m * 1 + (~m) * 0).astype(np.uint8) * 2)
    assert open_masks(d2, [_cam("a")]).fmt == "ids"
    forced = open_masks(d2, [_cam("a")], fmt="binary")
    got, warns = _collect(forced)
    assert (got[0][1] == 0).all()
    assert any("appear in no view" in w for w in warns)
    with pytest.raises(UserError, match="binary masks hold one label"):
        open_masks(tmp_path, [_cam("a")], fmt="binary", labels="3").num_labels


def test_ids_detection_skips_empty_masks_and_warns_absent_labels(tmp_path):
    _save(tmp_path / "a.png", np.zeros((12, 16), np.uint8))  # empty: says nothing about the format
    b = np.zeros((12, 16), np.uint8)
    b[4:8, 4:8] = 3
    _save(tmp_path / "b.png", b)
    cams = [_cam("a"), _cam("b", uid=1)]
    ms = open_masks(tmp_path, cams)
    assert ms.fmt == "ids" and ms.label_ids == [3]
    got, warns = _collect(open_masks(tmp_path, cams, labels="3,5"))
    assert [w for w in warns if "1 of 2 labels appear in no view (e.g. 5)" in w]
    np.testing.assert_array_equal(got[1][1], (b == 3).astype(np.int32))


def test_ids_jpeg_rejected(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((12, 16), 3, np.uint8))
    with pytest.raises(UserError, match=r"a\.jpg.*lossy"):
        open_masks(tmp_path, [_cam("a")], fmt="ids").num_labels


def test_sam_folders(tmp_path):
    h, w = 12, 16
    m0 = np.zeros((h, w), bool)
    m0[2:8, 2:8] = True
    m1 = np.zeros((h, w), bool)
    m1[5:11, 5:14] = True  # overlaps m0 on [5:8, 5:8]
    m2 = np.zeros((h, w), bool)
    m2[0:2, 10:16] = True
    for view, parts in {"a": {0: m0, 1: m1, 2: m2}, "b": {0: m1, 1: m2}}.items():
        d = tmp_path / view
        d.mkdir()
        for k, m in parts.items():
            _save(d / f"{k}.png", (m * 255).astype(np.uint8))
        (d / "metadata.csv").write_text("id,area\n0,1\n")
    cams = [_cam("a"), _cam("b", uid=1)]
    # auto: SAM automatic-mask folders are per-view proposals, not labels
    props = open_mask_source(tmp_path, cams)
    assert props.fmt == "sam" and not props.consistent and len(props) == 2
    va = props.view("a")
    assert va.masks.shape == (3, h, w) and va.ids == [0, 1, 2]
    np.testing.assert_array_equal(va.masks[1], m1)
    assert va.containing(6, 6) == [0, 1] and va.containing(12, 0) == [2]
    with pytest.raises(UserError, match="names no object by itself.*--prompt"):
        open_masks(tmp_path, cams)
    with pytest.raises(UserError, match="numbered per image"):
        open_mask_source(tmp_path, cams, labels="1")
    # sam-tracked: the same layout read as consistent ids (SAM2 video output)
    ms = open_masks(tmp_path, cams, fmt="sam-tracked")
    assert ms.fmt == "sam-tracked" and ms.label_names == ["0", "1", "2"]
    got = dict(_collect(ms)[0])
    want = np.zeros((h, w), np.int32)
    want[m2] = 3
    want[m1] = 2
    want[m0] = 1  # overlap: the smallest label wins
    np.testing.assert_array_equal(got["a"], want)
    # picked in priority order: label 1 = k2, label 2 = k1; k0 becomes background
    ms2 = open_masks(tmp_path, cams, fmt="sam-tracked", labels="2,1")
    got2 = dict(_collect(ms2)[0])
    want2 = np.zeros((h, w), np.int32)
    want2[m1] = 2
    want2[m2] = 1
    np.testing.assert_array_equal(got2["a"], want2)
    np.testing.assert_array_equal(got2["b"], np.where(m2, 2, 0))  # b has no k2; its k1 is m2 and its k0 is dropped
    with pytest.raises(UserError, match="SAM mask id 9 occurs in no matched view"):
        open_masks(tmp_path, cams, fmt="sam-tracked", labels=[9]).num_labels


# ------------------------------------------------------------------------------------------------------
# COCO RLE
# ------------------------------------------------------------------------------------------------------
def _encode_counts_reference(mask: np.ndarray) -> list[int]:
    """Independent column-major RLE encoder for the tests (loop, no numpy tricks)."""
    flat = [bool(v) for v in mask.T.reshape(-1)]
    counts, cur, run = [], False, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return counts


def _compress_reference(counts: list[int]) -> str:
    """Transcription of pycocotools' rleToString (C) for the tests."""
    s = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        while True:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if ch & 0x10 else (x != 0)
            if more:
                ch |= 0x20
            s.append(chr(ch + 48))
            if not more:
                break
    return "".join(s)


def test_rle_string_hand_examples():
    # Worked by hand from the format: small counts are single digits; 100 = 4 + 3*32 → 'T' (4|0x20) then
    # '3'; from the 4th count on the delta to two places back is stored: 3 - 5 = -2 → 30 with sign → 'N'.
    assert rle_string_to_counts("324") == [3, 2, 4]
    assert rle_string_to_counts("324O") == [3, 2, 4, 1]
    assert rle_string_to_counts("T3") == [100]
    assert rle_string_to_counts("05X1N") == [0, 5, 40, 3]
    assert rle_counts_to_string([0, 5, 40, 3]) == "05X1N"
    mask = np.zeros((3, 4), bool)  # column-major: col 0 = [0,0,1], col 1 = [1,1,0], rest 0 → runs 2, 3, 7
    mask[2, 0] = mask[0, 1] = mask[1, 1] = True
    assert _encode_counts_reference(mask) == [2, 3, 7]
    np.testing.assert_array_equal(rle_decode([2, 3, 7], 3, 4), mask)
    with pytest.raises(ValueError):
        rle_decode([2, 3, 6], 3, 4)


def test_rle_string_roundtrip_random():
    rng = np.random.default_rng(1)
    for i in range(20):
        h, w = rng.integers(1, 60, size=2)
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        if i % 3 == 0:
            mask = _blob(int(h), int(w), i)  # long runs: multi-character counts
        counts = _encode_counts_reference(mask)
        s = _compress_reference(counts)
        assert rle_counts_to_string(counts) == s
        assert rle_string_to_counts(s) == counts
        np.testing.assert_array_equal(rle_decode(rle_string_to_counts(s), int(h), int(w)), mask)
    big = [70000, 3, 1_000_000, 2]  # large counts and negative deltas
    assert rle_string_to_counts(_compress_reference(big)) == big


def _coco_file(tmp_path: Path, h: int = 12, w: int = 16) -> tuple[Path, dict]:
    a_cup, a_dog = _blob(h, w, 1), _blob(h, w, 2)
    b_cup = _blob(h, w, 5)
    data = {
        "images": [{"id": 10, "file_name": "imgs/A.JPG", "height": h, "width": w},
                   {"id": 11, "file_name": "b.jpg"},
                   {"id": 12, "file_name": "unmatched.jpg"}],
        "categories": [{"id": 3, "name": "cup"}, {"id": 8, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 8,
             "segmentation": {"size": [h, w], "counts": _compress_reference(_encode_counts_reference(a_dog))}},
            {"id": 2, "image_id": 10, "category_id": 3,
             "segmentation": {"size": [h, w], "counts": _encode_counts_reference(a_cup)}},
            {"id": 3, "image_id": 11, "category_id": 3,
             "segmentation": {"size": [h, w], "counts": _compress_reference(_encode_counts_reference(b_cup))}},
        ],
    }
    path = tmp_path / "masks.json"
    path.write_text(json.dumps(data))
    return path, {"a_cup": a_cup, "a_dog": a_dog, "b_cup": b_cup}


def test_coco_rle(tmp_path):
    path, gt = _coco_file(tmp_path)
    cams = [_cam("a"), _cam("b", uid=1), _cam("c", uid=2)]
    with pytest.warns(UserWarning) as rec:
        ms = open_masks(path, cams)
    msgs = [str(r.message) for r in rec]
    assert any("1 of 3 views have no mask" in m for m in msgs)
    assert any("1 COCO images match no view" in m for m in msgs)
    assert ms.fmt == "coco" and ms.label_ids == [3, 8] and ms.label_names == ["cup", "dog"]
    assert ms.matched_names == ["a", "b"] and ms.skipped_views == ["c"] and ms.unmatched_files == ["unmatched.jpg"]
    got = dict(_collect(ms)[0])
    want_a = np.where(gt["a_cup"], 1, np.where(gt["a_dog"], 2, 0))  # overlap: cup (label 1) wins
    assert (gt["a_cup"] & gt["a_dog"]).any()
    np.testing.assert_array_equal(got["a"], want_a)
    np.testing.assert_array_equal(got["b"], gt["b_cup"].astype(np.int32))
    with pytest.warns(UserWarning, match="match no view"):
        dog = open_masks(path, cams[:2], labels="dog")
    assert dog.label_ids == [8]
    np.testing.assert_array_equal(dict(_collect(dog)[0])["a"], gt["a_dog"].astype(np.int32))
    # a folder holding just the JSON is found too
    with pytest.warns(UserWarning, match="match no view"):
        assert open_masks(tmp_path, cams[:2]).fmt == "coco"


def test_coco_corrupt(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        open_masks(bad, [_cam("a")])
    data = {"images": [{"id": 1, "file_name": "a.png"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                             "segmentation": {"size": [4, 4], "counts": [3, 2]}}]}
    short = tmp_path / "short.json"
    short.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"short\.json.*corrupt RLE"):
        list(open_masks(short, [_cam("a", 4, 4)]).items())


# ------------------------------------------------------------------------------------------------------
# matching, counting, errors
# ------------------------------------------------------------------------------------------------------
def test_name_matching_variants(tmp_path):
    m = (_blob(12, 16) * 255).astype(np.uint8)
    files = ["img_0001.PNG", "IMG_0002_mask.jpg", "IMG_0003-MASK.png", "IMG_0004.JPG.png", "IMG_0005.mask.png",
             "IMG_0006_mask.JPG"]
    for f in files:
        if f.lower().endswith(".jpg"):
            cv2.imwrite(str(tmp_path / f), m)
        else:
            _save(tmp_path / f, m)
    names = [f"IMG_000{i}" for i in range(1, 7)]
    ms = open_masks(tmp_path, [_cam(n, uid=i) for i, n in enumerate(names)])
    assert ms.matched_names == names and not ms.skipped_views and not ms.unmatched_files


def test_skipped_and_unmatched_are_counted(tmp_path):
    m = (_blob(12, 16) * 255).astype(np.uint8)
    for n in ("a", "b", "zz1", "zz2"):
        _save(tmp_path / f"{n}.png", m)
    cams = [_cam(n, uid=i) for i, n in enumerate(["a", "b", "c", "d", "e"])]
    with pytest.warns(UserWarning) as rec:
        ms = open_masks(tmp_path, cams)
    msgs = [str(r.message) for r in rec]
    assert any("3 of 5 views have no mask and are skipped (e.g. c)" in x for x in msgs)
    assert any("2 mask files match no view" in x and "zz1.png" in x for x in msgs)
    assert len(ms) == 2 and ms.skipped_views == ["c", "d", "e"] and ms.unmatched_files == ["zz1.png", "zz2.png"]
    assert [c.image_name for c, _ in ms.items()] == ["a", "b"]


def test_zero_matches_error(tmp_path):
    _save(tmp_path / "frame_001.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError) as e:
        open_masks(tmp_path, [_cam("IMG_9669")])
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "IMG_9669.png" in msg and "frame_001.png" in msg


def test_duplicate_error(tmp_path):
    _save(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "A_mask.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError) as e:
        open_masks(tmp_path, [_cam("a")])
    assert "'A_mask.png'" in str(e.value) and "'a.png'" in str(e.value)


def test_ambiguous_view_names(tmp_path):
    _save(tmp_path / "r_0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(UserError, match="matches 2 views"):
        open_masks(tmp_path, [_cam("r_0", uid=0), _cam("r_0", uid=1)])


@pytest.mark.filterwarnings("ignore:.*match no view")
def test_corrupt_file_error(tmp_path):
    _save(tmp_path / "a.png", (_blob(12, 16) * 255).astype(np.uint8))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = (tmp_path / "a.png").read_bytes()
    (tmp_path / "c.png").write_bytes(good[: len(good) // 2])  # truncated
    cams = [_cam("a"), _cam("b", uid=1), _cam("c", uid=2)]
    with pytest.raises(UserError, match=r"b\.png: cannot decode mask"):
        list(open_masks(tmp_path, cams, fmt="binary").items())
    with pytest.raises(UserError, match=r"c\.png: cannot decode mask"):
        list(open_masks(tmp_path, [cams[0], cams[2]], fmt="binary").items())
    with pytest.raises(UserError, match=r"b\.png"):  # auto-detection reads it too
        open_masks(tmp_path, cams[1:2]).num_labels


def test_bad_path_and_format(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        open_masks(tmp_path / "nope", [_cam("a")])
    with pytest.raises(UserError, match="unknown"):
        open_masks(tmp_path, [_cam("a")], fmt="polygons")
    with pytest.raises(UserError, match="no mask images"):
        open_masks(tmp_path, [_cam("a")])


# ------------------------------------------------------------------------------------------------------
# resizing, aspect, distortion
# ------------------------------------------------------------------------------------------------------
def test_resize_nearest_keeps_labels_exact():
    rng = np.random.default_rng(0)
    lab = cv2.resize(rng.integers(0, 6, (7, 9)).astype(np.uint8), (45, 37), interpolation=cv2.INTER_NEAREST)
    for w, h in ((100, 78), (13, 10), (45, 37), (3, 200)):
        for arr in (lab, lab.astype(np.uint16) * 1000, lab.astype(np.int32) - 2, lab > 2):
            out = resize_nearest(arr, w, h)
            assert out.shape == (h, w) and out.dtype == arr.dtype
            assert set(np.unique(out)) <= set(np.unique(arr))
    # pixel-centre aligned: a 1/3 downscale takes the centre of every 3x3 block
    a = np.arange(81, dtype=np.int32).reshape(9, 9)
    np.testing.assert_array_equal(resize_nearest(a, 3, 3), a[1::3, 1::3])


def test_masks_resized_to_view(tmp_path):
    lab = np.zeros((24, 32), np.uint8)
    lab[4:12, 4:12] = 5
    lab[12:20, 16:30] = 9
    _save(tmp_path / "a.png", lab)
    ms = open_masks(tmp_path, [_cam("a", 13, 10)])
    got, warns = _collect(ms)
    assert not warns  # 32x24 → 13x10: off by 2.5 %, but only by rounding to whole pixels
    lm = got[0][1]
    assert lm.shape == (10, 13) and set(np.unique(lm)) <= {0, 1, 2}
    np.testing.assert_array_equal(lm, np.vectorize({0: 0, 5: 1, 9: 2}.get)(resize_nearest(lab, 13, 10)))


def test_aspect_warning_once_with_count(tmp_path):
    for n in ("a", "b", "c"):
        _save(tmp_path / f"{n}.png", (_blob(10, 20 if n != "c" else 10) * 255).astype(np.uint8))
    ms = open_masks(tmp_path, [_cam(n, 10, 10, uid=i) for i, n in enumerate("abc")])
    got, warns = _collect(ms)
    aspect = [w for w in warns if "aspect" in w]
    assert len(aspect) == 1 and "2 of 3 masks" in aspect[0] and "a.png is 20x10" in aspect[0]
    assert all(lm.shape == (10, 10) for _, lm in got)
    _, warns2 = _collect(ms)  # a second pass does not repeat it
    assert not [w for w in warns2 if "aspect" in w]


def test_distorted_camera_uses_prepare_mask(tmp_path, monkeypatch):
    lab = np.zeros((12, 16), np.uint8)
    lab[3:6, 3:6] = 4
    _save(tmp_path / "a.png", lab)
    calls = []

    def fake_prepare(self, mask):
        calls.append((mask.shape, mask.dtype))
        return resize_nearest(mask, self.width, self.height)

    monkeypatch.setattr(Camera, "prepare_mask", fake_prepare)
    cam = _cam("a", 8, 6, distortion=Distortion("SIMPLE_RADIAL", (0.01, 0.0, 0.0, 0.0)))
    (_, lm), = list(open_masks(tmp_path, [cam]).items())
    assert calls == [((12, 16), np.uint8)] and lm.dtype == np.int32 and lm.shape == (6, 8)


def test_real_undistortion_keeps_labels(tmp_path):
    lab = np.zeros((60, 80), np.uint8)
    lab[10:30, 10:40] = 2
    lab[35:55, 45:75] = 6
    _save(tmp_path / "a.png", lab)
    cam = Camera(0, "a", 40, 30, 30.0, 30.0, 20.0, 15.0, np.eye(4),
                 distortion=Distortion("OPENCV", (0.08, -0.02, 0.0, 0.0)))
    (_, lm), = list(open_masks(tmp_path, [cam]).items())
    plain = resize_nearest(lab, 40, 30)
    assert lm.shape == (30, 40) and set(np.unique(lm)) == {0, 1, 2}  # no blended values
    changed = (lm != np.vectorize({0: 0, 2: 1, 6: 2}.get)(plain)).mean()
    assert 0.0 < changed < 0.2  # undistortion moved some pixels, not most


# ------------------------------------------------------------------------------------------------------
# streaming
# ------------------------------------------------------------------------------------------------------
def test_streaming_reads_lazily(tmp_path, monkeypatch):
    for n in "abcd":
        _save(tmp_path / f"{n}.png", (_blob(12, 16) * 255).astype(np.uint8))
    opened = []
    real = mask_files.open_image
    monkeypatch.setattr(mask_files, "open_image", lambda p: (opened.append(Path(p).name), real(p))[1])
    ms = open_masks(tmp_path, [_cam(n, uid=i) for i, n in enumerate("abcd")], fmt="binary")
    assert opened == [] and ms.num_labels == 1 and opened == []
    it = ms.items()
    assert inspect.isgenerator(it) and opened == []
    next(it)
    assert opened == ["a.png"]
    next(it)
    assert opened == ["a.png", "b.png"]
    it.close()
    # auto-detection reads only until the first non-empty mask, when the folder is opened
    opened.clear()
    ms_auto = open_masks(tmp_path, [_cam(n, uid=i) for i, n in enumerate("abcd")])
    assert opened == ["a.png"] and ms_auto.fmt == "binary" and opened == ["a.png"]


def test_subset_keeps_numbering(tmp_path):
    for n, v in (("a", 3), ("b", 7)):
        arr = np.zeros((12, 16), np.uint8)
        arr[2:5, 2:5] = v
        _save(tmp_path / f"{n}.png", arr)
    ms = open_masks(tmp_path, [_cam("a"), _cam("b", uid=1)])
    sub = ms.subset([1])
    assert len(sub) == 1 and sub.label_names == ["3", "7"]
    with pytest.warns(UserWarning, match="1 of 2 labels appear in no view"):
        (cam, lm), = list(sub.items())
    assert cam.image_name == "b" and set(np.unique(lm)) == {0, 2}


# ------------------------------------------------------------------------------------------------------
# vote weights
# ------------------------------------------------------------------------------------------------------
def test_weights_and_decisions():
    rng = np.random.default_rng(0)
    h, w, n = 6, 7, 200
    mass = rng.random((n, h * w)) * (rng.random((n, h * w)) < 0.3)  # alpha*T of each Gaussian per pixel
    mass[:5] = 0  # Gaussians that never contribute
    lab1 = rng.integers(0, 2, (h, w))
    bw = binary_weights(lab1)
    assert bw.shape == (h, w, 1) and bw.dtype == np.float32 and set(np.unique(bw)) == {-1.0, 1.0}
    vb = mass @ bw.reshape(-1, 1)
    vo = mass @ onehot_weights(lab1, 1).reshape(-1, 2)
    inside, outside = mass[:, lab1.ravel() == 1].sum(1), mass[:, lab1.ravel() == 0].sum(1)
    np.testing.assert_allclose(vb[:, 0], inside - outside, rtol=1e-5, atol=1e-6)
    lb, lo = votes_to_labels(vb), votes_to_labels(vo)
    assert (lb[:5] == -1).all() and (lo[:5] == -1).all()
    np.testing.assert_array_equal(lb, lo)  # one-hot argmax == sign of the signed vote
    np.testing.assert_array_equal(lb[5:], (inside > outside)[5:].astype(np.int64))
    # several labels: one-hot argmax == signed (+1 at k, -1 elsewhere) argmax == most alpha*T mass
    lab3 = rng.integers(0, 4, (h, w))
    oh = onehot_weights(lab3, 3)
    assert oh.shape == (h, w, 4) and (oh.sum(-1) == 1).all()
    votes = mass @ oh.reshape(-1, 4)
    signed = mass @ (2 * oh - 1).reshape(-1, 4)
    per_label = np.stack([mass[:, lab3.ravel() == k].sum(1) for k in range(4)], 1)
    np.testing.assert_allclose(votes, per_label, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(votes_to_labels(votes)[5:], votes_to_labels(signed)[5:])
    np.testing.assert_array_equal(votes_to_labels(votes)[5:], per_label.argmax(1)[5:])
    assert label_weights(lab1, 1).shape == (h, w, 1) and label_weights(lab3, 3).shape == (h, w, 4)
    import torch

    t = votes_to_labels(torch.from_numpy(votes))
    assert t.dtype == torch.int64 and (t.numpy() == votes_to_labels(votes)).all()
    with pytest.raises(ValueError):
        onehot_weights(lab3, 2)


# ------------------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------------------
def test_mary_rose_masks():
    root = DATA / "maryRose"
    if not (root / "masks").is_dir():
        pytest.skip("../shared/data/maryRose not present")
    stems = sorted(p.stem for p in (root / "images").glob("*.jpg"))
    cams = [Camera(i, s, 256, 256, 781.28, 781.28, 128.0, 128.0, np.eye(4)) for i, s in enumerate(stems)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ms = open_masks(root / "masks", cams)
        assert len(ms) == 69 and ms.num_labels == 1 and ms.fmt == "binary"
        assert not ms.skipped_views and not ms.unmatched_files
        fractions = []
        for cam, lm in ms.items():
            ref = np.asarray(Image.open(root / "masks" / f"{cam.image_name}.png"))
            np.testing.assert_array_equal(lm, (ref > 127).astype(np.int32))
            fractions.append(lm.mean())
    assert 0.02 < min(fractions) and max(fractions) < 0.9  # every view sees the tankard, none is all object
    assert read_binary_mask(root / "masks" / f"{stems[0]}.png").dtype == bool


def test_masks_of_held_out_views_are_reported_as_another_split(tmp_path):
    """Masks of --eval hold-out views are expected in a mask folder: say so instead of "match no view"."""
    for name in ("a", "b", "held", "stray"):
        _save(tmp_path / f"{name}.png", (_blob(12, 16) * 255).astype(np.uint8))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ms = open_masks(tmp_path, [_cam("a"), _cam("b")], other_views=["held.jpg"])
    msgs = [str(w.message) for w in rec]
    assert ms.matched_names == ["a", "b"]
    assert any("1 mask files belong to views outside this split (e.g. held.png" in m for m in msgs), msgs
    assert any("1 mask files match no view and are ignored (e.g. stray.png)" in m for m in msgs), msgs
