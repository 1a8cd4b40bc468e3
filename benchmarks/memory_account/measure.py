"""Measured CPU memory of the passes, to check the account against: peak RSS growth in a fresh process.

For one model (fp32 weights, random values, CPU), every pass runs three times in one fresh process: once to warm up
(one-off allocations: kernel caches, lazily built tables), once measured, once under the tracker. The measured run
starts after a garbage collection and ``malloc_trim``, with the kernel's peak-RSS counter reset
(``/proc/self/clear_refs``); its figure is the growth of the peak RSS (``VmHWM``) over the RSS before it. The process
runs with ``MALLOC_MMAP_THRESHOLD_=65536``, so every tensor larger than 64 KiB has its own mapping and goes back to
the system when freed: the RSS follows the live tensors. The tracked run gives the tracker's count on real tensors
(the same code as on the meta device).

Steering passes here are the pack's own ``SteeringRun.steer`` (:data:`.passes.PACK_PASSES`), which needs values;
the account itself runs the value-free replica, so the comparison also checks the replica.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .account import account_pass
from .architectures import Architecture
from .attention import modelled_attention
from .build import build_setup
from .passes import PACK_PASSES

logger = logging.getLogger(__name__)

MEASURE_MARKER = "L2S_MEMORY "
ENTRY_SCRIPT = Path(__file__).resolve().parents[1] / "memory_account.py"
"""The account's command, run again as ``--measure-one CASE`` in a fresh process for each measured model."""


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


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak RSS restarts from the current RSS (Linux >= 4.0)


def measure_here(m: SimpleNamespace, arch: Architecture, resolution: int, attention: str,
                 passes: tuple[str, ...] = ("plain", "fast", "low"), rss: bool = True) -> dict[str, dict[str, int]]:
    """In this process: build ``arch`` on CPU (fp32) and measure each pass; bytes above the weights.

    ``rss`` False skips the warm-up and the RSS measurement (the tracker's count only: fast, for tests).
    """
    setup = build_setup(m, arch, resolution, "fp32", "cpu")
    results: dict[str, dict[str, int]] = {}
    for name in passes:
        run = PACK_PASSES[name]
        figures: dict[str, int] = {}
        if rss:
            with modelled_attention(m.ops, attention):
                run(setup, lambda _: None)  # warm-up
                _release_memory()
                _reset_peak_rss()
                before = _rss_bytes()
                run(setup, lambda _: None)
                figures = {"measured_bytes": _peak_rss_bytes() - before, "rss_before_bytes": before}
            _release_memory()
        figures["tracked_bytes"] = account_pass(setup, name, attention, PACK_PASSES).peak_bytes
        results[name] = figures
        logger.info("%s %d px %s: %s", arch.label, resolution, name,
                    ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in figures.items() if k != "rss_before_bytes"))
    return results


def measure_in_subprocess(case: str, attention: str) -> dict[str, dict[str, int]]:
    """Run ``--measure-one case`` in a fresh process (allocator settings of the module docstring)."""
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    command = [sys.executable, str(ENTRY_SCRIPT), "--measure-one", case, "--attention", attention]
    logger.info("measuring %s in a fresh process", case)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MEASURE_MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"The measurement of {case} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(MEASURE_MARKER):])


def print_measurement(results: dict[str, Any]) -> None:
    """The subprocess's answer: one marked JSON line on stdout."""
    print(MEASURE_MARKER + json.dumps(results), flush=True)
