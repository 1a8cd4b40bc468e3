"""COCO source of the ``triplets`` command: relations derived from the boxes of a COCO-style instances JSON.

A COCO-style instances JSON (``images``, ``annotations`` with ``bbox`` = [x, y, w, h], ``categories``). For every
unordered pair of distinct categories that each appear exactly once in an image, the order is picked at random
(seeded) and the relation comes from the boxes with the GenEval rule (:mod:`training.geometry`).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..candidates import Candidate
from ..geometry import Box, normalise_name, relation_from_boxes, relations_from_boxes, xywh_to_xyxy
from ..hypernyms import HypernymTable, clashing_names
from ..json_fields import as_number, read_json


def _require_list(data: Mapping[str, object], key: str, path: Path) -> list[object]:
    value = data.get(key)
    if not isinstance(value, list):
        raise ValueError(
            f"COCO instances file {str(path)!r}, field {key!r}: expected a list, got "
            f"{'nothing' if value is None else type(value).__name__}. A COCO instances JSON has 'images', "
            "'annotations' and 'categories'."
        )
    return value


def load_coco(
    path: str | Path,
    *,
    relations: Sequence[str],
    hypernyms: HypernymTable,
    min_area: float,
    threshold: float,
    allow_diagonal: bool,
    seed: int,
    counts: Counter[str],
) -> list[Candidate]:
    """Read a COCO-style instances JSON and derive relations from boxes with the GenEval rule.

    In each image, categories with exactly one (non-crowd) instance are usable; a category with several instances
    or a crowd annotation is dropped ("repeated_name"). Instances smaller than ``min_area`` (share of the image
    area) are dropped ("small_box"). Every unordered pair of usable categories gives one candidate, in an order
    picked at random from ``seed`` and the image id. The "repeated_name", "hypernym" and "small_box" counts here
    are per dropped category of an image; "no_relation" and "ambiguous_boxes" are per pair.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file breaks the schema; the message names the file, the list entry and the field.
    """
    path = Path(path)
    data = read_json(path, "COCO instances file")
    if not isinstance(data, dict):
        raise ValueError(
            f"COCO instances file {str(path)!r}: expected a JSON object with 'images', 'annotations', "
            f"'categories', got {type(data).__name__}."
        )
    images, anns, cats = (_require_list(data, k, path) for k in ("images", "annotations", "categories"))
    fname = str(path)
    cat_names: dict[object, str] = {}
    for i, cat in enumerate(cats):
        where = f"{fname}, categories[{i}]"
        if not isinstance(cat, dict) or "id" not in cat:
            raise ValueError(f"{where}, field 'id': missing (expected {{'id', 'name'}}), got {cat!r}.")
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}, field 'name': expected a non-empty string, got {name!r}.")
        cat_names[cat["id"]] = normalise_name(name)
    image_info: dict[object, tuple[str, tuple[int, int] | None]] = {}
    for i, img in enumerate(images):
        where = f"{fname}, images[{i}]"
        if not isinstance(img, dict) or "id" not in img:
            raise ValueError(f"{where}, field 'id': missing (expected {{'id', 'file_name', 'width', 'height'}}).")
        file_name = img.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f"{where}, field 'file_name': expected a non-empty string, got {file_name!r}.")
        size = None
        if "width" in img and "height" in img:
            size = (
                int(as_number(img["width"], f"{where}, field 'width'")),
                int(as_number(img["height"], f"{where}, field 'height'")),
            )
        image_info[img["id"]] = (file_name, size)
    per_image: dict[object, list[tuple[str, Box, bool]]] = defaultdict(list)
    for i, ann in enumerate(anns):
        where = f"{fname}, annotations[{i}]"
        if not isinstance(ann, dict):
            raise ValueError(f"{where}: expected an object with 'image_id', 'category_id', 'bbox'.")
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                raise ValueError(f"{where}, field {key!r}: missing.")
        if ann["image_id"] not in image_info:
            raise ValueError(f"{where}, field 'image_id': {ann['image_id']!r} is not in 'images'.")
        if ann["category_id"] not in cat_names:
            raise ValueError(f"{where}, field 'category_id': {ann['category_id']!r} is not in 'categories'.")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise ValueError(f"{where}, field 'bbox': expected [x, y, width, height], got {bbox!r}.")
        coords = [as_number(v, f"{where}, field 'bbox'") for v in bbox]
        if coords[2] < 0 or coords[3] < 0:
            raise ValueError(f"{where}, field 'bbox': width and height must be >= 0, got {bbox!r}.")
        per_image[ann["image_id"]].append(
            (cat_names[ann["category_id"]], xywh_to_xyxy(*coords), bool(ann.get("iscrowd", 0)))
        )
    keep = set(relations)
    out: list[Candidate] = []
    for img_id in sorted(per_image, key=str):
        file_name, size = image_info[img_id]
        instances = per_image[img_id]
        counts_by_name = Counter(n for n, _, _ in instances)
        crowded = {n for n, _, crowd in instances if crowd}
        names = sorted(counts_by_name)
        clashes = clashing_names(names, hypernyms)
        usable: dict[str, Box] = {}
        for name in names:
            if counts_by_name[name] > 1 or name in crowded:
                counts["repeated_name"] += 1
                continue
            if name in clashes:
                counts["hypernym"] += 1
                continue
            box = next(b for n, b, _ in instances if n == name)
            if min_area > 0:
                if size is None:
                    raise ValueError(
                        f"{fname}, image {img_id!r}: --min-area needs the image's 'width' and 'height' fields."
                    )
                if (box[2] - box[0]) * (box[3] - box[1]) < min_area * size[0] * size[1]:
                    counts["small_box"] += 1
                    continue
            usable[name] = box
        rng = random.Random(f"{seed}:coco:{img_id}")
        ordered = sorted(usable)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                subj, obj = (a, b) if rng.random() < 0.5 else (b, a)
                rel = relation_from_boxes(usable[subj], usable[obj], threshold, exclusive=not allow_diagonal)
                if rel is None:
                    found = relations_from_boxes(usable[subj], usable[obj], threshold)
                    counts["ambiguous_boxes" if found else "no_relation"] += 1
                    continue
                if rel not in keep:
                    counts["other_relation"] += 1
                    continue
                out.append(
                    Candidate(
                        image=file_name,
                        image_id=str(img_id),
                        subject=subj,
                        object=obj,
                        relation=rel,
                        subject_box=usable[subj],
                        object_box=usable[obj],
                        image_size=size,
                        origin=f"{fname}, image {img_id!r}",
                        image_field="file_name",
                    )
                )
    return out
