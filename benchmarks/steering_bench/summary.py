"""One table from several benchmark runs (``benchmarks/gpu_check.sh``): plain vs steering peak memory and time.

Run as ``PYTHONPATH=benchmarks python -m steering_bench.summary STATUS_TSV [--text FILE] [--json FILE] [--quiet]``.
``STATUS_TSV`` has one line per run: ``label<TAB>exit status<TAB>seconds<TAB>report JSON path`` (status -1: not
started, no time left); a run that failed, timed out or left only its memory figures (``"partial": true``) still
gets its row. Standard library only, so it
runs even where the benchmark itself cannot.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

GIB = 1024 ** 3
TARGET_MEMORY = 1.3
TARGET_RECOMPUTE_TIME = 1.4
TIMEOUT_STATUSES = {124, 137}
SKIPPED = -1
"""The status gpu_check.sh records for a run it did not start because its time budget was spent."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One line of the status file and the report it left (None when it left none)."""

    label: str
    status: int
    seconds: float
    report: dict[str, Any] | None


def read_runs(status_tsv: Path) -> list[Run]:
    """The runs listed in ``status_tsv``, each with its JSON report when the file exists and parses."""
    runs = []
    for line in status_tsv.read_text().splitlines():
        if not line.strip():
            continue
        label, status, seconds, json_path = line.split("\t")[:4]
        report = None
        path = Path(json_path)
        if path.is_file():
            try:
                report = json.loads(path.read_text())
            except json.JSONDecodeError:
                report = None
        runs.append(Run(label, int(status), float(seconds), report))
    return runs


def _total(item: dict[str, Any] | None) -> tuple[float | None, bool]:
    if not item:
        return None, False
    return (item["baseline_bytes"] + item["growth_bytes"]) / GIB, bool(item.get("oom"))


def _gib(value: tuple[float | None, bool]) -> str:
    amount, oom = value
    if amount is None:
        return "-"
    return f">{amount:.2f} OOM" if oom else f"{amount:.2f}"


def _ratio(value: float | None, target: float | None = None, lower_bound: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{'>' if lower_bound else ''}{value:.2f}x"
    if target is not None:
        text += " ok" if value <= target and not lower_bound else " MISS"
    return text


def _seconds(timings: dict[str, Any], key: str) -> str:
    item = timings.get(key)
    if item is None:
        return "-"
    return "OOM" if item.get("oom") or item.get("median_s") is None else f"{item['median_s']:.3f}"


def _status(run: Run) -> str:
    if run.status == SKIPPED:
        return "skipped: no time left"
    if run.status in TIMEOUT_STATUSES:
        state = "TIMEOUT"
    elif run.status != 0:
        state = f"FAILED (exit {run.status})"
    else:
        state = "ok"
    if run.report is None:
        return state + ", no report"
    if run.report.get("partial"):
        return state + ", memory only"
    return state


def row(run: Run) -> list[str]:
    """The table cells of one run."""
    report = run.report or {}
    memory = report.get("memory") or {}
    timings = report.get("timings") or {}
    placement = report.get("placement") or {}
    plain = _total(memory.get("plain"))
    fast, low = _total(memory.get("steer_fast")), _total(memory.get("steer_low"))
    weights = "-"
    if placement:
        weights = f"{placement['weight_bytes'] / GIB:.2f}"
        if placement.get("partial"):
            weights = f"{placement['loaded_bytes'] / GIB:.2f}/{weights}"
    fast_ratio = fast[0] / plain[0] if fast[0] and plain[0] else None
    low_ratio = low[0] / plain[0] if low[0] and plain[0] else None
    time_fast = (timings.get("steering_iteration_fast") or {}).get("median_s")
    time_low = (timings.get("steering_iteration_low") or {}).get("median_s")
    time_ratio = time_low / time_fast if time_fast and time_low else None
    return [run.label, weights, _gib(plain), _gib(fast), _gib(low), _ratio(fast_ratio, TARGET_MEMORY, fast[1]),
            _ratio(low_ratio, TARGET_MEMORY, low[1]), _seconds(timings, "plain_forward"),
            _seconds(timings, "steering_iteration_fast"), _seconds(timings, "steering_iteration_low"),
            _ratio(time_ratio, TARGET_RECOMPUTE_TIME), f"{run.seconds:.0f}", _status(run)]


HEADER = ["run", "weights GiB", "plain peak", "fast peak", "low peak", "fast/plain", "low/plain", "plain fwd s",
          "fast it s", "low it s", "low/fast time", "run s", "status"]


def card_line(run: Run) -> str | None:
    """For a run that made ComfyUI see a smaller card (``--card-gib``): which peaks fit on that card."""
    report = run.report or {}
    card = (report.get("placement") or {}).get("card_gib")
    if card is None:
        return None
    memory = report.get("memory") or {}
    parts = []
    for mode, name in (("plain", "plain"), ("steer_fast", "fast"), ("steer_low", "low")):
        amount, oom = _total(memory.get(mode))
        if amount is not None:
            fits = "fits" if amount <= card and not oom else "does NOT fit"
            parts.append(f"{name} {_gib((amount, oom))} GiB {fits}")
    return f"{run.label}, as a {card:g} GiB card: " + ("; ".join(parts) or "no memory figures")


def table(runs: list[Run]) -> str:
    """The summary table (peaks in GiB, totals incl. weights; times are medians in seconds)."""
    rows = [HEADER] + [row(run) for run in runs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    devices = sorted({run.report.get("device_name", "?") for run in runs if run.report})
    return "\n".join([
        f"Learn-to-Steer GPU check: plain sampling vs a steering iteration, memory fast (no recomputation) and low "
        f"(per-block recomputation); device: {', '.join(devices) or '?'}",
        *lines,
        f"peaks: allocator peak incl. weights (CPU: process RSS, approximate); targets: peak <= {TARGET_MEMORY}x "
        f"plain, time low/fast <= {TARGET_RECOMPUTE_TIME}x; '>x OOM': ran out of memory, a lower bound; "
        "weights loaded/total where partially loaded",
        *(line for line in map(card_line, runs) if line is not None),
    ])


def main(argv: list[str] | None = None) -> None:
    """Print the table (unless ``--quiet``) and write it and the combined reports where asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("status_tsv", type=Path)
    parser.add_argument("--text", type=Path, default=None, help="also write the table here")
    parser.add_argument("--json", type=Path, default=None, help="write every run's status and report here")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    args = parser.parse_args(argv)
    runs = read_runs(args.status_tsv)
    text = table(runs)
    if not args.quiet:
        print(text, flush=True)
    if args.text is not None:
        args.text.write_text(text + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps([dataclasses.asdict(run) for run in runs], indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
