"""The ``triplets`` command: build balanced (image, subject, object, relation) items with image-disjoint splits.

This module owns phase 1 of the data pipeline, re-implemented with fixes to the official version.
It is the command itself (options, checks, output); the pieces live in their own modules:

Sources (``--source``, :mod:`training.sources`):
    gqa    GQA scene graphs (``{image_id: {"width", "height", "objects": {obj_id: {"name", "x", "y", "w", "h",
           "relations": [{"name", "object"}]}}}}``; several files are merged). Relations named exactly "above",
           "below", "to the left of" or "to the right of" are kept; all others are dropped.
    coco   A COCO-style instances JSON (``images``, ``annotations`` with ``bbox`` = [x, y, w, h], ``categories``).
           For every unordered pair of distinct categories that each appear exactly once in an image, the order is
           picked at random (seeded) and the relation comes from the boxes with the GenEval rule
           (:mod:`training.geometry`).
    jsonl  One item per line: ``{"image", "subject", "object", and "relation" or "subject_box" + "object_box"
           ([x0, y0, x1, y1] pixels), optional "image_id", "image_size"}``.
    toy    The synthetic world of :mod:`training.toy.scenes`: images are drawn into ``<out>/images``, exactly as many
           per relation and split as the quotas ask.

Filters (each counted in ``summary.json``): relations outside the requested set; subject and object with the same
name; names with several instances in one image (ambiguous: the official GQA code forgot this); hypernym clashes
(one name is a kind of another name in the same image, e.g. "animal" and "dog": both names are dropped, as the
official WordNet filter does); boxes in no relation or, unless ``--allow-diagonal``, in two relations at once.

Hypernyms (:mod:`training.hypernyms`): no WordNet (nothing is downloaded). A small built-in table of common
GQA/COCO kinds (:data:`BUILTIN_HYPERNYMS`, closed transitively) stands in for it, and ``--hypernyms FILE`` (a JSON
list of ``[general, specific]`` pairs) extends it.

Selection (:mod:`training.splits`): images are shuffled with the seed. A first pass gives each image to one split
and takes one item from it (the split and relation whose quota is least filled); a second pass fills the remaining
quotas from images the split already owns. Splits therefore never share an image id. By default every relation of a
split ends with the same count (the smallest one reached); ``--allow-unbalanced`` keeps whatever was found.

Output (``--out``): ``items.jsonl``, ``mapping.json`` and ``summary.json`` (see the data contract in the training
brief). Item ``image`` paths are relative to ``summary.json``'s ``image_root`` when that is not null.

The public names of the pieces (:class:`Candidate`, :class:`SplitSizes`, :func:`select_balanced`,
:func:`load_gqa`, :func:`load_hypernyms`, ...) stay importable from this module.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from l2s_core.relations import SPATIAL_RELATIONS, canonical_relation

from .candidates import Candidate
from .geometry import POSITION_THRESHOLD
from .hypernyms import BUILTIN_HYPERNYMS, HypernymTable, builtin_hypernym_pairs, clashing_names, load_hypernyms
from .sources import GQA_RELATION_NAMES, SOURCES, generate_toy, load_coco, load_gqa, load_jsonl
from .splits import OFFICIAL_SPLIT_SIZES, SPLITS, Selection, SplitSizes, select_balanced
from .toy.scenes import DEFAULT_KINDS, ToyWorldConfig
from .triplet_folder import write_triplet_folder

__all__ = [
    "BUILTIN_HYPERNYMS",
    "GQA_RELATION_NAMES",
    "OFFICIAL_SPLIT_SIZES",
    "SOURCES",
    "SPLITS",
    "Candidate",
    "HypernymTable",
    "Selection",
    "SplitSizes",
    "add_arguments",
    "builtin_hypernym_pairs",
    "check_images",
    "clashing_names",
    "generate_toy",
    "load_coco",
    "load_gqa",
    "load_hypernyms",
    "load_jsonl",
    "run",
    "select_balanced",
    "write_outputs",
]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Checks and output
# ----------------------------------------------------------------------------------------------------------------


def check_images(items: Iterable[Candidate], image_root: Path | None, source_file: str) -> None:
    """Raise when a selected item's image file does not exist.

    Raises:
        FileNotFoundError: one or more images are missing; the message names the annotation file, where the item
            came from, the field that gave the path, and the path that was tried.
    """
    missing: list[str] = []
    total = 0
    for c in items:
        path = Path(c.image)
        if image_root is not None and not path.is_absolute():
            path = image_root / path
        if not path.is_file():
            total += 1
            if len(missing) < 5:
                missing.append(f"{c.origin}, field {c.image_field!r}: {str(path)!r}")
    if total:
        root = f"--image-root {str(image_root)!r}" if image_root is not None else "no --image-root"
        raise FileNotFoundError(
            f"{total} image file(s) named in {source_file} do not exist ({root}). First missing: "
            + "; ".join(missing)
            + ". Point --image-root at the folder that holds the images, or pass --no-check-images to skip this check."
        )


def write_outputs(
    out_dir: Path,
    selection: Selection,
    relations: Sequence[str],
    source: str,
    summary: dict[str, object],
) -> list[dict[str, object]]:
    """Write ``items.jsonl``, ``mapping.json`` and ``summary.json`` (:mod:`.triplet_folder`); return the records."""
    records: list[dict[str, object]] = []
    for s in SPLITS:
        for n, c in enumerate(selection.items[s]):
            records.append(
                {
                    "id": f"{source}-{s}-{n:06d}",
                    "image": c.image,
                    "image_id": c.image_id,
                    "subject": c.subject,
                    "object": c.object,
                    "relation": c.relation,
                    "split": s,
                    "source": source,
                    "subject_box": list(c.subject_box) if c.subject_box is not None else None,
                    "object_box": list(c.object_box) if c.object_box is not None else None,
                    "image_size": list(c.image_size) if c.image_size is not None else None,
                }
            )
    names = sorted(relations)
    counts = {s: {r: sum(1 for c in selection.items[s] if c.relation == r) for r in names} for s in SPLITS}
    summary = {
        **summary,
        "counts": counts,
        "totals": {s: len(selection.items[s]) for s in SPLITS},
        "images": {s: len({c.image_id for c in selection.items[s]}) for s in SPLITS},
        "shortfall": selection.shortfall,
        "trimmed_for_balance": selection.trimmed,
    }
    write_triplet_folder(out_dir, records, relations, summary)
    return records


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def _split_sizes_arg(text: str) -> SplitSizes:
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST (three integers), got {text!r}")
    try:
        return SplitSizes(*values)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _relations_arg(text: str) -> tuple[str, ...]:
    try:
        rels = tuple(dict.fromkeys(canonical_relation(r) for r in text.split(",") if r.strip()))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not rels:
        raise argparse.ArgumentTypeError("expected at least one relation")
    return rels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``triplets`` options to ``parser``."""
    parser.add_argument("--source", required=True, choices=SOURCES, help="where the items come from")
    parser.add_argument(
        "--annotations",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="gqa: scene-graph JSON file(s), merged; coco: an instances JSON; jsonl: a JSONL of items. Not for toy.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing items.jsonl in --out")
    parser.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="folder the image paths are relative to (gqa: <image_id><ext>; coco: file_name; jsonl: image)",
    )
    parser.add_argument("--no-check-images", action="store_true", help="do not check that image files exist")
    parser.add_argument("--image-ext", default=".jpg", help="gqa: image file extension (default .jpg)")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument(
        "--split-sizes",
        type=_split_sizes_arg,
        metavar="TRAIN,VAL,TEST",
        help="items per relation in each split (default 2000,400,200, the official GQA sizes)",
    )
    sizes.add_argument("--per-relation", type=int, metavar="N", help="train items per relation; val/test by fraction")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="with --per-relation: val = round(N * F)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="with --per-relation: test = round(N * F)")
    parser.add_argument(
        "--relations",
        type=_relations_arg,
        default=SPATIAL_RELATIONS,
        help="comma-separated relations to keep (default: above, below, to the left of, to the right of)",
    )
    parser.add_argument(
        "--allow-unbalanced",
        action="store_true",
        help="keep every item found even if relations of a split end with different counts",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for shuffling, pair order and toy scenes")
    parser.add_argument("--threshold", type=float, default=POSITION_THRESHOLD, help="GenEval position threshold")
    parser.add_argument(
        "--allow-diagonal",
        action="store_true",
        help="coco/jsonl boxes: label diagonal pairs with the dominant relation instead of dropping",
    )
    parser.add_argument(
        "--min-area", type=float, default=0.0, help="coco: drop instances smaller than this share of the image area"
    )
    parser.add_argument(
        "--hypernyms",
        type=Path,
        default=None,
        help="JSON list of [general, specific] pairs extending the built-in hypernym table",
    )
    parser.add_argument("--size", type=int, default=64, help="toy: image side in pixels")
    parser.add_argument("--min-object-frac", type=float, default=0.18, help="toy: smallest object side / image side")
    parser.add_argument("--max-object-frac", type=float, default=0.32, help="toy: largest object side / image side")
    parser.add_argument(
        "--bias",
        type=float,
        default=0.0,
        help="toy: probability that a pair is shown in its usual arrangement (co-occurrence bias)",
    )
    parser.add_argument(
        "--kinds", default=",".join(DEFAULT_KINDS), help="toy: comma-separated '<colour> <shape>' object kinds"
    )
    parser.add_argument(
        "--backgrounds",
        type=_colours_arg,
        default=None,
        help="toy: background colours as R,G,B triples separated by ';' (e.g. '236,236,236'); default: the first "
        "toy world's four tints",
    )


def _colours_arg(text: str) -> tuple[tuple[int, int, int], ...]:
    """Parse 'R,G,B;R,G,B' into colour triples (0..255)."""
    colours = []
    for part in text.split(";"):
        values = part.strip().split(",")
        if len(values) != 3 or not all(v.strip().isdigit() and 0 <= int(v) <= 255 for v in values):
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not an R,G,B colour with values 0..255")
        colours.append((int(values[0]), int(values[1]), int(values[2])))
    return tuple(colours)


def _resolve_sizes(args: argparse.Namespace) -> SplitSizes:
    if args.per_relation is not None:
        if args.per_relation < 1:
            raise ValueError(f"--per-relation must be >= 1, got {args.per_relation}.")
        for name, frac in (("--val-fraction", args.val_fraction), ("--test-fraction", args.test_fraction)):
            if not 0.0 <= frac <= 10.0:
                raise ValueError(f"{name} must be between 0 and 10, got {frac}.")
        n = args.per_relation
        return SplitSizes(n, round(n * args.val_fraction), round(n * args.test_fraction))
    return args.split_sizes if args.split_sizes is not None else SplitSizes(*OFFICIAL_SPLIT_SIZES)


def run(args: argparse.Namespace) -> int:
    """Run the ``triplets`` command; returns the exit status (0 on success).

    Raises:
        FileNotFoundError: an input file or image is missing.
        ValueError: bad options or an annotation file with the wrong schema.
    """
    out_dir: Path = args.out
    if (out_dir / "items.jsonl").exists() and not args.overwrite:
        raise ValueError(f"{str(out_dir / 'items.jsonl')!r} already exists; pass --overwrite or pick another --out.")
    sizes = _resolve_sizes(args)
    relations: tuple[str, ...] = tuple(args.relations)
    if not 0.0 <= args.min_area < 1.0:
        raise ValueError(f"--min-area is a share of the image area in [0, 1), got {args.min_area}.")
    if args.threshold < 0:
        raise ValueError(f"--threshold must be >= 0, got {args.threshold}.")
    counts: Counter[str] = Counter()
    summary: dict[str, object] = {
        "source": args.source,
        "seed": args.seed,
        "relations": sorted(relations),
        "quota_per_relation": {s: sizes.of(s) for s in SPLITS},
        "balanced": not args.allow_unbalanced,
        "position_rule": {
            "name": "GenEval",
            "threshold": args.threshold,
            "diagonal": ("dominant" if args.allow_diagonal else "dropped"),
        },
    }
    image_root: Path | None = args.image_root.resolve() if args.image_root is not None else None
    if args.source == "toy":
        if args.annotations:
            raise ValueError("--annotations is not used with --source toy; the toy source draws its own images.")
        if args.image_root is not None:
            raise ValueError("--image-root is not used with --source toy; its images are written to --out/images.")
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        backgrounds = {} if args.backgrounds is None else {"backgrounds": args.backgrounds}
        config = ToyWorldConfig(size=args.size, threshold=args.threshold, min_object_frac=args.min_object_frac,
                                max_object_frac=args.max_object_frac, **backgrounds)
        selection = generate_toy(out_dir, sizes, relations, args.seed, config=config, kinds=kinds, bias=args.bias)
        image_root = out_dir.resolve()
        summary["toy"] = {"size": args.size, "bias": args.bias, "kinds": [k.lower() for k in kinds],
                          "min_object_frac": args.min_object_frac, "max_object_frac": args.max_object_frac,
                          "backgrounds": [list(c) for c in config.backgrounds]}
    else:
        if not args.annotations:
            raise ValueError(f"--source {args.source} needs --annotations FILE.")
        if args.source != "gqa" and len(args.annotations) != 1:
            raise ValueError(
                f"--source {args.source} takes exactly one --annotations file, got {len(args.annotations)}."
            )
        hypernyms = load_hypernyms(args.hypernyms)
        summary["hypernyms"] = hypernyms.source
        if args.source == "gqa":
            cands = load_gqa(
                args.annotations, relations=relations, hypernyms=hypernyms, image_ext=args.image_ext, counts=counts
            )
        elif args.source == "coco":
            cands = load_coco(
                args.annotations[0],
                relations=relations,
                hypernyms=hypernyms,
                min_area=args.min_area,
                threshold=args.threshold,
                allow_diagonal=args.allow_diagonal,
                seed=args.seed,
                counts=counts,
            )
        else:
            cands = load_jsonl(
                args.annotations[0],
                relations=relations,
                hypernyms=hypernyms,
                threshold=args.threshold,
                allow_diagonal=args.allow_diagonal,
                counts=counts,
            )
        summary["annotations"] = [str(p) for p in args.annotations]
        summary["candidates"] = len(cands)
        logger.info("%d candidate items after filtering (%s)", len(cands), dict(counts))
        selection = select_balanced(cands, sizes, relations, args.seed, balanced=not args.allow_unbalanced)
        if not args.no_check_images:
            chosen = [c for s in SPLITS for c in selection.items[s]]
            check_images(chosen, image_root, ", ".join(str(p) for p in args.annotations))
    summary["image_root"] = str(image_root) if image_root is not None else None
    summary["filters"] = dict(sorted(counts.items()))
    for s in SPLITS:
        short = {r: n for r, n in selection.shortfall[s].items() if n > 0}
        if short:
            logger.warning("%s split is short of its quota of %d per relation: %s", s, sizes.of(s), short)
    records = write_outputs(out_dir, selection, relations, args.source, summary)
    logger.info("wrote %d items to %s", len(records), out_dir / "items.jsonl")
    return 0
