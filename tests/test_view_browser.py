"""view.py's page in a real headless browser (Debian's chromium driven by playwright, WebGL in software).

The test picks a view in the page's dropdown, clicks inside the object on the photo the page shows, runs
Segment, then Export, and compares the exported files with what ``segment.py --prompt VIEW:X,Y`` writes for
the same click. Errors must reach the page. A screenshot of the page is kept as an artifact (the pytest tmp
folder and output/view_browser_<scene>.png). Skips when viser, playwright or chromium is missing
(``pip install -e ".[viewer,browser]"``, ``apt-get install chromium``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CHROMIUM = os.environ.get("GS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# No GPU, no sandbox (root in CI), and no traffic to a closed network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 960, "height": 600}


@pytest.fixture(scope="module")
def browser_tools():
    pytest.importorskip("viser")
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM:
        pytest.skip("no chromium installed (apt-get install chromium)")
    return sync_api


@contextlib.contextmanager
def _page(sync_api, profile: Path) -> Iterator:
    """A page of a fresh chromium profile (playwright's own browser download is never used)."""
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                   args=FLAGS, viewport=VIEWPORT)
        try:
            page = ctx.pages[0] if ctx.pages else ctx.new_page()
            # software WebGL on a shared 2-core machine keeps the page's main thread busy: generous waits
            page.set_default_timeout(180_000)
            yield page
        finally:
            ctx.close()


