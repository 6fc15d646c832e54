"""One command for every table and figure: trains each shared scene once, runs every benchmark on those models,
writes REPORT.md (tables + pictures) and results.json (every figure).

    python benchmarks/reproduce.py --out report/                      # the full report (<= 90 min on 2 cores)
    python benchmarks/reproduce.py --out report/ --models DIR         # reuse trained models DIR/<scene>
    python benchmarks/reproduce.py --out /tmp/r --quick               # CI-sized: every stage, tiny sizes
    python benchmarks/reproduce.py --update-readme report/REPORT.md   # README's measured-results block from it
    python benchmarks/reproduce.py --diff report/results.json other/results.json   # determinism check

Every stage runs the project's scripts through their command lines (subprocesses) and reads their --json
outputs, so the report follows whatever the scripts do today. Each stage is cached in OUT/stages/: a stage
whose commands, inputs (data, the models it uses) and code (every .py/.cpp/.h of the repository) are unchanged
is not rerun; --force reruns everything. A failed stage is reported (its log tail, its section marked) and the
others still run; the exit status is then 1.

Determinism: every child process gets the same thread count (--threads, default 2, also OMP_NUM_THREADS) and
the scripts' fixed seeds, so rerunning with --models reproduces the segmentation tables (``--diff`` measures
by how much).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_md  # noqa: E402
from utils.errors import UserError, cli_main  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RECORD = "reproduce_train.json"       # what train.py printed, kept beside the model (travels with --models)
CODE_SUFFIXES = {".py", ".cpp", ".h", ".hpp", ".cu", ".cuh", ".toml", ".yml", ".yaml", ".json"}
CODE_SKIP_DIRS = {".git", ".venv", "output", "report", "tests", "__pycache__", "node_modules", ".ci", "build"}
NOT_CODE = {"benchmarks/reproduce.py", "benchmarks/report_md.py"}  # report formatting: rebuilt on every run


@dataclass(frozen=True)
class ScenePlan:
    """How one shared scene is trained for the report (train.py flags beyond -s -m --preset cpu)."""

    name: str
    train_args: tuple[str, ...]
    why: str                          # the size choice, said in REPORT.md
    prompt_box: str = ""              # a box on a training view for the picture (scenes without GT masks)


FULL_SCENES = (
    ScenePlan("maryRose", ("-r", "1", "--eval", "-w"),
              "256×256 as shipped (60 train / 9 held-out views, a GT mask in every view): the segmentation scene"),
    ScenePlan("fern", ("-i", "images_8", "--eval"),
              "504×378, LLFF's 1/8 images with COLMAP points (17 / 3 views)",
              prompt_box="image001.png:60,30,495,365"),
    ScenePlan("lego", ("-r", "1", "--eval", "-w"),
              "200×200, the subset's size (1/4 of NeRF-synthetic's 800²; 24 train / 8 test views)"),
    ScenePlan("beer", ("-r", "4", "--eval"),
              "180×320, 1/4 of the 720×1280 frames (62 / 9 views): full size is 16× the pixels per iteration "
              "and would take most of the 90 min budget alone", prompt_box="0001.jpg:280,330,490,830"),
)
QUICK_ITERS = ("--iterations", "120")
QUICK_SCENES = (
    ScenePlan("maryRose", ("-r", "4", "--eval", "-w", *QUICK_ITERS), "64×64 (quick)"),
    ScenePlan("fern", ("-i", "images_8", "-r", "8", "--eval", *QUICK_ITERS), "63×47 (quick)",
              prompt_box="image001.png:60,30,495,365"),
    ScenePlan("lego", ("-r", "4", "--eval", "-w", *QUICK_ITERS, "--random_init_points", "5000"), "50×50 (quick)"),
    # 120 iterations leave beer too blurry for the photo prompt to associate any view
    ScenePlan("beer", ("-r", "8", "--eval", "--iterations", "400"), "90×160 (quick)",
              prompt_box="0001.jpg:280,330,490,830"),
)
SEG_SCENE = "maryRose"   # the scene with a GT mask in every view
ALPHA_SCENE = "lego"     # NeRF-synthetic: alpha > 127 is a GT mask of every view


@dataclass
class Stage:
    """One cached step: commands (scripts of this repository with their flags) and what it produces."""

    name: str                                    # e.g. "train/maryRose"
    cmds: list[list[str]]                        # [script relative to ROOT, args...]
    outputs: list[Path]                          # must exist after a successful run
    expect_s: float                              # nominal seconds on an idle 2-core machine (first ETA)
    deps: tuple[str, ...] = ()
    prepare: Optional[Callable[[], None]] = None # in-process work before the commands (copy a model, masks)
    inputs: tuple[Path, ...] = ()                # data folders / files whose listing enters the cache key
    workdir: Optional[Path] = None               # wiped before a (re)run: the stage's own scratch folder
    finish: Optional[Callable[[Path], None]] = None  # in-process work after the commands, given the stage log

    @property
    def slug(self) -> str:
        return self.name.replace("/", "-")


@dataclass
class Config:
    out: Path
    data: Path
    models: Optional[Path]
    quick: bool
    force: bool
    threads: int
    scenes: tuple[ScenePlan, ...]
    only: tuple[str, ...] = ()


@dataclass
class Outcome:
    name: str
    status: str            # "ran" | "cached" | "failed" | "skipped"
    seconds: float
    cmds: list[str]
    log: str
    error: str = ""


# --------------------------------------------------------------------------------------------------------------
# the plan


def model_dir(cfg: Config, scene: str) -> Path:
    return cfg.out / "models" / scene


def work(cfg: Config, *parts: str) -> Path:
    return cfg.out.joinpath("work", *parts)


def build_stages(cfg: Config) -> list[Stage]:
    """Every stage of the report, in run order."""
    th = str(cfg.threads)
    q = cfg.quick
    st: list[Stage] = []
    names = [s.name for s in cfg.scenes]
    for plan in cfg.scenes:
        st.append(_train_stage(cfg, plan))

    if SEG_SCENE in names:
        m, src = model_dir(cfg, SEG_SCENE), cfg.data / SEG_SCENE
        dep = (f"train/{SEG_SCENE}",)
        sam = work(cfg, "sam_like", SEG_SCENE)
        st.append(Stage(f"sam_like/{SEG_SCENE}", [["benchmarks/sam_like.py", "--images", str(src / "images"),
                                                    "--masks", str(src / "masks"), "--out", str(sam), "--seed", "0"]],
                        [sam], 15, inputs=(src,), workdir=sam))
        sq = work(cfg, "seg_quality")
        st.append(Stage("seg_quality", [["benchmarks/seg_quality.py", "--model", str(m), "--source", str(src),
                                          "--work", str(sq), "--sam", str(sam), "--threads", th, "--seed", "0",
                                          "--json", str(sq / "seg_quality.json")]],
                        [sq / "seg_quality.json"], 40 if q else 330, dep + (f"sam_like/{SEG_SCENE}",),
                        inputs=(src,), workdir=sq))
        cm = work(cfg, "compare_methods")
        quick_cm = ["--masks-k", "1", "--clusters", "8", "--field-iterations", "60"] if q else \
            ["--masks-k", "1,3", "--clusters", "8,16,32", "--field-iterations", "1500"]
        st.append(Stage("compare_methods", [["benchmarks/compare_methods.py", "--model", str(m), "--source",
                                              str(src), "--work", str(cm), "--threads", th, "--render",
                                              "scene,object", *quick_cm, "--json", str(cm / "compare.json")]],
                        [cm / "compare.json"], 60 if q else 900, dep, inputs=(src,), workdir=cm))
        ev = work(cfg, "everything")
        st.append(Stage("everything", [["benchmarks/bench_everything.py", "--model", str(m), "--source", str(src),
                                         "--sam", str(sam), "--out", str(ev / "seg"), "--threads", th, "--repeat",
                                         "1" if q else "3", "--json", str(ev / "everything.json")]],
                        [ev / "everything.json"], 25 if q else 150, dep + (f"sam_like/{SEG_SCENE}",),
                        inputs=(src,), workdir=ev))
        asc = work(cfg, "association")
        st.append(Stage("association", [["benchmarks/bench_association.py", "--model", str(m), "--source",
                                          str(src), "--sam", str(sam), "--prompt", _center_prompt(cfg, SEG_SCENE),
                                          "--photos", "--threads", th, "--repeat", "1" if q else "3", "--json",
                                          str(asc / "association.json")]],
                        [asc / "association.json"], 20 if q else 120, dep + (f"sam_like/{SEG_SCENE}",),
                        inputs=(src,), workdir=asc))
        tm = work(cfg, "timing")
        st.append(Stage("timing", [["benchmarks/bench_timing.py", "-m", str(m), "--masks", str(src / "masks"),
                                     "--threads", th, "--json", str(tm / "timing.json")]],
                        [tm / "timing.json"], 10 if q else 45, dep, inputs=(src,), workdir=tm))
        af = work(cfg, "affordance")
        st.append(Stage("affordance", [["benchmarks/affordance_transfer.py", "--model", str(m), "--source",
                                         str(src), "--out", str(af / "out"), "--json", str(af / "affordance.json")]],
                        [af / "affordance.json"], 15 if q else 120, dep, inputs=(src,), workdir=af))
    if names:
        first = names[0]
        bt = work(cfg, "bench_train")
        st.append(Stage("bench_train", [["benchmarks/bench_train.py", "--source", str(cfg.data / first),
                                          "--threads", th, "--iterations", "3" if q else "20", "--warmup",
                                          "1" if q else "3", "--points", "20000" if q else "100000",
                                          "--resolution", "64" if q else "256", "--json",
                                          str(bt / "bench_train.json")]],
                        [bt / "bench_train.json"], 8 if q else 45, inputs=(cfg.data / first,), workdir=bt))
    for plan in cfg.scenes:
        m = model_dir(cfg, plan.name)
        pr = work(cfg, "prune", plan.name)
        sweep = ["--sweep_thresholds", "0,1e-4,1e-2"] if q else []
        st.append(Stage(f"prune/{plan.name}", [["prune.py", "-m", str(m), "--out", str(pr), "--sweep", *sweep,
                                                 "--threads", th, "--quiet"]],
                        [pr / "prune_report.json", pr / "sweep.json", pr / "sweep.png"], 8 if q else 60,
                        (f"train/{plan.name}",), inputs=(cfg.data / plan.name,), workdir=pr))
    if ALPHA_SCENE in names:
        st.append(_alpha_masks_stage(cfg))
        st.append(_alpha_seg_stage(cfg))
    for plan in cfg.scenes:
        if plan.name != ALPHA_SCENE:   # alpha_seg's segment.py run draws lego's picture
            st.append(_picture_stage(cfg, plan))
    return st


def _train_stage(cfg: Config, plan: ScenePlan) -> Stage:
    """train.py (or a copy of --models DIR/<scene>), then render.py and metrics.py on the held-out views."""
    m = model_dir(cfg, plan.name)
    src = cfg.data / plan.name
    th = str(cfg.threads)
    reuse = cfg.models / plan.name if cfg.models and (cfg.models / plan.name / "point_cloud").is_dir() else None
    cmds = [] if reuse else [["train.py", "-s", str(src), "-m", str(m), "--preset", "cpu", *plan.train_args,
                              "--num_threads", th, "--seed", "0"]]
    cmds += [["render.py", "-m", str(m), "--skip_train", "--num_threads", th, "--quiet"],
             ["metrics.py", "-m", str(m), "--no_lpips"]]
    expect = {"maryRose": 150, "fern": 380, "lego": 130, "beer": 170}.get(plan.name, 200)
    inputs: tuple[Path, ...] = (src,)
    prepare = finish = None
    outputs = [m / "results.json", m / RECORD]
    if reuse is not None:
        expect = 20
        inputs = (src, _newest_ply(reuse))
        prepare = lambda: import_model(reuse, m)  # noqa: E731
    else:
        finish = lambda log: record_training(log, m, cmds[0])  # noqa: E731
    return Stage(f"train/{plan.name}", cmds, outputs, (12 if cfg.quick else expect), (), prepare, inputs,
                 workdir=m, finish=finish)


def _alpha_masks_stage(cfg: Config) -> Stage:
    src = cfg.data / ALPHA_SCENE
    out = work(cfg, "alpha_masks")
    return Stage(f"alpha_masks/{ALPHA_SCENE}", [], [out / "train", out / "test"], 2,
                 prepare=lambda: write_alpha_masks(src, out), inputs=(src,), workdir=out)


def _alpha_seg_stage(cfg: Config) -> Stage:
    """segment.py with the alpha masks of every training view; eval_segmentation.py in both protocols."""
    m = model_dir(cfg, ALPHA_SCENE)
    masks = work(cfg, "alpha_masks")
    out = work(cfg, "alpha_seg")
    th = str(cfg.threads)
    cmds = [["segment.py", "-m", str(m), "--masks", str(masks / "train"), "--out", str(out / "seg"), "--previews",
             "1", "--gif-frames", "0", "--preview-size", "160" if cfg.quick else "256", "--num_threads", th,
             "--no-progress"]]
    for proto in ("object", "scene"):
        cmds.append(["eval_segmentation.py", "-m", str(m), "--labels", str(out / "seg" / "labels.npy"),
                     "--gt-masks", str(masks / "test"), "--split", "test", "--render", proto, "--out",
                     str(out / f"eval_{proto}.json"), "--num_threads", th, "--no-progress"])
    return Stage(f"alpha_seg/{ALPHA_SCENE}", cmds, [out / "eval_object.json", out / "eval_scene.json"], 8 if
                 cfg.quick else 25, (f"train/{ALPHA_SCENE}", f"alpha_masks/{ALPHA_SCENE}"), workdir=out)


def _picture_stage(cfg: Config, plan: ScenePlan) -> Stage:
    """segment.py with one preview strip (original | extracted | deleted | mask)."""
    m = model_dir(cfg, plan.name)
    out = work(cfg, "pictures", plan.name)
    deps: tuple[str, ...] = (f"train/{plan.name}",)
    if plan.name == SEG_SCENE:
        how = ["--masks", str(cfg.data / plan.name / "masks")]
    elif plan.prompt_box:
        how = ["--prompt-box", plan.prompt_box]
    else:
        how = []
    cmd = ["segment.py", "-m", str(m), *how, "--out", str(out), "--previews", "1", "--gif-frames", "0",
           "--preview-size", "160" if cfg.quick else "256", "--num_threads", str(cfg.threads), "--no-progress"]
    return Stage(f"picture/{plan.name}", [cmd] if how else [], [out / "summary.json"] if how else [],
                 8 if cfg.quick else 40, deps, inputs=(cfg.data / plan.name,), workdir=out)


def _center_prompt(cfg: Config, scene: str) -> str:
    """VIEW:X,Y at the innermost pixel of the GT mask of the first training view, the second view (file pixels)."""
    import cv2
    import numpy as np

    masks = sorted((cfg.data / scene / "masks").glob("*.png"))
    if len(masks) < 2:
        return "none:0,0"
    mask = masks[1]  # view 0 is held out by --eval (every 8th view from the first)
    m = (cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
    d = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(d.argmax()), d.shape)
    image = next((p.name for p in (cfg.data / scene / "images").iterdir() if p.stem == mask.stem), mask.stem)
    return f"{image}:{x},{y}"


# --------------------------------------------------------------------------------------------------------------
# in-process steps


def _newest_ply(model: Path) -> Path:
    its = sorted((model / "point_cloud").glob("iteration_*"), key=lambda p: int(p.name.split("_")[-1]))
    if not its:
        raise UserError(f"{model / 'point_cloud'}: no iteration_N folder; pass --models a folder of trained models")
    return its[-1] / "point_cloud.ply"


def import_model(src: Path, dest: Path) -> None:
    """Copy a trained model's files (not its renders, checkpoints or other tools' outputs) into the report."""
    ply = _newest_ply(src)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("cfg_args", "cameras.json", "input.ply", RECORD):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    (dest / ply.parent.relative_to(src)).mkdir(parents=True, exist_ok=True)
    shutil.copy2(ply, dest / ply.relative_to(src))
    rec = dest / RECORD
    data = json.loads(rec.read_text()) if rec.is_file() else {}
    data["reused_from"] = str(src)
    rec.write_text(json.dumps(data, indent=2))


def write_alpha_masks(src: Path, out: Path) -> None:
    """NeRF-synthetic: alpha > 127 of every RGBA frame is the object's mask (one folder per split, since the
    splits reuse file names)."""
    import numpy as np
    from PIL import Image

    for split in ("train", "test"):
        d = out / split
        d.mkdir(parents=True, exist_ok=True)
        for p in sorted((src / split).glob("*.png")):
            a = np.asarray(Image.open(p).convert("RGBA"))[..., 3]
            Image.fromarray(((a > 127) * 255).astype(np.uint8)).save(d / p.name)


# --------------------------------------------------------------------------------------------------------------
# caching


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_hash(root: Path = ROOT, skip: Sequence[Path] = ()) -> str:
    """Hash of every code file of the repository except benchmarks/ (a stage adds the benchmark scripts it
    runs, see benchmark_hash) and the report folder: changed code reruns."""
    h = hashlib.sha256()
    skip_abs = [p.resolve() for p in skip]
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in CODE_SKIP_DIRS and not d.startswith(".")
                             and (here / d).resolve() not in skip_abs
                             and (here / d).resolve() != (root / "benchmarks").resolve())
        for f in sorted(filenames):
            p = here / f
            rel = p.relative_to(root).as_posix()
            if p.suffix in CODE_SUFFIXES and rel not in NOT_CODE:
                h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def benchmark_hash(stage: "Stage", root: Path = ROOT) -> str:
    """The benchmark scripts a stage runs, and the benchmark modules those name (seg_quality.py loads
    sam_like.py): editing one benchmark reruns only the stages that use it."""
    bench = root / "benchmarks"
    todo = [root / c[0] for c in stage.cmds if c and c[0].startswith("benchmarks/")]
    seen: dict[str, bytes] = {}
    while todo:
        p = todo.pop()
        if p.name in seen or not p.is_file():
            continue
        seen[p.name] = p.read_bytes()
        text = seen[p.name].decode("utf-8", "replace")
        todo += [q for q in bench.glob("*.py") if q.stem in text and q.name not in seen
                 and f"benchmarks/{q.name}" not in NOT_CODE]
    return _sha(b"".join(k.encode() + b"\0" + v for k, v in sorted(seen.items())))


def input_fingerprint(paths: Sequence[Path]) -> str:
    """Names, sizes and mtimes of the data (folders walked), content hashes of single files (models)."""
    h = hashlib.sha256()
    for p in paths:
        if p.is_file():
            h.update(p.name.encode() + _sha(p.read_bytes()).encode())
        elif p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_file():
                    s = q.stat()
                    h.update(f"{q.relative_to(p)}:{s.st_size}:{int(s.st_mtime)}".encode())
        else:
            h.update(f"missing:{p}".encode())
    return h.hexdigest()


def stage_key(stage: Stage, code: str, dep_prints: Sequence[str], threads: int) -> str:
    body = {"name": stage.name, "cmds": stage.cmds, "code": code, "benchmarks": benchmark_hash(stage),
            "deps": list(dep_prints), "threads": threads, "inputs": input_fingerprint(stage.inputs)}
    return _sha(json.dumps(body, sort_keys=True).encode())


def output_fingerprint(stage: Stage) -> str:
    """What dependents see of a stage: the trained PLY's content (a retrained, different model reruns them)."""
    if stage.name.startswith("train/"):
        return _sha(_newest_ply(stage.outputs[0].parent).read_bytes())
    return ""


