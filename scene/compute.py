"""Where a job runs: the --device and --backend a script was given, checked before any work.

Here rather than in arguments/ (which sits below the renderer and must not import it): the backend check asks
:func:`gaussian_renderer.resolve_backend` whether the backend can run in this process.
"""
from __future__ import annotations

from typing import Optional

from utils.errors import UserError


def check_compute(backend: Optional[str] = "auto", device: str = "cpu") -> None:
    """--device and --backend usable in this process, else a one-line UserError (checked before any work, so
    that a CPU-only torch or a missing CUDA rasterizer fails at once instead of with a traceback later).
    backend None: the script renders nothing (only the device is checked)."""
    import torch

    from gaussian_renderer import BackendUnavailable, resolve_backend

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"--device {device}: not a torch device ({str(e).splitlines()[0][:120]}); use cpu or "
                        "cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UserError(f"--device {device}: {why} (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible; use "
                            f"cuda:0..{torch.cuda.device_count() - 1}")
    elif dev.type != "cpu":
        raise UserError(f"--device {device}: only cpu and cuda devices are supported")
    if backend is None:
        return
    try:
        resolve_backend(backend, dev)
    except (BackendUnavailable, ValueError) as e:
        raise UserError(f"--backend {backend}: {str(e).splitlines()[0]}") from None
