"""User-facing errors: one line naming the file and the fix, non-zero exit, no traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

from arguments import ConfigError

F = TypeVar("F", bound=Callable[..., int | None])


class UserError(ConfigError):
    """Raised for problems the user can fix (bad path, corrupt file, unsupported camera...)."""


def cli_main(fn: F) -> F:
    """Wrap a script's ``main``: a UserError/ConfigError prints ``error: <message>`` and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
