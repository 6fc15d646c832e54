"""Wall-clock laps for the timings a job writes into its summary.json."""
from __future__ import annotations

import time


class Laps:
    """Named laps: ``t = laps.lap("vote", t)`` records the time since ``t`` under "vote" and returns now."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def lap(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        self.timings[name] = round(now - t0, 4)
        return now
