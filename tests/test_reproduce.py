"""benchmarks/reproduce.py: the stage cache, the ETA, the README block, the determinism diff (fast), and a
``--quick`` run on the shared scenes whose report must have every section and plausible figures (slow)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SCENES = ("maryRose", "fern", "lego", "beer")


def _load():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "benchmarks" / "reproduce.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = mod   # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


rp = _load()
md = sys.modules["report_md"]


# --- the cache --------------------------------------------------------------------------------------------------


def _cfg(tmp_path: Path, force: bool = False):
    return rp.Config(tmp_path / "out", DATA, None, True, force, 1, ())


def _counting_stage(tmp_path: Path, inputs: Path) -> "rp.Stage":
    """A stage whose command appends a line to a counter file, so the test sees how often it ran."""
    out = tmp_path / "out" / "work" / "s" / "done.txt"
    counter = tmp_path / "count.txt"
    code = (f"import pathlib; p = pathlib.Path({str(out)!r}); p.parent.mkdir(parents=True, exist_ok=True); "
            f"p.write_text('ok'); c = pathlib.Path({str(counter)!r}); c.write_text(c.read_text() + 'x' "
            f"if c.exists() else 'x')")
    return rp.Stage("s/one", [["-c", code]], [out], 1.0, inputs=(inputs,), workdir=out.parent)


def test_stage_is_cached_until_its_inputs_or_force_change(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("1")
    cfg = _cfg(tmp_path)
    runs = lambda: len((tmp_path / "count.txt").read_text())  # noqa: E731
    st = _counting_stage(tmp_path, data)
    assert [o.status for o in rp.execute(cfg, [st])] == ["ran"]
    assert [o.status for o in rp.execute(cfg, [_counting_stage(tmp_path, data)])] == ["cached"]
    assert runs() == 1
    (data / "b.txt").write_text("new input")                         # the data changed: rerun
    assert [o.status for o in rp.execute(cfg, [_counting_stage(tmp_path, data)])] == ["ran"]
    assert [o.status for o in rp.execute(_cfg(tmp_path, force=True), [_counting_stage(tmp_path, data)])] == ["ran"]
    assert runs() == 3
    (tmp_path / "out" / "work" / "s" / "done.txt").unlink()         # an output gone: rerun
    assert [o.status for o in rp.execute(cfg, [_counting_stage(tmp_path, data)])] == ["ran"]
    changed = _counting_stage(tmp_path, data)
    changed.cmds[0].append("--another-flag")                        # another command: rerun
    assert [o.status for o in rp.execute(cfg, [changed])] == ["ran"]
    assert runs() == 5
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("[ 1/1] s/one") and "ETA" in line


def test_failed_stage_skips_its_dependents_and_keeps_going(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    bad = rp.Stage("bad", [["-c", "import sys; print('boom'); sys.exit(3)"]], [], 1.0)
    child = rp.Stage("child", [["-c", "pass"]], [], 1.0, deps=("bad",))
    other = rp.Stage("other", [["-c", "pass"]], [], 1.0)
    got = [o.status for o in rp.execute(cfg, [bad, child, other])]
    assert got == ["failed", "skipped", "ran"]
    out = capsys.readouterr().out
    assert "exited with 3" in out and "boom" in out
    assert not (tmp_path / "out" / "stages" / "bad.json").exists()  # a failed stage is never cached


def test_code_hash_follows_code_not_reports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("words")
    h = rp.code_hash(tmp_path)
    (tmp_path / "README.md").write_text("other words")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "x.py").write_text("ignored")
    assert rp.code_hash(tmp_path) == h
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert rp.code_hash(tmp_path) != h


def test_eta_scales_with_the_measured_speed(capsys):
    stages = [rp.Stage(f"s{i}", [], [], 10.0) for i in range(3)]
    prog = rp.Progress(stages)
    prog.begin(0, stages[0])
    prog.end(stages[0], rp.Outcome("s0", "ran", 30.0, [], ""))     # three times slower than nominal
    prog.begin(1, stages[1])
    assert "ETA     60 s" in capsys.readouterr().out.splitlines()[-1]  # 2 stages x 10 s x 3


def test_out_folder_must_be_new_or_a_report(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(rp.UserError, match="not empty"):
        rp.check_out(tmp_path)
    (tmp_path / "stages").mkdir()
    rp.check_out(tmp_path)


def test_only_selects_stages_with_their_dependencies():
    st = [rp.Stage("train/a", [], [], 1), rp.Stage("x", [], [], 1, deps=("train/a",)), rp.Stage("y", [], [], 1)]
    assert [s.name for s in rp.select(st, ["x"])] == ["train/a", "x"]
    with pytest.raises(rp.UserError, match="matches no stage"):
        rp.select(st, ["nothing"])


# --- determinism diff, README block -----------------------------------------------------------------------------


def test_diff_reports_the_largest_segmentation_difference():
    a = {"segmentation": {"k_rows": [{"object_miou": 0.9, "scene_miou": 0.8, "selected": 10}]},
         "training": {"maryRose": {"psnr": 20.0}}}
    b = {"segmentation": {"k_rows": [{"object_miou": 0.9015, "scene_miou": 0.8, "selected": 99}]},
         "training": {"maryRose": {"psnr": 25.0}}}
    d = rp.diff_results(a, b)
    assert d["compared"] == 2                                           # IoU figures only, not counts or PSNR
    assert d["max_abs_diff"] == pytest.approx(0.0015)
    assert d["worst"][0]["figure"] == "segmentation.k_rows[0].object_miou"


def _report(commit: str, quick: bool = False) -> str:
    head = "# gs-segment: measured results" + (" (QUICK run: not meaningful numbers)" if quick else "")
    return (f"{head}\n\nGenerated by `benchmarks/reproduce.py` on 2026-12-05T10:00:00 from commit `{commit}`.\n\n"
            "| uncommitted code changes | none |\n\n"
            f"{md.HEAD_BEGIN}\n| a | b |\n|---|---|\n| 1 | 2 |\n{md.HEAD_END}\n")


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nprose kept\n\n{md.README_BEGIN}\nold numbers\n{md.README_END}\n\n## next\nkept\n")
    rep = tmp_path / "report" / "REPORT.md"
    rep.parent.mkdir()
    rep.write_text(_report("abc123"))
    md.update_readme(rep, readme, "abc123", False)
    text = readme.read_text()
    assert "old numbers" not in text and "| 1 | 2 |" in text and "prose kept" in text and "## next\nkept" in text
    assert "commit `abc123`" in text and "report/REPORT.md" in text
    md.update_readme(rep, readme, "abc123", False)                     # idempotent
    assert readme.read_text() == text


def test_update_readme_refuses_stale_or_quick_reports(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"{md.README_BEGIN}\n{md.README_END}\n")
    rep = tmp_path / "REPORT.md"
    rep.write_text(_report("abc123"))
    with pytest.raises(md.ReadmeError, match="HEAD is"):
        md.update_readme(rep, readme, "def456", False)
    md.update_readme(rep, readme, "def456", True)                      # --allow-other-commit
    rep.write_text(_report("abc123", quick=True))
    with pytest.raises(md.ReadmeError, match="quick"):
        md.update_readme(rep, readme, "abc123", False)
    readme.write_text("no markers\n")
    rep.write_text(_report("abc123"))
    with pytest.raises(md.ReadmeError, match="exactly one"):
        md.update_readme(rep, readme, "abc123", False)


def test_repository_readme_has_one_generated_block():
    text = (ROOT / "README.md").read_text()
    assert text.count(md.README_BEGIN) == 1 and text.count(md.README_END) == 1
    assert text.index(md.README_BEGIN) < text.index(md.README_END)


# --- the --quick run (slow) ---------------------------------------------------------------------------------------

SECTIONS = ("## Environment", "## Training", "## Segmentation quality", "### K GT masks",
            "### K GT masks completed", "### Prompted segmentation", "--everything", "### lego",
            "## Gradient voting vs the feature-field baseline", "## Timing", "## Pruning",
            "## Few-shot affordance transfer", "## Pictures", "## Stages", md.HEAD_BEGIN)


def plausible(key: str, v: float) -> bool:
    """Plausible ranges by what a figure is (its key), not its value."""
    k = key.rsplit(".", 1)[-1].lower()
    if any(w in k for w in ("miou", "macc", "iou", "recall", "ssim", "ratio_unused")):
        return 0.0 <= v <= 1.0
    if "psnr" in k:
        return 5.0 <= v <= 60.0
    if "percent" in k:
        return 0.0 <= v <= 100.0
    if k.endswith(("_s", "seconds", "_ms", "ms_per_view", "it_per_s", "_mb")):
        return v >= 0.0                                   # 0: not measured (e.g. train_s of a reused model)
    if "gaussians" in k:
        return v >= 0
    return True


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    if not all((DATA / s).is_dir() for s in SCENES):
        pytest.skip(f"{DATA}: the shared scenes are absent")
    out = tmp_path_factory.mktemp("report")
    rc = rp.main(["--quick", "--out", str(out)])
    return out, rc


@pytest.mark.slow
def test_quick_report_has_every_section(quick_report):
    out, rc = quick_report
    text = (out / "REPORT.md").read_text()
    assert rc == 0, text[-3000:]
    for s in SECTIONS:
        assert s in text, s
    assert "Stage `" not in text                                       # no section stands in for a failed stage
    figures = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(figures) == 2 * len(SCENES)                             # a sweep plot and a strip per scene
    for f in figures:
        assert (out / f).is_file() and (out / f).stat().st_size > 1000, f


@pytest.mark.slow
def test_quick_report_figures_are_finite_and_plausible(quick_report):
    out, _ = quick_report
    res = json.loads((out / "results.json").read_text())
    for key in ("environment", "run", "training", "segmentation", "comparison", "everything", "timing", "pruning",
                "affordance", "pictures", "alpha_segmentation"):
        assert res.get(key), key
    assert set(res["training"]) == set(SCENES) and set(res["pruning"]) == set(SCENES)
    seg = res["segmentation"]
    assert {r["K"] for r in seg["k_rows"]} == {1, 3, 5, 10, "all"} and {r["masks"] for r in seg["k_rows"]} == \
        {"clean", "noisy"}
    assert seg["completion"] and len(seg["prompts"]) == 2
    for t in res["training"].values():
        assert 5 <= t["psnr"] <= 60 and 0 <= t["ssim"] <= 1 and t["gaussians"] > 0 and t["it_per_s"] > 0
    for r in res["timing"]["rows"]:
        assert r["seconds"] > 0 and r["ms_per_view"] > 0
    for s in res["run"]["stages"]:
        assert s["status"] == "ran" and (s["seconds"] > 0 or not s["cmds"]), s
    nums = rp.numbers({k: v for k, v in res.items() if k not in ("environment", "run")})
    assert len(nums) > 200
    bad = {k: v for k, v in nums.items() if not (math.isfinite(v) and plausible(k, v))}
    assert not bad, bad
    for k in ("object_miou", "scene_miou"):
        assert all(0 <= r[k] <= 1 for r in seg["k_rows"] + seg["completion"] + seg["prompts"])
