"""The demo's report: judge each seed's plain and steered image and lay them out in one grid image.

``python -m training.toy.demo --prompt "a blue circle above a red square" --pair 0 plain0.png steered0.png ...
--out grid.png`` prints, per seed, what the judge (:mod:`.judge`) read in each panel, e.g.::

    seed 0: plain: below - wrong; steered: above - right

and writes a grid: one row per seed, the plain panel left and the steered panel right, each enlarged with
nearest-neighbour sampling to at least ``--panel`` pixels (256 by default) so the shapes are easy to see, with the
judge's reading under each panel. ``scripts/run_toy_world.py`` runs it with ComfyUI's Python after the workflow has
run once per seed; it needs only numpy and Pillow (both ComfyUI requirements).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from l2s_core.relations import canonical_relation

from .judge import Palette, judge
from .vocabulary import words_of

logger = logging.getLogger(__name__)

RELATION_WORDS: tuple[tuple[str, ...], ...] = (("to", "the", "left", "of"), ("to", "the", "right", "of"), ("above",),
                                               ("below",))
"""The relation phrases of toy prompts, as words."""
LABEL_HEIGHT = 22
HEADER_HEIGHT = 28
GAP = 8


@dataclass(frozen=True)
class Request:
    """What a toy prompt asks for."""

    subject: str
    relation: str
    object: str


@dataclass(frozen=True)
class SeedReading:
    """The judge's reading of one seed's two panels."""

    seed: int
    plain: str
    steered: str
    plain_correct: bool
    steered_correct: bool

    def line(self) -> str:
        """``seed 0: plain: below - wrong; steered: above - right``."""
        return f"seed {self.seed}: plain: {self.plain}; steered: {self.steered}"


def parse_request(prompt: str) -> Request:
    """Split "a <colour> <shape> <relation> a <colour> <shape>" into subject, relation and object.

    Raises:
        ValueError: the prompt is not of that form.
    """
    words = words_of(prompt)
    for phrase in RELATION_WORDS:
        n = len(phrase)
        for start in range(len(words) - n + 1):
            if tuple(words[start:start + n]) == phrase:
                subject = [w for w in words[:start] if w not in ("a", "an", "the")]
                obj = [w for w in words[start + n:] if w not in ("a", "an", "the")]
                if len(subject) == 2 and len(obj) == 2:
                    return Request(" ".join(subject), canonical_relation(" ".join(phrase)), " ".join(obj))
    raise ValueError(f"Not a toy relation prompt ('a <colour> <shape> <relation> a <colour> <shape>'): {prompt!r}")


def world_palette(world: Path) -> Palette:
    """The judge's palette for the images of a toy-world bundle, from its metadata (kinds and backgrounds).

    Raises:
        ValueError: the file is not a toy-world bundle.
    """
    from l2s_core.toy_bundle import read_bundle_metadata

    return Palette.of_world(read_bundle_metadata(world).get("world", {}))


def read_pair(request: Request, seed: int, plain: np.ndarray, steered: np.ndarray, palette: Palette | None = None
              ) -> SeedReading:
    """Judge one seed's plain and steered image against the request (``palette``: None, every toy colour)."""
    palette = palette if palette is not None else Palette()
    verdicts = [judge(image, request.subject, request.relation, request.object, backgrounds=palette.backgrounds,
                      colours=palette.colours) for image in (plain, steered)]
    texts = [v.summary(request.relation) for v in verdicts]
    return SeedReading(seed, texts[0], texts[1], verdicts[0].correct, verdicts[1].correct)


def _enlarge(image: Image.Image, panel: int) -> Image.Image:
    factor = max(1, -(-panel // max(image.size)))  # ceil(panel / side)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def grid_image(prompt: str, rows: Sequence[tuple[SeedReading, Image.Image, Image.Image]], panel: int = 256
               ) -> Image.Image:
    """One row per seed: plain | steered, each enlarged (nearest) to at least ``panel`` px, readings underneath."""
    font = ImageFont.load_default()
    enlarged = [(r, _enlarge(p, panel), _enlarge(s, panel)) for r, p, s in rows]
    w, h = enlarged[0][1].size
    width = 2 * w + 3 * GAP
    height = HEADER_HEIGHT + len(enlarged) * (h + LABEL_HEIGHT + GAP) + GAP
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP, 8), f'"{prompt}"   left: plain sampling   right: steered', fill=(0, 0, 0), font=font)
    y = HEADER_HEIGHT
    for reading, plain, steered in enlarged:
        for column, (image, text, ok) in enumerate(((plain, reading.plain, reading.plain_correct),
                                                    (steered, reading.steered, reading.steered_correct))):
            x = GAP + column * (w + GAP)
            canvas.paste(image, (x, y))
            label = f"seed {reading.seed}, {'plain' if column == 0 else 'steered'}: {text}"
            draw.text((x, y + h + 5), label, fill=(0, 110, 0) if ok else (170, 0, 0), font=font)
        y += h + LABEL_HEIGHT + GAP
    return canvas


def report(prompt: str, pairs: Sequence[tuple[int, Path, Path]], out: Path, panel: int = 256,
           world: Path | None = None) -> list[SeedReading]:
    """Judge every (seed, plain image, steered image), write the grid to ``out`` and return the readings.

    ``world``: the toy-world bundle that drew the images; the judge then uses its colours and backgrounds only.
    """
    request = parse_request(prompt)
    palette = world_palette(world) if world is not None else Palette()
    rows = []
    for seed, plain_path, steered_path in pairs:
        plain, steered = (Image.open(p).convert("RGB") for p in (plain_path, steered_path))
        reading = read_pair(request, seed, np.asarray(plain), np.asarray(steered), palette)
        rows.append((reading, plain, steered))
    grid_image(prompt, rows, panel).save(out)
    return [r for r, _, _ in rows]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Judge the toy demo's plain and steered images and save a grid.")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--pair", nargs=3, action="append", metavar=("SEED", "PLAIN", "STEERED"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--panel", type=int, default=256, help="smallest panel side in pixels (default 256)")
    parser.add_argument("--world", type=Path, default=None,
                        help="the toy-world bundle that drew the images (the judge uses its colours and backgrounds; "
                             "default: every toy colour and background)")
    args = parser.parse_args(argv)
    try:
        readings = report(args.prompt, [(int(s), Path(p), Path(q)) for s, p, q in args.pair], args.out, args.panel,
                          args.world)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - command-line error
        return 2
    for reading in readings:
        print(reading.line())  # noqa: T201 - the command's result
    fixed = sum(r.steered_correct and not r.plain_correct for r in readings)
    print(f"plain right in {sum(r.plain_correct for r in readings)} of {len(readings)} seeds, steered right in "  # noqa: T201
          f"{sum(r.steered_correct for r in readings)}; steering fixed {fixed}")
    print(f"grid: {args.out.resolve()}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
