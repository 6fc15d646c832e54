"""The viewer's state without any web code: the loaded model, the prompt being clicked, runs and export.

A prompt becomes exactly the ``SegmentConfig`` that ``segment.py -m MODEL [--masks SAM_DIR] --prompt ...
--out OUT`` builds (:func:`segment_config`; tests/test_view.py compares the two), and runs through
segmentation.pipeline.run_segmentation into a scratch folder of this session (outside every input, removed
when the viewer stops). "Export" publishes that run's files into ``--out`` through utils.outputs, with
segment.py's name, inputs and ``--force`` rule: so OUT ends up holding what ``segment.py --out OUT`` writes,
all-or-nothing, and a folder that holds files of something else is refused as segment.py refuses it.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from arguments import flag, options
from arguments.options import Backend
from utils.errors import UserError
from viewer.scene_data import Segmentation, read_segmentation, splats_of

Log = Callable[[str], None]


_VIEWS = "model and views"
_COMPUTE = "compute"


@dataclass
class ViewerConfig:
    """Everything ``view.py`` takes; each field is its flag (help, aliases)."""

    model_path: str = options.model_path(group=_VIEWS)
    iteration: int = options.iteration(group=_VIEWS)
    source_path: str = options.source_path(group=_VIEWS)
    images: str = options.images(group=_VIEWS)
    resolution: int = options.resolution(group=_VIEWS)
    segmentation: str = flag("", "a segment.py output folder to show (labels.npy; labels or instance ids)",
                             metavar="DIR")
    masks: str = flag("", "SAM automatic-mask output (<image>/<k>.png folders): a click picks the proposal under it "
                      "(segment.py --masks); default: the object is cut out of the photo", metavar="SAM_DIR")
    out: str = options.out("where Export writes segment.py's files (default MODEL/segmentation)")
    force: bool = options.force()
    host: str = flag("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0 opens it to the "
                     "network)")
    port: int = flag(8080, "port (the next free one if taken)")
    backend: Backend = options.backend(group=_COMPUTE)
    num_threads: int = options.num_threads(group=_COMPUTE)
    device: str = options.device(group=_COMPUTE)


@dataclass
class PromptState:
    """What has been clicked on one view, in the image file's pixels (integer pixel indices)."""

    view: str = ""
    points: list[tuple[int, int]] = field(default_factory=list)
    negatives: list[tuple[int, int]] = field(default_factory=list)
    box: Optional[tuple[int, int, int, int]] = None   # x0, y0, x1, y1 inclusive

    def _on(self, view: str) -> None:
        if view != self.view:  # one view at a time: a click on another view starts a new prompt
            self.view, self.points, self.negatives, self.box = view, [], [], None

    def add_point(self, view: str, x: int, y: int, positive: bool = True) -> None:
        self._on(view)
        (self.points if positive else self.negatives).append((int(x), int(y)))

    def set_box(self, view: str, x0: int, y0: int, x1: int, y1: int) -> None:
        self._on(view)
        self.box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def clear(self) -> None:
        self.points, self.negatives, self.box = [], [], None

    @property
    def empty(self) -> bool:
        return not (self.points or self.negatives or self.box)

    def flags(self) -> dict[str, list[str]]:
        """segment.py's --prompt / --negative / --prompt-box values (SegmentConfig's field names)."""
        return {"prompt": [f"{self.view}:{x},{y}" for x, y in self.points],
                "negative": [f"{self.view}:{x},{y}" for x, y in self.negatives],
                "prompt_box": [] if self.box is None else ["{}:{},{},{},{}".format(self.view, *self.box)]}

    def argv(self) -> list[str]:
        out: list[str] = []
        for name, values in self.flags().items():
            out += [a for v in values for a in ("--" + name.replace("_", "-"), v)]
        return out

    def describe(self) -> str:
        if self.empty:
            return "no prompt yet"
        parts = [f"+({x},{y})" for x, y in self.points] + [f"-({x},{y})" for x, y in self.negatives]
        if self.box:
            parts.append("box({},{},{},{})".format(*self.box))
        return f"{self.view}: " + " ".join(parts)

    def check(self) -> None:
        """A one-line UserError unless the prompt names an object (segment.py's rule: a positive point or a
        box; negatives only with one of them)."""
        if not self.points and self.box is None:
            raise UserError("no prompt: click a point on the object in a view's photo (or shift-drag a box "
                            "around it), then Segment" if not self.negatives else
                            "only negative points: add a positive click on the object (or a box), then Segment")