def _wait(cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _click_file_pixel(page, app, client, x: int, y: int) -> None:
    """Click where the page draws file pixel (x, y) for this browser (the canvas' own coordinates)."""
    box = max((c.bounding_box() for c in page.locator("canvas").all()), key=lambda b: b["width"] * b["height"])
    assert abs(box["width"] / box["height"] - client.camera.aspect) < 0.01, (box, client.camera.aspect)
    u, v = app.screen_of_file_pixel(client, x, y)
    page.mouse.click(box["x"] + u * box["width"], box["y"] + v * box["height"])


def _drive_page(sync_api, tmp_path: Path, model: Path, masks: Path, view: str, xy: tuple[int, int], scene: str,
                run_timeout: float) -> tuple[Path, Path]:
    """The whole workflow in the browser; returns (export folder, screenshot)."""
    from viewer.app import ViewerApp
    from viewer.session import Session, ViewerConfig

    out = tmp_path / "exported"
    cfg = ViewerConfig(model_path=str(model), masks=str(masks), out=str(out), backend="cpu")
    lines: list[str] = []

    def log(line: str) -> None:   # kept for the asserts, and printed as it comes (pytest shows it on failure)
        lines.append(line)
        print(f"[view] {line}", flush=True)

    session = Session(cfg, log=log)
    app = ViewerApp(session, port=18080 + os.getpid() % 1000, log=log)
    shot = tmp_path / f"view_browser_{scene}.png"
    steps: list[str] = []
    t0 = time.monotonic()

    def step(name: str) -> None:
        nonlocal t0
        steps.append(f"{name} {time.monotonic() - t0:.1f} s")
        print(f"[page step] {steps[-1]}", flush=True)
        t0 = time.monotonic()

    def run_button(name: str, done: str, timeout: float) -> None:
        """Press a run button and wait for its job: fails at once with the page's error line, if any."""
        n = len(lines)
        page.get_by_role("button", name=name).click()
        _wait(lambda: app.busy is not None or any(ln.startswith(("error:", done)) for ln in lines[n:])
              or app.status_value.startswith(("error:", done)), 60, f"{name} to start")
        _wait(lambda: app.busy is None, timeout, f"{name} to finish (status: {app.status_value!r})")
        assert app.status_value.startswith(done), f"{name}: the page says {app.status_value!r}"
        page.get_by_text(done).first.wait_for()

    try:
        with _page(sync_api, tmp_path / "profile") as page:
            page.goto(app.url)
            _wait(lambda: app.server.get_clients(), 180, "the page to connect")
            client = next(iter(app.server.get_clients().values()))
            step("connect")
            # an error reaches the page: Segment without a prompt
            page.get_by_role("button", name="Segment").click()
            page.get_by_text("error: no prompt").first.wait_for()
            step("error shown")
            # the view picker: the browser camera moves to that training camera, its photo is shown
            page.get_by_label("View", exact=True).click()
            page.get_by_role("option", name=view, exact=True).click()
            cam = session.camera(view)
            _wait(lambda: np.allclose(client.camera.position, cam.camera_center, atol=1e-4)
                  and abs(client.camera.fov - cam.FoVy) < 1e-4, 180, "the camera to reach the view")
            step("view picked")
            # a click beside the photo is refused on the page
            page.mouse.click(8, VIEWPORT["height"] // 2)
            page.get_by_text("the click is not on the photo").first.wait_for()
            step("click refused")
            # the click inside the object, then the run and the export
            x, y = xy
            _click_file_pixel(page, app, client, x, y)
            page.get_by_text(f"prompt: {view}: +({x},{y})").first.wait_for()
            step("click")
            run_button("Segment", "done: selected", run_timeout)
            step("segment")
            run_button("Export", "exported", 180)
            step("export")
            time.sleep(1.0)  # let the software WebGL draw the extracted splats
            page.screenshot(path=str(shot))
            step("screenshot")
    except BaseException as e:
        raise AssertionError(f"{type(e).__name__}: {e}; page steps done: {', '.join(steps) or 'none'}; "
                             f"status: {app.status_value!r}; last log lines: {lines[-5:]}") from e
    finally:
        app.stop()
        session.close()
    assert any(ln.startswith("same as: python segment.py") for ln in lines)
    kept = ROOT / "output" / shot.name
    kept.parent.mkdir(exist_ok=True)
    shutil.copy2(shot, kept)
    print(f"screenshot of the page: {kept}; page steps: {', '.join(steps)}")
    return out, shot


def _compare_with_segment_py(segment_py, out: Path, cli: Path, model: Path, masks: Path, view: str,
                             xy: tuple[int, int]) -> np.ndarray:
    segment_py(["-m", str(model), "--masks", str(masks), "--prompt", f"{view}:{xy[0]},{xy[1]}", "--out", str(cli),
                "--backend", "cpu", "--no-progress"])
    labels = np.load(out / "labels.npy")
    assert (labels == np.load(cli / "labels.npy")).all()
    assert (out / "extracted.ply").read_bytes() == (cli / "extracted.ply").read_bytes()
    assert (out / "deleted.ply").read_bytes() == (cli / "deleted.ply").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in cli.iterdir())
    return labels


@pytest.mark.slow
def test_page_prompt_and_export_on_the_demo_scene(browser_tools, view_demo, segment_py, tmp_path):
    data, sam, view, xy = view_demo
    out, shot = _drive_page(browser_tools, tmp_path, data.model_path, sam, view, xy, "demo", run_timeout=300)
    labels = _compare_with_segment_py(segment_py, out, tmp_path / "cli", data.model_path, sam, view, xy)
    truth = np.asarray(data.scene.object_ids) == 1
    assert ((labels >= 1) & truth).sum() > 0.8 * truth.sum()   # the ball was clicked, and found
    assert shot.stat().st_size > 10_000


@pytest.fixture(scope="module")
def mary_rose(tmp_path_factory, sam_like, mary_rose_model):
    """The maryRose scene's trained model (tests/conftest.py) and a SAM-like proposal folder made from its GT
    masks."""
    source = DATA / "maryRose"
    root = tmp_path_factory.mktemp("mary_rose")
    sam_like.make_folder(source / "images", source / "masks", root / "sam", seed=0)
    return mary_rose_model, root / "sam"


@pytest.mark.slow
def test_page_prompt_and_export_on_mary_rose(browser_tools, mary_rose, segment_py, tmp_path):
    """A click inside the tankard on IMG_9670 at (152, 114)."""
    model, sam = mary_rose
    view, xy = "IMG_9670", (152, 114)
    out, _ = _drive_page(browser_tools, tmp_path, model, sam, view, xy, "maryRose", run_timeout=900)
    labels = _compare_with_segment_py(segment_py, out, tmp_path / "cli", model, sam, view, xy)
    assert (labels >= 1).any() and (labels == 0).any()
