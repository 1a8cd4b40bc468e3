"""The table: plain vs steered peak per row, the ratio against the target, and the card classes that can steer.

A card of N GB is taken to hold N GiB, of which :data:`CUDA_CONTEXT_GIB` goes to the CUDA context (driver, kernels,
cuBLAS/cuDNN workspaces, which the account cannot see) before any tensor: a pass fits when its peak + 1 GiB <= N GiB. The allocator's rounding
and fragmentation (typically a few percent) and the text encoders and VAE (ComfyUI offloads them while sampling)
are not included, and every weight is resident (no partial loading).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .account import GIB, PassAccount
from .architectures import ARCHITECTURES, Row, weights_label

logger = logging.getLogger(__name__)

CARD_GB: tuple[int, ...] = (8, 12, 16, 24, 48)
CUDA_CONTEXT_GIB = 1.0
TARGET_RATIO = 1.3
"""The issue's target: steering peak <= 1.3x the plain sampling peak (same model, dtype and resolution)."""


def cards_that_fit(total_bytes: int) -> list[int]:
    """The card classes (GB) whose memory holds ``total_bytes`` plus the CUDA context."""
    return [gb for gb in CARD_GB if total_bytes / GIB + CUDA_CONTEXT_GIB <= gb]


def _cards(total_bytes: int) -> str:
    fit = cards_that_fit(total_bytes)
    return ", ".join(str(gb) for gb in fit) if fit else f"none (> {CARD_GB[-1]})"


@dataclass(frozen=True)
class RowResult:
    """The three accounted passes of one row."""

    row: Row
    plain: PassAccount
    fast: PassAccount
    low: PassAccount

    @property
    def ratio(self) -> float:
        """Steering (memory low) peak / plain peak."""
        return self.low.total_bytes / self.plain.total_bytes

    @property
    def meets_target(self) -> bool:
        return self.ratio <= TARGET_RATIO

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.row.arch, "resolution": self.row.resolution, "weights": self.row.weights,
                "plain": self.plain.to_json(), "fast": self.fast.to_json(), "low": self.low.to_json(),
                "low_over_plain": self.ratio, "meets_target": self.meets_target,
                "cards_plain": cards_that_fit(self.plain.total_bytes),
                "cards_low": cards_that_fit(self.low.total_bytes)}


def markdown_table(results: list[RowResult]) -> str:
    """The README table (GiB; peaks include the resident weights)."""
    lines = [
        "| Family | Resolution | Weights | Plain peak (GiB) | Steering fast (GiB) | Steering low (GiB) "
        "| Low / plain | Plain fits (GB cards) | Steering low fits (GB cards) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        arch = ARCHITECTURES[r.row.arch]
        verdict = "meets 1.3x" if r.meets_target else "misses 1.3x"
        lines.append(
            f"| {arch.label} | {r.row.resolution} | {weights_label(arch, r.row.weights)} "
            f"| {r.plain.total_bytes / GIB:.2f} | {r.fast.total_bytes / GIB:.2f} | {r.low.total_bytes / GIB:.2f} "
            f"| {r.ratio:.2f} ({verdict}) | {_cards(r.plain.total_bytes)} | {_cards(r.low.total_bytes)} |"
        )
    return "\n".join(lines)


def breakdown(account: PassAccount) -> str:
    """E.g. "weights 22.17 + 4.18 GiB at the backward (forward 2.54, backward 1.64)"."""
    parts = ", ".join(f"{k} {v / GIB:.2f}" for k, v in sorted(account.peak_by_category.items(), key=lambda kv: -kv[1])
                      if v >= 0.005 * GIB)
    return (f"weights {account.weight_bytes / GIB:.2f} + {account.peak_bytes / GIB:.2f} GiB at the "
            f"{account.peak_phase} ({parts})")


def row_notes(results: list[RowResult]) -> str:
    """One line per row: what each peak is made of, and for rows that miss the target, what dominates."""
    lines = []
    for r in results:
        arch = ARCHITECTURES[r.row.arch]
        name = f"{arch.label} {r.row.resolution} px {weights_label(arch, r.row.weights)}"
        lines.append(f"- {name}: plain {breakdown(r.plain)}; steering low {breakdown(r.low)}, keeps "
                     f"{r.low.kept_bytes / GIB:.2f} GiB through the forward; steering fast keeps "
                     f"{r.fast.kept_bytes / GIB:.2f} GiB"
                     + ("" if r.meets_target else f"; MISSES the {TARGET_RATIO}x target ({r.ratio:.2f}x)"))
    return "\n".join(lines)
