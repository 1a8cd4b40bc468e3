"""JSONL source of the ``triplets`` command: one hand-written or exported item per line.

One item per line: ``{"image", "subject", "object", and "relation" or "subject_box" + "object_box"
([x0, y0, x1, y1] pixels), optional "image_id", "image_size"}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from l2s_core.relations import canonical_relation

from ..candidates import Candidate
from ..geometry import as_box, normalise_name, relation_from_boxes, relations_from_boxes
from ..hypernyms import HypernymTable
from ..json_fields import as_image_size, iter_jsonl_objects


def load_jsonl(
    path: str | Path,
    *,
    relations: Sequence[str],
    hypernyms: HypernymTable,
    threshold: float,
    allow_diagonal: bool,
    counts: Counter[str],
) -> list[Candidate]:
    """Read a JSONL of items; each line gives a relation or both boxes.

    A given relation is taken as is (aliases such as "left of" are accepted); without one, the relation comes from
    the boxes with the GenEval rule. ``image_id`` defaults to the image path.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not JSON or breaks the schema, or names an unknown relation; the message names the
            file, the line and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The JSONL file {str(path)!r} does not exist.")
    keep = set(relations)
    out: list[Candidate] = []
    for where, obj in iter_jsonl_objects(path):
        fields: dict[str, str] = {}
        for key in ("image", "subject", "object"):
            value = obj.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}, field {key!r}: expected a non-empty string, got {value!r}.")
            fields[key] = value.strip()
        image_id = obj.get("image_id", fields["image"])
        if not isinstance(image_id, (str, int)) or isinstance(image_id, bool) or str(image_id) == "":
            raise ValueError(f"{where}, field 'image_id': expected a string or integer, got {image_id!r}.")
        has_boxes = [k in obj for k in ("subject_box", "object_box")]
        if any(has_boxes) and not all(has_boxes):
            missing = "object_box" if has_boxes[0] else "subject_box"
            raise ValueError(f"{where}, field {missing!r}: missing; give both boxes or neither.")
        subj_box = as_box(obj["subject_box"], f"{where}, field 'subject_box'") if all(has_boxes) else None
        obj_box = as_box(obj["object_box"], f"{where}, field 'object_box'") if all(has_boxes) else None
        size = as_image_size(obj.get("image_size"), f"{where}, field 'image_size'")
        if "relation" in obj:
            rel_value = obj["relation"]
            if not isinstance(rel_value, str):
                raise ValueError(f"{where}, field 'relation': expected a string, got {rel_value!r}.")
            try:
                rel: str | None = canonical_relation(rel_value)
            except ValueError as exc:
                raise ValueError(f"{where}, field 'relation': {exc}") from None
        elif subj_box is not None and obj_box is not None:
            rel = relation_from_boxes(subj_box, obj_box, threshold, exclusive=not allow_diagonal)
            if rel is None:
                found = relations_from_boxes(subj_box, obj_box, threshold)
                counts["ambiguous_boxes" if found else "no_relation"] += 1
                continue
        else:
            raise ValueError(
                f"{where}, field 'relation': missing; give 'relation' or both 'subject_box' and 'object_box' "
                "([x0, y0, x1, y1] pixels)."
            )
        subj, obj_name = normalise_name(fields["subject"]), normalise_name(fields["object"])
        if rel not in keep:
            counts["other_relation"] += 1
        elif subj == obj_name:
            counts["same_name"] += 1
        elif hypernyms.clashes(subj, obj_name):
            counts["hypernym"] += 1
        else:
            out.append(
                Candidate(
                    image=fields["image"],
                    image_id=str(image_id),
                    subject=subj,
                    object=obj_name,
                    relation=rel,
                    subject_box=subj_box,
                    object_box=obj_box,
                    image_size=size,
                    origin=where,
                    image_field="image",
                )
            )
    return out
