"""Inria's 3DGS training loop as a library function over a typed config.

Per iteration, in Inria's order: position LR from the exponential schedule; SH degree +1 every
``sh_increase_interval`` iterations; one training view (drawn without replacement per epoch); render on the
scene background (or a random one); loss (1-λ)·L1 + λ·(1-SSIM); backward; then without gradients: progress,
test report, PLY save, densification statistics (max screen radius, NDC screen-space gradient norm),
clone/split/prune every ``densification_interval`` iterations inside (densify_from_iter, densify_until_iter)
with the 20 px screen-size limit once past ``opacity_reset_interval``, opacity reset; Adam step (not on the
last iteration); checkpoint.

Differences from Inria, all deliberate: random draws come from seeded per-iteration generators
(training.checkpoint.RngStreams), so runs repeat and resume bit-identically; Ctrl-C (or SIGTERM) stops at the
end of the current iteration and saves a checkpoint and a PLY; the model folder is written through
utils.outputs (staged beside it, swapped in when the run ends or is stopped that way).
"""
from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from arguments import OptimizationParams, write_cfg_args
from scene.cameras import ImageCache
from scene.gaussian_model import GaussianModel
from scene.scene import Scene
from scene.types import SceneInfo
from training.checkpoint import RngStreams, checkpoint_path, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.evaluation import evaluate_views
from training.presets import SIZE_THRESHOLD
from utils.errors import Terminated, UserError
from utils.loss_utils import training_loss
from utils.outputs import OutputFolder

TOOL = "train.py"  # the name train.py's files are recorded under (utils.outputs)

IterationHook = Callable[[int, GaussianModel], None]


@dataclass
class TrainResult:
    """What a run did (numbers for logs, tests and benchmarks)."""

    model_path: Path
    first_iteration: int                 # iteration the run started after (0, or the checkpoint's)
    last_iteration: int                  # last completed iteration
    interrupted: bool
    num_gaussians: int
    wall_time_s: float                   # whole call, loading included
    loop_time_s: float                   # training iterations only (evaluations and saves excluded)
    saved_plys: list[Path] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    evaluations: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)  # it -> split -> metrics
    densification: list[dict[str, int]] = field(default_factory=list)                 # counts per step
    losses: list[float] = field(default_factory=list)                                  # per iteration
    stop_signal: Optional[int] = None    # signal.SIGINT / SIGTERM that stopped the run (interrupted)

    @property
    def iterations_run(self) -> int:
        return self.last_iteration - self.first_iteration

    @property
    def it_per_s(self) -> float:
        return self.iterations_run / self.loop_time_s if self.loop_time_s > 0 else float("nan")


class _StopRequest:
    """SIGINT or SIGTERM → finish the current iteration, then stop and save. A second signal quits at once
    (KeyboardInterrupt, or utils.errors.Terminated for SIGTERM: nothing of the run is kept then).

    The handlers are installed only while the loop runs and only from the main thread (signal's rule);
    elsewhere the signals behave as usual.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()
        self.requested = True
        self.signum = signum

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


def _validate(cfg: TrainConfig) -> None:
    opt = cfg.opt
    if opt.iterations <= 0:
        raise UserError(f"--iterations {opt.iterations}: must be positive")
    if opt.densification_interval <= 0 or opt.opacity_reset_interval <= 0:
        raise UserError("--densification_interval and --opacity_reset_interval must be positive")
    if not 0.0 <= opt.lambda_dssim <= 1.0:
        raise UserError(f"--lambda_dssim {opt.lambda_dssim}: must be in [0, 1]")
    if cfg.sh_increase_interval <= 0:
        raise UserError("sh_increase_interval must be positive")


def _echo(bar: Any, quiet: bool, text: str) -> None:
    if quiet:
        return
    if bar is not None:
        bar.write(text)
    else:
        print(text, flush=True)


def _train_report_cameras(cameras: list) -> list:
    """Inria's five training views for the report: indices 5, 10, ..., 25 modulo the count."""
    return [cameras[idx % len(cameras)] for idx in range(5, 30, 5)]


