"""utils.outputs.OutputFolder on its own: ownership, stale files, the two swap modes, repairs after kills, and
utils.errors.cli_main's one-line errors. Pure file-system tests (no torch), fast."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import utils.outputs as outputs
from utils.errors import Terminated, UserError, cli_main, signals_as_exceptions
from utils.outputs import RECORD_NAME, ForeignFilesWarning, OutputFolder, read_record, tree

pytestmark = pytest.mark.filterwarnings("ignore::utils.outputs.ForeignFilesWarning")


def write(folder: OutputFolder, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        folder.path(name).write_text(text)
    return folder.commit()


def files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_first_run_rerun_and_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OutputFolder(out, "t.py") as o:
        assert write(o, {"a.txt": "1", "sub/b.txt": "2"}) == ["a.txt", "sub/b.txt"]
    assert read_record(out) == {"t.py": ["a.txt", "sub/b.txt"]}
    with OutputFolder(out, "t.py") as o:
        write(o, {"a.txt": "new"})
    assert files(out) == {"a.txt": "new", RECORD_NAME: (out / RECORD_NAME).read_text()}
    assert not (out / "sub").exists(), "own stale file (and its emptied folder) removed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_whole_folder_swap_is_one_exchange(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    with OutputFolder(out, "t.py") as o:
        write(o, {"a.txt": "1"})
    calls = []
    real = outputs._exchange
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: calls.append((a, b)) or real(a, b))
    inode = out.stat().st_ino
    with OutputFolder(out, "t.py") as o:
        write(o, {"a.txt": "2"})
    assert len(calls) == 1 and calls[0][1] == out.resolve()
    assert out.stat().st_ino != inode and (out / "a.txt").read_text() == "2"


def test_two_rename_fallback_and_its_repair(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    with OutputFolder(out, "t.py") as o:
        write(o, {"a.txt": "1"})
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    with OutputFolder(out, "t.py") as o:
        write(o, {"a.txt": "2"})
    assert (out / "a.txt").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # a run killed between the two renames: the previous result is aside, OUT is missing
    aside = tmp_path / f".out.gs_old-t.py-{dead_pid()}-abc"
    out.rename(aside)
    with pytest.warns(UserWarning, match="restored the previous result"):
        with OutputFolder(out, "t.py") as o:
            assert (out / "a.txt").read_text() == "2"
            raise_later = o
    assert not aside.exists() and raise_later.staging is None


def test_dead_runs_staging_is_removed_live_ones_stay(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = tmp_path / f".out.gs_staging-t.py-{dead_pid()}-xyz"
    live = tmp_path / f".out.gs_staging-t.py-{os.getppid()}-xyz"
    other_tool = tmp_path / f".out.gs_staging-u.py-{dead_pid()}-xyz"
    for d in (dead, live, other_tool):
        d.mkdir()
        (d / "half.ply").write_text("x")
    with pytest.warns(UserWarning, match="left by a killed run of t.py"):
        with OutputFolder(out, "t.py") as o:
            write(o, {"a.txt": "1"})
    assert not dead.exists() and live.exists() and other_tool.exists()


def test_foreign_files_stay_with_one_warning_and_force_rules(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user")
    with pytest.raises(UserError, match="holds no output of t.py.*--force"):
        OutputFolder(out, "t.py").__enter__()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with OutputFolder(out, "t.py", force=True) as o:
            write(o, {"a.txt": "1"})
        with OutputFolder(out, "t.py") as o:      # ours now: no --force needed
            write(o, {"b.txt": "2"})
    assert [x.category for x in w] == [ForeignFilesWarning, ForeignFilesWarning]
    assert (out / "mine.txt").read_text() == "user" and not (out / "a.txt").exists()
    # a same-named file the tool did not write is replaced only with --force
    (out / "c.txt").write_text("user's c")
    with pytest.raises(UserError, match="c.txt: exists and was not written by t.py"):
        with OutputFolder(out, "t.py") as o:
            write(o, {"c.txt": "tool's c"})
    assert (out / "c.txt").read_text() == "user's c" and (out / "b.txt").read_text() == "2"
    assert not [p for p in tmp_path.iterdir() if "gs_" in p.name]


def test_inputs_rule(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "masks").mkdir(parents=True)
    for out, what in ((src, "is the input"), (src / "masks" / "o", "lies inside"), (tmp_path, "contains")):
        with pytest.raises(UserError, match=what):
            OutputFolder(out, "t.py", inputs=[src]).__enter__()
    with pytest.raises(UserError, match="output file lies inside the input"):
        OutputFolder(src / "masks", "t.py", inputs=[src / "masks"], files=["e.json"]).__enter__()
    OutputFolder(src, "t.py", inputs=[src / "labels.npy"], files=["e.json"]).__enter__()._discard()  # beside: fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_shared_mode_never_deletes(tmp_path: Path) -> None:
    model = tmp_path / "model"
    with OutputFolder(model, "train.py") as o:
        write(o, {"cfg_args": "x", "point_cloud/iteration_1/point_cloud.ply": "p"})
    for split in ("results.json", "results_train.json"):
        with OutputFolder(model, "metrics.py", files=[split]) as o:
            write(o, {split: "m"})
    assert {"results.json", "results_train.json", "cfg_args"} <= set(files(model))
    assert read_record(model)["metrics.py"] == ["results.json", "results_train.json"]
    with OutputFolder(model, "train.py") as o:     # train.py again: metrics.py's files are not its own
        write(o, {"cfg_args": "y"})
    assert (model / "results.json").read_text() == "m"
    assert not (model / "point_cloud").exists()


def test_keep_previous_carries_files_in_both_modes(tmp_path: Path) -> None:
    out = tmp_path / "m"
    with OutputFolder(out, "t.py") as o:
        write(o, {"chkpnt2.pth": "c", "point_cloud/iteration_2/p.ply": "2"})
    with OutputFolder(out, "t.py", keep_previous=True) as o:      # whole-folder swap
        write(o, {"point_cloud/iteration_6/p.ply": "6"})
    assert set(files(out)) >= {"chkpnt2.pth", "point_cloud/iteration_2/p.ply", "point_cloud/iteration_6/p.ply"}
    (out / "user.txt").write_text("u")
    with OutputFolder(out, "t.py", keep_previous=True) as o:      # per file (a foreign file is there)
        write(o, {"point_cloud/iteration_9/p.ply": "9"})
    assert set(read_record(out)["t.py"]) == {"chkpnt2.pth", "point_cloud/iteration_2/p.ply",
                                             "point_cloud/iteration_6/p.ply", "point_cloud/iteration_9/p.ply"}


def test_tampered_record_cannot_delete_outside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out.mkdir()
    (out / RECORD_NAME).write_text(json.dumps({"format": outputs.RECORD_FORMAT, "tools": {
        "t.py": {"files": ["../victim.txt", "/etc/hostname", "ok.txt"]}}}))
    (out / "ok.txt").write_text("old")
    with OutputFolder(out, "t.py") as o:
        write(o, {"new.txt": "n"})
    assert victim.read_text() == "keep me" and not (out / "ok.txt").exists()


def test_symlinked_out_swaps_the_target(tmp_path: Path) -> None:
    real = tmp_path / "real"
    link = tmp_path / "link"
    with OutputFolder(real, "t.py") as o:
        write(o, {"a.txt": "1"})
    link.symlink_to(real)
    with OutputFolder(link, "t.py") as o:
        write(o, {"a.txt": "2"})
    assert link.is_symlink() and (real / "a.txt").read_text() == "2"


def test_file_in_the_way_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "renders").write_text("a user's file named like a folder")
    with pytest.raises(UserError, match="renders: is in the way"):
        with OutputFolder(out, "t.py", force=True) as o:
            write(o, {"renders/x.png": "x"})
    assert files(out) == {"renders": "a user's file named like a folder"}


@pytest.mark.parametrize("name", ["big.ply", ".big.ply.k2j4h5g6.tmp"])   # the file or its atomic_path temp twin
def test_os_error_names_the_final_path(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(OSError) as e:
        with OutputFolder(out, "t.py") as o:
            raise OSError(28, "No space left on device", str(o.path("sub") / name))
    assert e.value.filename == str(out / "sub" / "big.ply") and e.value.errno == 28
    assert list(tmp_path.iterdir()) == []


def test_signals_wait_for_the_commit(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    real = outputs._write_json

    def slow_record(path, data):
        os.kill(os.getpid(), signal.SIGTERM)      # arrives in the middle of the commit
        real(path, data)

    monkeypatch.setattr(outputs, "_write_json", slow_record)
    with pytest.raises(Terminated):
        with signals_as_exceptions():
            with OutputFolder(out, "t.py") as o:
                o.path("a.txt").write_text("1")
                o.commit()
    assert (out / "a.txt").read_text() == "1" and read_record(out) == {"t.py": ["a.txt"]}


def test_mount_point_out_stages_inside(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        for text in ("1", "2"):
            with OutputFolder(disk, "t.py") as o:
                assert o.staging is not None and o.staging.parent == disk.resolve()
                write(o, {"a.txt": text})
        assert files(disk) == {"a.txt": "2", RECORD_NAME: (disk / RECORD_NAME).read_text()}
        assert tree(disk) == {"a.txt", RECORD_NAME}
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ---------------------------------------------------------------------------------------------------------
# cli_main
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exc,code,start", [
    (UserError("x.ply: broken; fix it"), 2, "error: x.ply: broken; fix it"),
    (OSError(28, "No space left on device", "/o/a.ply"), 2, "error: /o/a.ply: No space left on device (ENOSPC); "
                                                            "the disk is full; free some space"),
    (PermissionError(13, "Permission denied", "/o"), 2, "error: /o: Permission denied (EACCES)"),
    (OSError(30, "Read-only file system", "/o"), 2, "error: /o: Read-only file system (EROFS)"),
    (KeyError("k"), 1, "error: internal error (KeyError: 'k')"),
    (KeyboardInterrupt(), 130, "interrupted (SIGINT)"),
    (Terminated(), 143, "terminated (SIGTERM)"),
])
def test_cli_main_maps_every_failure_to_one_line(capsys, exc, code, start) -> None:
    @cli_main
    def main(argv=None):
        raise exc

    with pytest.raises(SystemExit) as e:
        main([])
    err = capsys.readouterr().err
    assert e.value.code == code and len(err.strip().splitlines()) == 1 and err.startswith(start), err


def test_cli_main_debug_reraises_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)

    @cli_main
    def main(argv=None):
        assert signal.getsignal(signal.SIGTERM) is not before
        raise KeyError("k")

    with pytest.raises(KeyError):
        main(["--debug"])
    assert signal.getsignal(signal.SIGTERM) is before


def test_utils_is_the_ground_floor() -> None:
    """utils.outputs and utils.errors import nothing from the layers above (arguments, scene, jobs...)."""
    probe = ("import sys, utils.outputs, utils.errors; print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'arguments', 'scene', 'gaussian_renderer', 'segmentation', 'training', 'pruning', 'features', "
             "'affordance', 'torch'}))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
