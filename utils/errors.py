"""How every script fails: one line on stderr naming the file and the fix, a documented exit code, no traceback.

Exit codes (the same for every script):

    0    success
    1    internal error (a bug: the line says so; ``--debug`` shows the traceback); prune.py also uses 1 when the
         lossless guarantee could not be verified
    2    a problem the user can fix: bad flag or input, an output folder that is not ours, an unavailable device
         or backend, and operating-system errors while reading or writing (disk full, permission denied,
         read-only file system ...)
    130  interrupted by SIGINT (Ctrl-C)
    143  terminated by SIGTERM

``cli_main`` is the one wrapper every script's ``main(argv)`` goes through; it also turns SIGTERM into an
exception (:class:`Terminated`) so that an interrupted run unwinds like Ctrl-C and removes its staging folder
(see :mod:`utils.outputs`).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import signal
import sys
import threading
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., int | None])

EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class UserError(ValueError):
    """A problem the user can fix (bad path, corrupt file, unsupported camera...): printed as one line, exit 2."""


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives (like KeyboardInterrupt for SIGINT)."""


# errno -> what to do about it (the path is named by the error itself)
_OS_FIXES = {
    errno.ENOSPC: "the disk is full; free some space or write the output to another disk",
    errno.EDQUOT: "the disk quota is exceeded; free some space or write the output to another disk",
    errno.EACCES: "write the output to a folder you can write, or fix the file's permissions",
    errno.EPERM: "write the output to a folder you can write, or fix the file's permissions",
    errno.EROFS: "write the output to a writable disk",
    errno.ENAMETOOLONG: "use a shorter output path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.ENFILE: "too many open files in the system; close other programs",
    errno.EIO: "input/output error; check the disk",
    errno.ENOTDIR: "a path component is a file, not a folder; pass another path",
    errno.EISDIR: "is a folder where a file was expected; pass another path",
    errno.ENOENT: "not found; check the path",
}


def os_error_line(e: OSError) -> str:
    """``<path>: <what> (<errno name>); <fix>`` for an OSError (without the ``error: `` prefix)."""
    where = e.filename if e.filename is not None else None
    code = e.errno
    what = e.strerror or str(e) or type(e).__name__
    name = errno.errorcode.get(code, "") if code is not None else ""
    fix = _OS_FIXES.get(code, "check the path, free disk space and permissions") if code is not None else \
        "the write was cut short (is the disk full?); check free disk space and permissions"
    head = f"{where}: " if where is not None else ""
    return f"{head}{what}{f' ({name})' if name else ''}; {fix}"


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:limit]


@contextlib.contextmanager
def signal_handlers(handlers: dict[int, Callable[[int, Any], None]]) -> Iterator[None]:
    """Install ``handlers`` (signal -> handler) for the block and restore the previous ones after. Only in
    the main thread (signal's rule; elsewhere nothing changes); a signal a parent set to be ignored (SIG_IGN,
    e.g. ``nohup``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig, handler in handlers.items():
        old = signal.getsignal(sig)
        if old is not signal.SIG_IGN:
            previous[sig] = old
            signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def signals_as_exceptions() -> contextlib.AbstractContextManager[None]:
    """SIGINT -> KeyboardInterrupt and SIGTERM -> Terminated in the main thread, for the block."""
    def on_term(signum: int, frame: Any) -> None:
        raise Terminated()

    return signal_handlers({signal.SIGINT: signal.default_int_handler, signal.SIGTERM: on_term})


def cli_main(fn: F) -> F:
    """Wrap a script's ``main(argv)``: every failure becomes one stderr line and an exit code (module doc).

    ``--debug`` anywhere in argv (every script accepts it) lets unexpected and OS errors raise with their
    traceback instead."""

    @functools.wraps(fn)
    def wrapper(argv: Any = None, *args: Any, **kwargs: Any) -> Any:
        words = sys.argv[1:] if argv is None else list(argv)
        debug = "--debug" in words
        with signals_as_exceptions():
            try:
                return fn(argv, *args, **kwargs)
            except UserError as e:
                print(f"error: {_first_line(str(e), 2000)}", file=sys.stderr)
                sys.exit(EXIT_USER)
            except KeyboardInterrupt:
                print("interrupted (SIGINT): this run's unfinished outputs were discarded; earlier results are "
                      "unchanged", file=sys.stderr)
                sys.exit(EXIT_SIGINT)
            except Terminated:
                print("terminated (SIGTERM): this run's unfinished outputs were discarded; earlier results are "
                      "unchanged", file=sys.stderr)
                sys.exit(EXIT_SIGTERM)
            except OSError as e:
                if debug:
                    raise
                print(f"error: {os_error_line(e)}", file=sys.stderr)
                sys.exit(EXIT_USER)
            except MemoryError:
                if debug:
                    raise
                print("error: out of memory; use a smaller scene or resolution (-r), or close other programs",
                      file=sys.stderr)
                sys.exit(EXIT_INTERNAL)
            except Exception as e:  # noqa: BLE001 - the last line of defence: never a traceback without --debug
                if debug:
                    raise
                detail = _first_line(str(e))
                print(f"error: internal error ({type(e).__name__}{': ' + detail if detail else ''}); please report "
                      "it (run with --debug for the traceback)", file=sys.stderr)
                sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: <what>; see <prog> --help``) instead of the usage block, and
    the ``--debug`` flag every script takes (read by :func:`cli_main`)."""

    def add_debug_flag(self) -> None:
        """--debug, once, after the script's own flags (parse_known_args adds it if the script did not)."""
        if not any("--debug" in a.option_strings for a in self._actions):
            self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                              help="show the full traceback of an unexpected error")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self.add_debug_flag()
        return super().parse_known_args(args, namespace)

    def _get_option_tuples(self, option_string: str) -> list:
        """Abbreviations (``--iter``): the spellings of one flag (``--num-threads``, ``--num_threads``) are one
        option, not an ambiguity."""
        out, seen = [], set()
        for tup in super()._get_option_tuples(option_string):
            if id(tup[0]) not in seen:
                seen.add(id(tup[0]))
                out.append(tup)
        return out

    def error(self, message: str) -> Any:  # argparse's hook: print and exit 2
        self.exit(EXIT_USER, f"error: {_first_line(message, 2000)}; see {self.prog} --help\n")
