"""GQA source of the ``triplets`` command: spatial relations read from GQA scene graphs.

GQA scene graphs (``{image_id: {"width", "height", "objects": {obj_id: {"name", "x", "y", "w", "h",
"relations": [{"name", "object"}]}}}}``; several files are merged). Relations named exactly "above", "below",
"to the left of" or "to the right of" are kept; all others are dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from l2s_core.relations import SPATIAL_RELATIONS

from ..candidates import Candidate
from ..geometry import Box, normalise_name, xywh_to_xyxy
from ..hypernyms import HypernymTable, clashing_names
from ..json_fields import as_number, read_json

GQA_RELATION_NAMES: frozenset[str] = frozenset(SPATIAL_RELATIONS)
"""GQA relation names kept (exactly the canonical four, as the official whitelist)."""


def load_gqa(
    paths: Sequence[str | Path],
    *,
    relations: Sequence[str],
    hypernyms: HypernymTable,
    image_ext: str,
    counts: Counter[str],
) -> list[Candidate]:
    """Read GQA scene graphs and return the filtered spatial candidates.

    Args:
        paths: One or more scene-graph JSON files (e.g. train and val), merged.
        relations: Canonical relations to keep.
        hypernyms: Hypernym table for the clash filter.
        image_ext: Image file extension; the image path is ``<image_id><image_ext>``.
        counts: Filter counters, updated in place.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: a file breaks the schema (the message names the file, image id, object id and field), or an
            image id appears in two files.
    """
    keep = set(relations)
    out: list[Candidate] = []
    owner: dict[str, str] = {}
    for p in paths:
        path = Path(p)
        data = read_json(path, "GQA scene-graph file")
        fname = str(path)
        if not isinstance(data, dict):
            raise ValueError(
                f"GQA scene-graph file {str(path)!r}: expected a JSON object {{image_id: {{'width', 'height', "
                f"'objects'}}}}, got {type(data).__name__}. Is this a COCO or JSONL file (--source coco/jsonl)?"
            )
        for image_id, graph in data.items():
            image_id = str(image_id)
            where = f"{fname}, image {image_id!r}"
            if image_id in owner:
                raise ValueError(f"{where}: image id also appears in {owner[image_id]!r}; ids must be unique.")
            owner[image_id] = fname
            if not isinstance(graph, dict) or not isinstance(graph.get("objects"), dict):
                raise ValueError(
                    f"{where}, field 'objects': expected an object {{obj_id: {{...}}}}, got "
                    f"{graph.get('objects') if isinstance(graph, dict) else graph!r}."
                )
            size = None
            if "width" in graph and "height" in graph:
                size = (
                    int(as_number(graph["width"], f"{where}, field 'width'")),
                    int(as_number(graph["height"], f"{where}, field 'height'")),
                )
            objects: dict[str, tuple[str, Box, list[object]]] = {}
            for obj_id, obj in graph["objects"].items():
                owhere = f"{where}, object {obj_id!r}"
                if not isinstance(obj, dict):
                    raise ValueError(f"{owhere}: expected an object with 'name', 'x', 'y', 'w', 'h', 'relations'.")
                name = obj.get("name")
                if not isinstance(name, str) or not name.strip():
                    raise ValueError(f"{owhere}, field 'name': expected a non-empty string, got {name!r}.")
                coords = [as_number(obj.get(k), f"{owhere}, field {k!r}") for k in ("x", "y", "w", "h")]
                rels = obj.get("relations", [])
                if not isinstance(rels, list):
                    raise ValueError(f"{owhere}, field 'relations': expected a list, got {rels!r}.")
                objects[str(obj_id)] = (normalise_name(name), xywh_to_xyxy(*coords), rels)
            name_count = Counter(n for n, _, _ in objects.values())
            clashes = clashing_names(name_count, hypernyms)
            for obj_id, (subj, subj_box, rels) in objects.items():
                for k, rel in enumerate(rels):
                    rwhere = f"{where}, object {obj_id!r}, relations[{k}]"
                    if not isinstance(rel, dict):
                        raise ValueError(f"{rwhere}: expected {{'name', 'object'}}, got {rel!r}.")
                    rname, target = rel.get("name"), rel.get("object")
                    if not isinstance(rname, str):
                        raise ValueError(f"{rwhere}, field 'name': expected a string, got {rname!r}.")
                    rname = normalise_name(rname)
                    if rname not in GQA_RELATION_NAMES:
                        counts["non_spatial_relation"] += 1
                        continue
                    if rname not in keep:
                        counts["other_relation"] += 1
                        continue
                    if str(target) not in objects:
                        raise ValueError(f"{rwhere}, field 'object': {target!r} is not an object of this image.")
                    obj_name, obj_box, _ = objects[str(target)]
                    if subj == obj_name:
                        counts["same_name"] += 1
                    elif name_count[subj] > 1 or name_count[obj_name] > 1:
                        counts["repeated_name"] += 1
                    elif subj in clashes or obj_name in clashes:
                        counts["hypernym"] += 1
                    else:
                        out.append(
                            Candidate(
                                image=f"{image_id}{image_ext}",
                                image_id=image_id,
                                subject=subj,
                                object=obj_name,
                                relation=rname,
                                subject_box=subj_box,
                                object_box=obj_box,
                                image_size=size,
                                origin=where,
                                image_field="image id",
                            )
                        )
    return out
