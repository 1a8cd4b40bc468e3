"""Peak memory of one pass: the CUDA allocator's peak, or on CPU the peak-RSS growth in a fresh subprocess.

On CPU every figure comes by default from its own fresh process (``--memory-processes each``); ``one`` measures all
of them one after the other in a single fresh process (faster: one model build; each pass is warmed up, the freed
memory given back to the OS and the peak reset before it, so the figures agree with ``each`` to within the
allocator's leftovers); ``none`` measures them so in the benchmark's own process, which must then have been started
with ``MALLOC_MMAP_THRESHOLD_`` set (:data:`MALLOC_ENV`), or freed tensors stay in the RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from .bench import Bench, autograd_weights, build_bench
from .passes import MODE_FUNCTIONS, measured_modes

logger = logging.getLogger(__name__)

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
"""Large blocks come from mmap and go back to the OS when freed, so the RSS follows the live tensors."""
MEASURE_MARKER = "L2S_MEASURE "
ENTRY_SCRIPT = Path(__file__).resolve().parents[1] / "steering_cost.py"
"""The benchmark's command, run again as ``--measure-one MODE[,MODE...]`` for the CPU memory figures."""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line.")


def _release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_cpu(bench: Bench, mode: str) -> dict[str, Any]:
    """Peak RSS growth of one pass over the RSS after a first (warm-up) run of the same pass."""
    fn = MODE_FUNCTIONS[mode]
    fn(bench)  # warm-up: one-off allocations (kernels, caches) are not part of the per-iteration peak
    _release_memory()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS (Linux >= 4.0)
    baseline = _rss_bytes()
    fn(bench)
    peak = _peak_rss_bytes()
    return {"growth_bytes": peak - baseline, "baseline_bytes": baseline, "oom": False}


def measure_cuda(bench: Bench, mode: str) -> dict[str, Any]:
    """Peak allocated CUDA memory of one pass above what was allocated before it (after one warm-up pass).

    An out-of-memory error is reported with the peak reached until then (a lower bound) and ``oom`` True.
    """
    fn = MODE_FUNCTIONS[mode]
    result: dict[str, Any] = {}
    for _ in range(2):  # warm-up, then the measured pass
        gc.collect()
        torch.cuda.synchronize(bench.device)
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated(bench.device)
        torch.cuda.reset_peak_memory_stats(bench.device)
        oom = False
        try:
            fn(bench)
        except torch.OutOfMemoryError:
            oom = True
        torch.cuda.synchronize(bench.device)
        result = {"growth_bytes": torch.cuda.max_memory_allocated(bench.device) - baseline,
                  "baseline_bytes": baseline, "oom": oom}
        if oom:
            break
    gc.collect()
    torch.cuda.empty_cache()
    return result


def _child_command(args: argparse.Namespace, modes: list[str]) -> list[str]:
    command = [sys.executable, str(ENTRY_SCRIPT), "--model", args.model, "--size", args.size,
               "--resolution", str(args.resolution), "--device", args.device, "--dtype", args.dtype,
               "--vram", args.vram, "--seed", str(args.seed), "--steps", str(args.steps),
               "--text-tokens", str(args.text_tokens), "--subject", *map(str, args.subject),
               "--object", *map(str, args.object), "--measure-one", ",".join(modes)]
    if args.card_gib is not None:
        command += ["--card-gib", str(args.card_gib)]
    return command


def measure_in_subprocesses(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """CPU: the memory figures from fresh processes (one per figure, or one for all: ``--memory-processes``)."""
    env = {**os.environ, **MALLOC_ENV}
    modes = list(measured_modes(args.memory, args.lean))
    groups = [modes] if args.memory_processes == "one" else [[mode] for mode in modes]
    results: dict[str, dict[str, Any]] = {}
    for group in groups:
        logger.info("measuring %s in a subprocess", ", ".join(group))
        done = subprocess.run(_child_command(args, group), env=env, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(MEASURE_MARKER)]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"The {', '.join(group)} measurement failed (exit {done.returncode}):\n"
                               f"{done.stderr[-4000:]}")
        results.update(json.loads(lines[-1][len(MEASURE_MARKER):]))
    return results


def measure(bench: Bench, mode: str) -> dict[str, Any]:
    """One pass's figures on the bench's device (call inside :func:`~.bench.autograd_weights`)."""
    if bench.device.type != "cpu":
        return measure_cuda(bench, mode)
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        logger.warning("CPU memory measured without %s in this process's environment: freed memory may stay in "
                       "the RSS and the figures undercount", ", ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()))
    result = measure_cpu(bench, mode)
    _release_memory()
    return result


def run_measure_one(args: argparse.Namespace) -> None:
    """``--measure-one MODE[,MODE...]``: build the bench, measure the passes in turn, print one marked JSON line."""
    bench = build_bench(args)
    with autograd_weights(bench):
        results = {}
        for mode in args.measure_one.split(","):
            results[mode] = measure(bench, mode)
    print(MEASURE_MARKER + json.dumps(results), flush=True)
