"""Small helpers shared by the top-level scripts (kept here so the scripts stay thin)."""
from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any, Iterator, Optional

from arguments import BACKENDS
from utils.errors import UserError


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


def add_compute_args(p: Any, device_help: str = "torch device holding the Gaussians (default cpu)",
                     threads_help: str = "CPU threads (default 0: all cores)") -> None:
    """--backend, --num_threads, --device, the same in every script. p: a parser or an argument group."""
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="rasterizer backend (default auto: a CUDA backend when the Gaussians are on a CUDA device "
                        "and one is installed, else the native CPU one)")
    p.add_argument("--num_threads", type=int, default=0, help=threads_help)
    p.add_argument("--device", default="cpu", help=device_help)


def add_view_args(p: Any, source_help: str = "scene folder (default: the one in MODEL/cfg_args)") -> None:
    """--iteration, -s, -i, -r: which saved model and which views/resolution, the same in every script that
    loads a trained model with its cameras. p: a parser or an argument group."""
    p.add_argument("--iteration", type=int, default=-1, help="point_cloud/iteration_N to load (default -1: newest)")
    p.add_argument("-s", "--source_path", default="", help=source_help)
    p.add_argument("-i", "--images", default="", help="image folder inside the scene (default: cfg_args')")
    p.add_argument("-r", "--resolution", type=int, default=0,
                   help="0: as trained (cfg_args); else Inria's -r (1/2/4/8 divide, >8 target width)")


def set_torch_threads(num_threads: int) -> None:
    """Cap torch's intra-op threads when the user asked for a count (small per-Gaussian tensors gain nothing
    from extra threads on a shared CPU, as in train.py)."""
    if num_threads > 0:
        import torch

        torch.set_num_threads(num_threads)


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
