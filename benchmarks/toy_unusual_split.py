"""Where plain sampling's accuracy on unusual arrangements comes from: the opposite of the habit, or the other axis.

Every ordered pair of the toy world has one usual arrangement (the co-occurrence bias of its training scenes, e.g.
"red square to the left of blue circle"). The benchmark's three unusual requests for that pair are of two kinds:

* **opposite**: the inverse of the habit ("red square to the right of blue circle"), the same axis;
* **crosswise**: one of the two relations on the other axis ("red square above blue circle").

For each kind this prints how many images the benchmark's judge finds right, and, for the images with both objects
found, which relations hold between the drawn boxes under the GenEval rule: the habit, the request, both (a
diagonal), the request reversed (the requested axis, the wrong way round), another one, or none. Sampling nothing itself, it reads the images
that ``python -m training toy bench --save-images --out DIR`` writes (``DIR/images/<condition>/``, files named
``<grid index>_<seed>_<ok|no>.png``) and judges them again. Run from the repository root, with the world that
drew them::

    python benchmarks/toy_unusual_split.py toy_world/models/toy_world.safetensors runs/bench/images/plain
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for training

from l2s_core.toy_bundle import BundleError, read_bundle_metadata  # noqa: E402
from training.geometry import relations_from_boxes  # noqa: E402
from training.toy.benchmark import SAVED_IMAGE_NAME, prompt_grid  # noqa: E402
from training.toy.judge import Palette, judge  # noqa: E402
from training.toy.scenes import INVERSE, usual_relation  # noqa: E402

logger = logging.getLogger("toy_unusual_split")


def drawn_layout(holding: frozenset[str], habit: str, request: str) -> str:
    """Name what the drawn boxes show: "habit", "request", "both" (a diagonal), "reversed" (the inverse of the
    request, without the habit), "other" or "none"."""
    if not holding:
        return "none"
    if habit in holding and request in holding:
        return "both"
    if request in holding:
        return "request"
    if habit in holding:
        return "habit"
    if INVERSE[request] in holding:
        return "reversed"
    return "other"


def split(world: Path, folders: list[Path]) -> tuple[Counter, Counter]:
    """Per kind of unusual request: (kind, correct) counts, and (kind, drawn layout) counts for images with both
    objects found."""
    described = read_bundle_metadata(world)["world"]
    kinds = described["kinds"]
    palette = Palette.of_world(described)
    grid = prompt_grid(kinds)  # the benchmark's default grid: every ordered pair
    verdicts: Counter = Counter()
    layouts: Counter = Counter()
    for folder in folders:
        images = sorted(folder.glob("*.png"))
        if not images:
            raise FileNotFoundError(f"No benchmark images in {folder}; run `python -m training toy bench "
                                    f"--save-images --out DIR` and pass DIR/images/<condition>.")
        for path in images:
            name = SAVED_IMAGE_NAME.fullmatch(path.stem)
            if name is None or int(name["index"]) >= len(grid):
                raise ValueError(f"{path} is not an image of the benchmark's default grid for this world (names "
                                 f"'<grid index>_<seed>_<ok|no>.png', index below {len(grid)}); pass the folders "
                                 f"that `toy bench --save-images` wrote with this world.")
            item = grid[int(name["index"])]
            if item.usual:
                continue
            habit = usual_relation(item.subject, item.object, kinds)
            kind = "opposite" if INVERSE[habit] == item.relation else "crosswise"
            pixels = np.asarray(Image.open(path).convert("RGB"))
            verdict = judge(pixels, item.subject, item.relation, item.object, backgrounds=palette.backgrounds,
                            colours=palette.colours)
            verdicts[(kind, verdict.correct)] += 1
            boxes = dict(verdict.boxes)
            if all(verdict.present) and item.subject in boxes and item.object in boxes:
                holding = relations_from_boxes(boxes[item.subject], boxes[item.object])
                layouts[(kind, drawn_layout(holding, habit, item.relation))] += 1
    return verdicts, layouts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("world", type=Path, help="the toy world bundle that drew the images")
    parser.add_argument("folders", type=Path, nargs="+", help="folders of images saved by `toy bench --save-images`")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        verdicts, layouts = split(args.world, args.folders)
    except (BundleError, FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    for kind in ("opposite", "crosswise"):
        right, wrong = verdicts[(kind, True)], verdicts[(kind, False)]
        total = right + wrong
        drawn = ", ".join(f"{name} {layouts[(kind, name)]}" for name in ("habit", "request", "both", "reversed", "other",
                                                                              "none"))
        logger.info("%-9s requests: %3d of %3d right (%.3f); both objects found, the boxes show: %s", kind, right,
                    total, right / total if total else float("nan"), drawn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