def densification_step(gaussians: GaussianModel, opt: OptimizationParams, iteration: int, radii: Tensor,
                       visible: Tensor, viewspace_grad: Optional[Tensor], extent: float, white_background: bool,
                       min_opacity: float, rng: RngStreams) -> Optional[dict[str, int]]:
    """Inria's post-backward densification block for one iteration; returns the counts of
    densify_and_prune when it ran, else None.

    radii: Tensor           # [N] int32 screen radii of this view
    visible: Tensor         # [N] bool
    viewspace_grad: Tensor  # [N, 3] NDC-scaled screen-space gradient (None: nothing visible)
    """
    if iteration >= opt.densify_until_iter:
        return None
    gaussians.update_max_radii(radii, visible)
    if viewspace_grad is not None:
        gaussians.add_densification_stats(viewspace_grad, visible)
    counts = None
    if iteration > opt.densify_from_iter and iteration % opt.densification_interval == 0:
        size_threshold = SIZE_THRESHOLD if iteration > opt.opacity_reset_interval else None
        counts = gaussians.densify_and_prune(opt.densify_grad_threshold, min_opacity, extent, size_threshold,
                                             generator=rng.generator(RngStreams.SPLIT, iteration,
                                                                     gaussians.device))
    if iteration % opt.opacity_reset_interval == 0 or (white_background and iteration == opt.densify_from_iter):
        gaussians.reset_opacity()
    return counts


def run_train(cfg: TrainConfig, scene_info: Optional[SceneInfo] = None,
          on_iteration: Optional[IterationHook] = None) -> TrainResult:
    """Train ``cfg.model.source_path`` into ``cfg.model.model_path`` (Inria's folder layout).

    ``scene_info`` replaces reading the source (generated scenes, tests). ``on_iteration(it, gaussians)`` is
    called after each completed iteration (tests and tools; raising from it aborts without saving).
    Returns a TrainResult; ``interrupted`` is True when Ctrl-C or SIGTERM stopped the run (state saved).

    The files are staged (utils.outputs) and swapped into the model folder when the run ends, also when a
    signal stopped it; an error (or a second signal) leaves the folder as it was. Resuming from a checkpoint
    inside the model folder keeps the previous run's files; a fresh run replaces them.
    """
    t_start = time.perf_counter()
    _validate(cfg)
    model_path = Path(cfg.model.model_path)
    ck = load_checkpoint(cfg.start_checkpoint) if cfg.start_checkpoint else None  # fail before writing
    resume = ck is not None and _is_inside(Path(cfg.start_checkpoint or ""), model_path)
    inputs = [cfg.model.source_path if scene_info is None else None, cfg.model.object_masks,
              None if resume else cfg.start_checkpoint]
    with OutputFolder(model_path, TOOL, inputs, cfg.force, keep_previous=resume, flag="-m") as folder:
        result = _train(cfg, folder.dir, ck, scene_info, on_iteration, t_start)
        folder.commit()
    return result


def _is_inside(path: Path, folder: Path) -> bool:
    p, f = path.resolve(), folder.resolve()
    return f in p.parents


