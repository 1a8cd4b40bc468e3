"""Toy source of the ``triplets`` command: synthetic scenes drawn on the fly, exactly as many as the quotas ask.

The synthetic world of :mod:`training.toy.scenes`: images are drawn into ``<out>/images``, exactly as many per
relation and split as the quotas ask. Unlike the annotation sources it returns a finished
:class:`~training.splits.Selection` (every scene is its own image, so the splits are image-disjoint by
construction).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from ..candidates import Candidate
from ..splits import SPLITS, Selection, SplitSizes
from ..toy.scenes import ToyWorldConfig, parse_kinds, render_scene, sample_pair


def _slug(relation: str) -> str:
    return relation.replace(" ", "_")


def generate_toy(
    out_dir: Path,
    sizes: SplitSizes,
    relations: Sequence[str],
    seed: int,
    *,
    config: ToyWorldConfig,
    kinds: Sequence[str],
    bias: float,
) -> Selection:
    """Draw exactly the quota of toy scenes per split and relation into ``out_dir/images``.

    Every scene has its own seed (from ``seed``, split, relation and index), so the output does not depend on the
    order of generation. Relations are interleaved in the item list.
    """
    parse_kinds(kinds)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    items: dict[str, list[Candidate]] = {s: [] for s in SPLITS}
    for s in SPLITS:
        for k in range(sizes.of(s)):
            for rel in relations:
                rng = random.Random(f"{seed}:toy:{s}:{rel}:{k}")
                subj, obj = sample_pair(rel, rng, kinds, bias)
                scene = render_scene(subj, obj, rel, rng, config)
                image_id = f"{s}_{_slug(rel)}_{k:06d}"
                image = f"images/{image_id}.png"
                scene.image.save(out_dir / image)
                items[s].append(
                    Candidate(
                        image=image,
                        image_id=image_id,
                        subject=scene.subject.name,
                        object=scene.object.name,
                        relation=scene.relation,
                        subject_box=tuple(float(v) for v in scene.subject.box),  # type: ignore[arg-type]
                        object_box=tuple(float(v) for v in scene.object.box),  # type: ignore[arg-type]
                        image_size=(config.size, config.size),
                        origin=f"toy scene {image_id}",
                    )
                )
    shortfall = {s: {r: 0 for r in relations} for s in SPLITS}
    return Selection(items=items, shortfall=shortfall)
