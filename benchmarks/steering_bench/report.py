"""The benchmark's table: every figure with its target and verdict, and the JSON report of the same numbers."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch

from .bench import Bench
from .passes import STEERING_MEMORY, steer_mode

TARGET_TIME_RATIO = 3.3
TARGET_RECOMPUTE_TIME_RATIO = 1.4
TARGET_MEMORY_VS_PLAIN_SAMPLING = 1.3
TARGET_MEMORY_VS_PLAIN = 1.3
TARGET_MEMORY_VS_REFERENCE = 0.5
MODE_LABELS = {
    "plain": "(p) plain sampling forward (no grad)",
    **{steer_mode(memory): f"(a) steering iteration, memory {memory}" for memory in STEERING_MEMORY},
    "plain_fwd_bwd": "(b) plain forward+backward",
    "reference": "(c) full-probability reference",
}


_WHERE = {"each": "in a fresh process each", "one": "in one fresh process", "none": "in this process"}


def _mib(n: float) -> str:
    return f"{n / 2**20:10.1f} MiB"


def _verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else f"MISS by {value / target - 1:.0%}"


def _seconds(value: float | None) -> str:
    return f"{value:9.3f}s" if value is not None else f"{'OOM':>10s}"


def _median(timings: dict[str, dict[str, Any]], key: str) -> float | None:
    item = timings.get(key)
    return None if item is None else item["median_s"]


def timing_lines(report: dict[str, Any], timings: dict[str, dict[str, Any]], args: argparse.Namespace,
                 attention_name: str) -> list[str]:
    """Table rows for the timings; also stores the time ratios in ``report["ratios"]``."""
    labels = {
        "plain_forward": "(1) plain conditional forward, SDPA",
        "plain_forward_default_attention": f"    same with {attention_name}",
        **{f"steering_iteration_{memory}": f"(2) steering iteration, memory {memory}" for memory in args.memory},
        "plain_forward_backward": "    plain forward+backward (context)",
        "reference_iteration": "    full-probability reference iter.",
    }
    clock = "process CPU time" if args.clock == "process" else "time"
    head = f"{clock}, median of {args.repeats} round-robin rounds (+{args.warmup} warm-up)"
    lines = [f"{head:48s}{'median':>10s}{'min':>10s}"]
    for key, label in labels.items():
        if key in timings:
            lines.append(f"{label:48s}{_seconds(timings[key]['median_s'])}{_seconds(timings[key]['min_s'])}")
    ratios = report["ratios"]
    forward = _median(timings, "plain_forward")
    per_memory: dict[str, float] = {}
    for memory in args.memory:
        steer = _median(timings, f"steering_iteration_{memory}")
        if steer is not None and forward:
            per_memory[memory] = steer / forward
            lines.append(f"time ratio (2, {memory})/(1) = {steer / forward:.2f}x   target <= {TARGET_TIME_RATIO}x   "
                         f"{_verdict(steer / forward, TARGET_TIME_RATIO)}")
    ratios["time_vs_plain_forward"] = per_memory
    if per_memory:
        report["time_ratio"] = next(iter(per_memory.values()))
    fast, low = _median(timings, "steering_iteration_fast"), _median(timings, "steering_iteration_low")
    if fast and low is not None:
        ratios["time_low_vs_fast"] = low / fast
        line = (f"recomputation: time (2, low)/(2, fast) = {low / fast:.2f}x   "
                f"target <= {TARGET_RECOMPUTE_TIME_RATIO}x   {_verdict(low / fast, TARGET_RECOMPUTE_TIME_RATIO)}")
        if forward:  # the price of recomputation is about one more forward per iteration
            ratios["time_low_vs_fast_one_more_forward"] = (fast + forward) / fast
            line += f"   (one more forward (1) per iteration: {(fast + forward) / fast:.2f}x)"
        lines.append(line)
    fwd_bwd = _median(timings, "plain_forward_backward")
    extra = [f"(2, {memory})/(plain fwd+bwd) = {_median(timings, f'steering_iteration_{memory}') / fwd_bwd:.2f}x"
             for memory in args.memory if fwd_bwd and _median(timings, f"steering_iteration_{memory}") is not None]
    default_forward = _median(timings, "plain_forward_default_attention")
    if default_forward and args.memory[0] in per_memory:
        extra.append(f"(2, {args.memory[0]})/(1 with {attention_name}) = "
                     f"{_median(timings, f'steering_iteration_{args.memory[0]}') / default_forward:.2f}x")
    if extra:
        lines.append("   " + "; ".join(extra))
    return lines


def _total(item: dict[str, Any]) -> int:
    return int(item["baseline_bytes"] + item["growth_bytes"])


def memory_lines(report: dict[str, Any], memory: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Table rows for the peak memory; also stores the memory ratios in ``report["ratios"]``."""
    cpu = args.device == "cpu"
    where = f" (CPU: peak-RSS growth, approximate; measured {_WHERE[args.memory_processes]})" if cpu else ""
    lines = ["peak memory above the built model, and total" + (where or " (CUDA allocator)")]
    for mode, item in memory.items():
        lines.append(f"{MODE_LABELS[mode]:48s}{_mib(item['growth_bytes'])}   total {_mib(_total(item))}"
                     + ("   OOM: lower bound" if item["oom"] else ""))
    ratios = report["ratios"]
    steering = [(memory_mode, memory[steer_mode(memory_mode)]) for memory_mode in args.memory
                if steer_mode(memory_mode) in memory]
    plain = memory.get("plain")
    if plain is not None:
        vs_plain = {m: _total(item) / _total(plain) for m, item in steering}
        ratios["peak_vs_plain_sampling"] = vs_plain
        lines += [f"peak (a, {m})/(p), totals incl. weights = {ratio:.2f}x   target <= "
                  f"{TARGET_MEMORY_VS_PLAIN_SAMPLING}x   {_verdict(ratio, TARGET_MEMORY_VS_PLAIN_SAMPLING)}"
                  + ("   (lower bound: OOM)" if memory[steer_mode(m)]["oom"] else "")
                  for m, ratio in vs_plain.items()]
    if steer_mode("fast") in memory and steer_mode("low") in memory:
        fast, low = memory[steer_mode("fast")], memory[steer_mode("low")]
        ratios["peak_low_vs_fast"] = _total(low) / _total(fast)
        ratios["growth_low_vs_fast"] = low["growth_bytes"] / max(fast["growth_bytes"], 1)
        lines.append(f"recomputation: peak (a, low)/(a, fast) = {ratios['peak_low_vs_fast']:.2f}x totals, "
                     f"{ratios['growth_low_vs_fast']:.2f}x above the model"
                     + ("   (fast ran out of memory: its figure is a lower bound)" if fast["oom"] else ""))
    card = getattr(args, "card_gib", None)
    if card is not None and args.device == "cuda":
        fits = [f"{mode.removeprefix('steer_')} "
                + ("fits" if _total(item) <= card * 2**30 and not item["oom"] else "does NOT fit")
                for mode, item in memory.items()]
        lines.append(f"on the {card:g} GiB card ComfyUI loaded the weights for: " + ", ".join(fits))
    for key, mode, target, name in (("growth_vs_plain_fwd_bwd", "plain_fwd_bwd", TARGET_MEMORY_VS_PLAIN, "(b)"),
                                    ("growth_vs_reference", "reference", TARGET_MEMORY_VS_REFERENCE, "(c)")):
        if mode not in memory:
            continue
        other = memory[mode]
        ratios[key] = {m: item["growth_bytes"] / max(other["growth_bytes"], 1) for m, item in steering}
        for m, item in steering:
            ratio = ratios[key][m]
            lines.append(f"memory (a, {m})/{name} = {ratio:.2f}x   target <= {target}x   {_verdict(ratio, target)}   "
                         f"(totals incl. weights: {_total(item) / _total(other):.2f}x)")
    return lines


