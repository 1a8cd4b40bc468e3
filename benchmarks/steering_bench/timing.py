"""Times of the passes, round-robin, so that load from other processes hits all of them alike.

Wall time by default. ``--clock process`` takes this process's CPU time instead (all its threads), which on a CPU
shared with other jobs counts the work done rather than the waiting; only for CPU runs (a GPU's work is not in it).
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from .bench import Bench
from .passes import steering_iterations

logger = logging.getLogger(__name__)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def _clock(bench: Bench) -> Callable[[], float]:
    return CLOCKS[getattr(bench.args, "clock", "wall")]


def time_once(bench: Bench, fn: Callable[[Bench], None]) -> float:
    """Time of one call of a pass (device synchronised before and after)."""
    clock = _clock(bench)
    bench.sync()
    start = clock()
    fn(bench)
    bench.sync()
    return clock() - start


def time_steering_iteration(bench: Bench, memory: str = "auto") -> float:
    """Time of the second of two iterations inside one steered step (its per-step setup is not counted).

    ``memory``: the steering node's input ("fast": no recomputation, "low": each block recomputed in the backward).
    """
    stamps: list[float] = []
    clock = _clock(bench)

    def on_iteration() -> None:
        bench.sync()
        stamps.append(clock())

    stops = steering_iterations(bench, 2, on_iteration, memory)
    if stops != ["iterations"] or len(stamps) != 2:
        raise RuntimeError(f"Steering stopped early ({stops}, {len(stamps)} iterations): the timing is invalid.")
    return stamps[1] - stamps[0]


def time_passes(bench: Bench, passes: dict[str, Callable[[Bench], float]], warmup: int,
                repeats: int) -> dict[str, dict[str, Any]]:
    """Time every pass round-robin, so that load from other processes hits all of them alike.

    A pass that runs out of device memory is dropped from the later rounds and reported with ``oom`` True (and no
    times), so the other passes are still timed.
    """
    times: dict[str, list[float]] = {name: [] for name in passes}
    out_of_memory: set[str] = set()
    for i in range(warmup + repeats):
        for name, timer in passes.items():
            if name in out_of_memory:
                continue
            try:
                seconds = timer(bench)
            except torch.OutOfMemoryError:
                logger.warning("%s ran out of device memory: not timed", name)
                out_of_memory.add(name)
                _release_device_memory(bench)
                continue
            if i >= warmup:
                times[name].append(seconds)
    return {name: _stats(values, name in out_of_memory) for name, values in times.items()}


def _release_device_memory(bench: Bench) -> None:
    gc.collect()
    if bench.device.type == "cuda":
        torch.cuda.empty_cache()


def _stats(times: list[float], oom: bool = False) -> dict[str, Any]:
    if oom or not times:
        return {"median_s": None, "min_s": None, "times_s": times, "oom": True}
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times, "oom": False}
