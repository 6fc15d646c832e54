"""Models trained by other tools, accepted wherever an Inria model folder is (``-m``): splatfacto, gsplat.

Formats followed from the trainers' code (neither is installed here, nothing was run with them):

- **splatfacto** (nerfstudio commit 50e0e3c7, v1.1.5-30). ``ns-export gaussian-splat``
  (``scripts/exporter.py::ExportGaussianSplat``) writes Inria's PLY layout in the frame splatfacto trained in:
  the dataparser's output frame. The run folder ``outputs/<exp>/splatfacto/<timestamp>/`` holds
  ``config.yml`` (a yaml dump of the TrainerConfig; its ``data`` names the data folder) and
  ``dataparser_transforms.json`` (``{"transform": 3x4, "scale": s}``, ``DataparserOutputs
  .save_dataparser_transform``): training frame = s * (transform @ original data frame). The original
  frame is COLMAP's world when the data came from COLMAP (the transform then includes transforms.json's
  ``applied_transform``), else the frame of transforms.json. ``-m`` takes the PLY (its run folder is
  found beside it or up to three folders above), or the run folder (a PLY inside it, else the newest
  ``nerfstudio_models/step-*.ckpt``, whose ``gauss_params`` are read with ``torch.load(weights_only=True)``).
- **gsplat** (commit 90d7b4b3, v1.5.3-670). ``examples/simple_trainer.py`` saves
  ``<result_dir>/ckpts/ckpt_<step>_rank<r>.pt`` = ``{"step", "splats": {means [N,3], scales [N,3] log,
  quats [N,4] wxyz, opacities [N] logit, sh0 [N,1,3], shN [N,K,3]}}`` and ``<result_dir>/cfg.yml``
  (``data_dir``, ``data_factor``, ``normalize_world_space``, ``test_every``). With
  ``normalize_world_space`` (the default) the splats live in a normalised frame that is not saved: it is
  recomputed from the COLMAP data exactly as gsplat's ``Parser`` does (scene/frames.py). Which gsplat
  version trained it (the 180° up-side-down turn was added in 1.5.2), and whether it normalised at all when
  cfg.yml is missing, is decided by which candidate frame puts the data's points on the Gaussians.

The Gaussians are never moved: the cameras are (scene/frames.py), so extracted/deleted/pruned PLYs are in
the model's own frame and overlay the user's model in any viewer. A pruned foreign model is written as an
Inria folder with ``model_frame.json`` (the data-to-model similarity), which this module reads back.
"""
from __future__ import annotations

import dataclasses
import json
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import numpy as np
import torch

from arguments import ModelParams
from scene.frames import GSPLAT_VARIANTS, Similarity, alignment_error, gsplat_normalization, move_cameras
from scene.types import BasicPointCloud, SceneInfo
from utils.errors import UserError
from utils.io import atomic_write_text

MODEL_FRAME_FILE = "model_frame.json"
DATAPARSER_FILE = "dataparser_transforms.json"
_GSPLAT_CKPT = re.compile(r"ckpt_(\d+)(?:_rank(\d+))?\.pt$")
_NS_CKPT = re.compile(r"step-(\d+)\.ckpt$")
_SPLAT_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")
_NS_KEYS = ("means", "scales", "quats", "opacities", "features_dc", "features_rest")
# Above this alignment error (scene/frames.py: median centre-to-point distance / point spread) the model and
# its data are reported as not sharing a frame. Measured on beer: 0.059 for a model train.py trained from its
# points (1000 iterations, 6,710 Gaussians), 3.4 to 10.7 in a wrong frame (none, or a gsplat normalisation).
MISALIGNED = 0.3
_MEANS_SAMPLE = 20_000