def segment_config(cfg: ViewerConfig, prompt: PromptState, out: str = "", granularity: str = "whole") -> Any:
    """The SegmentConfig of ``segment.py -m MODEL [--masks M] [view options] PROMPT --granularity G --out OUT
    [--force]`` (every other option at segment.py's default)."""
    from segmentation.pipeline import SegmentConfig

    return SegmentConfig(model_path=cfg.model_path, iteration=cfg.iteration, source_path=cfg.source_path,
                         images=cfg.images, resolution=cfg.resolution, masks=cfg.masks, granularity=granularity,
                         out=out, backend=cfg.backend, num_threads=cfg.num_threads, device=cfg.device,
                         force=cfg.force, **prompt.flags())


def segment_argv(cfg: ViewerConfig, prompt: PromptState, out: str = "", granularity: str = "whole") -> list[str]:
    """The segment.py arguments of :func:`segment_config` (shown on the page: the command to reproduce a run)."""
    argv = ["-m", cfg.model_path]
    for option, value, default in (("--iteration", cfg.iteration, -1), ("-s", cfg.source_path, ""),
                                   ("-i", cfg.images, ""), ("-r", cfg.resolution, 0), ("--masks", cfg.masks, ""),
                                   ("--backend", cfg.backend, "auto"), ("--num_threads", cfg.num_threads, 0),
                                   ("--device", cfg.device, "cpu"), ("--granularity", granularity, "whole"),
                                   ("--out", out, "")):
        if value != default:
            argv += [option, str(value)]
    return argv + prompt.argv() + (["--force"] if cfg.force else [])


def _relay_warnings(caught: list, log: Log) -> None:
    seen = set()
    for w in caught:
        text = str(w.message).splitlines()[0] if str(w.message) else w.category.__name__
        if text not in seen:
            seen.add(text)
            log(f"warning: {text}")


