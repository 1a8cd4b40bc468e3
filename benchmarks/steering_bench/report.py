"""The benchmark's table: every figure with its target and verdict, and the JSON report of the same numbers."""

from __future__ import annotations

import argparse
from typing import Any

from .bench import Bench
from .passes import MODES

TARGET_TIME_RATIO = 3.3
TARGET_MEMORY_VS_PLAIN = 1.3
TARGET_MEMORY_VS_REFERENCE = 0.5
MODE_LABELS = {
    "steer": "(a) steering iteration",
    "plain_fwd_bwd": "(b) plain forward+backward",
    "reference": "(c) full-probability reference",
}


def _mib(n: float) -> str:
    return f"{n / 2**20:10.1f} MiB"


def _verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else f"MISS by {value / target - 1:.0%}"


def timing_lines(report: dict[str, Any], timings: dict[str, dict[str, Any]], args: argparse.Namespace,
                 attention_name: str) -> list[str]:
    """Table rows for the timings; also stores the time ratio in ``report``."""
    labels = {
        "plain_forward": "(1) plain conditional forward, SDPA",
        "plain_forward_default_attention": f"    same with {attention_name}",
        "steering_iteration": "(2) steering iteration",
        "plain_forward_backward": "    plain forward+backward (context)",
        "reference_iteration": "    full-probability reference iter.",
    }
    lines = [f"time, median of {args.repeats} round-robin rounds (+{args.warmup} warm-up){'median':>10s}{'min':>10s}"]
    for key, label in labels.items():
        if key in timings:
            lines.append(f"{label:48s}{timings[key]['median_s']:9.3f}s{timings[key]['min_s']:9.3f}s")
    forward, steer = timings["plain_forward"], timings["steering_iteration"]
    ratio = steer["median_s"] / forward["median_s"]
    report["time_ratio"] = ratio
    lines.append(f"time ratio (2)/(1) = {ratio:.2f}x   target <= {TARGET_TIME_RATIO}x   "
                 f"{_verdict(ratio, TARGET_TIME_RATIO)}   (by minima {steer['min_s'] / forward['min_s']:.2f}x)")
    extra = [f"(2)/(plain fwd+bwd) = {steer['median_s'] / timings['plain_forward_backward']['median_s']:.2f}x"]
    if "plain_forward_default_attention" in timings:
        extra.append(f"(2)/(1 with {attention_name}) = "
                     f"{steer['median_s'] / timings['plain_forward_default_attention']['median_s']:.2f}x")
    lines.append("   " + "; ".join(extra))
    return lines


def memory_lines(report: dict[str, Any], memory: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Table rows for the peak memory; also stores the memory ratios in ``report``."""
    cpu = args.device == "cpu"
    lines = ["peak memory above the built model" + (
        " (CPU: peak-RSS growth in fresh subprocesses, approximate)" if cpu else " (CUDA allocator)")]
    for mode in MODES:
        item = memory[mode]
        total = item["baseline_bytes"] + item["growth_bytes"]
        lines.append(f"{MODE_LABELS[mode]:48s}{_mib(item['growth_bytes'])}   total {_mib(total)}"
                     + ("   OOM: lower bound" if item["oom"] else ""))
    a, b, c = (memory[mode]["growth_bytes"] for mode in MODES)
    ratio_b, ratio_c = a / max(b, 1), a / max(c, 1)
    totals = [memory[mode]["baseline_bytes"] + memory[mode]["growth_bytes"] for mode in MODES]
    report.update(memory_ratio_vs_plain=ratio_b, memory_ratio_vs_reference=ratio_c,
                  total_memory_ratio_vs_plain=totals[0] / totals[1],
                  total_memory_ratio_vs_reference=totals[0] / totals[2])
    lines += [
        f"memory (a)/(b) = {ratio_b:.2f}x   target <= {TARGET_MEMORY_VS_PLAIN}x   "
        f"{_verdict(ratio_b, TARGET_MEMORY_VS_PLAIN)}   (totals incl. weights: {totals[0] / totals[1]:.2f}x)",
        f"memory (a)/(c) = {ratio_c:.2f}x   target <= {TARGET_MEMORY_VS_REFERENCE}x   "
        f"{_verdict(ratio_c, TARGET_MEMORY_VS_REFERENCE)}   (totals incl. weights: {totals[0] / totals[2]:.2f}x)",
    ]
    return lines


def print_report(args: argparse.Namespace, bench: Bench, attention_name: str, build_s: float,
                 timings: dict[str, dict[str, Any]], convert_in_s: float, convert_out_s: float,
                 memory: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """Print the figures as a table and return them all (what ``--json`` writes)."""
    report: dict[str, Any] = {
        "model": args.model, "size": args.size, "resolution": args.resolution, "device": str(bench.device),
        "dtype": args.dtype, "repeats": args.repeats, "parameters": bench.parameters, "layout": bench.layout,
        "text_tokens": bench.text_length, "attention_channels": bench.channels,
        "classifier_parameters": sum(p.numel() for p in bench.classifier.model.parameters()),
        "default_attention": attention_name, "build_s": build_s, "timings": timings,
        "weight_conversion_s": {"to_autograd": convert_in_s, "back_to_inference": convert_out_s},
        "time_ratio_target": TARGET_TIME_RATIO, "memory": memory,
        "memory_source": "peak RSS growth (approximate)" if args.device == "cpu" else "torch.cuda.max_memory_allocated",
    }
    lines = [
        f"Learn-to-Steer steering cost: {args.model} ({args.size}), {args.resolution} px, {bench.device}, {args.dtype}",
        f"denoiser {bench.parameters / 1e6:.1f} M params, layout {bench.layout}, {bench.text_length} text tokens, "
        f"{bench.channels} attention channels; classifier {report['classifier_parameters'] / 1e6:.2f} M params "
        f"({bench.classifier.family} settings); ComfyUI's attention here: {attention_name}",
    ]
    if timings:
        lines += timing_lines(report, timings, args, attention_name)
    lines.append(f"{'weight conversion (once per run)':48s}{convert_in_s:9.3f}s  (+{convert_out_s:.3f}s to restore)")
    if memory is not None:
        lines += memory_lines(report, memory, args)
    print("\n".join(lines), flush=True)
    return report