@dataclass
class ModelSource:
    """What ``-m`` named when it is not a plain Inria folder, and how its frame relates to its data."""

    kind: str                                   # "splatfacto" | "gsplat" | "inria+frame"
    path: Path                                  # what -m named
    files: list[Path]                           # the Gaussians read
    iteration: int                              # training step (0 when unknown)
    config_file: Optional[Path] = None          # config.yml (nerfstudio) / cfg.yml (gsplat)
    data_dir: str = ""                          # data folder named by the config ("" unknown)
    data_note: str = ""                         # where data_dir came from, for error messages
    images: str = "images"
    resolution: int = -1
    eval: bool = False
    dataparser: str = ""                        # splatfacto: nerfstudio | colmap | blender | <class name>
    dataparser_transform: Optional[Similarity] = None  # splatfacto: original data frame -> training frame
    dataparser_file: Optional[Path] = None
    normalize: Optional[bool] = None            # gsplat: normalize_world_space (None: no cfg.yml)
    stored: Optional[Similarity] = None         # inria+frame: data -> model, from model_frame.json
    stored_note: dict = field(default_factory=dict)
    means_sample: Optional[np.ndarray] = field(default=None, repr=False)  # [M, 3] model-frame centres


@dataclass
class ForeignModelParams(ModelParams):
    """ModelParams of a model whose cameras must be moved into its frame (``model_source`` says how)."""

    model_source: Optional[ModelSource] = None


# ----- yaml configs (python-tagged dumps, read as plain data: nothing is imported or called) -------------
def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def python_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
            if suffix.startswith("object:"):
                value["__class__"] = suffix[len("object:"):]
            return value
        if isinstance(node, yaml.SequenceNode):
            seq = loader.construct_sequence(node, deep=True)
            if suffix.startswith("object/apply:pathlib."):
                return str(PurePosixPath(*seq)) if seq else "."
            return seq
        return suffix[len("name:"):] if suffix.startswith("name:") else loader.construct_scalar(node)

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", python_tag)
    return Loader


