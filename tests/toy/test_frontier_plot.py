"""The frontier plot puts each benchmark row where its passes and accuracy say."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from training.toy.frontier_plot import COLOURS, _x, _y, draw_frontier, load_points


def _results(path: Path, rows: list[tuple[str, float, float]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": [{"condition": c, "passes_per_image": p, "accuracy": a}
                                         for c, p, a in rows]}), encoding="utf-8")
    return path


def test_points_sit_at_their_passes_and_accuracy(tmp_path: Path) -> None:
    first = _results(tmp_path / "seeds_a" / "results.json", [("plain", 0.0, 0.45), ("steered: official", 160.0, 0.7)])
    second = _results(tmp_path / "seeds_b" / "results.json", [("plain", 0.0, 0.40), ("steered: official", 160.0, 0.3)])
    points = load_points([first, second])
    assert [(p.condition, p.source) for p in points] == [("plain", 0), ("steered: official", 0), ("plain", 1),
                                                          ("steered: official", 1)]
    out = tmp_path / "frontier.png"
    draw_frontier(points, ["a", "b"], out, "test")
    image = Image.open(out).convert("RGB")
    top = 160.0 * 1.3
    for point in points:
        colour = COLOURS[0 if point.condition == "plain" else 1]
        assert image.getpixel((round(_x(point.passes, top)), round(_y(point.accuracy)))) == colour
    assert image.getpixel((round(_x(160.0, top)), round(_y(0.55)))) == (255, 255, 255)  # nothing in between