# --------------------------------------------------------------------------------------------------------------
# running


def display(cmd: Sequence[str]) -> str:
    """``python script args`` with paths shown relative to the repository when they lie inside it."""
    def rel(a: str) -> str:
        if not a.startswith("/"):
            return a
        r = os.path.relpath(a, ROOT)
        return a if r.startswith("../..") else r    # the repository and its neighbours (../shared/data)
    return "python " + " ".join(shlex.quote(rel(a)) for a in cmd)


def child_env(threads: int) -> dict[str, str]:
    """Same threads and hash seed for every child. OpenMP threads sleep instead of spinning while they wait
    (OMP_WAIT_POLICY=PASSIVE unless set): on a shared 2-core machine spinning threads of several processes
    measured 2-5x slower wall times and 3x the CPU time (bench_timing.py, side by side)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONHASHSEED="0",
               PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def run_stage(stage: Stage, log_path: Path, threads: int) -> Optional[str]:
    """Run the stage's commands; returns None on success, else a short error (the log tail)."""
    if stage.workdir is not None:   # the stage's own folder under --out: emptied, so nothing stale is read
        if stage.workdir.exists():
            shutil.rmtree(stage.workdir)
        stage.workdir.mkdir(parents=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        if stage.prepare is not None:
            log.write(f"# in-process: {stage.name} prepare\n")
            log.flush()
            try:
                stage.prepare()
            except (UserError, OSError, ValueError) as e:
                return f"{stage.name}: {e}"
        for cmd in stage.cmds:
            log.write(f"$ {display(cmd)}\n")
            log.flush()
            t = time.perf_counter()
            res = subprocess.run([sys.executable, *cmd], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 env=child_env(threads))
            log.write(f"# exit {res.returncode} after {time.perf_counter() - t:.1f} s\n")
            log.flush()
            if res.returncode != 0:
                tail = log_path.read_text().strip().splitlines()[-6:]
                return f"{display(cmd)} exited with {res.returncode}:\n    " + "\n    ".join(tail)
    if stage.finish is not None:
        try:
            stage.finish(log_path)
        except (UserError, OSError, ValueError) as e:
            return f"{stage.name}: {e}"
    missing = [str(p) for p in stage.outputs if not p.exists()]
    if missing:
        return f"finished without writing {', '.join(missing)}"
    return None


def _fmt_s(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min"


class Progress:
    """One line per stage: its time and the ETA of the rest, from the nominal stage times scaled by how much
    slower (or faster) the stages run so far were than nominal (a shared machine is slower)."""

    def __init__(self, stages: Sequence[Stage]):
        self.stages = list(stages)
        self.done_expect = 0.0
        self.done_actual = 0.0

    def ratio(self) -> float:
        return self.done_actual / self.done_expect if self.done_expect > 0 else 1.0

    def begin(self, i: int, st: Stage) -> None:
        rest = sum(s.expect_s for s in self.stages[i:]) * self.ratio()
        print(f"[{i + 1:2d}/{len(self.stages)}] {st.name:<26} ETA {_fmt_s(rest):>8} ...", end=" ", flush=True)

    def end(self, st: Stage, outcome: Outcome) -> None:
        if outcome.status == "ran":
            self.done_expect += st.expect_s
            self.done_actual += outcome.seconds
        what = {"ran": _fmt_s(outcome.seconds), "cached": "cached", "failed": f"FAILED ({outcome.log})",
                "skipped": "skipped (a stage it needs failed)"}[outcome.status]
        print(what, flush=True)


def execute(cfg: Config, stages: list[Stage]) -> list[Outcome]:
    code = code_hash(ROOT, skip=[cfg.out])
    prog = Progress(stages)
    records = cfg.out / "stages"
    records.mkdir(parents=True, exist_ok=True)
    prints: dict[str, str] = {}
    status: dict[str, str] = {}
    outcomes = []
    for i, st in enumerate(stages):
        prog.begin(i, st)
        log = cfg.out / "logs" / f"{st.slug}.log"
        shown = [display(c) for c in st.cmds]
        if any(status.get(d) in ("failed", "skipped") for d in st.deps):
            oc = Outcome(st.name, "skipped", 0.0, shown, str(log.relative_to(cfg.out)))
        else:
            key = stage_key(st, code, [prints.get(d, "") for d in st.deps], cfg.threads)
            rec_path = records / f"{st.slug}.json"
            rec = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
            if not cfg.force and rec.get("key") == key and all(p.exists() for p in st.outputs):
                oc = Outcome(st.name, "cached", rec.get("seconds", 0.0), shown, str(log.relative_to(cfg.out)))
            else:
                rec_path.unlink(missing_ok=True)
                t = time.perf_counter()
                err = run_stage(st, log, cfg.threads)
                dt = time.perf_counter() - t
                oc = Outcome(st.name, "failed" if err else "ran", dt, shown, str(log.relative_to(cfg.out)), err or "")
                if not err:
                    rec_path.write_text(json.dumps({"key": key, "seconds": dt, "cmds": shown,
                                                    "finished": datetime.now().isoformat(timespec="seconds")},
                                                   indent=2))
            if oc.status in ("ran", "cached"):
                prints[st.name] = output_fingerprint(st) + key
        status[st.name] = oc.status
        prog.end(st, oc)
        if oc.error:
            print("    " + oc.error, flush=True)
        outcomes.append(oc)
    return outcomes


# --------------------------------------------------------------------------------------------------------------
# results


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def environment(cfg: Config) -> dict[str, Any]:
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    libs = {}
    for dist in ("torch", "numpy", "scipy", "scikit-learn", "opencv-python-headless", "plyfile", "pillow",
                 "matplotlib", "pykdtree", "imageio", "tqdm"):
        try:
            libs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            libs[dist] = None
    git = _git_state()
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": cfg.threads,
            "omp_wait_policy": child_env(cfg.threads)["OMP_WAIT_POLICY"], "python": platform.python_version(),
            "platform": platform.platform(), "libraries": libs, **git,
            "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def _git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.rstrip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    commit = git("rev-parse", "HEAD").strip()
    dirty = [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if ln[3:] and not ln[3:].startswith("report/") and ln[3:] != "README.md"]
    return {"git_commit": commit or None, "git_dirty": dirty, "git_branch": git("rev-parse", "--abbrev-ref", "HEAD").strip()}


def collect(cfg: Config, stages: list[Stage], outcomes: list[Outcome]) -> dict[str, Any]:
    """Every figure of the report from the stages' own JSON outputs (read again on every run)."""
    ok = {o.name for o in outcomes if o.status in ("ran", "cached")}
    res: dict[str, Any] = {"training": {}, "pruning": {}, "pictures": {}}
    for plan in cfg.scenes:
        if f"train/{plan.name}" in ok:
            res["training"][plan.name] = collect_training(cfg, plan)
        if f"prune/{plan.name}" in ok:
            res["pruning"][plan.name] = collect_pruning(cfg, plan.name)
        if f"picture/{plan.name}" in ok or (plan.name == ALPHA_SCENE and f"alpha_seg/{ALPHA_SCENE}" in ok):
            res["pictures"][plan.name] = collect_picture(cfg, plan)
    seg_model = str(model_dir(cfg, SEG_SCENE))
    if "seg_quality" in ok:
        res["segmentation"] = collect_seg_quality(_read(work(cfg, "seg_quality", "seg_quality.json")))
    if "compare_methods" in ok:
        res["comparison"] = collect_compare(_read(work(cfg, "compare_methods", "compare.json")))
    if "everything" in ok:
        res["everything"] = _read(work(cfg, "everything", "everything.json"))
    if "association" in ok:
        res["association"] = _read(work(cfg, "association", "association.json"))
    if "timing" in ok:
        res["timing"] = _read(work(cfg, "timing", "timing.json"))
    if "affordance" in ok:
        res["affordance"] = collect_affordance(_read(work(cfg, "affordance", "affordance.json")))
    if "bench_train" in ok:
        res["bench_train"] = _read(work(cfg, "bench_train", "bench_train.json"))
    if f"alpha_seg/{ALPHA_SCENE}" in ok:
        res["alpha_segmentation"] = collect_alpha(cfg)
    res["models"] = {"segmentation": seg_model}
    return res


def collect_training(cfg: Config, plan: ScenePlan) -> dict[str, Any]:
    m = model_dir(cfg, plan.name)
    rec = _read(m / RECORD) or {}
    metrics = _read(m / "results.json") or {}
    method = sorted(metrics, key=lambda k: int(k.split("_")[-1]) if k.split("_")[-1].isdigit() else -1)[-1] \
        if metrics else None
    cams = _read(m / "cameras.json") or []
    per_view = _read(m / "per_view.json") or {}
    test_views = len(per_view.get(method, {}).get("PSNR", {})) if method else 0
    from arguments import read_cfg_args

    args = read_cfg_args(m / "cfg_args")
    return {"model": str(m), "source": str(cfg.data / plan.name), "why": plan.why,
            "train_args": rec.get("train_args", list(plan.train_args)), "command": rec.get("command"),
            "reused_from": rec.get("reused_from"), "width": cams[0]["width"] if cams else None,
            "height": cams[0]["height"] if cams else None, "train_views": len(cams) - test_views,
            "test_views": test_views, "white_background": bool(getattr(args, "white_background", False)),
            "iterations": rec.get("iterations"), "seconds": rec.get("seconds"), "it_per_s": rec.get("it_per_s"),
            "gaussians": rec.get("gaussians") or _ply_count(_newest_ply(m)),
            "psnr": metrics.get(method, {}).get("PSNR"), "ssim": metrics.get(method, {}).get("SSIM"),
            "method": method}


def _ply_count(ply: Path) -> int:
    with open(ply, "rb") as f:
        for _ in range(200):
            line = f.readline().decode("ascii", "replace").strip()
            if line.startswith("element vertex"):
                return int(line.split()[-1])
            if line == "end_header":
                break
    return 0


def collect_seg_quality(data: Optional[dict]) -> Optional[dict]:
    if not data:
        return None
    k_rows, completion, prompts = [], [], []
    for r in data["rows"]:
        flat = {"object_miou": r["object"]["miou"], "object_macc": r["object"]["macc"],
                "scene_miou": r["scene"]["miou"], "scene_macc": r["scene"]["macc"], "selected": r["selected"]}
        if r["method"].startswith("vote "):
            k_rows.append({"masks": r["masks"], "K": r["K"], "views_used": r["views_used"],
                           "propagate": r["propagate"], "undecided": r["undecided"], **flat})
        elif r["method"].startswith("masks + completion"):
            completion.append({"proposals": r["method"].split("(")[-1].rstrip(")"), "K": r["K"],
                               "views_associated": r["views_associated"], "rounds": r["rounds"],
                               "seconds": r["seconds"], **flat})
        else:
            prompts.append({"method": r["method"], "prompt": r.get("prompt"), "chose": r.get("chose"),
                            "views_associated": r.get("views_associated"), "seconds": r.get("seconds"), **flat})
    return {"model": data["model"], "gaussians": data["gaussians"], "train_views": data["train_views"],
            "test_views": data["test_views"], "k_rows": k_rows, "completion": completion, "prompts": prompts,
            "timing": data["timing"]}


def collect_compare(data: Optional[dict]) -> Optional[dict]:
    if not data:
        return None
    rows = []
    for r in data["rows"]:
        prot = r.get("protocols") or {"scene": {"miou": r["miou"], "macc": r["macc"]}}
        rows.append({"method": r["method"], "masks": r["masks"],
                     **{f"{p}_{k}": v[k] for p, v in prot.items() for k in ("miou", "macc")},
                     "stage_s": r["stage_s"], "views": r["views"]})
    return {"model": data["model"], "train_views": data["train_views"], "extractor": data["extractor"],
            "field_iterations": data["field_iterations"], "times_s": data["times_s"], "rows": rows}


def collect_affordance(data: Optional[dict]) -> Optional[dict]:
    if not data:
        return None
    keep = ("name", "images", "iou_background", "iou_object", "recall_object", "mean_iou_all",
            "median_view_iou_object")
    return {"model": data["model"], "sources": data["sources"], "extractor": data["extractor"],
            "train_views": data["train_views"], "test_views": data["test_views"],
            "seconds": data["affordance_seconds"], "rows": [{k: r[k] for k in keep} for r in data["rows"]]}


def _prune_times(rep: dict[str, Any]) -> dict[str, Any]:
    """prune_report.json's phase times: 'timings_s' (every summary since the job kit), 'times' before it."""
    return rep.get("timings_s") or rep.get("times") or {}


def collect_pruning(cfg: Config, scene: str) -> dict[str, Any]:
    pr = work(cfg, "prune", scene)
    rep, sweep = _read(pr / "prune_report.json") or {}, _read(pr / "sweep.json") or {}
    fig = cfg.out / "figures" / f"prune_{scene}.png"
    fig.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(pr / "sweep.png", fig)
    g, v, h = rep.get("gaussians", {}), rep.get("verification", {}), rep.get("heldout", {})
    lossless = {"gaussians": g.get("before"), "removed": g.get("removed"), "percent_removed": g.get("percent_removed"),
                "max_abs_diff": v.get("max_abs_diff"), "bound": v.get("bound"), "verified_views": v.get("num_views"),
                "passed": v.get("passed"), "heldout_psnr_before": h.get("psnr_before"),
                "heldout_psnr_after": h.get("psnr_after"), "heldout_ssim_before": h.get("ssim_before"),
                "heldout_ssim_after": h.get("ssim_after"), "heldout_views": h.get("num_views"),
                "seconds": _prune_times(rep).get("total"), "times_s": _prune_times(rep)}
    return {"model": str(model_dir(cfg, scene)), "lossless": lossless, "sweep": sweep.get("rows", []),
            "unpruned": sweep.get("unpruned"), "heldout_split": sweep.get("heldout_split"),
            "reference": sweep.get("reference"), "figure": str(fig.relative_to(cfg.out))}


def collect_picture(cfg: Config, plan: ScenePlan) -> dict[str, Any]:
    out = work(cfg, "alpha_seg", "seg") if plan.name == ALPHA_SCENE else work(cfg, "pictures", plan.name)
    summary = _read(out / "summary.json") or {}
    previews = sorted(out.glob("preview_*.png"))
    fig = None
    if previews:
        dest = cfg.out / "figures" / f"segment_{plan.name}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(previews[0], dest)
        fig = str(dest.relative_to(cfg.out))
    counts = summary.get("counts") or summary.get("labels")
    return {"figure": fig, "view": previews[0].stem[len("preview_"):] if previews else None,
            "how": "GT masks of every training view" if plan.name == SEG_SCENE else
            ("alpha masks of every training view" if plan.name == ALPHA_SCENE else f"--prompt-box {plan.prompt_box}"),
            "counts": counts, "timings_s": summary.get("timings_s")}


def collect_alpha(cfg: Config) -> dict[str, Any]:
    out = work(cfg, "alpha_seg")
    res = {"model": str(model_dir(cfg, ALPHA_SCENE)), "masks": "alpha > 127 of every training view"}
    for proto in ("object", "scene"):
        ev = _read(out / f"eval_{proto}.json") or {}
        res[proto] = {"miou": ev.get("miou"), "macc": ev.get("macc"), "views": ev.get("num_views")}
    summary = _read(out / "seg" / "summary.json") or {}
    res["counts"] = summary.get("counts")
    return res


def record_training(stage_log: Path, model: Path, cmd: Sequence[str]) -> None:
    """train.py's final line (iterations, Gaussians, it/s, seconds) kept beside the model as RECORD."""
    import re

    text = stage_log.read_text() if stage_log.is_file() else ""
    m = re.search(r"Training complete: (\d+) iterations, (\d+) Gaussians, ([\d.]+) it/s, (\d+) s", text)
    if not m:
        raise UserError(f"{stage_log}: train.py printed no 'Training complete: ...' line; cannot record it")
    rec = {"command": display(cmd), "train_args": list(cmd[cmd.index("--preset"):]),
           "iterations": int(m.group(1)), "gaussians": int(m.group(2)), "it_per_s": float(m.group(3)),
           "seconds": float(m.group(4))}
    (model / RECORD).write_text(json.dumps(rec, indent=2))


# --------------------------------------------------------------------------------------------------------------
# diff (determinism)


def numbers(obj: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a JSON tree, keyed by its path (lists by index and, for rows, by their name)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(numbers(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and math.isfinite(obj):
        out[prefix] = float(obj)
    return out


IOU_WORDS = ("miou", "macc", "iou", "recall")


def diff_results(a: dict, b: dict) -> dict[str, Any]:
    """Largest difference of the segmentation-quality figures (IoU / accuracy / recall) between two runs."""
    na, nb = numbers(a), numbers(b)
    sections = ("segmentation", "comparison", "everything", "affordance", "alpha_segmentation")
    common = [k for k in na if k in nb and k.split(".")[0] in sections
              and any(w in k.rsplit(".", 1)[-1].lower() for w in IOU_WORDS)]
    diffs = sorted(((abs(na[k] - nb[k]), k) for k in common), reverse=True)
    per = {s: max([d for d, k in diffs if k.startswith(s)], default=0.0) for s in sections}
    return {"compared": len(common), "max_abs_diff": diffs[0][0] if diffs else 0.0,
            "worst": [{"figure": k, "diff": d, "a": na[k], "b": nb[k]} for d, k in diffs[:5]], "per_section": per,
            "only_in_one": sorted(set(k for k in set(na) ^ set(nb) if k.split(".")[0] in sections
                                      and any(w in k.rsplit(".", 1)[-1].lower() for w in IOU_WORDS)))[:10]}


# --------------------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "report"), help="report folder (default: report/)")
    p.add_argument("--models", default="", help="folder of trained models (<scene>/cfg_args, point_cloud/) to "
                   "reuse instead of training; scenes missing there are trained")
    p.add_argument("--data", default=str(DATA), help="the shared scenes (default: ../shared/data)")
    p.add_argument("--scenes", default="", help="comma-separated subset of maryRose,fern,lego,beer")
    p.add_argument("--only", default="", help="comma-separated stage-name prefixes to run (their dependencies "
                   "too), e.g. seg_quality,prune; the report then has only their sections")
    p.add_argument("--quick", action="store_true", help="CI-sized run: tiny resolutions and few iterations, "
                   "every stage (a few minutes)")
    p.add_argument("--force", action="store_true", help="rerun every stage, cached or not")
    p.add_argument("--dry-run", action="store_true", help="print the stages and their commands, run nothing")
    p.add_argument("--threads", type=int, default=0, help="threads of every child process (default 2, --quick 1; "
                   "fixed so that reruns give the same numbers)")
    p.add_argument("--update-readme", metavar="REPORT_MD", default="",
                   help="replace README.md's block between <!-- report:begin --> and <!-- report:end --> with "
                        "this REPORT.md's tables, and exit")
    p.add_argument("--readme", default=str(ROOT / "README.md"), help="README to update (default: the repo's)")
    p.add_argument("--allow-other-commit", action="store_true",
                   help="--update-readme from a report of another commit than HEAD")
    p.add_argument("--diff", nargs=2, metavar=("A_JSON", "B_JSON"),
                   help="largest difference of the segmentation figures between two results.json, and exit")
    p.add_argument("--debug", action="store_true", help="tracebacks of unexpected errors")
    return p.parse_args(argv)


def select(stages: list[Stage], only: Sequence[str]) -> list[Stage]:
    """The stages matching the prefixes, plus every stage they depend on (in plan order)."""
    if not only:
        return stages
    by = {s.name: s for s in stages}
    want = {s.name for s in stages if any(s.name.startswith(o) for o in only)}
    if not want:
        raise UserError(f"--only {','.join(only)}: matches no stage; stages: {', '.join(by)}")
    todo = list(want)
    while todo:
        for d in by[todo.pop()].deps:
            if d in by and d not in want:
                want.add(d)
                todo.append(d)
    return [s for s in stages if s.name in want]


def check_out(out: Path) -> None:
    """--out is new, empty, or a report folder written by this script (it deletes only its own sub-folders)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: not a folder; pass --out a new folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "stages").is_dir():
        raise UserError(f"{out}: folder is not empty and holds no report of reproduce.py; pass --out a new folder")
    for p in (Path("/work/shared"), DATA):
        if p.exists() and out.resolve().is_relative_to(p.resolve()):
            raise UserError(f"{out}: inside the shared data {p}; pass --out elsewhere")


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parse_args(argv)
    if a.update_readme:
        line = report_md.update_readme(Path(a.update_readme), Path(a.readme), _git_state()["git_commit"],
                                       a.allow_other_commit)
        print(line)
        return 0
    if a.diff:
        ra, rb = (_read(Path(x)) for x in a.diff)
        for x, r in zip(a.diff, (ra, rb)):
            if r is None:
                raise UserError(f"{x}: not found; pass two results.json files")
        d = diff_results(ra, rb)
        print(json.dumps(d, indent=2))
        return 0

    data = Path(a.data).resolve()
    plans = QUICK_SCENES if a.quick else FULL_SCENES
    if a.scenes:
        want = [s.strip() for s in a.scenes.split(",") if s.strip()]
        unknown = [s for s in want if s not in {p.name for p in plans}]
        if unknown:
            raise UserError(f"--scenes {','.join(unknown)}: unknown; choose from {','.join(p.name for p in plans)}")
        plans = tuple(p for p in plans if p.name in want)
    for plan in plans:
        if not (data / plan.name).is_dir():
            raise UserError(f"{data / plan.name}: scene not found; pass --data with the shared scenes or --scenes "
                            "a subset")
    models = Path(a.models).resolve() if a.models else None
    if models is not None and not models.is_dir():
        raise UserError(f"{models}: --models is not a folder of trained models")
    if a.threads < 0:
        raise UserError(f"--threads {a.threads}: must be >= 1")
    threads = a.threads or (1 if a.quick else 2)
    out = Path(a.out).resolve()
    check_out(out)
    if models is not None and out.resolve() in (models.resolve(), models.resolve().parent):
        raise UserError(f"{models}: --models lies in --out; reuse another report's models/ folder")
    cfg = Config(out, data, models, a.quick, a.force, threads, plans,
                 tuple(s.strip() for s in a.only.split(",") if s.strip()))
    stages = build_stages(cfg)
    run = select(stages, cfg.only)
    if a.dry_run:
        for st in run:
            print(f"{st.name}  (~{_fmt_s(st.expect_s)})" + "".join(f"\n    {display(c)}" for c in st.cmds))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    env = environment(cfg)
    print(f"reproduce: {len(run)} stages into {out} ({'quick' if cfg.quick else 'full'}; {cfg.threads} threads; "
          f"commit {(env['git_commit'] or 'unknown')[:10]}; load {env['load_average'][0]:.1f})" if env["load_average"]
          else f"reproduce: {len(run)} stages into {out}", flush=True)
    outcomes = execute(cfg, run)
    wall = time.perf_counter() - t0
    env["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = collect(cfg, stages, outcomes)
    results["environment"] = env
    results["run"] = {"quick": cfg.quick, "wall_s": wall, "threads": cfg.threads,
                      "models_reused_from": str(models) if models else None,
                      "command": "python benchmarks/reproduce.py " + " ".join(shlex.quote(x) for x in (argv if argv
                                                                                       is not None else sys.argv[1:])),
                      "stages": [o.__dict__ for o in outcomes]}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "REPORT.md").write_text(report_md.render(results, cfg.out))
    failed = [o.name for o in outcomes if o.status in ("failed", "skipped")]
    print(f"wrote {out / 'REPORT.md'} and {out / 'results.json'} in {_fmt_s(wall)}"
          + (f"; {len(failed)} stage(s) failed or skipped: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
