"""The accuracy / compute frontier of steering, drawn from benchmark results (``results.json`` of ``toy bench``).

One point per benchmark row: steering passes per image (log scale, plain sampling at the left edge) against spatial
accuracy, one marker shape per results file (e.g. the default seeds and a re-run on other seeds), each row labelled
by its condition (a colour, and the legend's number next to the points of the first results file). Drawn with
Pillow (a dependency of diffusers), so no plotting library is needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 1100, 720
LEFT, RIGHT, TOP, BOTTOM = 80, 380, 40, 70
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (0, 0, 0), (255, 215, 0),
           (0, 100, 0), (128, 0, 0), (0, 0, 139), (255, 105, 180)]


@dataclass(frozen=True)
class Point:
    """One benchmark row of one results file."""

    condition: str
    passes: float
    accuracy: float
    source: int  # index of the results file


def load_points(results: Sequence[Path]) -> list[Point]:
    """Every row of every ``results.json`` (``toy bench --out``)."""
    points = []
    for index, path in enumerate(results):
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        points += [Point(r["condition"], float(r["passes_per_image"]), float(r["accuracy"]), index)
                   for r in data["rows"]]
    return points


def _x(passes: float, top: float) -> float:
    """Log scale from 0.5 passes (where plain sampling, 0 passes, sits) to ``top``."""
    low, high = math.log10(0.5), math.log10(max(top, 2.0))
    value = math.log10(max(passes, 0.5))
    return LEFT + (value - low) / (high - low) * (WIDTH - LEFT - RIGHT)


def _y(accuracy: float) -> float:
    return TOP + (1.0 - accuracy) * (HEIGHT - TOP - BOTTOM)


def draw_frontier(points: Sequence[Point], source_names: Sequence[str], out: Path, title: str) -> None:
    """Write the frontier PNG to ``out``."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    top = max((p.passes for p in points), default=2.0) * 1.3
    # axes and grid
    for accuracy in [i / 10 for i in range(11)]:
        y = _y(accuracy)
        draw.line([(LEFT, y), (WIDTH - RIGHT, y)], fill=(230, 230, 230))
        draw.text((LEFT - 40, y - 6), f"{accuracy:.1f}", fill="black")
    tick = 1.0
    while tick <= top:
        x = _x(tick, top)
        draw.line([(x, TOP), (x, HEIGHT - BOTTOM)], fill=(230, 230, 230))
        draw.text((x - 8, HEIGHT - BOTTOM + 8), f"{tick:g}", fill="black")
        tick *= 2
    draw.text((_x(0.5, top) - 10, HEIGHT - BOTTOM + 8), "plain", fill="black")
    draw.rectangle([LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM], outline="black")
    draw.text((LEFT, 12), title, fill="black")
    draw.text(((WIDTH - RIGHT) // 2 - 60, HEIGHT - 30), "steering passes per image (log scale)", fill="black")
    draw.text((8, TOP - 20), "spatial accuracy", fill="black")
    # points: colour per condition, shape per results file
    conditions = list(dict.fromkeys(p.condition for p in points))
    for p in points:
        colour = COLOURS[conditions.index(p.condition) % len(COLOURS)]
        x, y, r = _x(p.passes, top), _y(p.accuracy), 6
        if p.source % 2 == 0:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline="black")
        else:
            draw.polygon([(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)], fill=colour, outline="black")
        if p.source == 0:  # the legend's number, once per condition (colours repeat past 16 conditions)
            draw.text((x + r + 2, y - r - 4), str(conditions.index(p.condition) + 1), fill="black")
    # legend
    x0, y0 = WIDTH - RIGHT + 20, TOP
    for i, name in enumerate(conditions):
        colour = COLOURS[i % len(COLOURS)]
        draw.rectangle([x0, y0 + 18 * i, x0 + 10, y0 + 18 * i + 10], fill=colour)
        draw.text((x0 + 16, y0 + 18 * i - 1), f"{i + 1}. {name.removeprefix('steered: ')}", fill="black")
    y1 = y0 + 18 * len(conditions) + 16
    for i, name in enumerate(source_names):
        shape = "circle" if i % 2 == 0 else "triangle"
        draw.text((x0, y1 + 18 * i), f"{shape}: {name}", fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
