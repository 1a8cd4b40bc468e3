"""The 512x288 JPEG thumbnail of each example: title, model, settings, the node chain, the relation asked for.

Drawing needs Pillow (``pip install pillow``); the pack itself does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devtools.workflows.graph import Workflow

THUMB_SIZE = (512, 288)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_thumbnail(workflow: Workflow, path: Path) -> None:
    """A 512x288 JPEG: title, model, settings, the node chain, and the relation the prompt asks for."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", THUMB_SIZE, (28, 30, 36))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, THUMB_SIZE[0], 6], fill=(80, 120, 220))
    draw.text((20, 16), "Learn-to-Steer", font=_font(14), fill=(140, 170, 240))
    title = workflow.title.split(": ", 1)[-1]
    size = 28
    while size > 12 and draw.textlength(title, font=_font(size)) > 305:
        size -= 1
    draw.text((20, 50), title, font=_font(size), fill=(240, 240, 240), anchor="lm")
    draw.text((20, 70), workflow.model, font=_font(15), fill=(200, 200, 200))
    draw.text((20, 90), workflow.settings, font=_font(13), fill=(160, 160, 160))
    # the relation the prompt asks for: two objects side by side and a caption
    if workflow.scene.vertical:  # one above the other: two 42 px objects in the same 70 px column
        places = ((workflow.scene.left, [395, 6, 437, 48]), (workflow.scene.right, [395, 52, 437, 94]))
    else:
        places = ((workflow.scene.left, [340, 22, 410, 92]), (workflow.scene.right, [422, 22, 492, 92]))
    for (label, fill, shape), box in places:
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        else:
            draw.rounded_rectangle(box, radius=0 if shape == "square" else 8, fill=fill)
        draw.text(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2), label, font=_font(11 if workflow.scene.vertical
                  else 13), fill=(255, 255, 255), anchor="mm")
    draw.text((416, 104), workflow.scene.caption, font=_font(11), fill=(170, 170, 170), anchor="mm")
    # the node chain, one box per step, top to bottom
    if len(workflow.chain) > 5:
        raise ValueError(f"{workflow.name}: a thumbnail shows at most 5 chain steps, got {len(workflow.chain)}")
    font = _font(13)
    y = 124
    for index, step in enumerate(workflow.chain):
        steer = "Steer" in step or "Spatial" in step
        fill = (45, 50, 85) if steer else (52, 54, 60)
        draw.rounded_rectangle([20, y, 492, y + 24], radius=6, fill=fill,
                               outline=(110, 140, 230) if steer else (90, 92, 100))
        draw.text((32, y + 12), step, font=font, fill=(230, 230, 230), anchor="lm")
        if index < len(workflow.chain) - 1:
            draw.polygon([(252, y + 26), (260, y + 26), (256, y + 31)], fill=(150, 150, 150))
        y += 32
    image.save(path, "JPEG", quality=82, optimize=True)
