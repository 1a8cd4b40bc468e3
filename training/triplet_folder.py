"""The triplet folder that ``triplets`` writes and ``invert`` reads: one module for the format, its writer and reader.

A triplet folder holds:

* ``items.jsonl``: one labelled image per line: ``id``, ``image`` (a path, relative to the image root), ``subject``,
  ``object``, ``relation`` (canonical name), ``split`` and provenance fields (``image_id``, ``source``, boxes, size);
* ``mapping.json``: ``relations`` (sorted) and ``rel_name_to_idx`` (the official class-index convention);
* ``summary.json``: how the folder was made (filters, counts, shortfalls) and ``image_root``, the folder relative
  image paths start from (null: the current directory).

:func:`write_triplet_folder` writes the three files; :func:`read_relations`, :func:`resolve_image_root` and
:func:`read_items` read them back and check every line, naming the file, line and field of anything wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2s_core.relations import SPATIAL_RELATIONS, canonical_relation

from .json_fields import iter_jsonl_lines

logger = logging.getLogger(__name__)

ITEMS_FILE = "items.jsonl"
MAPPING_FILE = "mapping.json"
SUMMARY_FILE = "summary.json"
_REQUIRED_ITEM_FIELDS = ("id", "image", "subject", "object", "relation")


class TripletFolderError(ValueError):
    """A triplet folder that cannot be read: a missing file, bad JSON, a bad field (the message names them)."""


def write_triplet_folder(out_dir: Path, records: Sequence[Mapping[str, Any]], relations: Sequence[str],
                         summary: Mapping[str, Any]) -> None:
    """Write ``items.jsonl`` (one record per line), ``mapping.json`` (sorted relations) and ``summary.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / ITEMS_FILE).open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    names = sorted(relations)
    mapping = {"relations": names, "rel_name_to_idx": {r: i for i, r in enumerate(names)}}
    (out_dir / MAPPING_FILE).write_text(json.dumps(mapping, indent=2) + "\n", encoding="utf-8")
    (out_dir / SUMMARY_FILE).write_text(json.dumps(dict(summary), indent=2) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Item:
    """One triplet of items.jsonl (``line`` is 1-based)."""

    line: int
    id: str
    image: Path
    subject: str
    object: str
    relation: str
    split: str


def read_relations(triplets: Path) -> list[str]:
    """The relation names of ``mapping.json`` (must all be spatial relations, canonical spelling).

    Raises:
        TripletFolderError: missing/unreadable file, missing field, or a name that is not a spatial relation.
    """
    path = triplets / "mapping.json"
    if not path.is_file():
        raise TripletFolderError(f"--triplets: {path} does not exist; run `triplets` first or fix --triplets.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TripletFolderError(f"{path}: cannot read it as JSON: {exc}") from exc
    relations = data.get("relations") if isinstance(data, dict) else None
    if relations is None and isinstance(data, dict) and isinstance(data.get("rel_name_to_idx"), dict):
        relations = sorted(data["rel_name_to_idx"])
    if not isinstance(relations, list) or not relations or not all(isinstance(r, str) for r in relations):
        raise TripletFolderError(
            f"{path}: field 'relations' must be a non-empty list of relation names, got {relations!r}."
        )
    for name in relations:
        try:
            canonical = canonical_relation(name)
        except ValueError:
            raise TripletFolderError(
                f"{path}: field 'relations' has {name!r}, which is not a spatial relation; `invert` handles only "
                f"{list(SPATIAL_RELATIONS)} (the attribute class 'is' is not trained)."
            ) from None
        if canonical != name:
            raise TripletFolderError(f"{path}: field 'relations' has {name!r}; write the canonical name {canonical!r}.")
    return list(relations)


def resolve_image_root(triplets: Path, option: str | None) -> Path | None:
    """The folder relative item images start from.

    ``--image-root`` when given; otherwise ``summary.json``'s ``image_root`` written by ``triplets`` (the toy source
    sets it to the triplets folder); otherwise None: relative paths are taken from the current directory, as
    ``triplets`` took them.

    Raises:
        TripletFolderError: the folder does not exist (naming the option or the summary.json field).
    """
    if option:
        root = Path(option).expanduser()
        if not root.is_dir():
            raise TripletFolderError(f"--image-root: no such folder: {root}.")
        return root
    summary = triplets / "summary.json"
    if not summary.is_file():
        return None
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TripletFolderError(f"{summary}: cannot read it as JSON: {exc}") from exc
    value = data.get("image_root") if isinstance(data, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise TripletFolderError(f"{summary}: field 'image_root' must be a folder path or null, got {value!r}.")
    root = Path(value).expanduser()
    if not root.is_absolute():
        root = triplets / root
    if not root.is_dir():
        raise TripletFolderError(
            f"{summary}: field 'image_root' names {root}, which does not exist; pass --image-root to point at the "
            "folder that holds the images."
        )
    return root


def read_items(
    triplets: Path,
    image_root: Path | None,
    relations: Sequence[str],
    splits: Sequence[str] | None,
    limit: int | None,
) -> list[Item]:
    """Read, validate and select the items of ``items.jsonl``.

    Every line is checked (fields, relation name, image file), also those a split filter or limit leaves out, so a
    broken file fails before any model is loaded.

    Raises:
        TripletFolderError: naming the file, the line and the field: bad JSON, a missing field, a relation not in
            mapping.json, a missing image file, or a duplicate id.
    """
    path = triplets / "items.jsonl"
    if not path.is_file():
        raise TripletFolderError(f"--triplets: {path} does not exist; run `triplets` first or fix --triplets.")
    if limit is not None and limit < 1:
        raise TripletFolderError(f"--limit must be >= 1, got {limit}.")
    items: list[Item] = []
    missing: list[str] = []
    seen: dict[str, int] = {}
    try:
        lines = list(iter_jsonl_lines(path))
    except ValueError as exc:
        raise TripletFolderError(str(exc)) from None
    for number, _, record in lines:
        for key in _REQUIRED_ITEM_FIELDS:
            value = record.get(key)
            if not isinstance(value, str) or not value.strip():
                raise TripletFolderError(f"{path} line {number}: field {key!r} must be a non-empty string, got {value!r}.")
        relation = record["relation"]
        if relation not in relations:
            raise TripletFolderError(
                f"{path} line {number}: field 'relation' is {relation!r}, which is not one of the relations of "
                f"mapping.json {list(relations)}. Fix the item or regenerate the folder with `triplets`."
            )
        item_id = record["id"]
        if item_id in seen:
            raise TripletFolderError(
                f"{path} line {number}: field 'id' {item_id!r} repeats line {seen[item_id]}; ids must be unique."
            )
        seen[item_id] = number
        image = Path(record["image"]).expanduser()
        if not image.is_absolute() and image_root is not None:
            image = image_root / image
        if not image.is_file():
            missing.append(f"line {number}: {image}")
        split = record.get("split", "")
        items.append(
            Item(
                number,
                item_id,
                image,
                record["subject"].strip(),
                record["object"].strip(),
                relation,
                split if isinstance(split, str) else str(split),
            )
        )
    if missing:
        shown = "; ".join(missing[:5]) + (f"; ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise TripletFolderError(
            f"{path}: field 'image' names files that do not exist ({shown}). Relative paths start at "
            + (
                f"{image_root} (--image-root or summary.json's image_root)."
                if image_root is not None
                else "the current directory (no --image-root and no image_root in summary.json); pass --image-root."
            )
        )
    if splits:
        wanted = set(splits)
        present = {it.split for it in items}
        unknown = sorted(wanted - present)
        if unknown:
            logger.warning("--split %s: no items of split(s) %s in %s.", list(splits), unknown, path)
        items = [it for it in items if it.split in wanted]
    if limit is not None:
        items = items[:limit]
    return items
