"""The Attention Preview figure: the classifier's probability per steering pass, and where the two objects attend.

One figure per image of the batch, top to bottom:

1. a title naming the relation and its probability before and after steering;
2. the plot of p(relation) at every steering pass (the clearest sign of what steering did), one band per steered
   step, labelled with the step;
3. the attention maps: a row for the subject and a row for the object, one column per moment (the first chosen step
   before steering, then every chosen step after it), wrapping after :data:`MAX_COLUMNS` columns. Each map is drawn
   as a viridis colour scale over a greyed copy of the image, so the map's colours never pass for the image's own
   (the toy world's shapes are red and blue).

Pure numpy / Pillow / torch: no ComfyUI imports, so the figure is unit-tested without ComfyUI. The trace is read
through the attributes of :class:`nodes.steering.SteeringTrace` (``relations``, ``steps``; each step ``step``,
``records[i].target_probabilities``, ``maps_before`` / ``maps_after`` of shape (B, 2, S, S)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

MAX_COLUMNS = 4
"""Map columns per row before the grid wraps."""
MAX_PANEL = 180
"""Largest side of one map panel (pixels)."""
MAX_MAP_STEPS = 11
"""With "every steered step", at most this many steps get map columns (evenly spaced, first and last included);
the plot always shows every pass."""
FIGURE_WIDTH = 800
"""Shown about 750 px wide on the canvas: the text sizes below are chosen for that."""
LABEL_WIDTH = 124
"""The strip left of the maps that names the subject and object rows."""
PLOT_HEIGHT = 200
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
MUTED = (170, 170, 170)
CURVE = (255, 196, 40)
VIRIDIS = np.array([(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141), (39, 173, 129),
                    (92, 200, 99), (170, 220, 50), (253, 231, 37)], dtype=np.float32) / 255.0
"""Matplotlib's viridis at 9 evenly spaced points (perceptually uniform, readable in greyscale)."""
RELATION_WORDS = ("to the left of", "to the right of", "above", "below")


class _Record(Protocol):
    target_probabilities: Sequence[float]


class _Step(Protocol):
    step: int
    records: Sequence[_Record]
    maps_before: torch.Tensor
    maps_after: torch.Tensor


class _Trace(Protocol):
    relations: Sequence[str]
    steps: Sequence[_Step]


def font(size: int) -> Any:
    """Pillow's scalable default font (Pillow >= 10.1), else its fixed bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def viridis(values: np.ndarray) -> np.ndarray:
    """(...,) values in [0, 1] -> (..., 3) RGB in [0, 1]."""
    position = np.clip(values, 0.0, 1.0) * (len(VIRIDIS) - 1)
    low = np.floor(position).astype(int).clip(0, len(VIRIDIS) - 2)
    frac = (position - low)[..., None]
    return VIRIDIS[low] * (1 - frac) + VIRIDIS[low + 1] * frac


def greyed(image: torch.Tensor | None, index: int, side: int) -> np.ndarray:
    """(side, side, 3) grey, low-contrast copy of image ``index`` of a (B, H, W, 3) batch; mid-grey without one."""
    if image is None:
        return np.full((side, side, 3), 0.35, dtype=np.float32)
    img = image[min(index, image.shape[0] - 1)].permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    img = torch.nn.functional.interpolate(img, size=(side, side), mode="bilinear", align_corners=False)
    rgb = img[0].permute(1, 2, 0).clamp(0, 1).numpy()  # (side, side, 3)
    luminance = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (side, side)
    return np.repeat((0.25 + 0.5 * luminance)[..., None], 3, axis=-1)


def heat(map_2d: torch.Tensor, base: np.ndarray) -> np.ndarray:
    """A (S, S) map, normalised to its maximum, as viridis over ``base`` (P, P, 3); weak attention stays grey."""
    side = base.shape[0]
    m = map_2d.float()
    m = m / m.max().clamp_min(1e-12)
    m = torch.nn.functional.interpolate(m[None, None], size=(side, side), mode="bilinear", align_corners=False)
    values = m[0, 0].clamp(0, 1).numpy()  # (P, P)
    alpha = (0.85 * values)[..., None]
    return base * (1 - alpha) + viridis(values) * alpha


def split_relation(relation: str) -> tuple[str, str, str]:
    """'blue circle above red square' -> ('blue circle', 'above', 'red square'); unknown: (text, '', '')."""
    for word in RELATION_WORDS:
        marker = f" {word} "
        if marker in relation:
            subject, obj = relation.split(marker, 1)
            return subject.strip(), word, obj.strip()
    return relation, "", ""


def probability(value: float) -> str:
    """As the steer node's report writes it: two decimals, three below 0.01 and above 0.99."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if value > 0.99 or value < 0.01 else f"{value:.2f}"


def _sample_probabilities(step: _Step, sample: int) -> list[float]:
    return [float(r.target_probabilities[sample]) for r in step.records if sample < len(r.target_probabilities)]


