"""All-or-nothing outputs that never delete or mix what is not the tool's own: the one way every script writes.

    with OutputFolder(out, tool="segment.py", inputs=[masks, source, model / "point_cloud"], force=False) as o:
        gaussians.save_ply(o.path("extracted.ply"))    # a path inside the staging folder (sub-folders allowed)
        ...
        o.commit()                                     # ownership record, then the swap

Guarantees (README "What a run guarantees"):

* Ownership. ``OUT/.gs_outputs.json`` (one format for every tool) lists, per tool, the files that tool wrote,
  sub-folders included. A re-run of the same tool replaces its own files and deletes its own stale ones.
  Files the record does not give to the tool are never deleted nor replaced: they stay, with one warning.
  Writing into a non-empty folder that holds no record of the tool needs ``force``; the tool's files are
  then added beside the others (a file of the same name is replaced only with ``force``).
* Inputs. OUT must not be, contain, or lie inside an input (shared mode: the output files must not be or lie
  inside one): :class:`UserError` before anything is created.
* All-or-nothing. Files go to a staging folder beside OUT (``.OUT.gs_staging-TOOL-PID-xxxx``; inside OUT when
  OUT is a mount point) and ``commit`` swaps them in: one atomic ``renameat2(RENAME_EXCHANGE)`` of the whole
  folder when OUT holds nothing foreign (two renames where the kernel lacks it: a run killed between them is
  repaired by the next one), else one ``os.replace`` per file. SIGINT/SIGTERM are held back while ``commit``
  runs. Anything that ends the run before ``commit`` (an exception, Ctrl-C, SIGTERM) leaves OUT as it was and
  removes the staging folder and the parent folders created for it. A SIGKILLed run's staging folder (its
  pid is dead) is removed by the next run of the same tool into the same OUT.
* Shared mode (``files=[names]``): the tool adds named files to a folder that another tool owns (metrics.py's
  results.json in a model folder, eval.json beside labels.npy). Only those files are replaced (``force`` for
  one that exists and is not the tool's); nothing else is touched or deleted.

This module sits at the ground floor (it imports nothing from the project but :mod:`utils.errors`).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import tempfile
import time
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Optional, Sequence

from utils.errors import UserError, signal_handlers

RECORD_NAME = ".gs_outputs.json"
RECORD_FORMAT = "gs-segment output record"
RECORD_VERSION = 1
_STAGING = "gs_staging"
_OLD = "gs_old"

PathLike = str | os.PathLike


class ForeignFilesWarning(UserWarning):
    """An output folder holds files this tool did not write: they stay (a caller may silence this warning
    when it knows the folder, e.g. the demo's own nested folders)."""


def _real(p: PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(p))))


def _inside(a: Path, b: Path) -> bool:
    """a is b or lies inside b (both resolved)."""
    return a == b or b in a.parents