def make_report(args: argparse.Namespace, bench: Bench, attention_name: str, build_s: float,
                timings: dict[str, dict[str, Any]], convert_in_s: float | None, convert_out_s: float | None,
                memory: dict[str, dict[str, Any]] | None) -> tuple[dict[str, Any], list[str]]:
    """All figures (what ``--json`` writes) and the table's lines."""
    report: dict[str, Any] = {
        "model": args.model, "size": args.size, "resolution": args.resolution, "device": str(bench.device),
        "device_name": _device_name(bench), "dtype": args.dtype, "compute_dtype": str(bench.compute_dtype),
        "vram": args.vram, "placement": dataclasses.asdict(bench.placement), "memory_inputs": list(args.memory),
        "repeats": args.repeats, "clock": args.clock, "parameters": bench.parameters, "layout": bench.layout,
        "text_tokens": bench.text_length, "attention_channels": bench.channels,
        "classifier_parameters": sum(p.numel() for p in bench.classifier.model.parameters()),
        "default_attention": attention_name, "build_s": build_s, "timings": timings,
        "weight_conversion_s": {"to_autograd": convert_in_s, "back_to_inference": convert_out_s},
        "time_ratio_target": TARGET_TIME_RATIO, "memory": memory, "ratios": {},
        "memory_source": "peak RSS growth (approximate)" if args.device == "cpu" else "torch.cuda.max_memory_allocated",
    }
    compute = str(bench.compute_dtype).removeprefix("torch.")
    lines = [
        f"Learn-to-Steer steering cost: {args.model} ({args.size}), {args.resolution} px, {report['device_name']}, "
        f"weights {args.dtype} (compute {compute}); {bench.placement.describe()}",
        f"denoiser {bench.parameters / 1e6:.1f} M params, layout {bench.layout}, {bench.text_length} text tokens, "
        f"{bench.channels} attention channels; classifier {report['classifier_parameters'] / 1e6:.2f} M params "
        f"({bench.classifier.family} settings); ComfyUI's attention here: {attention_name}",
    ]
    if timings:
        lines += timing_lines(report, timings, args, attention_name)
    if convert_in_s is not None and convert_out_s is not None:
        lines.append(f"{'weight conversion (once per run)':48s}{convert_in_s:9.3f}s"
                     f"  (+{convert_out_s:.3f}s to restore)")
    if memory is not None:
        lines += memory_lines(report, memory, args)
    return report, lines


def _device_name(bench: Bench) -> str:
    if bench.device.type == "cuda":
        return f"{bench.device} ({torch.cuda.get_device_name(bench.device)})"
    return str(bench.device)


def print_report(args: argparse.Namespace, bench: Bench, attention_name: str, build_s: float,
                 timings: dict[str, dict[str, Any]], convert_in_s: float, convert_out_s: float,
                 memory: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Print the figures as a table and return them all (what ``--json`` writes)."""
    report, lines = make_report(args, bench, attention_name, build_s, timings, convert_in_s, convert_out_s, memory)
    print("\n".join(lines), flush=True)
    return report
