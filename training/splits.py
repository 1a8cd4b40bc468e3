"""Splits of the ``triplets`` command: per-relation quotas, balancing, and deterministic image-disjoint splits.

Selection: images are shuffled with the seed. A first pass gives each image to one split and takes one item from
it (the split and relation whose quota is least filled); a second pass fills the remaining quotas from images the
split already owns. Splits therefore never share an image id. By default every relation of a split ends with the
same count (the smallest one reached); ``--allow-unbalanced`` keeps whatever was found.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from .candidates import Candidate

SPLITS: tuple[str, ...] = ("train", "val", "test")
OFFICIAL_SPLIT_SIZES: tuple[int, int, int] = (2000, 400, 200)
"""Per-relation train/val/test sizes of the official GQA data."""


@dataclass(frozen=True)
class SplitSizes:
    """Items per relation in each split."""

    train: int
    val: int
    test: int

    def __post_init__(self) -> None:
        for name, value in (("train", self.train), ("val", self.val), ("test", self.test)):
            if value < 0:
                raise ValueError(f"The {name} size per relation must be >= 0, got {value}.")
        if self.train + self.val + self.test == 0:
            raise ValueError("All split sizes are 0; ask for at least one item per relation.")

    def of(self, split: str) -> int:
        """Size of ``split`` ("train", "val" or "test")."""
        return {"train": self.train, "val": self.val, "test": self.test}[split]


@dataclass(frozen=True)
class Selection:
    """Chosen items per split, and how far each (split, relation) fell short of its quota."""

    items: dict[str, list[Candidate]]
    shortfall: dict[str, dict[str, int]]
    trimmed: dict[str, dict[str, int]] = field(default_factory=dict)


def select_balanced(
    candidates: Sequence[Candidate],
    sizes: SplitSizes,
    relations: Sequence[str],
    seed: int,
    *,
    balanced: bool = True,
) -> Selection:
    """Fill per-relation quotas for train/val/test from image-disjoint sets of images.

    The result depends only on the candidate set and the seed (not on the input order).

    Args:
        candidates: All filtered candidates (duplicates of the same fact are merged).
        sizes: Quota per relation for each split.
        relations: The relations to fill.
        seed: Shuffling seed.
        balanced: Trim every relation of a split to the smallest count reached, so the split stays balanced.

    Returns:
        The selection; ``shortfall[split][relation]`` is how many items the quota misses.
    """
    by_image: dict[str, dict[tuple[str, str, str, str], Candidate]] = defaultdict(dict)
    for c in candidates:
        if c.relation in relations:
            by_image[c.image_id].setdefault(c.key(), c)
    rng = random.Random(f"{seed}:select")
    image_ids = sorted(by_image)
    rng.shuffle(image_ids)
    ordered: dict[str, list[Candidate]] = {}
    for image_id in image_ids:
        cands = sorted(by_image[image_id].values(), key=lambda c: (c.relation, c.subject, c.object))
        rng.shuffle(cands)
        ordered[image_id] = cands
    quota = {s: {r: sizes.of(s) for r in relations} for s in SPLITS}
    need = {s: dict(q) for s, q in quota.items()}
    chosen: dict[str, list[Candidate]] = {s: [] for s in SPLITS}
    owner: dict[str, str] = {}
    used: set[tuple[str, str, str, str]] = set()
    # Pass 1: one item per image, into the (split, relation) whose quota is least filled.
    for image_id in image_ids:
        best: tuple[float, int, Candidate, str] | None = None
        for c in ordered[image_id]:
            for split_rank, s in enumerate(SPLITS):
                if need[s][c.relation] > 0:
                    frac = need[s][c.relation] / quota[s][c.relation]
                    if best is None or (frac, -split_rank) > (best[0], -best[1]):
                        best = (frac, split_rank, c, s)
        if best is not None:
            _, _, c, s = best
            owner[image_id] = s
            chosen[s].append(c)
            need[s][c.relation] -= 1
            used.add(c.key())
    # Pass 2: fill the remaining quotas from images the split already owns.
    for image_id in image_ids:
        s = owner.get(image_id)
        if s is None:
            continue
        for c in ordered[image_id]:
            if c.key() not in used and need[s][c.relation] > 0:
                chosen[s].append(c)
                need[s][c.relation] -= 1
                used.add(c.key())
    trimmed: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    if balanced:
        for s in SPLITS:
            if sizes.of(s) == 0:
                continue
            per_rel = Counter(c.relation for c in chosen[s])
            target = min(per_rel.get(r, 0) for r in relations)
            kept: list[Candidate] = []
            taken: Counter[str] = Counter()
            for c in chosen[s]:
                if taken[c.relation] < target:
                    kept.append(c)
                    taken[c.relation] += 1
                else:
                    trimmed[s][c.relation] = trimmed[s].get(c.relation, 0) + 1
            chosen[s] = kept
    shortfall = {s: {r: sizes.of(s) - sum(1 for c in chosen[s] if c.relation == r) for r in relations} for s in SPLITS}
    split_images = [{c.image_id for c in chosen[s]} for s in SPLITS]
    assert not (
        split_images[0] & split_images[1] or split_images[0] & split_images[2] or split_images[1] & split_images[2]
    ), "splits share an image"
    return Selection(items=chosen, shortfall=shortfall, trimmed=trimmed)
