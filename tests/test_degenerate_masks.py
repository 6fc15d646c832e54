"""Masks that are not what they seem: all background, everything, photographs, RGBA cut-outs, one mask file.

Each error case: exit 2, one line on stderr, no traceback, nothing written; the accepted cases give the
result the mask means.
"""
from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SEG = ["--previews", "0", "--gif-frames", "0", "--no-progress", "--backend", "cpu"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from segmentation.demo import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("degenerate"), [1], num_views=12, size=48, backend="cpu")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    import segment

    try:
        code = segment.main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return int(code or 0), out.out, out.err


def _masks_like(demo, folder: Path, fn) -> Path:
    """A copy of the demo's mask folder with every mask replaced by fn(mask [H, W] bool) (an image array)."""
    folder.mkdir(parents=True)
    for p in sorted(demo.masks_path.glob("*.png")):
        m = np.asarray(Image.open(p)) > 127
        Image.fromarray(fn(m)).save(folder / p.name)
    return folder


def _error(capsys, argv: list[str], needle: str, out: Path) -> None:
    code, stdout, err = _run(argv, capsys)
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 1 and needle in lines[0], (code, err)
    assert "Traceback" not in err and not out.exists()


@pytest.mark.slow
def test_all_black_masks_are_an_error_unless_allowed(demo, tmp_path, capsys):
    black = _masks_like(demo, tmp_path / "black", lambda m: np.zeros(m.shape, np.uint8))
    out = tmp_path / "out"
    base = ["-m", str(demo.model_path), "--masks", str(black), "--out", str(out), *SEG]
    _error(capsys, base, "every matched mask is empty", out)
    code, _, err = _run(base + ["--allow-empty"], capsys)
    assert code == 0, err
    assert not (out / "extracted.ply").exists() and (out / "deleted.ply").is_file()   # no empty PLY


def test_all_white_masks_warn(demo, tmp_path, capsys):
    white = _masks_like(demo, tmp_path / "white", lambda m: np.full(m.shape, 255, np.uint8))
    code, _, err = _run(["-m", str(demo.model_path), "--masks", str(white), "--out", str(tmp_path / "o"), *SEG],
                        capsys)
    assert code == 0 and "cover at least 95 % of every view" in err, err


def test_photos_as_masks_are_refused(demo, tmp_path, capsys):
    out = tmp_path / "out"
    _error(capsys, ["-m", str(demo.model_path), "--masks", str(demo.source_path / "train"), "--out", str(out),
                    *SEG], "looks like a photograph", out)
    # also the JPEG-only path (always read as binary)
    jpgs = tmp_path / "jpg"
    jpgs.mkdir()
    for p in sorted((demo.source_path / "train").glob("*.png")):
        Image.open(p).convert("RGB").save(jpgs / f"{p.stem}.jpg", quality=90)
    _error(capsys, ["-m", str(demo.model_path), "--masks", str(jpgs), "--out", str(out), *SEG],
           "looks like a photograph", out)


def test_rgba_cutouts_use_the_alpha_channel(demo, tmp_path, capsys):
    """Masks whose object is only in the alpha channel (white everywhere, alpha = object) select exactly
    what the binary masks select."""
    def rgba(m):
        a = np.zeros(m.shape + (4,), np.uint8)
        a[..., :3] = 255
        a[..., 3] = m.astype(np.uint8) * 255
        return a

    cut = _masks_like(demo, tmp_path / "rgba", rgba)
    for name, masks in (("binary", demo.masks_path), ("rgba", cut)):
        code, _, err = _run(["-m", str(demo.model_path), "--masks", str(masks), "--out",
                             str(tmp_path / f"out_{name}"), *SEG], capsys)
        assert code == 0, err
    a, b = np.load(tmp_path / "out_binary" / "labels.npy"), np.load(tmp_path / "out_rgba" / "labels.npy")
    assert (a >= 1).sum() > 0 and np.array_equal(a, b)


def test_one_mask_file_is_one_view(demo, tmp_path, capsys):
    one = sorted(demo.masks_path.glob("*.png"))[0]
    code, stdout, err = _run(["-m", str(demo.model_path), "--masks", str(one), "--out", str(tmp_path / "one"),
                              "--no-complete", *SEG], capsys)
    assert code == 0, err
    import json

    s = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert s["views"]["used_names"] == [n for n in s["views"]["used_names"] if n.endswith(one.stem)]
    assert s["views"]["used"] == 1
    # a single file that names no view: one line
    stray = tmp_path / "nomatch.png"
    shutil.copy(one, stray)
    out = tmp_path / "x"
    _error(capsys, ["-m", str(demo.model_path), "--masks", str(stray), "--out", str(out), *SEG],
           "no mask matches any of the", out)


def test_masks_and_a_prompt_together_are_refused(demo, tmp_path, capsys):
    out = tmp_path / "out"
    _error(capsys, ["-m", str(demo.model_path), "--masks", str(demo.masks_path), "--prompt",
                    f"{demo.train_names[0]}:3,3", "--out", str(out), *SEG], "and so do these label masks", out)


def test_label_with_no_gaussian_warns_when_others_succeed(tmp_path, capsys):
    """Two labels, one of them a speck no Gaussian's majority mass covers: a warning, the other label written."""
    from segmentation.demo import write_demo_data

    demo = write_demo_data(tmp_path / "d", [1], num_views=12, size=48, backend="cpu")
    ids = tmp_path / "ids"
    ids.mkdir()
    for p in sorted(demo.masks_path.glob("*.png")):
        m = (np.asarray(Image.open(p)) > 127).astype(np.uint8)
        m[0, 0] = 7  # label 7: one pixel in a corner
        Image.fromarray(m).save(ids / p.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, _, err = _run(["-m", str(demo.model_path), "--masks", str(ids), "--mask-format", "ids", "--out",
                             str(tmp_path / "o"), *SEG], capsys)
    assert code == 0 and "label '7' got no Gaussian" in err, err
    assert (tmp_path / "o" / "extracted_1.ply").is_file() and not (tmp_path / "o" / "extracted_7.ply").exists()
