"""Build and load the CPU rasterizer extension (submodules/cpu_rasterizer/) on first use.

The build is a JIT ``torch.utils.cpp_extension.load`` into a per-user cache keyed by a hash of the sources,
flags and torch version, so importing this package never compiles anything and a rebuilt torch or edited
source gets a fresh build directory. ``python -m gaussian_renderer.native`` prebuilds it (CI, installs).

Why the extra locking: torch's own build lock is a plain file that an interrupted build leaves behind, after
which every later load waits forever. We serialise builds with an ``fcntl`` lock (released by the kernel
when its process dies); whoever holds it knows any torch lock file left in the directory is stale.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import torch

SOURCE_DIR = Path(__file__).resolve().parents[1] / "submodules" / "cpu_rasterizer"
SOURCES = ("rasterizer.cpp", "projection.cpp", "sh.cpp")
HEADERS = ("common.h", "simd.h")  # included by the sources: part of the build key too
OP_NAMESPACE = "gs_cpu_rasterizer"
# -march=native: the 8-lane vector code is ~4x faster with AVX2 than as SSE pairs (measured); the build is
# per machine anyway. -ffp-contract=off keeps FMA contraction from making vector and scalar results differ.
CFLAGS = ("-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-march=native", "-Wno-psabi")
LDFLAGS = ("-fopenmp",)
BUILD_TIMEOUT_S = 600.0

_lock = threading.Lock()
_ops: Optional[Any] = None


class NativeBuildError(RuntimeError):
    """The C++ extension failed to compile; the message carries the compiler's output."""


def cache_root() -> Path:
    """Build cache: $GS_SEGMENT_CACHE, else $XDG_CACHE_HOME/gs_segment, else ~/.cache/gs_segment."""
    env = os.environ.get("GS_SEGMENT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "gs_segment"


def _build_key() -> str:
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((SOURCE_DIR / name).read_bytes())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    h.update(torch.__version__.encode())
    h.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    h.update(_cpu_signature().encode())  # -march=native: a cache shared by different CPUs must not mix builds
    return h.hexdigest()[:16]


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return platform.machine() + line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def build_dir() -> Path:
    return cache_root() / f"cpu_rasterizer_{_build_key()}"


def _library_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.so"


def _acquire(lock_file: Path, timeout_s: float) -> int:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise NativeBuildError(
                    f"{lock_file}: another process has been building the CPU rasterizer for over "
                    f"{timeout_s:.0f} s; wait for it or kill it, then retry") from None
            time.sleep(0.2)


def build(verbose: bool = False) -> Path:
    """Compile the extension if needed and return the shared library's path (safe across processes)."""
    from torch.utils import cpp_extension  # heavy import, only when building

    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    name = f"gs_cpu_rasterizer_{directory.name.rsplit('_', 1)[-1]}"
    lib = _library_path(directory, name)
    if lib.exists():
        return lib
    fd = _acquire(directory / "build.flock", BUILD_TIMEOUT_S)
    try:
        if lib.exists():  # built by another process while we waited
            return lib
        stale = directory / "lock"  # torch's FileBaton; nobody else can be building while we hold the flock
        if stale.exists():
            stale.unlink()
        # The first build is ~30 s of silence otherwise: say what is happening (stderr, so --quiet stdout stays clean).
        print("building the CPU rasterizer (~30 s, once) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            cpp_extension.load(
                name=name,
                sources=[str(SOURCE_DIR / s) for s in SOURCES],
                extra_cflags=list(CFLAGS),
                extra_ldflags=list(LDFLAGS),
                build_directory=str(directory),
                is_python_module=False,
                verbose=verbose,
            )
        except (RuntimeError, OSError, ImportError, ValueError) as e:
            raise NativeBuildError(f"building the CPU rasterizer in {directory} failed:\n{e}") from e
        print(f"built the CPU rasterizer in {time.perf_counter() - t0:.1f} s ({lib})", file=sys.stderr, flush=True)
        if not lib.exists():
            raise NativeBuildError(f"{lib}: the build finished but produced no library")
        return lib
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def ops(verbose: bool = False) -> Any:
    """The loaded op namespace (``torch.ops.gs_cpu_rasterizer``), building the library on first use."""
    global _ops
    with _lock:
        if _ops is None:
            lib = build(verbose=verbose)
            if not hasattr(torch.ops, OP_NAMESPACE) or not _has_ops():
                torch.ops.load_library(str(lib))
            _ops = getattr(torch.ops, OP_NAMESPACE)
        return _ops


def _has_ops() -> bool:
    try:
        getattr(getattr(torch.ops, OP_NAMESPACE), "forward")
        return True
    except (AttributeError, RuntimeError):
        return False


def is_loaded() -> bool:
    return _ops is not None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Prebuild the CPU rasterizer extension into the user cache.")
    parser.add_argument("--quiet", action="store_true", help="print only the library path")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        lib = build(verbose=not args.quiet)
        ops()
    except NativeBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(lib if args.quiet else f"CPU rasterizer ready: {lib} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
