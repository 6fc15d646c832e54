"""User-facing errors: one line naming the file and the fix, non-zero exit, no traceback."""
from __future__ import annotations

import argparse
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


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """ArgumentDefaultsHelpFormatter without the noise: no "(default: ...)" for on/off switches, empty or None
    defaults, or help text that already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
                or action.default in (None, "", argparse.SUPPRESS) or "default" in text):
            return text
        return super()._get_help_string(action)
