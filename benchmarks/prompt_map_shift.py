"""How far a wrong relation word in the prompt moves the attention maps that ``invert`` recorded.

``invert`` records every training image's maps twice: with its true relation in the prompt ("pos") and with a wrong
one ("neg"). The classifier learns from both so that it reads the layout of the maps, not the relation word of the
prompt; the no-negatives ablation leaves the "neg" records out. Whether that matters depends on the model: if the
relation word moves the maps, a classifier that never saw a wrong-relation prompt can read the word instead of the
layout; if it does not, the two records look alike and the negatives teach little.

For every item and recorded step that has both records this measures, from the maps folder alone:

* **relative change**: ``|pos - neg| / |pos|`` over the whole (2, C, S, S) tensor;
* **centroid shift**: how far (in map cells) the centre of mass of the subject's and of the object's map (the mean
  over the C channels, negative values clipped) moves from the pos to the neg record, averaged over the two;
* **separation**: the distance (in cells) between the subject's and the object's centre in the pos record, the
  scale a shift is to be compared with.

It prints the means per recorded step (and the 90th percentile of the relative change). Run from the repository root
on any folder that ``python -m training invert`` (or ``toy classifier``, in ``WORK/maps``) wrote::

    python benchmarks/prompt_map_shift.py runs/toy/maps
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for training

from training.dataset import MapDataset  # noqa: E402
from training.maps_folder import SPLITS  # noqa: E402

logger = logging.getLogger("prompt_map_shift")


@dataclass(frozen=True)
class StepShift:
    """The means over the items of one recorded step (see the module docstring)."""

    step: int
    items: int
    relative_change: float
    relative_change_p90: float
    centroid_shift: float
    separation: float


def centroids(maps: torch.Tensor) -> torch.Tensor:
    """Centres of mass of the subject and object maps: (2, C, S, S) -> (2, 2) as (row, column), in cells."""
    mass = maps.float().mean(dim=1).clamp_min(0)  # (2, S, S): the channel mean, negatives clipped
    side = mass.shape[-1]
    mass = mass / mass.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    cells = torch.arange(side, dtype=torch.float32)
    rows = (mass.sum(dim=2) * cells).sum(dim=1)  # (2,): the row marginal's mean
    columns = (mass.sum(dim=1) * cells).sum(dim=1)  # (2,): the column marginal's mean
    return torch.stack([rows, columns], dim=-1)  # (2, 2)


def shift_by_step(folder: Path) -> list[StepShift]:
    """Pair each item's pos and neg record per step and measure how far apart they are.

    Raises:
        ValueError: the folder has no item with both a pos and a neg record (recorded with ``--no-negatives``?).
    """
    # (item, step) -> prompt type -> (split's dataset, record number); the dataset validates and reads the shards
    pairs: dict[tuple[str, int], dict[str, tuple[MapDataset, int]]] = defaultdict(dict)
    for split in SPLITS:
        dataset = MapDataset(folder, split)
        for number, record in enumerate(dataset.records):
            pairs[(record.item, record.step)][record.prompt_type] = (dataset, number)

    figures: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    for (_, step), both in pairs.items():
        if "pos" not in both or "neg" not in both:
            continue
        (pos_data, pos_number), (neg_data, neg_number) = both["pos"], both["neg"]
        pos, neg = pos_data[pos_number][0], neg_data[neg_number][0]  # (2, C, S, S) each
        change = float((pos - neg).norm() / pos.norm().clamp_min(1e-12))
        centre_pos, centre_neg = centroids(pos), centroids(neg)
        shift = float((centre_pos - centre_neg).norm(dim=-1).mean())
        separation = float((centre_pos[0] - centre_pos[1]).norm())
        figures[step].append((change, shift, separation))
    if not figures:
        raise ValueError(f"{folder}: no item has both a right-relation (pos) and a wrong-relation (neg) record; "
                         "record the maps with negatives (the default of `invert`).")
    result = []
    for step in sorted(figures):
        values = torch.tensor(figures[step])  # (items, 3)
        result.append(StepShift(step=step, items=len(values), relative_change=float(values[:, 0].mean()),
                                relative_change_p90=float(values[:, 0].quantile(0.9)),
                                centroid_shift=float(values[:, 1].mean()), separation=float(values[:, 2].mean())))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a maps folder written by `invert` (meta.json, index.jsonl, shards/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        steps = shift_by_step(args.folder)
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    logger.info("step  items  relative change (mean / p90)  centroid shift (cells)  subject-object separation (cells)")
    for s in steps:
        logger.info("%4d  %5d  %14.4f / %.4f  %22.3f  %33.3f", s.step, s.items, s.relative_change,
                    s.relative_change_p90, s.centroid_shift, s.separation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
