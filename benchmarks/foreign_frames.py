"""PSNR of splatfacto / gsplat conversions of beer against the original, with the right and wrong transforms.

    python benchmarks/foreign_frames.py [--json foreign_frames.json]

Builds the same converted models as tests/test_foreign_models.py (it imports that file's converters, which
follow nerfstudio's and gsplat's code) and renders every view of beer at 90x160 through the cameras this code
produces: aligned, transform dropped, transform inverted, near plane not moved. The tests assert > 40 dB for
the first and < 20 dB for the broken ones; this prints the numbers behind the README's table.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _tests_module():
    spec = importlib.util.spec_from_file_location("foreign_tests", ROOT / "tests" / "test_foreign_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default="", help="also write the rows here")
    args = ap.parse_args()
    from gaussian_renderer import render
    from scene.dataset_readers import read_scene

    T = _tests_module()
    if not (T.BEER / "sparse" / "0" / "images.bin").is_file():
        print(f"error: {T.BEER}: the shared beer capture is needed", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    original = T.original._fixture_function()
    cams = read_scene(str(T.BEER), resolution=T.RES).train_cameras
    ref = {c.image_name: render(c, original, torch.zeros(3), backend="cpu")["render"].detach() for c in cams}

    def psnrs(g, views, near_moved: bool = True) -> np.ndarray:
        out = []
        for c in views.cameras:
            c = c if near_moved else dataclasses.replace(c, znear=0.2)
            mse = float(((render(c, g, torch.zeros(3), backend="cpu")["render"].detach() - ref[c.image_name]) ** 2)
                        .mean())
            out.append(-10 * math.log10(max(mse, 1e-12)))
        return np.array(out)

    work = Path(tempfile.mkdtemp(prefix="foreign_frames_"))

    class Factory:
        def mktemp(self, name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=name, dir=work))

    rows = []
    run = T.splatfacto_run._fixture_function(Factory(), original)
    gs_t = T.gsplat_transform._fixture_function()
    res = work / "results" / "beer"
    T.gsplat_checkpoint(res, T.moved(original, gs_t))

    def row(name: str, model: Path, **kw) -> None:
        g, views = T._views_of(model, **kw)
        for label, near in (("", True), (", near plane not moved", False)) if "aligned" in name else (("", True),):
            p = psnrs(g, views, near)
            rows.append({"case": name + label, "views": len(p), "psnr_min": round(float(p.min()), 2),
                         "psnr_median": round(float(np.median(p)), 2),
                         "psnr_all": round(-10 * math.log10(float(np.mean(10 ** (-p / 10)))), 2),
                         "alignment_error": views.model_frame["alignment_error"],
                         "scale": round(views.model_frame["data_to_model"]["scale"], 4)})

    row("splatfacto, aligned", run["run"])
    for name, sim in (("dropped", np.eye(4)), ("inverted", np.linalg.inv(run["sim"]))):
        copy = work / name / "run"
        shutil.copytree(run["run"], copy)
        s = abs(np.linalg.det(sim[:3, :3])) ** (1 / 3)
        (copy / "dataparser_transforms.json").write_text(json.dumps({"transform": (sim[:3] / s).tolist(),
                                                                      "scale": s}))
        row(f"splatfacto, transform {name}", copy, source_path=str(run["data"]))
    (res / "cfg.yml").write_text(T.CFG_YML.format(data=T.BEER, normalize="true"))
    row("gsplat, aligned", res)
    (res / "cfg.yml").write_text(T.CFG_YML.format(data=T.BEER, normalize="false"))
    row("gsplat, normalisation dropped (cfg.yml false)", res)
    print(f"{'case':52}{'views':>6}{'min dB':>9}{'median':>9}{'all dB':>9}{'align':>8}{'scale':>8}")
    for r in rows:
        print(f"{r['case']:52}{r['views']:>6}{r['psnr_min']:>9.2f}{r['psnr_median']:>9.2f}{r['psnr_all']:>9.2f}"
              f"{r['alignment_error']:>8.3f}{r['scale']:>8.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
