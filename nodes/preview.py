"""Attention Preview: the subject and object maps the classifier saw, and the target-probability trace.

Pure rendering over a :class:`SteeringTrace`; numpy and Pillow (both ComfyUI dependencies) draw the figure.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from comfy_api.latest import io, ui
from PIL import Image, ImageDraw

from .steering import SteeringTrace, StepTrace
from .types import CATEGORY, SteeringTraceType

logger = logging.getLogger(__name__)

PANEL = 192
FIRST_AND_LAST = "first and last steered step"
EVERY = "every steered step"
SUBJECT_COLOUR = np.array([1.0, 0.25, 0.1])
OBJECT_COLOUR = np.array([0.1, 0.45, 1.0])


def _heat(map_2d: torch.Tensor, base: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Blend a (S, S) map, normalised to its maximum, over a (P, P, 3) base image."""
    m = map_2d.float()
    m = m / m.max().clamp_min(1e-12)
    m = torch.nn.functional.interpolate(m[None, None], size=(PANEL, PANEL), mode="bilinear", align_corners=False)
    alpha = m[0, 0].clamp(0, 1).numpy()[..., None]  # (P, P, 1)
    return base * (1 - 0.75 * alpha) + colour * 0.75 * alpha


def _base(image: torch.Tensor | None, index: int) -> np.ndarray:
    if image is None:
        return np.full((PANEL, PANEL, 3), 0.15)
    img = image[min(index, image.shape[0] - 1)].permute(2, 0, 1)[None].float()  # (1, 3, H, W)
    img = torch.nn.functional.interpolate(img, size=(PANEL, PANEL), mode="bilinear", align_corners=False)
    return img[0].permute(1, 2, 0).clamp(0, 1).numpy()  # (P, P, 3)


def _label(canvas: Image.Image, xy: tuple[int, int], text: str) -> None:
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([xy[0], xy[1], xy[0] + 7 * len(text) + 6, xy[1] + 14], fill=(0, 0, 0))
    draw.text((xy[0] + 3, xy[1] + 1), text, fill=(255, 255, 255))


def _plot(trace: SteeringTrace, sample: int, width: int) -> Image.Image:
    """Target probability per iteration across all steered steps, with step boundaries."""
    height = 140
    canvas = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    values: list[float] = []
    boundaries: list[int] = []
    for step in trace.steps:
        boundaries.append(len(values))
        values += [r.target_probabilities[sample] for r in step.records if sample < len(r.target_probabilities)]
    left, right, top, bottom = 40, width - 10, 20, height - 20
    draw.rectangle([left, top, right, bottom], outline=(90, 90, 90))
    for p in (0.0, 0.5, 1.0):
        y = bottom - p * (bottom - top)
        draw.line([left, y, right, y], fill=(60, 60, 60))
        draw.text((6, y - 6), f"{p:.1f}", fill=(200, 200, 200))
    finite = [(i, v) for i, v in enumerate(values) if math.isfinite(v)]
    if len(finite) > 1:
        span = max(len(values) - 1, 1)
        for b in boundaries[1:]:
            x = left + b / span * (right - left)
            draw.line([x, top, x, bottom], fill=(70, 70, 110))
        points = [(left + i / span * (right - left), bottom - v * (bottom - top)) for i, v in finite]
        draw.line(points, fill=(255, 200, 40), width=2)
    draw.text((left, 3), "p(requested relation) per iteration; vertical lines: next steered step",
              fill=(220, 220, 220))
    return canvas


NOTHING_STEERED = (
    "No step was steered: steering was off (mode off, or custom with 0 steered steps), or, with the SAMPLER node, the preview ran before "
    "sampling - connect the decoded image of that sampler's output to 'image'."
)


def _nothing_steered(image: torch.Tensor | None) -> torch.Tensor:
    """A figure that says why there is nothing to show (steering switched off is a normal use, not an error)."""
    logger.warning(NOTHING_STEERED)
    canvas = Image.new("RGB", (4 * PANEL, PANEL), (24, 24, 24))
    if image is not None:
        canvas.paste(Image.fromarray((_base(image, 0) * 255).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    words, line, y = NOTHING_STEERED.split(), "", 10
    for word in words:
        if len(line) + len(word) > 60:
            draw.text((PANEL + 10, y), line, fill=(230, 230, 230))
            line, y = "", y + 16
        line = f"{line} {word}".strip()
    draw.text((PANEL + 10, y), line, fill=(230, 230, 230))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]  # (1, H, W, 3)


def render(trace: SteeringTrace, image: torch.Tensor | None, every_step: bool) -> torch.Tensor:
    """(B, H, W, 3) figure: per sample, rows of subject/object maps before and after steering, plus the trace."""
    if not trace.steps:
        return _nothing_steered(image)
    chosen: list[StepTrace] = trace.steps if every_step else list({id(s): s for s in (trace.steps[0],
                                                                                        trace.steps[-1])}.values())
    batch = trace.steps[0].maps_before.shape[0]
    width = 4 * PANEL
    figures = []
    for b in range(batch):
        base = _base(image, b)
        rows = []
        for step in chosen:
            panels = [
                _heat(step.maps_before[b, 0], base, SUBJECT_COLOUR), _heat(step.maps_after[b, 0], base, SUBJECT_COLOUR),
                _heat(step.maps_before[b, 1], base, OBJECT_COLOUR), _heat(step.maps_after[b, 1], base, OBJECT_COLOUR),
            ]
            row = Image.fromarray((np.concatenate(panels, axis=1) * 255).astype(np.uint8))
            for k, name in enumerate(("subject, before", "subject, after", "object, before", "object, after")):
                _label(row, (k * PANEL + 4, 4), f"step {step.step}: {name}")
            rows.append(row)
        rows.append(_plot(trace, b, width))
        canvas = Image.new("RGB", (width, sum(r.height for r in rows)))
        y = 0
        for row in rows:
            canvas.paste(row, (0, y))
            y += row.height
        figures.append(torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0))
    return torch.stack(figures)  # (B, H, W, 3)


class AttentionPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2S_AttentionPreview",
            display_name="Attention Preview",
            category=f"{CATEGORY}/debug",
            description="Shows the subject (red) and object (blue) attention maps the classifier read, before and "
            "after steering, over the decoded image, and a plot of the classifier's probability for the requested "
            "relation at every iteration.",
            inputs=[
                SteeringTraceType.Input("trace", tooltip="The trace output of a Learned Spatial Steer node."),
                io.Image.Input("image", optional=True,
                               tooltip="The decoded image to draw the maps over (also makes the preview run after "
                               "sampling)."),
                io.Combo.Input("steps", options=[FIRST_AND_LAST, EVERY], default=FIRST_AND_LAST,
                               tooltip="Which steered steps to show."),
            ],
            outputs=[io.Image.Output(tooltip="The figure, one per image of the batch.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, trace: SteeringTrace, steps: str, image: io.Image.Type | None = None) -> io.NodeOutput:
        figure = render(trace, image, steps == EVERY)
        return io.NodeOutput(figure, ui=ui.PreviewImage(figure, cls=cls))
