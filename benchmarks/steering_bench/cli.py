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
from .memory import measure_cuda, measure_in_subprocesses, run_measure_one
from .models import DTYPES, MODELS
from .passes import MODES, plain_forward, plain_forward_backward, plain_forward_default_attention, reference_iteration
from .report import print_report
from .timing import time_once, time_passes, time_steering_iteration

DESCRIPTION = "What one Learn-to-Steer iteration costs, in time and memory, compared with a plain denoiser forward."
"""What ``--help`` says the benchmark measures (the first line of the package docstring)."""


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure (memory first on CPU, in subprocesses), time the passes, print the table; return the report."""
    memory: dict[str, dict[str, Any]] | None = None
    if not args.skip_memory and args.device == "cpu":
        memory = measure_in_subprocesses(args)  # before this process builds its own copy of the model
    build_start = time.perf_counter()
    bench = build_bench(args)
    build_s = time.perf_counter() - build_start
    attention_name = getattr(bench.m.attention.optimized_attention, "__name__", "?")
    passes: dict[str, Callable[[Bench], float]] = {} if args.skip_timing else {
        "plain_forward": lambda b: time_once(b, plain_forward),
        "steering_iteration": time_steering_iteration,
        "plain_forward_backward": lambda b: time_once(b, plain_forward_backward),
    }
    if passes and attention_name != "attention_pytorch":
        passes["plain_forward_default_attention"] = lambda b: time_once(b, plain_forward_default_attention)
    if passes and args.time_reference:
        passes["reference_iteration"] = lambda b: time_once(b, reference_iteration)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(autograd_weights(bench))
        convert_in_s = time.perf_counter() - start
        timings = time_passes(bench, passes, args.warmup, args.repeats)
        if memory is None and not args.skip_memory:
            memory = {mode: measure_cuda(bench, mode) for mode in MODES}
        start = time.perf_counter()
    convert_out_s = time.perf_counter() - start
    return print_report(args, bench, attention_name, build_s, timings, convert_in_s, convert_out_s, memory)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--measure-one`` is the memory subprocesses' own option)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="sd21")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--resolution", type=int, default=512, help="image side in pixels (latent side = 1/8)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="denoiser weight/compute dtype")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (medians are reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions before timing")
    parser.add_argument("--steps", type=int, default=50, help="schedule length (the steered step is step 0)")
    parser.add_argument("--text-tokens", type=int, default=0, help="text axis length (0: the model's default)")
    parser.add_argument("--subject", type=int, nargs="+", default=[2], help="subject token positions")
    parser.add_argument("--object", type=int, nargs="+", default=[5, 6], help="object token positions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="timings only")
    parser.add_argument("--skip-timing", action="store_true", help="memory only")
    parser.add_argument("--time-reference", action="store_true", help="also time the full-probability reference")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.add_argument("--measure-one", choices=MODES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.resolution % 16:
        parser.error(f"--resolution must be a multiple of 16, got {args.resolution}.")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA device.")
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``benchmarks/steering_cost.py``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.measure_one is not None:
        run_measure_one(args)
        return
    report = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
