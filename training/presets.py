"""Named settings picked with one flag (``--preset``); explicit flags always win over a preset.

A preset is a function of the iteration count, so ``--preset cpu --iterations 6000`` rescales the
densification window, the opacity-reset period and the position-LR decay to the new length.

``inria``: the paper's 30k-iteration schedule (arguments.OptimizationParams defaults, 100k random points).
``cpu``: a short schedule for 2-core CPUs; scenes without points start from points triangulated from the
views (falling back to random ones) (measured numbers in training/README.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# Inria's fixed screen-size pruning threshold (pixels), used once iteration > opacity_reset_interval.
SIZE_THRESHOLD = 20


@dataclass(frozen=True)
class Preset:
    """Default values for OptimizationParams fields and the trainer's own options."""

    name: str
    description: str
    iterations: int
    schedule: Callable[[int], dict[str, Any]]   # iterations -> OptimizationParams overrides
    random_init_points: int
    random_init: str
    test_iterations: Callable[[int], list[int]]
    save_iterations: Callable[[int], list[int]]
    random_init_lambda_opacity: float = 0.0   # --lambda_opacity when the scene starts from random points
    extra: dict[str, Any] = field(default_factory=dict)

    def optimization_overrides(self, iterations: int) -> dict[str, Any]:
        out = dict(self.schedule(iterations))
        out["iterations"] = iterations
        return out


def _inria_schedule(iterations: int) -> dict[str, Any]:
    return {}


# Weight of the mean opacity in the cpu preset's loss when the scene starts from random points. Random points
# in free space whose colour matches the white backdrop behind them in every training view get no data
# gradient and survive as opaque floaters that occlude the object in novel views; with Adam even a small term
# fades them, while Gaussians the images constrain barely feel it. maryRose -w, 2000 iterations (held-out PSNR
# / all-masks segmentation mIoU / mAcc / Gaussians): 0 -> 18.80 dB / 0.898 / 0.954 / 25.1k; 0.01 -> 19.10 /
# 0.911 / 0.959; 0.1 -> 19.43 / 0.927 / 0.967; 0.3 -> 19.18 / 0.935 / 0.971 / 12.8k; 0.5 -> 18.80 / 0.935 /
# 0.970; 2.0 -> 15.11 dB, 925 Gaussians (too strong). Scenes with SfM points have no such free-space points
# and lose detail instead (fern: 25.69 -> 23.99 dB, 82k -> 18.7k Gaussians), so they keep Inria's loss.
CPU_RANDOM_INIT_LAMBDA_OPACITY = 0.3


def _cpu_schedule(n: int) -> dict[str, Any]:
    """Inria's schedule compressed to ``n`` iterations, without the opacity reset.

    Densification runs every 100 iterations from n/10 to n/2 (Inria: 500 to 15000 of 30000). The reset is
    dropped (its interval is set to n, past the densification window): after a reset Inria spends about a
    thousand iterations re-growing opacities, during which compositing cannot terminate early and runs
    2-3x slower; a 3000-iteration schedule cannot pay that (fern: -8 dB right after it). Side effect, as in
    Inria before its first reset: the size-based pruning stays off. Without resets nothing removes the
    floaters of a random init, so such scenes get a small mean-opacity term (``CPU_RANDOM_INIT_LAMBDA_OPACITY``).
    """
    interval = 100
    return {
        "position_lr_max_steps": n,
        "densify_from_iter": min(500, max(interval, n // 10)),
        "densify_until_iter": n // 2,
        "densification_interval": interval,
        "opacity_reset_interval": max(interval, n),
    }


PRESETS: dict[str, Preset] = {
    "inria": Preset(
        name="inria",
        description="Inria's 30k-iteration schedule (hours on a CPU)",
        iterations=30_000,
        schedule=_inria_schedule,
        random_init_points=100_000,
        random_init="uniform",
        test_iterations=lambda n: [7_000, 30_000],
        save_iterations=lambda n: [7_000, 30_000],
    ),
    "cpu": Preset(
        name="cpu",
        description="short schedule for a 2-core CPU: ~3 min at 256² (maryRose), ~5 min at 504x378 "
                    "(fern), 2 threads",
        iterations=2_000,
        schedule=_cpu_schedule,
        random_init_points=30_000,       # only when triangulation finds < 1000 points
        random_init="triangulate",
        random_init_lambda_opacity=CPU_RANDOM_INIT_LAMBDA_OPACITY,
        test_iterations=lambda n: [n],
        save_iterations=lambda n: [n],
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        from utils.errors import UserError

        raise UserError(f"--preset {name!r}: unknown; choose one of {', '.join(PRESETS)}") from None
