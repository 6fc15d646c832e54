"""What every script does around its job: one-line warnings, the torch thread cap."""
from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Iterator


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show each warning as ``warning: <message>`` on one stderr line (instead of file:line + source),
    once per message; restored on exit."""
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings API
        text = str(message).splitlines()[0] if str(message) else category.__name__
        print(f"warning: {text}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def set_torch_threads(num_threads: int) -> None:
    """Cap torch's intra-op threads when the user asked for a count (small per-Gaussian tensors gain nothing
    from extra threads on a shared CPU, as in train.py)."""
    if num_threads > 0:
        import torch

        torch.set_num_threads(num_threads)