def _safe(tool: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", tool)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def _clean_rel(name: Any) -> Optional[str]:
    """A recorded file name as a safe relative posix path, or None for anything else (tampered records)."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\\" in name:
        return None
    p = PurePosixPath(name)
    if ".." in p.parts or p.as_posix() != name.rstrip("/"):
        return None
    return p.as_posix()


def tree(root: Path, skip_top: Sequence[str] = ()) -> set[str]:
    """Relative posix paths of every file, symlink and empty folder below ``root`` (empty folders end in
    '/'); symlinked folders are entries, never followed. Top-level names starting with ``skip_top`` are left
    out (the record, staging folders)."""
    out: set[str] = set()
    if not root.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)) or (rel == Path(".") and d.startswith(tuple(skip_top))):
                dirnames.remove(d)
                if os.path.islink(os.path.join(dirpath, d)):
                    filenames.append(d)
        names = [f for f in filenames if not (rel == Path(".") and f.startswith(tuple(skip_top)))]
        out.update((rel / f).as_posix() for f in names)
        if not dirnames and not filenames and rel != Path("."):
            out.add(rel.as_posix() + "/")
    return out


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EBUSY):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while a commit runs, so that it is never cut in half; a signal that arrived
    is raised again right after (a Python-level hold: blocking with pthread_sigmask would only move the signal
    to another thread, e.g. an OpenMP worker)."""
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    try:
        with signal_handlers({signal.SIGINT: hold, signal.SIGTERM: hold}):
            yield
    finally:
        if pending:
            signal.raise_signal(pending[0])


def _write_json(path: Path, data: Any) -> None:
    """The record, atomically (utils.io's writer, kept local: this module depends on nothing but errors)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=1) + "\n")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_record(folder: PathLike) -> Optional[dict[str, list[str]]]:
    """{tool: [files]} from ``folder/.gs_outputs.json``; {} when there is none; None when the file exists but
    is not a record (then it is somebody else's file)."""
    path = Path(folder) / RECORD_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and data.get("format") == RECORD_FORMAT and isinstance(data.get("tools"), dict)):
        return None
    tools: dict[str, list[str]] = {}
    for tool, entry in data["tools"].items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if isinstance(tool, str) and isinstance(files, list):
            tools[tool] = sorted({r for r in map(_clean_rel, files) if r})
    return tools


def _record_json(tools: dict[str, list[str]]) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return {"format": RECORD_FORMAT, "version": RECORD_VERSION,
            "note": "files written by each tool; a tool deletes or replaces only its own files",
            "tools": {t: {"files": sorted(f), "updated": stamp} for t, f in sorted(tools.items()) if f}}


class OutputFolder:
    """Stage a run's outputs and swap them into ``out`` at :meth:`commit` (module docstring: the rules).

    out: the output folder (shared mode: the folder receiving ``files``)
    tool: the name the record files the outputs under (the script name, e.g. "segment.py")
    inputs: files and folders the run reads (empty entries are ignored)
    force: allow writing into a non-empty folder that is not the tool's, replacing same-named files
    files: shared mode: the only names (relative to ``out``) the tool writes
    keep_previous: keep the tool's previous files that this run does not rewrite (train.py resuming)
    flag: the option that names ``out`` in this tool's messages (train.py: "-m"; None: the folder is fixed)
    """

    def __init__(self, out: PathLike, tool: str, inputs: Iterable[Optional[PathLike]] = (), force: bool = False,
                 files: Optional[Sequence[str]] = None, keep_previous: bool = False,
                 flag: Optional[str] = "--out") -> None:
        self.display = Path(out)
        self.flag = flag
        self.out = _real(out)
        self.tool = tool
        self.inputs = [Path(p) for p in inputs if p]
        self.force = force
        self.files = None if files is None else [PurePosixPath(f).as_posix() for f in files]
        self.keep_previous = keep_previous or files is not None
        self.staging: Optional[Path] = None
        self.written: list[str] = []
        self._committed = False
        self._created: list[Path] = []
        self._tools: dict[str, list[str]] = {}
        self._present: set[str] = set()
        self._own: set[str] = set()
        self._whole = False
        self._inner = False      # staging inside out (out is a mount point)
        self.foreign: list[str] = []  # files (relative) in out that are not this tool's, known after __enter__
        self._warn_foreign = False    # warned once the run is committed (an error is then the only line)

    # ----- setup ------------------------------------------------------------------------------------------
    def __enter__(self) -> "OutputFolder":
        try:
            self._prepare()
        except BaseException:
            self._discard()
            raise
        return self

    def _prefix(self, kind: str) -> str:
        base = "." if self._inner else f".{self.out.name}."
        return f"{base}{kind}-{_safe(self.tool)}-"

    def _prepare(self) -> None:
        out, shown = self.out, self.display
        if out.parent == out:
            raise UserError(f"{shown}: a file-system root cannot be an output folder; {self._another()}")
        self._check_inputs()
        for p in (out, *out.parents):  # the first existing ancestor must be a folder
            if p.exists() or p.is_symlink():
                if not p.is_dir():
                    what = "is" if p == out else "lies inside"
                    raise UserError(f"{shown}: {what} {'a file' if p == out else f'the file {p}'}, not a folder; "
                                    f"{self._another()}")
                break
        self._inner = out.is_dir() and os.path.ismount(out)
        self._repair_leftovers()
        tools = read_record(out)
        if tools is None:
            raise UserError(f"{shown / RECORD_NAME}: exists but is not an output record of this project; "
                            f"{self._another()}")
        self._tools = tools
        skip = (RECORD_NAME, f".{_STAGING}-", f".{_OLD}-")
        self._present = tree(out, skip) if out.is_dir() else set()
        self._own = set(tools.get(self.tool, [])) & self._present
        foreign = sorted(self._present - self._own)
        self.foreign = foreign
        if self.files is None:
            self._check_folder(foreign)
        else:
            self._check_files()
        self._whole = (self.files is None and not foreign and not self._inner
                       and not _inside(_real(os.getcwd()), out))
        self._make_staging()

    def _check_inputs(self) -> None:
        what = "output folder" if self.files is None else "output file"
        targets = [(self.out, self.display)] if self.files is None else \
            [(_real(self.out / f), self.display / f) for f in self.files]
        found = []   # (rank, where, relation, input): the most telling overlap is reported
        for inp in self.inputs:
            r = _real(inp)
            for t, where in targets:
                if t == r:
                    found.append((0, str(where), "is", str(inp)))
                elif _inside(t, r):
                    found.append((1, str(where), "lies inside", str(inp)))
                elif self.files is None and _inside(r, t):
                    found.append((2, str(where), "contains", str(inp)))
        if found:
            _, where, rel, inp = min(found, key=lambda x: (x[0], -len(x[3])))
            fix = (f"pass {self.flag} a {'folder' if self.files is None else 'path'} outside the inputs" if self.flag
                   else "use other inputs")
            raise UserError(f"{where}: the {what} {rel} the input {inp}; outputs never go into (or around) "
                            f"an input: {fix}")

    def _owner_of(self, rel: str) -> str:
        for t, files in self._tools.items():
            if rel in files:
                return t
        return ""

    def _another(self) -> str:
        return f"pass {self.flag} a new folder" if self.flag else "move it away"

    def _check_folder(self, foreign: list[str]) -> None:
        if not foreign:
            return
        first = next((f for f in foreign if not any(part.startswith(".") for part in f.split("/"))), foreign[0])
        ex = first.rstrip("/")
        by = self._owner_of(first)
        example = f"{ex} (written by {by})" if by else ex
        if self.tool not in self._tools and not self.force:
            raise UserError(f"{self.display}: folder is not empty and holds no output of {self.tool} ({len(foreign)} "
                            f"other file(s), e.g. {example}); {self._another()}, or --force to add "
                            f"{self.tool}'s files beside them (nothing of theirs is deleted)")
        self._warn_foreign = True

    def _check_files(self) -> None:
        assert self.files is not None
        for f in self.files:
            target = self.out / f
            if target.is_dir() and not target.is_symlink():
                fix = f"pass {self.flag} a file path" if self.flag else "move it away"
                raise UserError(f"{self.display / f}: is a folder; {fix}")
            if f in self._present and f not in self._own and not self.force:
                by = self._owner_of(f)
                where = f"pass another {self.flag}" if self.flag else "move it away"
                raise UserError(f"{self.display / f}: exists and was not written by {self.tool}"
                                f"{f' (written by {by})' if by else ''}; {where}, or --force to replace it")

    def _repair_leftovers(self) -> None:
        """Remove the staging folders of dead runs of this tool; restore a result a killed swap left aside."""
        places = [(self.out.parent, f".{self.out.name}.")]
        if self._inner:
            places.append((self.out, "."))
        for folder, base in places:
            if not folder.is_dir():
                continue
            for kind in (_OLD, _STAGING):
                prefix = f"{base}{kind}-{_safe(self.tool)}-"
                for p in sorted(folder.iterdir()):
                    if not p.name.startswith(prefix):
                        continue
                    pid = p.name[len(prefix):].split("-")[0]
                    if not pid.isdigit() or _pid_alive(int(pid)):
                        continue
                    if kind == _OLD and not self.out.exists():
                        os.rename(p, self.out)      # killed between the two renames: the previous result
                        warnings.warn(f"{self.display}: restored the previous result that an interrupted run of "
                                      f"{self.tool} (pid {pid}) had moved aside", stacklevel=5)
                        continue
                    shutil.rmtree(p, ignore_errors=True)
                    warnings.warn(f"{self.display}: removed {p.name}, left by a killed run of {self.tool} (pid "
                                  f"{pid})", stacklevel=5)

    def _make_staging(self) -> None:
        parent = self.out if self._inner else self.out.parent
        missing = [p for p in (parent, *parent.parents) if not p.exists()]
        try:
            for p in reversed(missing):
                p.mkdir()
                self._created.append(p)
            self.staging = Path(tempfile.mkdtemp(prefix=self._prefix(_STAGING) + f"{os.getpid()}-", dir=parent))
            mode = (self.out.stat().st_mode & 0o7777) if self.out.is_dir() else 0o777 & ~_umask()
            os.chmod(self.staging, mode | 0o700)
        except OSError as e:
            where = f"pass {self.flag} a folder you can write" if self.flag else "check the folder's permissions"
            raise UserError(f"{self.display}: cannot write here ({e.strerror or e}); {where}") from None

    # ----- during the run ---------------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        """The staging folder (tools that lay out many files themselves, e.g. train.py's model folder)."""
        if self.staging is None or self.files is not None:
            raise RuntimeError("OutputFolder.dir: use it inside `with`, and not in shared mode")
        return self.staging

    def path(self, rel: PathLike) -> Path:
        """Where to write ``rel`` (a relative path; sub-folders are created) during the run."""
        if self.staging is None or self._committed:
            raise RuntimeError("OutputFolder.path: only inside `with`, before commit()")
        p = PurePosixPath(Path(rel).as_posix())
        if p.is_absolute() or ".." in p.parts or not p.parts or p.as_posix() in (".", RECORD_NAME):
            raise ValueError(f"{rel}: not a plain relative output name")
        if self.files is not None and p.as_posix() not in self.files:
            raise ValueError(f"{rel}: not one of the declared files {self.files}")
        full = self.staging / p
        full.parent.mkdir(parents=True, exist_ok=True)
        return full

    # ----- the swap ---------------------------------------------------------------------------------------
    def commit(self) -> list[str]:
        """Write the ownership record and swap the staged files in; returns the files written (relative)."""
        if self.staging is None or self._committed:
            raise RuntimeError("OutputFolder.commit: only once, inside `with`")
        with _signals_held():
            staged = sorted(f for f in tree(self.staging) if not f.endswith("/"))
            if self._whole:
                self._commit_whole(staged)
            else:
                self._commit_per_file(staged)
            self.written = staged
            self._committed = True
            self.staging = None
        stay = sorted(set(self.foreign) - set(staged))
        if self._warn_foreign and stay:
            by = self._owner_of(stay[0])
            warnings.warn(f"{self.display}: {len(stay)} file(s) not written by {self.tool} stay untouched (e.g. "
                          f"{stay[0].rstrip('/')}{f' (written by {by})' if by else ''}); they are not part of this "
                          "run's result", ForeignFilesWarning, stacklevel=2)
        return self.written

    def _kept(self, staged: Iterable[str]) -> set[str]:
        return (self._own - set(staged)) if self.keep_previous else set()

    def _tools_after(self, mine: set[str], present: set[str]) -> dict[str, list[str]]:
        tools = {t: sorted(set(f) & present - mine) for t, f in self._tools.items() if t != self.tool}
        tools[self.tool] = sorted(mine)
        return tools

    def _commit_whole(self, staged: list[str]) -> None:
        assert self.staging is not None
        out, staging = self.out, self.staging
        kept = self._kept(staged)
        for rel in kept:  # carried over into the new folder (hard links: no copy, the old inode is untouched)
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(out / rel, dst, follow_symlinks=False)
            except OSError:
                shutil.copy2(out / rel, dst, follow_symlinks=False)
        mine = set(staged) | kept
        _write_json(staging / RECORD_NAME, _record_json(self._tools_after(mine, mine)))
        if not out.exists():
            os.rename(staging, out)
        elif _exchange(staging, out):
            shutil.rmtree(staging, ignore_errors=True)      # the previous result, now at the staging path
        else:
            old = Path(tempfile.mkdtemp(prefix=self._prefix(_OLD) + f"{os.getpid()}-", dir=out.parent))
            os.rmdir(old)
            os.rename(out, old)
            os.rename(staging, out)
            shutil.rmtree(old, ignore_errors=True)

    def _commit_per_file(self, staged: list[str]) -> None:
        assert self.staging is not None
        out, staging = self.out, self.staging
        others = self._present - self._own
        clash = [f for f in staged if f in others]
        for f in staged:  # a file where a folder is needed, or the reverse: refuse before touching anything
            parts = PurePosixPath(f).parents
            blocked = [q for q in parts if q.as_posix() != "." and (out / q).exists() and not (out / q).is_dir()]
            if blocked or ((out / f).is_dir() and not (out / f).is_symlink()):
                raise UserError(f"{self.display / (blocked[0].as_posix() if blocked else f)}: is in the way of "
                                f"{self.tool}'s output {f}; {self._another()}")
        if clash and not self.force:
            raise UserError(f"{self.display / clash[0]}: exists and was not written by {self.tool}; "
                            f"{self._another()}, or --force to replace it")
        if clash:
            warnings.warn(f"{self.display}: --force replaced {len(clash)} file(s) that {self.tool} did not write "
                          f"(e.g. {clash[0]})", stacklevel=4)
        kept = self._kept(staged)
        stale = sorted(self._own - set(staged) - kept)
        out.mkdir(exist_ok=True)
        present_after = (self._present | set(staged)) - set(stale)
        # first a record that owns both generations: a kill in the middle leaves nothing unaccounted for
        _write_json(out / RECORD_NAME, _record_json(self._tools_after(self._own | set(staged), present_after
                                                                      | self._own)))
        for f in staged:
            dst = out / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / f, dst)
        for f in stale:
            p = out / f
            if p.is_symlink() or p.is_file():
                p.unlink()
            for d in PurePosixPath(f).parents:  # folders emptied by the removal
                if d.as_posix() == ".":
                    break
                try:
                    (out / d).rmdir()
                except OSError:
                    break
        with contextlib.suppress(OSError):  # the first record stays valid (it only over-lists deleted files)
            _write_json(out / RECORD_NAME, _record_json(self._tools_after(set(staged) | kept, present_after)))
        shutil.rmtree(staging, ignore_errors=True)

    # ----- failure ----------------------------------------------------------------------------------------
    def _discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        for p in reversed(self._created):
            with contextlib.suppress(OSError):
                p.rmdir()
        self._created = []

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        staging = self.staging
        if not self._committed:
            self._discard()
        if isinstance(exc, OSError) and exc.filename and staging is not None:
            try:
                rel = Path(os.path.abspath(exc.filename)).relative_to(staging)
            except ValueError:
                return False
            m = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", rel.name)   # utils.io.atomic_path's temp name
            if m:
                rel = rel.with_name(m.group(1))
            # name the file the user asked for, not its staging twin
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.display / rel)) from exc
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
