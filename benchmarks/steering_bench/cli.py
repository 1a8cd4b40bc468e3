"""The benchmark's command line: parse the options, run the measurements, print the table, write the JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .bench import Bench, autograd_weights, build_bench
from .comfy_modules import VRAM_MODES
from .memory import measure, measure_in_subprocesses, run_measure_one
from .models import DTYPES, MODELS
from .passes import (
    MODE_FUNCTIONS,
    STEERING_MEMORY,
    measured_modes,
    plain_forward,
    plain_forward_backward,
    plain_forward_default_attention,
    reference_iteration,
)
from .report import make_report, print_report
from .setup_check import check_setup
from .timing import CLOCKS, time_once, time_passes, time_steering_iteration

logger = logging.getLogger(__name__)

DESCRIPTION = "What one Learn-to-Steer iteration costs, in time and memory, compared with a plain denoiser forward."
"""What ``--help`` says the benchmark measures (the first line of the package docstring)."""


def _timed_passes(bench: Bench, attention_name: str) -> dict[str, Callable[[Bench], float]]:
    args = bench.args
    if args.skip_timing:
        return {}
    passes: dict[str, Callable[[Bench], float]] = {"plain_forward": lambda b: time_once(b, plain_forward)}
    for memory in args.memory:
        passes[f"steering_iteration_{memory}"] = lambda b, memory=memory: time_steering_iteration(b, memory)
    if not args.lean:
        passes["plain_forward_backward"] = lambda b: time_once(b, plain_forward_backward)
        if attention_name != "attention_pytorch":
            passes["plain_forward_default_attention"] = lambda b: time_once(b, plain_forward_default_attention)
    if args.time_reference:
        passes["reference_iteration"] = lambda b: time_once(b, reference_iteration)
    return passes


def _write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(report, indent=2))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure (memory first: on CPU in subprocesses), time the passes, print the table; return the report.

    With ``--json`` on a GPU, the memory figures are written as soon as they are measured (``"partial": true``), so
    a run stopped during the timing still leaves them.
    """
    memory: dict[str, dict[str, Any]] | None = None
    if not args.skip_memory and args.device == "cpu" and args.memory_processes != "none":
        memory = measure_in_subprocesses(args)  # before this process builds its own copy of the model
    build_start = time.perf_counter()
    bench = build_bench(args)
    build_s = time.perf_counter() - build_start
    logger.info("built in %.1f s; %s", build_s, bench.placement.describe())
    attention_name = getattr(bench.m.attention.optimized_attention, "__name__", "?")
    passes = _timed_passes(bench, attention_name)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(autograd_weights(bench))
        convert_in_s = time.perf_counter() - start
        if memory is None and not args.skip_memory:
            memory = {mode: measure(bench, mode) for mode in measured_modes(args.memory, args.lean)}
            partial, _ = make_report(args, bench, attention_name, build_s, {}, convert_in_s, None, memory)
            _write_json(args.json, {**partial, "partial": True})
        timings = time_passes(bench, passes, args.warmup, args.repeats)
        start = time.perf_counter()
    convert_out_s = time.perf_counter() - start
    report = print_report(args, bench, attention_name, build_s, timings, convert_in_s, convert_out_s, memory)
    _write_json(args.json, report)
    return report


def _memory_inputs(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in values if v not in STEERING_MEMORY]
    if not values or unknown or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"--memory takes distinct values among {', '.join(STEERING_MEMORY)}, comma-separated; got {text!r}.")
    return values


def _measured(text: str) -> str:
    unknown = [v for v in text.split(",") if v not in MODE_FUNCTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown measured modes {unknown}; known: {sorted(MODE_FUNCTIONS)}.")
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--measure-one`` is the memory subprocesses' own option)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="sd21")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--resolution", type=int, default=512, help="image side in pixels (latent side = 1/8)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="denoiser weight dtype (as UNETLoader's weight_dtype; the compute dtype is ComfyUI's "
                             "choice for it on the device, e.g. bf16 for fp8 FLUX weights on a GPU)")
    parser.add_argument("--memory", type=_memory_inputs, default=("auto",),
                        help="the steering node's memory input(s) to measure, comma-separated, e.g. fast,low "
                             "(fast: no recomputation, low: per-block recomputation; default auto)")
    parser.add_argument("--vram", choices=VRAM_MODES, default="normal",
                        help="ComfyUI's VRAM flag: lowvram / novram load the model the way ComfyUI's sampling does "
                             "under --lowvram / --novram (weights that do not fit are streamed at run time)")
    parser.add_argument("--card-gib", type=float, default=None,
                        help="with --vram lowvram on CUDA: make ComfyUI decide what to load as on a card with this "
                             "much free memory (sets its --reserve-vram reserve); default: the real card")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (medians are reported)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (CPU runs on a shared machine)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions before timing")
    parser.add_argument("--steps", type=int, default=50, help="schedule length (the steered step is step 0)")
    parser.add_argument("--text-tokens", type=int, default=0, help="text axis length (0: the model's default)")
    parser.add_argument("--subject", type=int, nargs="+", default=[2], help="subject token positions")
    parser.add_argument("--object", type=int, nargs="+", default=[5, 6], help="object token positions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="timings only")
    parser.add_argument("--skip-timing", action="store_true", help="memory only")
    parser.add_argument("--lean", action="store_true",
                        help="only plain sampling and the steering iterations: no plain forward+backward (b), no "
                             "full-probability reference (c), no second attention backend")
    parser.add_argument("--memory-processes", choices=("each", "one", "none"), default="each",
                        help="CPU memory figures: a fresh process per figure (default), one for all (faster), or "
                             "this process (fastest; start it with MALLOC_MMAP_THRESHOLD_=65536 in its environment)")
    parser.add_argument("--time-reference", action="store_true", help="also time the full-probability reference")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.add_argument("--check-setup", action="store_true",
                        help="only check that torch (with the device), ComfyUI and the pack import; print versions")
    parser.add_argument("--measure-one", type=_measured, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.resolution % 16:
        parser.error(f"--resolution must be a multiple of 16, got {args.resolution}.")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0.")
    if args.card_gib is not None and (args.vram == "normal" or args.card_gib <= 0):
        parser.error("--card-gib needs --vram lowvram or novram and a positive size.")
    if args.clock == "process" and args.device != "cpu":
        parser.error("--clock process measures CPU work: use it with --device cpu.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA device.")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``benchmarks/steering_cost.py``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.check_setup:
        raise SystemExit(check_setup(args.device, args.vram))
    if args.measure_one is not None:
        run_measure_one(args)
        return
    run(args)
