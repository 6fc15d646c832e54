"""Fixtures shared by several test modules."""
from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny scenes on a shared 2-core machine: one intra-op thread avoids OpenMP/torch pool contention and is
    several times faster. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def sam_like():
    """benchmarks/sam_like.py (a script, not a package): SAM-like proposal folders made from GT masks."""
    spec = importlib.util.spec_from_file_location("sam_like", ROOT / "benchmarks" / "sam_like.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sam_like"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def mary_rose_model(tmp_path_factory) -> Path:
    """A trained maryRose model folder: GS_MARYROSE_MODEL, else ../models/maryRose, else a small training run
    here (half resolution, 1000 iterations, ~25 s on 2 idle cores; CI has no model beside the repo). 150
    iterations were too few: Gaussians so blurry that no view confirmed a click."""
    source = ROOT.parent / "shared" / "data" / "maryRose"
    model = Path(os.environ.get("GS_MARYROSE_MODEL") or ROOT.parent / "models" / "maryRose")
    if (model / "point_cloud").is_dir():
        return model
    if not (source / "images").is_dir():
        pytest.skip(f"{source}: maryRose data not found")
    import train

    model = tmp_path_factory.mktemp("mary_rose_model") / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert train.main(["-s", str(source), "-m", str(model), "--eval", "--preset", "cpu", "-r", "2",
                           "--iterations", "1000", "--quiet"]) in (0, None)
    return model


@pytest.fixture
def segment_py():
    """segment.py's main(argv) in-process, warnings silenced; it must succeed."""
    import segment

    def run(argv: list[str]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert segment.main(argv) == 0

    return run


@pytest.fixture(scope="session")
def view_demo(tmp_path_factory, sam_like):
    """view.py's tests: the demo scene at 64 px (16 views; ball = object 1), a SAM-like folder of its train
    views, the camera name of one view and a file pixel deep inside the ball there."""
    import cv2
    from PIL import Image

    from segmentation.demo import write_demo_data

    root = tmp_path_factory.mktemp("view")
    data = write_demo_data(root, [1], num_views=16, size=64, backend="cpu")
    sam_like.make_folder(data.source_path / "train", data.masks_path, root / "sam", seed=1)
    name = data.train_names[0]
    view = f"train/{name}"    # the camera's image name (NeRF-synthetic layout), what the page prompts with
    m = (np.asarray(Image.open(data.masks_path / f"{name}.png")) > 127).astype(np.uint8)
    y, x = np.unravel_index(int(cv2.distanceTransform(m, cv2.DIST_L2, 5).argmax()), m.shape)
    return data, root / "sam", view, (int(x), int(y))
