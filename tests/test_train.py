"""train.py / training.trainer: loss goes down on a real scene, Inria's folder, densification schedule,
save → load → render round trip, bit-identical resume (checkpoint and Ctrl-C), one-line CLI errors."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from arguments import ModelParams, OptimizationParams, PipelineParams, read_cfg_args
from scene.dataset_readers import get_nerfpp_norm
from scene.gaussian_model import GaussianModel
from scene.types import BasicPointCloud, SceneInfo
from training.checkpoint import RngStreams, load_checkpoint
from training.config import TrainConfig, build_parser, config_from_args
from training.trainer import densification_step, run_train
from utils.ply import read_gaussian_ply, read_point_cloud_ply

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MARY = DATA / "maryRose"


# ----- helpers -------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def generated_scene(num_views: int = 8, size: int = 48, seed: int = 0) -> SceneInfo:
    """A scene made here: ground truth images are renders of known Gaussians; the initial points are the
    Gaussians' centres, jittered, with wrong colours (so training has something to fix)."""
    from gaussian_renderer import render
    from segmentation.synthetic import make_demo_scene

    demo = make_demo_scene(num_views=num_views, size=size, points_per_object=150, ground_points=300, seed=seed)
    truth = GaussianModel.from_tensors(
        torch.from_numpy(demo.means), torch.from_numpy((demo.colors - 0.5) / 0.28209479177387814)[:, None, :],
        torch.zeros(len(demo.means), 0, 3), torch.log(torch.from_numpy(demo.scales)),
        torch.from_numpy(demo.quats), torch.logit(torch.from_numpy(demo.opacities))[:, None])
    cams = demo.cameras
    for cam in cams:
        with torch.no_grad():
            img = render(cam, truth, torch.zeros(3), backend="cpu", num_threads=1)["render"]
        arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        cam.loader = lambda arr=arr: arr
    rng = np.random.default_rng(seed)
    pts = demo.means + rng.normal(scale=0.03, size=demo.means.shape).astype(np.float32)
    colors = np.full_like(pts, 0.5)
    return SceneInfo("generated", "generated", cams[1:], cams[:1], BasicPointCloud(pts, colors, None),
                     get_nerfpp_norm(cams[1:]), np.array([[-2.5, -2.5, -0.5], [2.5, 2.5, 1.5]]))


def small_config(model_path: Path, iterations: int, **opt_overrides) -> TrainConfig:
    opt = dataclasses.replace(OptimizationParams(), iterations=iterations, position_lr_max_steps=iterations,
                              **opt_overrides)
    return TrainConfig(model=ModelParams(source_path="generated", model_path=str(model_path), sh_degree=1),
                       opt=opt, pipe=PipelineParams(backend="cpu", num_threads=1), test_iterations=[],
                       save_iterations=[iterations], checkpoint_iterations=[], seed=3, progress=False,
                       sh_increase_interval=10)


def capture_arrays(model_path: Path, iteration: int) -> dict[str, np.ndarray]:
    """Every per-Gaussian value and Adam moment of a checkpoint, as numpy arrays."""
    ck = load_checkpoint(model_path / f"chkpnt{iteration}.pth")
    g = ck.gaussians
    out = {k: g[k].numpy() for k in ("xyz", "features_dc", "features_rest", "scaling", "rotation", "opacity",
                                     "max_radii2D", "xyz_gradient_accum", "denom")}
    for i, st in g["optimizer"]["state"].items():
        out[f"adam{i}_m"] = st["exp_avg"].numpy()
        out[f"adam{i}_v"] = st["exp_avg_sq"].numpy()
    return out


