"""Importing gaussian_renderer must not compile, load or import native/CUDA code (checked in a fresh process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
import gaussian_renderer
from gaussian_renderer import render, vote, available_backends, BackendUnavailable
import gaussian_renderer.native  # importing the build module must not build either
names = available_backends()
maps = open("/proc/self/maps").read() if sys.platform.startswith("linux") else ""
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in (
        "diff_gaussian_rasterization", "gsplat") or m in ("torch.utils.cpp_extension", "gaussian_renderer.cpu",
        "gaussian_renderer.cuda_backends", "gaussian_renderer.reference")),
    "loaded_native": gaussian_renderer.native.is_loaded() or "gs_cpu_rasterizer" in maps,
    "backends": names,
}))
"""


def test_import_loads_no_native_or_cuda_code(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = dict(os.environ, GS_SEGMENT_CACHE=str(cache))
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["modules"] == []
    assert info["loaded_native"] is False
    assert "cpu" in info["backends"]
    assert not cache.exists() or not any(cache.rglob("*.so")), "import must not build the extension"
