"""Where nodes sit on the canvas: their boxes (title bar included) and which of them overlap.

Used on the generator's UI graphs (sizes as written) and on what the frontend reports after loading a graph (sizes
as the frontend computed them: it enlarges a node whose widgets need more room), so both checks speak the same
geometry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

TITLE_HEIGHT = 30
"""LiteGraph's ``NODE_TITLE_HEIGHT``: a node's title bar sits above ``pos``."""


class Box(NamedTuple):
    """A node's outline on the canvas: left, top (title bar included), width, height."""

    node: int
    title: str
    x: float
    y: float
    width: float
    height: float

    def overlaps(self, other: Box, gap: float = 0.0) -> bool:
        """True when the boxes, each grown by ``gap`` / 2 on every side, intersect."""
        return (self.x < other.x + other.width + gap and other.x < self.x + self.width + gap
                and self.y < other.y + other.height + gap and other.y < self.y + self.height + gap)


def ui_box(node: Mapping[str, Any]) -> Box:
    """The box of a node of a UI-format graph (``pos`` is below the title bar; ``size`` excludes it)."""
    x, y = node["pos"]
    width, height = node["size"]
    collapsed = bool(node.get("flags", {}).get("collapsed"))
    title = str(node.get("title") or node["type"])
    return Box(int(node["id"]), title, float(x), float(y) - TITLE_HEIGHT, float(width),
               TITLE_HEIGHT + (0.0 if collapsed else float(height)))


def overlapping(boxes: Iterable[Box], gap: float = 0.0) -> list[tuple[Box, Box]]:
    """Every pair of boxes that overlap (or come closer than ``gap``), in input order."""
    items = list(boxes)
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1:] if a.overlaps(b, gap)]


def describe_overlaps(pairs: Iterable[tuple[Box, Box]]) -> list[str]:
    """One readable line per overlapping pair, for error messages."""
    return [f"{a.title!r} (node {a.node}, {a.x:.0f},{a.y:.0f} {a.width:.0f}x{a.height:.0f}) overlaps {b.title!r} "
            f"(node {b.node}, {b.x:.0f},{b.y:.0f} {b.width:.0f}x{b.height:.0f})" for a, b in pairs]