def run_cli(script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


# ----- a real scene --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not MARY.is_dir(), reason="../shared/data/maryRose not present")
def test_real_scene_loss_drops_and_inria_folder_written(tmp_path: Path) -> None:
    """maryRose at 64 px from 3000 random points: the train-view L1 after 150 iterations is well below the
    L1 at initialisation, and the folder has Inria's files, readable by our readers."""
    model = tmp_path / "mary"
    ns = build_parser().parse_args(["-s", str(MARY), "-m", str(model), "-r", "64", "--eval", "--preset", "cpu",
                                    "--iterations", "150", "--random_init", "images", "--random_init_points", "3000",
                                    "--backend", "cpu",
                                    "--threads", "1", "--test_iterations", "1", "150", "--quiet",
                                    "--densify_from_iter", "50", "--densification_interval", "50",
                                    "--densify_until_iter", "150"])
    cfg = config_from_args(ns)
    result = run_train(cfg)
    assert not result.interrupted and result.last_iteration == 150
    before, after = result.evaluations[1]["train"], result.evaluations[150]["train"]
    assert after["l1"] < 0.7 * before["l1"], (before, after)
    assert result.evaluations[150]["test"]["views"] == 9   # every 8th of 69 views
    assert result.densification and result.densification[0]["iteration"] == 100

    cfg_args = read_cfg_args(model / "cfg_args")
    assert cfg_args["source_path"] == str(MARY.resolve()) and cfg_args["resolution"] == 64 and cfg_args["eval"]
    cams = json.loads((model / "cameras.json").read_text())
    assert len(cams) == 69 and {c["width"] for c in cams} == {64}
    init = read_point_cloud_ply(model / "input.ply")
    assert init.points.shape == (3000, 3)
    ply = read_gaussian_ply(model / "point_cloud" / "iteration_150" / "point_cloud.ply")
    assert len(ply) == result.num_gaussians and ply.sh_degree == 3


# ----- densification schedule with hand-made gradients ---------------------------------------------------
def _grid_model(n: int, scale: float, extent: float) -> GaussianModel:
    xyz = torch.zeros(n, 3)
    xyz[:, 0] = torch.arange(n, dtype=torch.float32)   # 1 apart along x
    g = GaussianModel.from_tensors(xyz, torch.zeros(n, 1, 3), torch.zeros(n, 0, 3),
                                   torch.full((n, 3), float(np.log(scale))), torch.tensor([[1.0, 0, 0, 0]] * n),
                                   torch.full((n, 1), 2.0))
    g.spatial_lr_scale = extent
    return g


def test_densification_step_clones_splits_prunes_on_schedule() -> None:
    """Hand-made screen-space gradients through the trainer's densification step: high-gradient small
    Gaussians are cloned, high-gradient large ones split in two, transparent ones pruned, big-on-screen
    ones pruned only after the opacity-reset iteration; nothing happens off the schedule."""
    extent = 10.0
    opt = dataclasses.replace(OptimizationParams(), densify_from_iter=2, densify_until_iter=50,
                              densification_interval=5, opacity_reset_interval=12, percent_dense=0.01,
                              densify_grad_threshold=0.001)
    # 0-3 small (scale 0.05 <= 0.01 * 10), 4-7 large (0.5); gradients high on 0, 1, 4, 5; 8, 9: transparent
    g = _grid_model(10, 0.05, extent)
    with torch.no_grad():
        g._scaling[4:8] = float(np.log(0.5))
        g._opacity[8:10] = -7.0                     # sigmoid < 0.005
    g.training_setup(opt)
    grad = torch.zeros(10, 3)
    grad[[0, 1, 4, 5], 0] = 0.003                  # |grad| = 0.003 >= threshold
    grad[[2, 3], 1] = 0.0005                       # below
    visible = torch.ones(10, dtype=torch.bool)
    visible[1] = False                             # not visible: its gradient is not counted
    radii = torch.full((10,), 3, dtype=torch.int32)
    rng = RngStreams(0)
    for it in (1, 2, 3, 4):                        # off schedule: statistics only
        assert densification_step(g, opt, it, radii, visible, grad, extent, False, 0.005, rng) is None
    counts = densification_step(g, opt, 5, radii, visible, grad, extent, False, 0.005, rng)
    # cloned: 0 (small, visible, high); split: 4, 5 (-> 4 new, 2 removed); pruned: 8, 9
    assert counts == {"cloned": 1, "split": 2, "pruned": 2, "total": 10 + 1 + 2 - 2}
    assert len(g) == 11 and g.optimizer is not None
    scales = g.get_scaling.max(dim=1).values
    assert int((torch.isclose(scales, torch.tensor(0.5 / 1.6))).sum()) == 4   # split children: s / (0.8 * 2)

    # size pruning only once past opacity_reset_interval (12): at 10 it is off, at 15 on. Inria's
    # densification_postfix zeroes max_radii2D before the test, so the 20 px screen criterion never fires
    # there and the world-size one (largest scale > 0.1 * extent) removes Gaussian 0.
    g2 = _grid_model(4, 0.05, extent)
    with torch.no_grad():
        g2._scaling[0] = float(np.log(2.0))       # 2 > 0.1 * 10
    g2.training_setup(opt)
    big = torch.tensor([30, 3, 3, 3], dtype=torch.int32)
    vis = torch.ones(4, dtype=torch.bool)
    zero = torch.zeros(4, 3)
    c10 = densification_step(g2, opt, 10, big, vis, zero, extent, False, 0.005, rng)
    assert c10 is not None and c10["pruned"] == 0 and len(g2) == 4
    for it in (11, 12, 13, 14):
        assert densification_step(g2, opt, it, big, vis, zero, extent, False, 0.005, rng) is None
    # iteration 12 reset the opacities to <= 0.01 (still above the 0.005 pruning threshold)
    assert float(g2.get_opacity.detach().max()) <= 0.01 + 1e-6
    c15 = densification_step(g2, opt, 15, big, vis, zero, extent, False, 0.005, rng)
    assert c15 is not None and c15["pruned"] == 1 and len(g2) == 3
    assert float(g2.get_scaling.detach().max()) < 0.1
    # past densify_until_iter nothing changes
    assert densification_step(g2, opt, 50, big, vis, zero, extent, False, 0.005, rng) is None


# ----- save -> load -> render ----------------------------------------------------------------------------
def test_save_load_render_round_trip_is_identical(tmp_path: Path) -> None:
    from gaussian_renderer import render
    from scene.scene import Scene

    info = generated_scene()
    cfg = small_config(tmp_path / "m", 12)
    result = run_train(cfg, scene_info=info)
    assert result.saved_plys == [tmp_path / "m" / "point_cloud" / "iteration_12" / "point_cloud.ply"]
    # the in-memory state at the save: the final iteration saves before its (skipped) optimizer step
    ck_cfg = dataclasses.replace(cfg, checkpoint_iterations=[12], model=dataclasses.replace(
        cfg.model, model_path=str(tmp_path / "m2")))
    run_train(ck_cfg, scene_info=info)
    trained = GaussianModel(1)
    trained.restore(load_checkpoint(tmp_path / "m2" / "chkpnt12.pth").gaussians, cfg.opt)

    loaded = GaussianModel(1)
    scene = Scene(dataclasses.replace(cfg.model), loaded, load_iteration=-1, scene_info=info)
    assert scene.loaded_iter == 12 and len(loaded) == len(trained)
    for cam in info.train_cameras[:3] + info.test_cameras:
        with torch.no_grad():
            a = render(cam, trained, torch.zeros(3), backend="cpu", num_threads=1)["render"]
            b = render(cam, loaded, torch.zeros(3), backend="cpu", num_threads=1)["render"]
        assert torch.equal(a, b)


# ----- bit-identical resume --------------------------------------------------------------------------------
RESUME_OPT = dict(densify_from_iter=4, densify_until_iter=30, densification_interval=6,
                  opacity_reset_interval=20, densify_grad_threshold=0.00005, random_background=True)


@pytest.mark.slow
def test_resume_from_checkpoint_and_from_ctrl_c_is_bit_identical(tmp_path: Path) -> None:
    """An uninterrupted 36-iteration run (densification, opacity reset, SH increases, random backgrounds)
    against (a) a run resumed from its iteration-17 checkpoint and (b) a run stopped by SIGINT at
    iteration 23 and resumed: every parameter and Adam moment is bit-identical at the end."""
    info = generated_scene()
    n = 36
    full = small_config(tmp_path / "full", n, **RESUME_OPT)
    full.checkpoint_iterations = [17, n - 1]
    res_full = run_train(full, scene_info=info)
    assert sum(d["cloned"] + d["split"] for d in res_full.densification) > 0, "densification never fired"

    resumed = small_config(tmp_path / "resumed", n, **RESUME_OPT)
    resumed.checkpoint_iterations = [n - 1]
    resumed.start_checkpoint = str(tmp_path / "full" / "chkpnt17.pth")
    res_resumed = run_train(resumed, scene_info=info)
    assert res_resumed.first_iteration == 17 and res_resumed.last_iteration == n

    stopped = small_config(tmp_path / "stopped", n, **RESUME_OPT)

    def interrupt(it: int, _g: GaussianModel) -> None:
        if it == 23:
            signal.raise_signal(signal.SIGINT)      # what Ctrl-C does; the handler defers it

    res_stopped = run_train(stopped, scene_info=info, on_iteration=interrupt)
    assert res_stopped.interrupted and res_stopped.last_iteration == 23
    assert (tmp_path / "stopped" / "chkpnt23.pth").is_file()
    assert (tmp_path / "stopped" / "point_cloud" / "iteration_23" / "point_cloud.ply").is_file()
    again = small_config(tmp_path / "stopped", n, **RESUME_OPT)
    again.checkpoint_iterations = [n - 1]
    again.start_checkpoint = str(tmp_path / "stopped" / "chkpnt23.pth")
    run_train(again, scene_info=info)

    ref = capture_arrays(tmp_path / "full", n - 1)
    for other in ("resumed", "stopped"):
        got = capture_arrays(tmp_path / other, n - 1)
        assert got.keys() == ref.keys()
        for k in ref:
            assert np.array_equal(ref[k], got[k]), f"{other}: {k} differs"
    assert (tmp_path / "full" / "point_cloud" / f"iteration_{n}" / "point_cloud.ply").read_bytes() == \
        (tmp_path / "resumed" / "point_cloud" / f"iteration_{n}" / "point_cloud.ply").read_bytes()


def test_different_seed_changes_the_run(tmp_path: Path) -> None:
    """The seed really drives the random streams (otherwise the resume test proves nothing)."""
    info = generated_scene()
    a = small_config(tmp_path / "a", 8, random_background=True)
    b = small_config(tmp_path / "b", 8, random_background=True)
    b.seed = 4
    run_train(a, scene_info=info)
    run_train(b, scene_info=info)
    pa = read_gaussian_ply(tmp_path / "a" / "point_cloud" / "iteration_8" / "point_cloud.ply")
    pb = read_gaussian_ply(tmp_path / "b" / "point_cloud" / "iteration_8" / "point_cloud.ply")
    assert not np.array_equal(pa.f_dc, pb.f_dc)


@pytest.mark.slow
def test_opacity_regulariser_fades_only_what_no_view_constrains(tmp_path: Path) -> None:
    """--lambda_opacity: a Gaussian no training view sees gets no data gradient, so without the term Adam
    leaves it exactly as initialised (a floater that survives training); with it, it fades. The Gaussians
    the views do see still fit the images about as well."""
    info = generated_scene()
    hidden = np.array([[0.0, 0.0, 30.0]], dtype=np.float32)   # straight above: every camera looks down
    pcd = info.point_cloud
    info = dataclasses.replace(info, point_cloud=BasicPointCloud(np.concatenate([pcd.points, hidden]),
                                                                 np.concatenate([pcd.colors, [[0.5] * 3]]), None))
    n = 40
    runs = {}
    for lam in (0.0, 0.1):
        cfg = small_config(tmp_path / str(lam), n, lambda_opacity=lam, densify_from_iter=10 * n)
        cfg.test_iterations = [n]
        res = run_train(cfg, scene_info=info)
        ply = read_gaussian_ply(tmp_path / str(lam) / "point_cloud" / f"iteration_{n}" / "point_cloud.ply")
        assert len(ply) == len(info.point_cloud.points)          # no densification: the order is kept
        runs[lam] = (float(1.0 / (1.0 + np.exp(-ply.opacity[-1, 0]))), res.evaluations[n]["train"]["l1"])
    assert runs[0.0][0] == pytest.approx(0.1, abs=1e-6)           # untouched: Inria's initial opacity
    assert runs[0.1][0] < 0.06                                    # faded
    assert runs[0.1][1] < 1.1 * runs[0.0][1], runs                # the visible scene fits as well


@pytest.mark.slow
def test_random_init_opacity_weight_applies_only_to_random_init(tmp_path: Path) -> None:
    """random_init_lambda_opacity replaces opt.lambda_opacity when the dataset has no points, not otherwise."""
    info = generated_scene()
    empty = dataclasses.replace(info, point_cloud=None)

    def run(name: str, scene_info: SceneInfo, weight: float) -> list[float]:
        cfg = small_config(tmp_path / name, 20, densify_from_iter=100)
        cfg.random_init_lambda_opacity = weight
        cfg.random_init_points = 500
        seen: list[float] = []
        run_train(cfg, scene_info=scene_info, on_iteration=lambda it, g: seen.append(float(g.get_opacity.detach().mean())))
        return seen

    assert run("points", info, 0.5) == run("points_ref", info, 0.0)      # dataset points: Inria's loss
    with_term, without = run("random", empty, 0.5), run("random_ref", empty, 0.0)
    assert with_term[-1] < 0.97 * without[-1], (with_term[-1], without[-1])   # random init: pushed down


# ----- presets and CLI ---------------------------------------------------------------------------------------
def test_cpu_preset_scales_schedule_and_flags_win() -> None:
    p = build_parser()
    cfg = config_from_args(p.parse_args(["-s", str(REPO), "--preset", "cpu"]))
    assert cfg.opt.iterations < 30_000 and cfg.opt.position_lr_max_steps == cfg.opt.iterations
    assert cfg.opt.densify_until_iter <= cfg.opt.iterations and cfg.save_iterations == [cfg.opt.iterations]
    # the opacity term is for random-init scenes only, unless given explicitly
    assert cfg.opt.lambda_opacity == 0.0 and cfg.random_init_lambda_opacity == 0.3
    cfg2 = config_from_args(p.parse_args(["-s", str(REPO), "--preset", "cpu", "--iterations", "1000",
                                          "--densify_until_iter", "123", "--threads", "1", "--lambda_opacity", "0"]))
    assert cfg2.opt.iterations == 1000 and cfg2.opt.position_lr_max_steps == 1000
    assert cfg2.opt.densify_until_iter == 123 and cfg2.pipe.num_threads == 1
    assert cfg2.opt.lambda_opacity == 0.0 and cfg2.random_init_lambda_opacity == 0.0
    inria = config_from_args(p.parse_args(["-s", str(REPO)]))
    assert inria.opt == OptimizationParams() and inria.random_init_points == 100_000
    assert inria.opt.lambda_opacity == 0.0 and inria.random_init_lambda_opacity == 0.0   # Inria's loss
    assert inria.test_iterations == [7000, 30000] and inria.save_iterations == [7000, 30000]


@pytest.mark.parametrize("args, needle", [
    (["-s", "/nonexistent/scene", "-m", "{tmp}/m"], "/nonexistent/scene"),
    (["-s", str(MARY), "-m", "{tmp}/file/m"], "not a folder"),
    (["-s", str(MARY), "-m", "{tmp}/m", "--start_checkpoint", "{tmp}/nope.pth"], "nope.pth"),
])
@pytest.mark.slow
def test_bad_paths_give_one_line_error_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    if not MARY.is_dir() and str(MARY) in args:
        pytest.skip("../shared/data/maryRose not present")
    (tmp_path / "file").write_text("x")
    res = run_cli("train.py", *[a.format(tmp=tmp_path) for a in args], "--quiet")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr


@pytest.mark.slow
@pytest.mark.skipif(not MARY.is_dir(), reason="../shared/data/maryRose not present")
def test_ctrl_c_in_cli_saves_and_exits_130(tmp_path: Path) -> None:
    """A real SIGINT to train.py: exit status 130, one line naming the checkpoint, files present."""
    model = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), "-s", str(MARY), "-m", str(model), "-r", "32",
                             "--iterations", "100000", "--random_init_points", "500", "--threads", "1",
                             "--backend", "cpu", "--quiet", "--checkpoint_iterations", "3"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # the run writes into a staging folder beside -m (utils.outputs), swapped in when it stops
        while not list(tmp_path.glob(".m.gs_staging-train.py-*/chkpnt3.pth")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never reached iteration 3"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted (SIGINT) at iteration "), err
    it = int(lines[0].split()[4].rstrip(":"))
    assert it >= 3 and (model / f"chkpnt{it}.pth").is_file()
    assert (model / "point_cloud" / f"iteration_{it}" / "point_cloud.ply").is_file()
