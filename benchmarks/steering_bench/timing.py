"""Wall times of the passes, round-robin, so that load from other processes hits all of them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from .bench import Bench
from .passes import steering_iterations


def time_once(bench: Bench, fn: Callable[[Bench], None]) -> float:
    """Wall time of one call of a pass (device synchronised before and after)."""
    bench.sync()
    start = time.perf_counter()
    fn(bench)
    bench.sync()
    return time.perf_counter() - start


def time_steering_iteration(bench: Bench) -> float:
    """Wall time of the second of two iterations inside one steered step (its per-step setup is not counted)."""
    stamps: list[float] = []

    def on_iteration() -> None:
        bench.sync()
        stamps.append(time.perf_counter())

    stops = steering_iterations(bench, 2, on_iteration)
    if stops != ["iterations"] or len(stamps) != 2:
        raise RuntimeError(f"Steering stopped early ({stops}, {len(stamps)} iterations): the timing is invalid.")
    return stamps[1] - stamps[0]


def time_passes(bench: Bench, passes: dict[str, Callable[[Bench], float]], warmup: int,
                repeats: int) -> dict[str, dict[str, Any]]:
    """Time every pass round-robin, so that load from other processes hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in passes}
    for i in range(warmup + repeats):
        for name, timer in passes.items():
            seconds = timer(bench)
            if i >= warmup:
                times[name].append(seconds)
    return {name: _stats(values) for name, values in times.items()}


def _stats(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}