def _title(trace: _Trace, sample: int, width: int) -> Image.Image:
    """Two lines: what is steered, and the probability before the first and after the last steered step."""
    subject, word, obj = split_relation(trace.relations[0]) if trace.relations else ("?", "", "")
    first = _sample_probabilities(trace.steps[0], sample)
    last = _sample_probabilities(trace.steps[-1], sample)
    target = f"p({word or 'relation'})"
    canvas = Image.new("RGB", (width, 64), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    head = f"'{subject}' {word} '{obj}'" if word else subject
    draw.text((12, 6), head, font=font(24), fill=TEXT)
    before = probability(first[0]) if first else "n/a"
    after = probability(last[-1]) if last else "n/a"
    steps = len(trace.steps)
    draw.text((12, 36), f"{target}: {before} before steering -> {after} after {steps} steered step"
              f"{'s' if steps != 1 else ''}", font=font(20), fill=CURVE)
    return canvas


def _plot(trace: _Trace, sample: int, width: int) -> Image.Image:
    """p(relation) at every steering pass; a band per steered step, labelled with the step number."""
    canvas = Image.new("RGB", (width, PLOT_HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    small = font(17)
    word = split_relation(trace.relations[0])[1] if trace.relations else ""
    values: list[float] = []
    bands: list[tuple[int, int, int]] = []  # (first pass, passes, step)
    for step in trace.steps:
        probs = _sample_probabilities(step, sample)
        bands.append((len(values), len(probs), step.step))
        values += probs
    left, right, top, bottom = 64, width - 16, 34, PLOT_HEIGHT - 44
    span = max(len(values) - 1, 1)

    def x_of(index: float) -> float:
        return left + index / span * (right - left)

    for k, (start, count, _) in enumerate(bands):
        if k % 2:
            draw.rectangle([x_of(start - 0.5), top, x_of(start + count - 0.5), bottom], fill=(38, 38, 46))
    for p in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = bottom - p * (bottom - top)
        draw.line([left, y, right, y], fill=(70, 70, 70) if p in (0.0, 1.0) else (48, 48, 48))
        draw.text((left - 8, y), f"{p:.2f}".rstrip("0").rstrip(".") if p not in (0.0, 1.0) else f"{p:.0f}",
                  font=small, fill=MUTED, anchor="rm")
    label_every = max(1, math.ceil(len(bands) / 12))
    for k, (start, count, step) in enumerate(bands):
        if k % label_every == 0:
            draw.text((x_of(start + (count - 1) / 2), bottom + 6), str(step), font=small, fill=MUTED, anchor="mt")
    draw.text((left, bottom + 24), "steered step (shaded bands); within a band, one point per pass", font=small,
              fill=MUTED)
    points = [(x_of(i), bottom - v * (bottom - top)) for i, v in enumerate(values) if math.isfinite(v)]
    if len(points) > 1:
        draw.line(points, fill=CURVE, width=3)
    for x, y in points:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=CURVE)
    draw.text((left, 6), f"p({word or 'relation'}) at each steering pass", font=font(20), fill=TEXT)
    return canvas


def chosen_steps(steps: Sequence[_Step], every_step: bool) -> list[_Step]:
    """The steps that get map columns: the first and the last, or every one up to :data:`MAX_MAP_STEPS`."""
    if not every_step:
        return list({id(s): s for s in (steps[0], steps[-1])}.values())
    if len(steps) <= MAX_MAP_STEPS:
        return list(steps)
    picks = sorted({round(i * (len(steps) - 1) / (MAX_MAP_STEPS - 1)) for i in range(MAX_MAP_STEPS)})
    return [steps[i] for i in picks]


def _columns(steps: Sequence[_Step]) -> list[tuple[str, _Step, bool]]:
    """(label, step, after?) per map column: the first step before steering, then each step after it."""
    columns = [(f"step {steps[0].step} before", steps[0], False)]
    return columns + [(f"step {s.step} after", s, True) for s in steps]


def _maps(trace: _Trace, chosen: Sequence[_Step], image: torch.Tensor | None, sample: int, width: int,
          capped: bool) -> Image.Image:
    """The map grid, and a line saying which steps it shows when "every steered step" was capped."""
    grid = _grid(trace, chosen, image, sample, width)
    if not capped:
        return grid
    note = Image.new("RGB", (width, 26), BACKGROUND)
    ImageDraw.Draw(note).text((LABEL_WIDTH, 4), f"maps of {len(chosen)} of the {len(trace.steps)} steered steps, "
                              "evenly spaced (the plot shows them all)", font=font(17), fill=MUTED)
    return _stack_images([grid, note], width)


def _grid(trace: _Trace, chosen: Sequence[_Step], image: torch.Tensor | None, sample: int,
          width: int) -> Image.Image:
    """Subject and object rows of map panels, one column per moment, wrapped after :data:`MAX_COLUMNS` columns."""
    columns = _columns(chosen)
    per_row = min(len(columns), MAX_COLUMNS)
    gap = 6
    panel = min(MAX_PANEL, (width - LABEL_WIDTH - gap * per_row) // per_row)
    caption = 48
    bands = math.ceil(len(columns) / per_row)
    band_height = caption + 2 * (panel + gap) + 12
    canvas = Image.new("RGB", (width, bands * band_height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    base = greyed(image, sample, panel)
    subject, _, obj = split_relation(trace.relations[0]) if trace.relations else ("subject", "", "object")
    names = (("subject", subject), ("object", obj or "object"))
    for index, (label, step, after) in enumerate(columns):
        band, col = divmod(index, per_row)
        x = LABEL_WIDTH + col * (panel + gap)
        y = band * band_height
        probs = _sample_probabilities(step, sample)
        p = probs[-1] if after else probs[0] if probs else math.nan
        draw.text((x + panel / 2, y + 2), label, font=font(18), fill=TEXT, anchor="mt")
        draw.text((x + panel / 2, y + 23), f"p {probability(p)}", font=font(18), fill=CURVE, anchor="mt")
        maps = step.maps_after if after else step.maps_before  # (B, 2, S, S)
        for row in range(2):
            rgb = heat(maps[min(sample, maps.shape[0] - 1), row], base)
            tile = Image.fromarray((rgb * 255).astype(np.uint8))
            canvas.paste(tile, (x, y + caption + row * (panel + gap)))
    for band in range(bands):
        for row, (kind, phrase) in enumerate(names):
            y = band * band_height + caption + row * (panel + gap) + panel / 2
            draw.text((8, y - 12), kind, font=font(18), fill=MUTED)
            draw.text((8, y + 10), _fit(draw, phrase, LABEL_WIDTH - 14, 18), font=font(18), fill=TEXT)
    return canvas


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, size: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font(size)) <= width:
        return text
    while text and draw.textlength(text + "...", font=font(size)) > width:
        text = text[:-1]
    return text + "..."


def _legend(width: int) -> Image.Image:
    """The colour scale: what the map colours mean."""
    canvas = Image.new("RGB", (width, 40), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    bar = viridis(np.linspace(0, 1, 240, dtype=np.float32))[None].repeat(14, axis=0)  # (14, 240, 3)
    canvas.paste(Image.fromarray((bar * 255).astype(np.uint8)), (LABEL_WIDTH, 6))
    draw.text((LABEL_WIDTH + 250, 13), "attention low -> high, over the greyed image", font=font(17), fill=MUTED,
              anchor="lm")
    return canvas


def _stack_images(parts: Sequence[Image.Image], width: int) -> Image.Image:
    canvas = Image.new("RGB", (width, sum(p.height for p in parts)), BACKGROUND)
    y = 0
    for part in parts:
        canvas.paste(part, (0, y))
        y += part.height
    return canvas


def _stack(parts: Sequence[Image.Image], width: int) -> torch.Tensor:
    return torch.from_numpy(np.asarray(_stack_images(parts, width), dtype=np.float32) / 255.0)  # (H, W, 3)


def render(trace: _Trace, image: torch.Tensor | None, every_step: bool) -> torch.Tensor:
    """(B, H, W, 3) figure, one per sample: title, probability plot, subject/object map grid, colour legend.

    Raises:
        ValueError: the trace has no steered step (see :func:`nothing_steered` for that case).
    """
    if not trace.steps:
        raise ValueError("render needs at least one steered step; use nothing_steered() for an empty trace")
    steps = list(trace.steps)
    chosen = chosen_steps(steps, every_step)
    capped = every_step and len(chosen) < len(steps)
    batch = steps[0].maps_before.shape[0]
    figures = [_stack([_title(trace, b, FIGURE_WIDTH), _plot(trace, b, FIGURE_WIDTH),
                       _maps(trace, chosen, image, b, FIGURE_WIDTH, capped), _legend(FIGURE_WIDTH)], FIGURE_WIDTH)
               for b in range(batch)]
    return torch.stack(figures)  # (B, H, W, 3)


def nothing_steered(message: str, image: torch.Tensor | None) -> torch.Tensor:
    """(1, H, W, 3): the image (if any) and why there is nothing to show, in words."""
    side = 256
    canvas = Image.new("RGB", (FIGURE_WIDTH, side + 24), BACKGROUND)
    if image is not None:
        img = image[0].permute(2, 0, 1)[None].float()
        img = torch.nn.functional.interpolate(img, size=(side, side), mode="bilinear", align_corners=False)
        rgb = img[0].permute(1, 2, 0).clamp(0, 1).numpy()
        canvas.paste(Image.fromarray((rgb * 255).astype(np.uint8)), (12, 12))
    draw = ImageDraw.Draw(canvas)
    x, y, line = side + 36, 16, ""
    for word in message.split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font(20)) > FIGURE_WIDTH - x - 12:
            draw.text((x, y), line, font=font(20), fill=TEXT)
            line, y = word, y + 28
        else:
            line = candidate
    draw.text((x, y), line, font=font(20), fill=TEXT)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]  # (1, H, W, 3)
