"""Attention Preview: the classifier's probability per steering pass and the subject and object maps it read.

The figure itself is drawn by :mod:`.preview_figure` (numpy and Pillow, both ComfyUI dependencies); this module is
the node.
"""

from __future__ import annotations

import logging

from comfy_api.latest import io, ui

from .preview_figure import nothing_steered, render
from .steering import SteeringTrace
from .types import CATEGORY, SteeringTraceType

logger = logging.getLogger(__name__)

FIRST_AND_LAST = "first and last steered step"
EVERY = "every steered step"

NOTHING_STEERED = (
    "No step was steered: steering was off (mode off, or custom with 0 steered steps), or, with the SAMPLER node, "
    "the preview ran before sampling - connect the decoded image of that sampler's output to 'image'."
)


class AttentionPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2S_AttentionPreview",
            display_name="Attention Preview",
            category=f"{CATEGORY}/debug",
            description="Shows what steering did: a plot of the classifier's probability for the requested relation "
            "at every steering pass, and the subject's and object's attention maps (a colour scale over a greyed "
            "copy of the decoded image) before steering and after each shown step.",
            inputs=[
                SteeringTraceType.Input("trace", tooltip="The trace output of a Learned Spatial Steer node."),
                io.Image.Input("image", optional=True,
                               tooltip="The decoded image to draw the maps over (also makes the preview run after "
                               "sampling)."),
                io.Combo.Input("steps", options=[FIRST_AND_LAST, EVERY], default=FIRST_AND_LAST,
                               tooltip="Which steered steps get map columns: the first and the last, or every one "
                               "(the grid wraps after six columns)."),
            ],
            outputs=[io.Image.Output(tooltip="The figure, one per image of the batch.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, trace: SteeringTrace, steps: str, image: io.Image.Type | None = None) -> io.NodeOutput:
        if trace.steps:
            figure = render(trace, image, steps == EVERY)
        else:  # steering switched off is a normal use, not an error
            logger.warning(NOTHING_STEERED)
            figure = nothing_steered(NOTHING_STEERED, image)
        return io.NodeOutput(figure, ui=ui.PreviewImage(figure, cls=cls))