def read_yaml_config(path: Path) -> dict:
    """A trainer's yaml config as plain dicts/lists/strings (python object tags become dicts with
    ``__class__``, paths strings); never executes anything from the file."""
    import yaml

    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_yaml_loader())  # noqa: S506 - safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: cannot read ({str(e).splitlines()[0]}); restore the trainer's config file") \
            from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping (the trainer's config dump); restore the file")
    return data


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _resolve_data(value: Any, base_parts: Path, anchor: Path) -> tuple[str, str]:
    """A data path from a config: absolute, or relative to the folder training ran in, which is ``anchor``
    (the run/result folder) minus ``base_parts`` (how the config names that folder), or to the cwd."""
    if not value or str(value) == ".":
        return "", ""
    p = Path(str(value))
    if p.is_absolute():
        return str(p), ""
    cands = [Path.cwd() / p]
    if not base_parts.is_absolute() and len(base_parts.parts) <= len(anchor.resolve().parents):
        cands.insert(0, anchor.resolve().parents[len(base_parts.parts) - 1] / p)
    for c in cands:
        if c.is_dir() or c.is_file():
            return str(c), ""
    return str(cands[0]), f"{p} (relative to where training ran)"


# ----- detection --------------------------------------------------------------------------------------
def detect_model_source(path: str | Path) -> Optional[str]:
    """"splatfacto" / "gsplat" when ``path`` is such a model, None otherwise (Inria folders and missing
    paths: the Inria loader reports those). Only names and file presence are looked at."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".pt":
            return "gsplat"
        if p.suffix in (".ply", ".ckpt"):
            return "splatfacto"
        return None
    if not p.is_dir() or (p / "point_cloud").is_dir():
        return None
    if (p / "config.yml").is_file() or (p / DATAPARSER_FILE).is_file():
        return "splatfacto"
    if (p / "cfg.yml").is_file() or _gsplat_ckpts(p / "ckpts") or _gsplat_ckpts(p):
        return "gsplat"
    return None


def _gsplat_ckpts(folder: Path) -> dict[int, list[Path]]:
    """{step: [rank files in rank order]} of the ckpt_<step>[_rank<r>].pt files in ``folder``."""
    if not folder.is_dir():
        return {}
    found: dict[int, list[tuple[int, Path]]] = {}
    for f in folder.iterdir():
        m = _GSPLAT_CKPT.fullmatch(f.name)
        if m and f.is_file():
            found.setdefault(int(m.group(1)), []).append((int(m.group(2) or 0), f))
    return {s: [f for _, f in sorted(v)] for s, v in found.items()}


def _pick(steps: dict[int, Any], iteration: Optional[int], where: Path, what: str) -> int:
    if iteration is None or iteration < 0:
        return max(steps)
    if iteration not in steps:
        raise UserError(f"{where}: no {what} for step {iteration}; available: "
                        f"{', '.join(map(str, sorted(steps)))} (pass --iteration one of them, or omit it)")
    return iteration


def model_output_dir(path: str | Path) -> Path:
    """Where a script writes for this model by default: the folder itself, or for a model file
    (ckpt_N.pt, splat.ply) a folder beside it named by its stem."""
    p = Path(path)
    return p.with_suffix("") if p.is_file() else p


# ----- splatfacto --------------------------------------------------------------------------------------
def _find_run_dir(ply: Path) -> Optional[Path]:
    for d in [ply.parent, *list(ply.parent.parents)[:3]]:
        if (d / DATAPARSER_FILE).is_file() or (d / "config.yml").is_file():
            return d
    return None


def _ns_checkpoints(run_dir: Path) -> dict[int, Path]:
    folder = run_dir / "nerfstudio_models"
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): f for f in folder.iterdir() if (m := _NS_CKPT.fullmatch(f.name))}


def _read_dataparser_transform(path: Path) -> Similarity:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        sim = Similarity.from_matrix(np.asarray(d["transform"], dtype=np.float64), str(path))
        scale = float(d["scale"])
        if not scale > 0:
            raise ValueError(f"scale {scale} is not positive")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: not a nerfstudio dataparser transform ({type(e).__name__}: {e}); expected "
                        "{\"transform\": 3x4, \"scale\": s}; copy it from the run folder") from None
    return sim.then(Similarity(np.diag([scale, scale, scale, 1.0])))


def _dataparser_kind(config: dict) -> str:
    cls = str(_dig(config, "pipeline", "datamanager", "dataparser", "__class__") or "")
    for key, name in (("NerfstudioDataParserConfig", "nerfstudio"), ("ColmapDataParserConfig", "colmap"),
                      ("BlenderDataParserConfig", "blender")):
        if cls.endswith(key):
            return name
    return cls.rsplit(".", 1)[-1] or "unknown"


def _resolve_splatfacto(p: Path, iteration: Optional[int]) -> ModelSource:
    ckpt: Optional[Path] = None
    if p.is_file():
        if p.suffix == ".ckpt":
            ckpt, run_dir = p, p.parent.parent
        else:
            found = _find_run_dir(p)
            if found is None:
                raise UserError(f"{p}: no {DATAPARSER_FILE} or config.yml beside it or in the 3 folders above; a "
                                f"splatfacto export needs its nerfstudio run folder (outputs/<exp>/splatfacto/"
                                f"<timestamp>): copy the PLY into it, or pass -m that folder. (An Inria model is "
                                f"a folder holding point_cloud/)")
            run_dir = found
        files = [p]
    else:
        run_dir = p
        plys = sorted(run_dir.glob("*.ply"))
        steps = _ns_checkpoints(run_dir)
        if len(plys) == 1 and (iteration is None or iteration < 0):
            files = plys
        elif steps:
            ckpt = steps[_pick(steps, iteration, run_dir / "nerfstudio_models", "step-*.ckpt")]
            files = [ckpt]
        else:
            what = f"{len(plys)} PLY files" if plys else "no PLY"
            raise UserError(f"{run_dir}: {what} and no nerfstudio_models/step-*.ckpt; export the model with "
                            f"`ns-export gaussian-splat --load-config {run_dir / 'config.yml'} --output-dir "
                            f"{run_dir}` or pass -m the PLY")
    dp_file = run_dir / DATAPARSER_FILE
    if not dp_file.is_file():
        raise UserError(f"{run_dir}: no {DATAPARSER_FILE}; splatfacto writes it when training starts and the model's "
                        f"frame depends on it: copy it from the original run folder")
    steps = _ns_checkpoints(run_dir)
    if ckpt is not None:
        step = int(_NS_CKPT.fullmatch(ckpt.name).group(1)) if _NS_CKPT.fullmatch(ckpt.name) else 0
    else:
        step = max(steps) if steps else 0
        if iteration is not None and iteration >= 0 and iteration != step:
            raise UserError(f"{p}: --iteration {iteration} does not apply to an exported PLY (its run folder's "
                            f"newest step is {step}); omit --iteration or pass -m the run folder")
    src = ModelSource("splatfacto", p, files, step, dataparser_transform=_read_dataparser_transform(dp_file),
                      dataparser_file=dp_file)
    cfg_file = run_dir / "config.yml"
    if cfg_file.is_file():
        cfg = read_yaml_config(cfg_file)
        src.config_file = cfg_file
        src.dataparser = _dataparser_kind(cfg)
        base = Path(str(cfg.get("output_dir") or "outputs")) / str(cfg.get("experiment_name") or "") / \
            str(cfg.get("method_name") or "") / str(cfg.get("timestamp") or "")
        for value in (_dig(cfg, "pipeline", "datamanager", "dataparser", "data"),
                      _dig(cfg, "pipeline", "datamanager", "data"), cfg.get("data")):
            data, note = _resolve_data(value, base, run_dir)
            if data:
                if data.endswith(".json"):  # nerfstudio also takes the transforms file itself
                    data = str(Path(data).parent)
                src.data_dir, src.data_note = data, note or f"from {cfg_file}"
                break
    return src


def _load_splatfacto(src: ModelSource, device: torch.device | str):
    from scene.gaussian_model import GaussianModel

    f = src.files[0]
    if f.suffix == ".ply":
        g = GaussianModel(3, device=device)
        g.load_ply(f)
        return g
    state = _torch_load(f)
    pipe = state.get("pipeline") if isinstance(state, dict) else None
    if not isinstance(pipe, dict):
        raise UserError(f"{f}: no 'pipeline' state in this nerfstudio checkpoint; export a PLY with "
                        f"`ns-export gaussian-splat` and pass -m the PLY")
    t = {}
    for key in _NS_KEYS:
        hits = [k for k in pipe if k.endswith(f"gauss_params.{key}") or k == f"_model.{key}"]
        if not hits:
            raise UserError(f"{f}: no {key} in the checkpoint (not a splatfacto model?); export a PLY with "
                            f"`ns-export gaussian-splat` and pass -m the PLY")
        t[key] = pipe[hits[0]].detach().float().cpu()
    n = t["means"].shape[0]
    return _gaussians(f, t["means"], t["features_dc"].reshape(n, 1, 3), t["features_rest"].reshape(n, -1, 3),
                      t["scales"], t["quats"], t["opacities"].reshape(n, 1), device)


# ----- gsplat ------------------------------------------------------------------------------------------
def _resolve_gsplat(p: Path, iteration: Optional[int]) -> ModelSource:
    if p.is_file():
        m = _GSPLAT_CKPT.fullmatch(p.name)
        result_dir = p.parent.parent if p.parent.name == "ckpts" else p.parent
        files = [p]
        if m and m.group(2) is not None:  # the other ranks of a multi-GPU run hold the rest of the splats
            files = _gsplat_ckpts(p.parent).get(int(m.group(1)), [p])
        step = int(m.group(1)) if m else 0
        if iteration is not None and iteration >= 0 and iteration != step:
            raise UserError(f"{p}: --iteration {iteration} but this checkpoint is step {step}; omit --iteration "
                            f"or pass -m the result folder")
    else:
        folder = p / "ckpts" if _gsplat_ckpts(p / "ckpts") else p
        result_dir = p if folder != p else (p.parent if p.name == "ckpts" else p)
        steps = _gsplat_ckpts(folder)
        if not steps:
            raise UserError(f"{p}: no ckpts/ckpt_<step>_rank0.pt; pass -m a gsplat result folder or checkpoint")
        step = _pick(steps, iteration, folder, "ckpt_<step>_rank*.pt")
        files = steps[step]
    src = ModelSource("gsplat", p, files, step, eval=True)
    cfg_file = result_dir / "cfg.yml"
    if cfg_file.is_file():
        cfg = read_yaml_config(cfg_file)
        src.config_file = cfg_file
        if str(cfg.get("data_type", "colmap")) != "colmap":
            raise UserError(f"{cfg_file}: data_type {cfg.get('data_type')} is not supported (only gsplat's COLMAP "
                            f"parser); train on a COLMAP folder")
        if "normalize_world_space" in cfg:
            src.normalize = bool(cfg["normalize_world_space"])
        data, note = _resolve_data(cfg.get("data_dir"), Path(str(cfg.get("result_dir") or "results")), result_dir)
        src.data_dir, src.data_note = data, note or f"from {cfg_file}"
        try:
            factor, test_every = int(cfg.get("data_factor") or 1), int(cfg.get("test_every") or 8)
        except (TypeError, ValueError) as e:
            raise UserError(f"{cfg_file}: data_factor / test_every are not integers ({e}); restore gsplat's "
                            f"cfg.yml or remove it and pass -s") from None
        if factor > 1:
            if data and (Path(data) / f"images_{factor}").is_dir():
                src.images = f"images_{factor}"
            elif factor in (2, 4, 8):
                src.resolution = factor
        if test_every != 8:
            warnings.warn(f"{cfg_file}: test_every {test_every}; --split train/test here hold out every 8th view",
                          stacklevel=3)
    return src


def _torch_load(f: Path) -> Any:
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise UserError(f"{f}: cannot read the checkpoint ({str(e).splitlines()[0][:200]}); pass an intact "
                        f"checkpoint file") from None


def _load_gsplat(src: ModelSource, device: torch.device | str):
    parts = []
    for f in src.files:
        ckpt = _torch_load(f)
        splats = ckpt.get("splats") if isinstance(ckpt, dict) else None
        if not isinstance(splats, dict):
            raise UserError(f"{f}: no 'splats' dict; expected a gsplat simple_trainer checkpoint (ckpt_<step>.pt)")
        missing = [k for k in _SPLAT_KEYS if k not in splats]
        if missing:
            hint = (" (appearance-optimised runs, --app_opt, store features/colors instead of SH: not supported)"
                    if "features" in splats else "")
            raise UserError(f"{f}: splats lack {', '.join(missing)}{hint}; retrain without --app_opt or export a PLY")
        parts.append({k: splats[k].detach().float().cpu() for k in _SPLAT_KEYS})
        if isinstance(ckpt.get("step"), int) and len(src.files) == 1:
            src.iteration = int(ckpt["step"])
    t = {k: torch.cat([p[k] for p in parts]) for k in _SPLAT_KEYS}
    n = t["means"].shape[0]
    return _gaussians(src.files[0], t["means"], t["sh0"].reshape(n, 1, 3), t["shN"].reshape(n, -1, 3), t["scales"],
                      t["quats"], t["opacities"].reshape(n, 1), device)


def _gaussians(f: Path, means, dc, rest, scales, quats, opacities, device):
    """GaussianModel from raw tensors; rows with NaN/Inf dropped with a counted warning (as for PLYs)."""
    from scene.gaussian_model import GaussianModel

    shapes = {"means": (means, 3), "scales": (scales, 3), "quats": (quats, 4)}
    for name, (v, width) in shapes.items():
        if v.ndim != 2 or v.shape[1] != width or v.shape[0] != means.shape[0]:
            raise UserError(f"{f}: {name} has shape {tuple(v.shape)}, expected [N, {width}]; not a 3DGS model")
    if rest.shape[1] not in (0, 3, 8, 15):
        raise UserError(f"{f}: {rest.shape[1]} higher SH coefficients per channel; expected 0, 3, 8 or 15")
    ok = torch.ones(means.shape[0], dtype=torch.bool)
    for v in (means, dc, rest, scales, quats, opacities):
        ok &= torch.isfinite(v.reshape(v.shape[0], -1)).all(dim=1)
    if not bool(ok.all()):
        warnings.warn(f"{f}: dropped {int((~ok).sum())} of {len(ok)} Gaussians with NaN/Inf values", stacklevel=3)
        means, dc, rest, scales, quats, opacities = (v[ok] for v in (means, dc, rest, scales, quats, opacities))
    return GaussianModel.from_tensors(means, dc, rest, scales, quats, opacities, device=device)


# ----- public entry points (scene/model_folder.py dispatches here) -----------------------------------------
def resolve_model_source(path: str | Path, iteration: Optional[int] = None) -> ModelSource:
    """Describe the splatfacto/gsplat model at ``path`` (reads configs, not tensors)."""
    p = Path(path)
    kind = detect_model_source(p)
    if kind == "splatfacto":
        return _resolve_splatfacto(p, iteration)
    if kind == "gsplat":
        return _resolve_gsplat(p, iteration)
    raise UserError(f"{p}: not a splatfacto or gsplat model")


def load_foreign_model(path: str | Path, iteration: Optional[int] = None,
                       device: torch.device | str = "cpu") -> tuple[ForeignModelParams, Any, int]:
    """(params naming the data folder and the model source, GaussianModel in the model's frame, step)."""
    src = resolve_model_source(path, iteration)
    g = _load_splatfacto(src, device) if src.kind == "splatfacto" else _load_gsplat(src, device)
    xyz = g.get_xyz.detach().cpu().numpy()
    step = max(1, len(xyz) // _MEANS_SAMPLE)
    src.means_sample = xyz[::step].astype(np.float64)
    params = ForeignModelParams(sh_degree=g.max_sh_degree, source_path=src.data_dir, model_path=str(path),
                                images=src.images, resolution=src.resolution, eval=src.eval, model_source=src)
    return params, g, src.iteration


def with_stored_frame(params: ModelParams, model_path: Path) -> ModelParams:
    """An Inria folder with model_frame.json (a pruned splatfacto/gsplat model): its cameras come from the
    data folder and are moved by the stored similarity."""
    f = model_path / MODEL_FRAME_FILE
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
        sim = Similarity.from_matrix(np.asarray(d["data_to_model"]["matrix"], dtype=np.float64), str(f))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{f}: unreadable ({type(e).__name__}: {e}); restore it from the pruned folder or delete "
                        f"it (the cameras would then be read in the data's frame)") from None
    src = ModelSource("inria+frame", model_path, [], 0, stored=sim, stored_note=d)
    values = {k.name: getattr(params, k.name) for k in dataclasses.fields(ModelParams)}
    return ForeignModelParams(**values, model_source=src)


def model_source_of(params: ModelParams) -> Optional[ModelSource]:
    return getattr(params, "model_source", None)


def require_data(params: ModelParams, source: str) -> None:
    """A splatfacto/gsplat model has no cameras.json to fall back on: a missing data folder is an error
    naming where the path came from and the flag that passes it."""
    src = model_source_of(params)
    if src is None or src.kind == "inria+frame" or (source and Path(source).is_dir()):
        return
    what = {"splatfacto": "splatfacto model", "gsplat": "gsplat checkpoint"}[src.kind]
    need = "the nerfstudio data folder (transforms.json or COLMAP)" if src.kind == "splatfacto" else \
        "gsplat's COLMAP data folder (sparse/0, images)"
    if source:
        where = f"data folder {source} ({src.data_note or 'from -s'}) not found"
    elif src.config_file is None:
        where = f"no {'config.yml' if src.kind == 'splatfacto' else 'cfg.yml'} names its data folder"
    else:
        where = f"{src.config_file} names no data folder"
    raise UserError(f"{src.path}: {what}: {where}; pass -s with {need}")


def _data_points(info: SceneInfo) -> Optional[np.ndarray]:
    return None if info.point_cloud is None or not len(info.point_cloud.points) else info.point_cloud.points


def _splatfacto_similarity(src: ModelSource, info: SceneInfo) -> tuple[Similarity, str]:
    """data files' frame → original frame of the dataparser → training frame."""
    assert src.dataparser_transform is not None
    sim, how = src.dataparser_transform, f"{DATAPARSER_FILE} (scale {src.dataparser_transform.scale:.6g})"
    if info.scene_type == "nerfstudio":
        applied = info.extra.get("applied_transform")
        explicit = info.extra.get("applied_transform_given", applied is not None)
        if applied is not None and (src.dataparser in ("nerfstudio", "") or explicit):
            sim = Similarity.from_matrix(np.asarray(applied), "applied_transform").inverse().then(sim)
            how = f"transforms.json applied_transform undone, then {how}"
        lam = info.extra.get("applied_scale")
        if lam and src.dataparser in ("nerfstudio", ""):  # nerfstudio folds it into "scale" but not the poses
            sim = sim.then(Similarity(np.diag([1.0 / lam, 1.0 / lam, 1.0 / lam, 1.0])))
            how += f", applied_scale {lam:g} taken out"
    return sim, how


def _gsplat_similarity(src: ModelSource, info: SceneInfo) -> tuple[Similarity, str, dict]:
    from scene.frames import camera_to_world

    if src.normalize is False:
        return Similarity.identity(), "none (cfg.yml: normalize_world_space false)", {}
    if info.scene_type != "colmap":
        raise UserError(f"{info.source_path}: a gsplat checkpoint needs the COLMAP folder it was trained on "
                        f"(sparse/0 with images.bin and points3D.bin), found a {info.scene_type} scene; pass -s")
    pts = _data_points(info)
    if pts is None:
        raise UserError(f"{info.source_path}: no sparse/0/points3D; gsplat's world normalisation is computed from "
                        f"the COLMAP points, so the model's frame cannot be recovered without them")
    c2w = camera_to_world(info.train_cameras + info.test_cameras)
    cands = {name: Similarity.from_matrix(m, name) for name, m in gsplat_normalization(c2w, pts).items()}
    if src.normalize is None:
        cands["not normalised"] = Similarity.identity()
    distinct = {n: s for i, (n, s) in enumerate(cands.items())
                if not any(np.allclose(s.matrix, o.matrix) for o in list(cands.values())[:i])}
    errors: dict = {}
    name = next(iter(distinct))
    if len(distinct) > 1 and src.means_sample is not None:
        errors = {n: alignment_error(src.means_sample, s.apply(pts)) for n, s in distinct.items()}
        name = min(errors, key=lambda n: errors[n])
    basis = "cfg.yml: normalize_world_space true" if src.normalize else "no cfg.yml"
    how = f"gsplat's normalisation recomputed from the COLMAP data ({basis}; {name})" if name in GSPLAT_VARIANTS \
        else "none (no cfg.yml; the un-normalised frame fits the checkpoint best)"
    if errors:
        how += "; chosen by point agreement: " + ", ".join(f"{n} {e:.3f}" for n, e in errors.items())
    return cands[name], how, errors


def align_scene(params: ModelParams, info: SceneInfo) -> tuple[SceneInfo, Optional[dict]]:
    """``info`` with its cameras (and points) moved into the model's frame, and a JSON-ready description of
    the transform for summary.json; Inria folders come back unchanged with None."""
    src = model_source_of(params)
    if src is None:
        return info, None
    if src.kind == "inria+frame":
        assert src.stored is not None
        sim, how = src.stored, f"{MODEL_FRAME_FILE} (stored when this model was written from a "
        how += f"{_dig(src.stored_note, 'source', 'kind') or 'foreign'} model)"
    elif src.kind == "splatfacto":
        sim, how = _splatfacto_similarity(src, info)
    else:
        sim, how, _ = _gsplat_similarity(src, info)
    pts = _data_points(info)
    pcd = info.point_cloud
    if pts is not None and not sim.is_identity():
        pcd = BasicPointCloud(sim.apply(pts).astype(np.float32), info.point_cloud.colors, info.point_cloud.normals)
    err = alignment_error(src.means_sample, pcd.points) if pts is not None and src.means_sample is not None \
        else None
    if err is not None and err > MISALIGNED:
        warnings.warn(f"{src.path}: the model's Gaussians lie far from the data's points after the transform "
                      f"(alignment error {err:.2f}, aligned models give < {MISALIGNED}); check that "
                      f"{info.source_path} is the data this model was trained on", stacklevel=2)
    moved = dataclasses.replace(info, train_cameras=move_cameras(info.train_cameras, sim),
                                test_cameras=move_cameras(info.test_cameras, sim), point_cloud=pcd)
    frame = {"kind": src.kind, "model": str(src.path), "files": [str(f) for f in src.files],
             "config": str(src.config_file) if src.config_file else None,
             "dataparser": src.dataparser or None, "data": info.source_path, "data_format": info.scene_type,
             "transform": how, "data_to_model": sim.describe(),
             "alignment_error": None if err is None else round(err, 4)}
    return moved, frame


def write_model_frame(folder: Path, frame: dict) -> None:
    """model_frame.json for an Inria folder written from a foreign model (prune.py)."""
    atomic_write_text(folder / MODEL_FRAME_FILE, json.dumps({"data_to_model": frame["data_to_model"],
                                                              "source": frame}, indent=2))
