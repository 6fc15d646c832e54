"""Atomic output writing, and the one writer per format every job uses (NPY, JSON, summaries, PNG, GIF).

A reader never sees a half-written file (:func:`atomic_path`), and inputs are never touched."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    An OSError inside the block names ``path`` (not the temporary name), so the one-line error says which
    output failed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the permissions a plain open() would (0666 minus umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as e:
        if e.filename in (None, str(tmp_path), tmp_path):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """torch.save through a Python file object, so that a full disk raises OSError(ENOSPC) naming ``path``
    (torch reports a failed write as an opaque RuntimeError of its zip writer; the OSError is its context)."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as e:
                if isinstance(e.__context__, OSError):
                    raise e.__context__ from None
                raise


# ---------------------------------------------------------------------------------------------------------
# The writers every job uses, one per format (libraries pick formats by extension, temp files end in .tmp)
# ---------------------------------------------------------------------------------------------------------
def save_npy(path: str | Path, array: Any) -> None:
    import io

    import numpy as np

    buf = io.BytesIO()  # np.save on a file writes with fwrite, whose short write on a full disk has no errno
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getbuffer())


def save_json(path: str | Path, data: Any) -> None:
    """Strict JSON (a NaN is a bug here: raises ValueError); :func:`json_safe` first for measured values."""
    import json

    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def json_safe(obj: Any) -> Any:
    """JSON has no NaN: non-finite floats become None (null), tuples lists, recursively."""
    import math

    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_summary(path: str | Path, summary: dict[str, Any], timings: dict[str, float], version: int
                 ) -> dict[str, Any]:
    """A job's summary JSON, written the same way by every job: ``"version"`` first, ``"timings_s"`` (seconds,
    4 decimals) where the summary holds the key (else last), non-finite values as null. Returns what was
    written."""
    data: dict[str, Any] = {"version": version, **{k: v for k, v in summary.items() if k != "version"}}
    data["timings_s"] = {k: round(float(v), 4) for k, v in timings.items()}
    data = json_safe(data)
    save_json(path, data)
    return data


def save_png(path: str | Path, image: Any) -> None:
    """image: np.ndarray  # [H, W, 3] uint8 RGB, or [H, W] uint8/uint16 grey (masks, label maps)"""
    import cv2
    import numpy as np

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1] if image.ndim == 3 else image))
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def save_label_png(path: str | Path, label_map: Any) -> None:
    """label_map: [H, W] int -> grey PNG of class indices (uint8, or uint16 past 255)."""
    import numpy as np

    lm = np.asarray(label_map)
    save_png(path, lm.astype(np.uint8) if lm.max(initial=0) < 256 else lm.astype(np.uint16))


def save_gif(path: str | Path, frames: Sequence[Any], fps: float = 4.0) -> None:
    """frames: [H, W, 3] uint8 each, same size; loops forever.

    One 256-colour palette for the whole GIF (median cut over ~100k pixels sampled from every frame), each
    frame mapped to it with Floyd-Steinberg dithering: ~20x faster than Pillow's per-frame median cut
    (0.3 s per 1024x256 frame), and colours do not flicker between frames."""
    import numpy as np
    from PIL import Image

    if not frames:
        raise ValueError("save_gif needs at least one frame")
    step = max(1, int(np.ceil(np.sqrt(sum(f.shape[0] * f.shape[1] for f in frames) / 100_000))))  # ~100k pixels
    sample = np.concatenate([np.asarray(f)[::step, ::step].reshape(-1, 3) for f in frames])
    palette = Image.fromarray(sample.reshape(1, -1, 3)).quantize(256, method=Image.Quantize.MEDIANCUT)
    images = [Image.fromarray(np.ascontiguousarray(f)).quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
              for f in frames]
    with atomic_path(path) as tmp:
        # optimize=False: Pillow's per-frame palette pruning costs ~10x the encoding and saves little here
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=1000.0 / fps, loop=0,
                       optimize=False)


def safe_name(name: str, fallback: str = "label") -> str:
    """A label or view name usable in a file name (``extracted_<name>.ply``; NeRF-synthetic names hold '/')."""
    import re

    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("._")
    return s or fallback
