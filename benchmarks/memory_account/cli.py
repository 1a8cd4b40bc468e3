"""The account's command line: the GPU table (default), the CPU validation (``--validate``), one measurement."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from .account import account_pass
from .architectures import ARCHITECTURES, TABLE_ROWS, WEIGHT_FORMATS, Row
from .attention import ATTENTION_MODELS
from .build import build_setup
from .comfy_env import import_comfy
from .measure import measure_here, print_measurement
from .report import CARD_GB, CUDA_CONTEXT_GIB, TARGET_RATIO, RowResult, markdown_table, row_notes
from .validate import DEFAULT_CASES, markdown_checks, resolve_case, validate

logger = logging.getLogger(__name__)

DESCRIPTION = "Peak memory of plain sampling vs a steering iteration for full-size models, without a GPU."


def parse_row(text: str) -> Row:
    """``sd15:512:half`` -> Row."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in ARCHITECTURES or not parts[1].isdigit() or parts[2] not in WEIGHT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"a row is arch:resolution:weights with arch in {sorted(ARCHITECTURES)} and weights in "
            f"{WEIGHT_FORMATS}; got {text!r}")
    return Row(parts[0], int(parts[1]), parts[2])


def account_rows(rows: list[Row], attention: str) -> list[RowResult]:
    """Account the three passes of every row on the meta device."""
    m = import_comfy()
    results = []
    for row in rows:
        setup = build_setup(m, ARCHITECTURES[row.arch], row.resolution, row.weights, "meta")
        plain, fast, low = (account_pass(setup, name, attention) for name in ("plain", "fast", "low"))
        results.append(RowResult(row, plain, fast, low))
    return results


def _quiet_comfy(record: logging.LogRecord) -> bool:
    """Drop ComfyUI's informational messages (it logs on the root logger while building models)."""
    return record.name != "root" or record.levelno >= logging.WARNING


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--rows", type=parse_row, nargs="+", default=list(TABLE_ROWS),
                        help="arch:resolution:weights rows (default: the README table)")
    parser.add_argument("--attention", choices=ATTENTION_MODELS, default=None,
                        help="attention kernel model (default: fused for the table, math for --validate)")
    parser.add_argument("--validate", nargs="*", default=None, metavar="ARCH:RES",
                        help=f"check the account against measured CPU memory (default cases: "
                             f"{' '.join(DEFAULT_CASES)})")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--measure-one", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_comfy)
    report: dict[str, Any] = {}
    if args.measure_one is not None:
        m = import_comfy()
        arch, resolution = resolve_case(m, args.measure_one)
        print_measurement(measure_here(m, arch, resolution, args.attention or "math"))
        return
    if args.validate is not None:
        m = import_comfy()
        checks = validate(m, list(args.validate) or list(DEFAULT_CASES), args.attention or "math")
        print(markdown_checks(checks))
        report["validation"] = [c.to_json() for c in checks]
    else:
        attention = args.attention or "fused"
        results = account_rows(args.rows, attention)
        print(markdown_table(results))
        print()
        print(f"Peaks in GiB, weights included; attention modelled as {attention}; a card of N GB fits a pass when "
              f"peak + {CUDA_CONTEXT_GIB:.0f} GiB (CUDA context) <= N GiB; cards {', '.join(map(str, CARD_GB))} GB; "
              f"target low/plain <= {TARGET_RATIO}.")
        print(row_notes(results))
        report["attention"] = attention
        report["rows"] = [r.to_json() for r in results]
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
