"""Resumable training state: ``<model>/chkpntN.pth`` and the seeded random streams.

Every random draw of the loop (view order, random background, split samples) comes from a generator seeded
by ``(seed, stream, iteration)`` (or ``(seed, stream, epoch)`` for the view order), never from a global
generator. The whole random state at iteration N is therefore ``(seed, N)``: it is saved in the checkpoint,
and a resumed run makes exactly the draws the uninterrupted run would have made, so it ends with
bit-identical parameters.

File layout (``torch.save``, loadable with ``weights_only=True``)::

    {"format": CHECKPOINT_FORMAT, "iteration": N, "gaussians": GaussianModel.capture(),
     "rng": {"seed": s, "scheme": RNG_SCHEME}, "optimization": asdict(OptimizationParams),
     "stats": {"ema_loss": ..., "ema_psnr": ...}}

Inria's checkpoints ``(gaussians_tuple, iteration)`` load too (their random state is not recorded).
"""
from __future__ import annotations

import dataclasses
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from arguments import OptimizationParams
from utils.errors import UserError
from utils.io import atomic_torch_save

CHECKPOINT_FORMAT = "gs-segment-train-checkpoint-v1"
RNG_SCHEME = "seedsequence(seed,stream,counter)-v1"


class RngStreams:
    """Counter-based random streams: generators are derived from (seed, stream, counter), not advanced."""

    VIEW, BACKGROUND, SPLIT = 0, 1, 2

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._epoch = -1
        self._perm: Optional[np.ndarray] = None

    def _entropy(self, stream: int, counter: int) -> int:
        seq = np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF, stream, counter])
        return int(seq.generate_state(1, dtype=np.uint64)[0])

    def view_index(self, iteration: int, num_views: int) -> int:
        """Inria's draw without replacement: each epoch of ``num_views`` iterations visits every view once,
        in an order permuted by (seed, epoch). ``iteration`` starts at 1."""
        epoch, pos = divmod(iteration - 1, num_views)
        if epoch != self._epoch or self._perm is None or len(self._perm) != num_views:
            rng = np.random.default_rng(self._entropy(self.VIEW, epoch))
            self._perm = rng.permutation(num_views)
            self._epoch = epoch
        return int(self._perm[pos])

    def generator(self, stream: int, iteration: int, device: torch.device | str = "cpu") -> torch.Generator:
        """A fresh torch.Generator for one iteration's draws of one stream."""
        g = torch.Generator(device=device)
        g.manual_seed(self._entropy(stream, iteration))
        return g

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "scheme": RNG_SCHEME}


def checkpoint_path(model_path: str | Path, iteration: int) -> Path:
    """Inria's name: <model>/chkpnt<N>.pth."""
    return Path(model_path) / f"chkpnt{int(iteration)}.pth"


def save_checkpoint(path: str | Path, gaussians: Any, iteration: int, rng: RngStreams,
                    opt: OptimizationParams, stats: Optional[dict[str, float]] = None) -> Path:
    """Write a resumable checkpoint atomically; returns its path."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "iteration": int(iteration),
        "gaussians": gaussians.capture(),
        "rng": rng.state_dict(),
        "optimization": dataclasses.asdict(opt),
        "stats": {k: float(v) for k, v in (stats or {}).items()},
    }
    path = Path(path)
    atomic_torch_save(path, state)
    return path


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model state for GaussianModel.restore and the loop's position."""

    gaussians: Any                     # capture() dict, or Inria's 12-tuple
    iteration: int
    seed: Optional[int]                # None for Inria checkpoints
    optimization: Optional[dict]       # OptimizationParams as saved, None for Inria checkpoints
    stats: dict


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read ours or Inria's checkpoint; anything else is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; pass --start_checkpoint <model>/chkpntN.pth")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable training checkpoint ({msg[:200]}); pass a chkpntN.pth "
                        f"written by train.py") from None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        rng = obj.get("rng") or {}
        if rng.get("scheme") != RNG_SCHEME:
            raise UserError(f"{path}: random-stream scheme {rng.get('scheme')!r} is not {RNG_SCHEME!r}; "
                            f"this checkpoint was written by another version")
        return Checkpoint(obj["gaussians"], int(obj["iteration"]), int(rng["seed"]), obj.get("optimization"),
                          dict(obj.get("stats") or {}))
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[1], int):
        return Checkpoint(obj[0], int(obj[1]), None, None, {})
    raise UserError(f"{path}: unknown checkpoint layout; pass a chkpntN.pth written by train.py or Inria's")
