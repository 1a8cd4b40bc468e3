"""The toy-world benchmark: spatial accuracy of plain vs steered sampling, judged by exact colour geometry.

A fixed grid of prompts x seeds ("a <A> <relation> a <B>" for ordered pairs of toy kinds and all four relations) is
sampled under several conditions; every image is judged with :func:`training.toy.judge.judge` (GenEval position
rule on the boxes of the objects' colours). The table reports, per condition: spatial accuracy (split into the
pairs' usual arrangement and the unusual ones), object presence (both objects found), background cleanliness
(:func:`training.toy.judge.background_cleanliness`), seconds per image and steering passes (forward+backward) per
image, so accuracy per unit of extra compute is visible. ``results.json`` also counts, per kind, the images in which
that requested kind was not found, which tells a world's weak kinds apart from its weak relations.

Prompts that share their relation words are sampled in one batch (each image gets exactly what it would get alone:
its own seed's noise, its own prompt; every layer of the toy UNet works per sample).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from l2s_core.checkpoint import LoadedClassifier
from l2s_core.relations import SPATIAL_RELATIONS
from l2s_core.settings import SteeringSettings

from .judge import Palette, judge
from .sampling import ToySampler
from .scenes import usual_relation
from .vocabulary import relation_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridItem:
    """One prompt of the grid."""

    subject: str
    relation: str
    object: str
    usual: bool = False  # the pair's usual arrangement in the (biased) training scenes

    @property
    def prompt(self) -> str:
        """The toy prompt."""
        return relation_prompt(self.subject, self.relation, self.object)


SAVED_IMAGE_NAME = re.compile(r"(?P<index>\d+)_(?P<seed>-?\d+)_(?P<mark>ok|no)")
"""The name (without ``.png``) ``--save-images`` gives an image: ``<grid index>_<seed>_<ok|no>``."""


def saved_image_name(index: int, seed: int, correct: bool) -> str:
    """The file name of a saved benchmark image; :data:`SAVED_IMAGE_NAME` reads it back."""
    return f"{index:03d}_{seed}_{'ok' if correct else 'no'}.png"


def prompt_grid(kinds: Sequence[str], pairs: int | None = None) -> list[GridItem]:
    """``pairs`` ordered pairs of distinct kinds (spread over all kinds, deterministic; None: every ordered pair, the
    benchmark's default grid) x the four relations."""
    ordered = [(a, b) for i, a in enumerate(kinds) for j, b in enumerate(kinds) if i != j]
    pairs = len(ordered) if pairs is None else pairs
    stride = max(1, len(ordered) // max(1, pairs))
    chosen = ordered[::stride][:pairs]
    return [GridItem(a, r, b, usual=usual_relation(a, b, kinds) == r) for a, b in chosen for r in SPATIAL_RELATIONS]


@dataclass(frozen=True)
class Condition:
    """One row of the table: a name, and the classifier + steering settings (None: plain sampling)."""

    name: str
    classifier: LoadedClassifier | None = None
    steer: SteeringSettings | None = None


@dataclass(frozen=True)
class Row:
    """Results of one condition over the grid."""

    condition: str
    images: int
    accuracy: float
    presence: float
    seconds_per_image: float
    passes_per_image: float
    settings: dict | None
    accuracy_usual: float = float("nan")  # prompts asking for the pair's usual (training-biased) arrangement
    accuracy_unusual: float = float("nan")  # prompts asking for one of the three unusual arrangements
    cleanliness: float = float("nan")  # mean share of background pixels still the background colour
    missing: dict[str, int] = field(default_factory=dict)  # kind -> images where it was requested but not found


def _batches(grid: Sequence[GridItem], seeds: Sequence[int], size: int) -> list[list[tuple[int, GridItem, int]]]:
    """(grid index, item, seed) triples grouped by relation (shared token positions), at most ``size`` per batch."""
    by_relation: dict[str, list[tuple[int, GridItem, int]]] = {}
    for index, item in enumerate(grid):
        for seed in seeds:
            by_relation.setdefault(item.relation, []).append((index, item, seed))
    return [group[i:i + size] for group in by_relation.values() for i in range(0, len(group), size)]


def run_condition(sampler: ToySampler, condition: Condition, grid: Sequence[GridItem], seeds: Sequence[int], *,
                  steps: int, cfg: float, save_dir: Path | None = None, batch_size: int = 60) -> Row:
    """Sample and judge the whole grid under one condition."""
    palette = Palette.of_world(sampler.bundle.meta.get("world", {}))  # the world's own colours and backgrounds
    correct = present = count = 0
    by_usual = {True: [0, 0], False: [0, 0]}  # usual -> [correct, count]
    passes = 0
    seconds = 0.0
    clean = 0.0
    missing: Counter[str] = Counter()
    for batch in _batches(grid, seeds, batch_size):
        samples = sampler.sample([item.prompt for _, item, _ in batch], [seed for _, _, seed in batch], steps=steps,
                                 cfg=cfg, subject=[item.subject for _, item, _ in batch],
                                 relation=[item.relation for _, item, _ in batch],
                                 obj=[item.object for _, item, _ in batch], classifier=condition.classifier,
                                 steer=condition.steer)
        seconds += samples.seconds
        passes += sum(samples.steering_passes)
        for (index, item, seed), image in zip(batch, samples.images, strict=True):
            verdict = judge(image, item.subject, item.relation, item.object, backgrounds=palette.backgrounds,
                            colours=palette.colours)
            correct += int(verdict.correct)
            by_usual[item.usual][0] += int(verdict.correct)
            by_usual[item.usual][1] += 1
            present += int(all(verdict.present))
            missing.update(name for name, found in zip((item.subject, item.object), verdict.present, strict=True)
                           if not found)
            clean += verdict.clean
            count += 1
            if save_dir is not None:
                from PIL import Image

                save_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(save_dir / saved_image_name(index, seed, verdict.correct))
    row = Row(condition=condition.name, images=count, accuracy=correct / count, presence=present / count,
              seconds_per_image=seconds / count, passes_per_image=passes / count,
              settings=None if condition.steer is None else asdict(condition.steer),
              accuracy_usual=by_usual[True][0] / by_usual[True][1] if by_usual[True][1] else float("nan"),
              accuracy_unusual=by_usual[False][0] / by_usual[False][1] if by_usual[False][1] else float("nan"),
              cleanliness=clean / count, missing=dict(missing.most_common()))
    logger.info("%s: accuracy %.3f (usual %.3f, unusual %.3f), presence %.3f, clean %.3f, %.2f s/image, "
                "%.1f passes/image; missing: %s", row.condition, row.accuracy, row.accuracy_usual,
                row.accuracy_unusual, row.presence, row.cleanliness, row.seconds_per_image, row.passes_per_image,
                ", ".join(f"{kind} {n}" for kind, n in row.missing.items()) or "none")
    return row


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table of the rows."""
    lines = ["| condition | images | spatial accuracy | usual arrangements | unusual arrangements | both objects present "
             "| background clean | s / image | steering passes / image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.condition} | {r.images} | {r.accuracy:.3f} | {r.accuracy_usual:.3f} | "
                     f"{r.accuracy_unusual:.3f} | {r.presence:.3f} | {r.cleanliness:.3f} | "
                     f"{r.seconds_per_image:.2f} | {r.passes_per_image:.1f} |")
    return "\n".join(lines)


def run_benchmark(sampler: ToySampler, conditions: Sequence[Condition], grid: Sequence[GridItem],
                  seeds: Sequence[int], *, steps: int, cfg: float, out: Path | None,
                  save_images: bool = False, batch_size: int = 60) -> list[Row]:
    """Run every condition; write ``table.md`` and ``results.json`` to ``out`` when given."""
    start = time.perf_counter()
    rows = [run_condition(sampler, c, grid, seeds, steps=steps, cfg=cfg, batch_size=batch_size,
                          save_dir=(out / "images" / c.name.replace(" ", "_")) if (out and save_images) else None)
            for c in conditions]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(format_table(rows) + "\n", encoding="utf-8")
        (out / "results.json").write_text(json.dumps({
            "rows": [asdict(r) for r in rows],
            "grid": [asdict(g) for g in grid],
            "seeds": list(seeds),
            "steps": steps,
            "cfg": cfg,
            "seconds": time.perf_counter() - start,
        }, indent=2), encoding="utf-8")
    return rows