class Session:
    """The model, its training views, what is shown, and the runs of one viewer (thread-safe: one run at a time)."""

    def __init__(self, cfg: ViewerConfig, log: Log = print):
        from scene.model_folder import load_model
        from scene.views import load_views

        self.cfg = cfg
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.params, gaussians, self.iteration = load_model(cfg.model_path, None if cfg.iteration < 0 else
                                                                cfg.iteration, device=cfg.device)
            self.views = load_views(self.params, "train", cfg.source_path, cfg.images, cfg.resolution)
        _relay_warnings(caught, log)
        self.num_gaussians = len(gaussians)
        self.gaussians = gaussians
        self.splats = splats_of(gaussians)
        self.cameras = {c.image_name: c for c in self.views.cameras}
        self.segmentation: Optional[Segmentation] = (
            read_segmentation(cfg.segmentation, self.num_gaussians) if cfg.segmentation else None)
        self.out = self._check_out(cfg.out, log)
        self.prompt = PromptState()
        self.granularity = "whole"
        self._lock = threading.Lock()
        self._scratch = Path(tempfile.mkdtemp(prefix="gs_view-"))
        self._runs = 0
        self.result_dir: Optional[Path] = None     # the last run (scratch), what Export publishes
        self.result_summary: Optional[dict] = None
        self.result_config: Any = None             # its SegmentConfig
        log(f"model    {cfg.model_path} (iteration {self.iteration}, {self.num_gaussians:,} Gaussians), "
            f"{len(self.views.cameras)} training views")

    # ----- views ------------------------------------------------------------------------------------
    def camera(self, name: str) -> Any:
        if name not in self.cameras:
            raise UserError(f"view {name!r}: not a training view of this model; pick one from the list")
        return self.cameras[name]

    def file_size(self, camera: Any) -> tuple[int, int]:
        """(width, height) of the view's image file: the frame of prompt coordinates."""
        from segmentation.prompts import file_size

        return file_size(camera)

    def photo(self, camera: Any) -> np.ndarray:  # [h, w, 3] uint8, the image file's pixel grid
        """The image file as stored (no undistortion, no resize); without one the view's image (generated
        scenes) or the model's render of the view (cameras.json only)."""
        path = getattr(camera, "image_path", None)
        if path:
            from utils.image_io import read_image

            img = read_image(path)
            if img.shape[2] == 4:  # composite on the view's background, as the training image is
                a = img[..., 3:].astype(np.float32) / 255.0
                bg = np.asarray(camera.background, dtype=np.float32) * 255.0
                img = (img[..., :3] * a + bg * (1.0 - a) + 0.5).astype(np.uint8)
            return img
        if camera.loader is not None:
            return (camera.load_image().permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        from segmentation.export import render_rgb  # no photos (cameras.json): the model's render of the view

        bg = (1.0, 1.0, 1.0) if self.params.white_background else (0.0, 0.0, 0.0)
        return render_rgb(camera, self.gaussians, bg, self.cfg.backend, self.cfg.num_threads)

    # ----- runs -------------------------------------------------------------------------------------
    def _check_out(self, out: str, log: Log) -> Path:
        """Tell at once (a warning: viewing needs no output) when segment.py would refuse the export folder."""
        from segmentation.pipeline import TOOL, output_folder
        from utils.outputs import OutputFolder

        path, inputs = output_folder(segment_config(self.cfg, PromptState(), out))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # foreign files are reported at export time
                with OutputFolder(path, TOOL, inputs, self.cfg.force):
                    pass  # entering checks the rules and stages; leaving without commit removes the staging
        except UserError as e:
            log(f"warning: Export will fail: {str(e).splitlines()[0]}")
        return path

    def run(self, log: Log = print) -> Segmentation:
        """Segment with the current prompt (one-line UserError for a bad one); the result replaces what is shown."""
        from segmentation.pipeline import format_summary, run_segmentation

        self.prompt.check()
        if not self._lock.acquire(blocking=False):
            raise UserError("a run is in progress; wait for it to finish")
        try:
            self._runs += 1
            run_dir = self._scratch / f"run-{self._runs}"
            cfg = segment_config(self.cfg, self.prompt, str(run_dir), self.granularity)
            log("same as: python segment.py " + " ".join(segment_argv(self.cfg, self.prompt, str(self.out),
                                                                       self.granularity)))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = run_segmentation(cfg, log=log)
                finally:
                    _relay_warnings(caught, log)
            for line in format_summary(result.summary).splitlines():
                log(line)
            if self.result_dir is not None:
                shutil.rmtree(self.result_dir, ignore_errors=True)
            self.result_dir, self.result_summary, self.result_config = run_dir, result.summary, cfg
            self.segmentation = Segmentation(result.selection.labels.astype(np.int64),
                                             result.summary["parameters"]["undecided_resolved"],
                                             list(result.label_names), "")
            return self.segmentation
        finally:
            self._lock.release()

    def export(self, out: str = "", log: Log = print) -> tuple[Path, list[str]]:
        """Publish the last run into ``out`` (default: --out): segment.py's files, its ownership record and
        rules (utils.outputs). Returns (folder, files)."""
        from segmentation.pipeline import TOOL, output_folder
        from utils.outputs import OutputFolder

        if self.result_dir is None or self.result_summary is None:
            raise UserError("nothing to export yet: click the object on a photo and Segment first (a folder "
                            "opened with --segmentation is already on disk)")
        if not self._lock.acquire(blocking=False):
            raise UserError("a run is in progress; export when it has finished")
        try:
            target, inputs = output_folder(dataclasses.replace(self.result_config, out=out or str(self.out)))
            files = list(self.result_summary["outputs"])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    with OutputFolder(target, TOOL, inputs, self.cfg.force) as folder:
                        for rel in files:
                            shutil.copy2(self.result_dir / rel, folder.path(rel))
                        folder.commit()
                finally:
                    _relay_warnings(caught, log)
            log(f"exported {len(files)} files to {target}")
            return target, files
        finally:
            self._lock.release()

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)