def _train(cfg: TrainConfig, root: Path, ck: Any, scene_info: Optional[SceneInfo],
           on_iteration: Optional[IterationHook], t_start: float) -> TrainResult:
    """The run, writing the model folder's files into ``root`` (the staging folder); the result names the
    files at their final place in ``cfg.model.model_path``."""
    opt, model, pipe = cfg.opt, cfg.model, cfg.pipe
    device = torch.device(cfg.device)
    model_path = Path(model.model_path)

    def final(p: Path) -> Path:  # where a staged file ends up
        return model_path / Path(p).relative_to(root)

    gaussians = GaussianModel(model.sh_degree, device)
    cache = ImageCache(int(model.image_cache_mb) * 1024 * 1024)
    scene = Scene(dataclasses.replace(model, model_path=str(root)), gaussians,
                  random_init_points=cfg.random_init_points, seed=cfg.seed, scene_info=scene_info,
                  random_init=cfg.random_init, image_cache=cache, progress=cfg.progress)
    write_cfg_args(root / "cfg_args", model)
    if scene.random_init and cfg.random_init_lambda_opacity != opt.lambda_opacity:
        opt = dataclasses.replace(opt, lambda_opacity=cfg.random_init_lambda_opacity)
        _echo(None, cfg.quiet, f"random init: loss += {opt.lambda_opacity:g} x mean opacity (fades unconstrained "
                               f"points; {cfg.preset} preset, --lambda_opacity overrides)")
    gaussians.training_setup(opt)

    seed = cfg.seed
    first_iter = 0
    stats: dict[str, float] = {}
    if ck is not None:
        if ck.seed is not None and ck.seed != seed:
            warnings.warn(f"{cfg.start_checkpoint}: saved with --seed {ck.seed}; continuing with it (not "
                          f"{seed}) so the run continues its random streams", stacklevel=2)
            seed = ck.seed
        if ck.optimization is not None:
            now = dataclasses.asdict(opt)
            changed = sorted(k for k, v in ck.optimization.items() if k in now and now[k] != v)
            if changed:
                warnings.warn(f"{cfg.start_checkpoint}: optimisation settings differ from the saved run "
                              f"({', '.join(changed)}); the resumed run will not match an uninterrupted one",
                              stacklevel=2)
        try:
            gaussians.restore(ck.gaussians, opt)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{cfg.start_checkpoint}: cannot restore the model ({e}); pass a checkpoint "
                            f"written by train.py with the same --sh_degree") from None
        first_iter = ck.iteration
        stats = dict(ck.stats)
    rng = RngStreams(seed)

    background = torch.tensor([1.0, 1.0, 1.0] if model.white_background else [0.0, 0.0, 0.0],
                              dtype=torch.float32, device=device)
    train_cams = scene.train_cameras
    result = TrainResult(model_path=model_path, first_iteration=first_iter, last_iteration=first_iter,
                         interrupted=False, num_gaussians=len(gaussians), wall_time_s=0.0, loop_time_s=0.0)
    if first_iter >= opt.iterations:
        warnings.warn(f"{cfg.start_checkpoint}: already at iteration {first_iter} >= --iterations "
                      f"{opt.iterations}; nothing to train", stacklevel=2)
        result.wall_time_s = time.perf_counter() - t_start
        return result

    from tqdm import tqdm

    from gaussian_renderer import render

    interactive = sys.stderr.isatty()
    bar = tqdm(total=opt.iterations, initial=first_iter, desc="Training progress", dynamic_ncols=True,
               mininterval=0.5 if interactive else 15.0, smoothing=0.05) if cfg.progress else None
    ema_loss = stats.get("ema_loss", 0.0)
    ema_psnr = stats.get("ema_psnr", 0.0)
    lambda_dssim = opt.lambda_dssim
    loop_time = 0.0
    iteration = first_iter
    with _StopRequest() as stop:
        for iteration in range(first_iter + 1, opt.iterations + 1):
            t_it = time.perf_counter()
            gaussians.update_learning_rate(iteration)
            if iteration % cfg.sh_increase_interval == 0:
                gaussians.oneup_sh_degree()

            cam = train_cams[rng.view_index(iteration, len(train_cams))]
            if opt.random_background:
                bg = torch.rand(3, generator=rng.generator(RngStreams.BACKGROUND, iteration, device),
                                device=device)
            else:
                bg = background
            pkg = render(cam, gaussians, bg, backend=pipe.backend, num_threads=pipe.num_threads)
            image = pkg["render"]
            gt = cam.load_image(cache, device)
            loss = training_loss(image, gt, lambda_dssim)
            if opt.lambda_opacity > 0.0:
                loss = loss + opt.lambda_opacity * gaussians.get_opacity.mean()
            loss.backward()

            with torch.no_grad():
                loss_value = float(loss)
                mse = float(((image - gt) ** 2).mean())
                psnr_value = 10.0 * math.log10(1.0 / max(mse, 1e-12))
                if iteration == first_iter + 1 and not stats:
                    ema_loss, ema_psnr = loss_value, psnr_value
                else:
                    ema_loss = 0.4 * loss_value + 0.6 * ema_loss
                    ema_psnr = 0.4 * psnr_value + 0.6 * ema_psnr
                result.losses.append(loss_value)
                loop_time += time.perf_counter() - t_it
                if bar is not None:
                    bar.update(1)
                    if iteration % 10 == 0 or iteration == opt.iterations:
                        bar.set_postfix({"loss": f"{ema_loss:.4f}", "psnr": f"{ema_psnr:.2f}",
                                         "n": len(gaussians)}, refresh=False)

                if iteration in cfg.test_iterations:
                    report = {"test": evaluate_views(scene.test_cameras, gaussians, background, cache,
                                                     pipe.backend, pipe.num_threads),
                              "train": evaluate_views(_train_report_cameras(train_cams), gaussians, background,
                                                      cache, pipe.backend, pipe.num_threads)}
                    result.evaluations[iteration] = report
                    for split in ("test", "train"):
                        r = report[split]
                        if r["views"]:
                            _echo(bar, cfg.quiet, f"[ITER {iteration}] Evaluating {split}: L1 {r['l1']:.6f} "
                                                  f"PSNR {r['psnr']:.2f} ({r['views']} views)")
                if iteration in cfg.save_iterations:
                    result.saved_plys.append(final(scene.save(iteration)))
                    _echo(bar, cfg.quiet, f"[ITER {iteration}] Saved {len(gaussians)} Gaussians to "
                                          f"{result.saved_plys[-1]}")

                t_it = time.perf_counter()
                grad = pkg["viewspace_points"].grad
                counts = densification_step(gaussians, opt, iteration, pkg["radii"], pkg["visibility_filter"],
                                            grad, scene.cameras_extent, model.white_background,
                                            cfg.min_opacity, rng)
                if counts is not None:
                    result.densification.append({"iteration": iteration, **counts})

                assert gaussians.optimizer is not None
                if iteration < opt.iterations:
                    gaussians.optimizer.step()
                    gaussians.optimizer.zero_grad(set_to_none=True)
                loop_time += time.perf_counter() - t_it

                if iteration in cfg.checkpoint_iterations:
                    path = final(save_checkpoint(checkpoint_path(root, iteration), gaussians, iteration, rng, opt,
                                                 {"ema_loss": ema_loss, "ema_psnr": ema_psnr}))
                    result.checkpoints.append(path)
                    _echo(bar, cfg.quiet, f"[ITER {iteration}] Saved checkpoint {path}")

            result.last_iteration = iteration
            if on_iteration is not None:
                on_iteration(iteration, gaussians)
            if stop.requested and iteration < opt.iterations:
                result.interrupted = True
                result.stop_signal = stop.signum
                break

    if bar is not None:
        bar.close()
    if result.interrupted:
        it = result.last_iteration
        ck = checkpoint_path(model_path, it)
        if ck not in result.checkpoints:
            save_checkpoint(checkpoint_path(root, it), gaussians, it, rng, opt,
                            {"ema_loss": ema_loss, "ema_psnr": ema_psnr})
            result.checkpoints.append(ck)
        ply = final(scene.save(it))
        if ply not in result.saved_plys:
            result.saved_plys.append(ply)
    result.num_gaussians = len(gaussians)
    result.loop_time_s = loop_time
    result.wall_time_s = time.perf_counter() - t_start
    return result
