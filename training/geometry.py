"""Boxes and the GenEval position rule: which spatial relation two boxes are in, and a position scorer.

This module owns the GenEval position rule (GenEval's ``relative_position`` with
``POSITION_THRESHOLD = 0.1``), re-implemented from its description:

1. ``offset = centre_A - centre_B`` (pixels; image y grows downward).
2. Shrink each axis toward 0 by ``threshold * (size_A + size_B)`` on that axis, clamping at 0 and keeping the sign.
3. If both shrunk components are about zero (``|c| < 1e-3``), A and B are in no relation (overlapping or too close).
4. Divide the shrunk offset by the length of the **original** offset. Then ``dx < -0.5`` means "to the left of",
   ``dx > 0.5`` "to the right of", ``dy < -0.5`` "above" and ``dy > 0.5`` "below".

Several relations can hold at once (a clearly diagonal pair is both "to the left of" and "above"), so the rule gives
a *set* (:func:`relations_from_boxes`). :func:`holds` tests one requested relation, which is what the benchmarks
do; :func:`relation_from_boxes` names the dominant one (or, with ``exclusive=True``, only an unambiguous one), which
is what data creation needs to label an image.

The scorer (:func:`score_position`) checks each requested relation of an image on its own. The official evaluator
accumulates the detected relations across all checks of an image, so a later check can pass
because of a direction found for an earlier pair; here every check looks only at its own two boxes. Like GenEval,
the most confident detection of each object name is used and both objects must be detected.

Boxes are ``(x0, y0, x1, y1)`` in pixels with ``x0 <= x1`` and ``y0 <= y1``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from l2s_core.relations import ABOVE, BELOW, LEFT_OF, RIGHT_OF, SPATIAL_RELATIONS, canonical_relation

from .json_fields import iter_jsonl_objects

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

POSITION_THRESHOLD = 0.1
"""GenEval's ``POSITION_THRESHOLD``: the share of the summed box sizes removed from the centre offset per axis."""

ZERO_TOLERANCE = 1e-3
"""A shrunk offset whose components are all below this (pixels) means "no relation" (GenEval's test)."""

DIRECTION_THRESHOLD = 0.5
"""A relation holds when the normalised shrunk offset exceeds this on its axis, in its direction."""


def as_box(value: object, where: str = "box") -> Box:
    """Validate ``value`` as an ``(x0, y0, x1, y1)`` box and return it as a tuple of floats.

    Args:
        value: Any sequence of four finite numbers with ``x0 <= x1`` and ``y0 <= y1``.
        where: What the box is, for the error message (e.g. ``"items.jsonl line 3, field 'subject_box'"``).

    Raises:
        ValueError: ``value`` is not four finite numbers, or its corners are swapped.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 4:
        raise ValueError(f"{where}: expected a box [x0, y0, x1, y1] (four numbers, pixels), got {value!r}.")
    coords: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: box coordinates must be finite numbers, got {value!r}.")
        coords.append(float(v))
    x0, y0, x1, y1 = coords
    if x1 < x0 or y1 < y0:
        raise ValueError(
            f"{where}: expected x0 <= x1 and y0 <= y1 in [x0, y0, x1, y1], got {value!r}. If the box is "
            "[x, y, width, height] (COCO style), convert it with x1 = x + width, y1 = y + height."
        )
    return (x0, y0, x1, y1)


def xywh_to_xyxy(x: float, y: float, w: float, h: float) -> Box:
    """Convert a COCO/GQA ``[x, y, width, height]`` box to ``(x0, y0, x1, y1)``."""
    return (float(x), float(y), float(x) + float(w), float(y) + float(h))


def box_centre(box: Box) -> tuple[float, float]:
    """Centre ``(cx, cy)`` of a box."""
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


def box_size(box: Box) -> tuple[float, float]:
    """Size ``(width, height)`` of a box."""
    return (box[2] - box[0], box[3] - box[1])


def boxes_overlap(box_a: Box, box_b: Box) -> bool:
    """True when the two boxes share interior area (touching edges do not count)."""
    return min(box_a[2], box_b[2]) > max(box_a[0], box_b[0]) and min(box_a[3], box_b[3]) > max(box_a[1], box_b[1])


def position_components(box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD) -> tuple[float, float] | None:
    """The normalised, shrunk centre offset of A relative to B (steps 1-4 of the module docstring).

    Args:
        box_a: Box of the subject A.
        box_b: Box of the reference object B.
        threshold: Share of the summed box sizes removed per axis (GenEval: 0.1).

    Returns:
        ``(dx, dy)``, each in [-1, 1]; negative dx is left, negative dy is up. ``None`` when the shrunk offset is
        about zero (the boxes are too close or overlap too much to be in any relation).
    """
    if threshold < 0:
        raise ValueError(f"The position threshold must be >= 0, got {threshold}.")
    (cxa, cya), (cxb, cyb) = box_centre(box_a), box_centre(box_b)
    (wa, ha), (wb, hb) = box_size(box_a), box_size(box_b)
    ox, oy = cxa - cxb, cya - cyb
    rx = math.copysign(max(abs(ox) - threshold * (wa + wb), 0.0), ox)
    ry = math.copysign(max(abs(oy) - threshold * (ha + hb), 0.0), oy)
    if abs(rx) < ZERO_TOLERANCE and abs(ry) < ZERO_TOLERANCE:
        return None
    length = math.hypot(ox, oy)  # the ORIGINAL offset length; > 0 here because |r| <= |o| component-wise
    return (rx / length, ry / length)


def _relation_strengths(box_a: Box, box_b: Box, threshold: float) -> dict[str, float]:
    """Every relation that holds for A relative to B, with the size of its normalised component."""
    comps = position_components(box_a, box_b, threshold)
    if comps is None:
        return {}
    dx, dy = comps
    found: dict[str, float] = {}
    if dx < -DIRECTION_THRESHOLD:
        found[LEFT_OF] = -dx
    if dx > DIRECTION_THRESHOLD:
        found[RIGHT_OF] = dx
    if dy < -DIRECTION_THRESHOLD:
        found[ABOVE] = -dy
    if dy > DIRECTION_THRESHOLD:
        found[BELOW] = dy
    return found


def relations_from_boxes(box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD) -> frozenset[str]:
    """All canonical relations that hold for A relative to B under the GenEval rule (empty, one or two)."""
    return frozenset(_relation_strengths(box_a, box_b, threshold))


def holds(relation: str, box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD) -> bool:
    """Whether "A <relation> B" holds under the GenEval rule (the test the benchmarks apply).

    Args:
        relation: A spatial relation; aliases such as "left of" are accepted (``canonical_relation``).
        box_a: Box of the subject A.
        box_b: Box of the reference object B.
        threshold: GenEval's position threshold.

    Raises:
        ValueError: ``relation`` is not a spatial relation.
    """
    return canonical_relation(relation) in relations_from_boxes(box_a, box_b, threshold)


def relation_from_boxes(
    box_a: Box, box_b: Box, threshold: float = POSITION_THRESHOLD, *, exclusive: bool = False
) -> str | None:
    """The relation of A relative to B, for labelling: the dominant one, or ``None``.

    Args:
        box_a: Box of the subject A.
        box_b: Box of the reference object B.
        threshold: GenEval's position threshold.
        exclusive: If True, return a relation only when it is the *only* one that holds (diagonal pairs give
            ``None``). If False, a diagonal pair gives the relation with the larger normalised component, and an
            exact tie gives ``None``.

    Returns:
        One of ``SPATIAL_RELATIONS``, or ``None`` when no relation (or no unambiguous one) holds.
    """
    found = _relation_strengths(box_a, box_b, threshold)
    if not found:
        return None
    if len(found) == 1:
        return next(iter(found))
    if exclusive:
        return None
    (rel_1, s_1), (_, s_2) = sorted(found.items(), key=lambda kv: kv[1], reverse=True)
    return rel_1 if s_1 > s_2 else None


# ----------------------------------------------------------------------------------------------------------------
# Position scorer
# ----------------------------------------------------------------------------------------------------------------


def normalise_name(name: str) -> str:
    """Lower-case an object name and collapse whitespace, so "Red  Square" matches "red square"."""
    return " ".join(name.strip().lower().split())


@dataclass(frozen=True)
class Detection:
    """One detected (or user-supplied) object box.

    Attributes:
        name: Object name as written in the prompt (matched case-insensitively).
        box: ``(x0, y0, x1, y1)`` in pixels.
        score: Detector confidence; the most confident box of a name is the one scored (user boxes: 1.0).
    """

    name: str
    box: Box
    score: float = 1.0


@dataclass(frozen=True)
class RelationRequest:
    """One relation a prompt asks for: "<subject> <relation> <object>" (relation canonicalised on creation)."""

    subject: str
    relation: str
    object: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "relation", canonical_relation(self.relation))
        if normalise_name(self.subject) == normalise_name(self.object):
            raise ValueError(
                f"Relation request {self.subject!r} {self.relation!r} {self.object!r}: subject and object have the "
                "same name, so one box per name cannot tell them apart. Use two distinct object names."
            )


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one requested relation on one image.

    Attributes:
        request: The relation that was checked.
        passed: True when both objects were found and the relation holds between their boxes.
        found: The relations that hold between the two boxes (sorted; empty if an object is missing).
        reason: Short explanation when the check failed ("" when it passed).
    """

    request: RelationRequest
    passed: bool
    found: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class ImageResult:
    """All checks of one image. ``correct`` is True when every check passed."""

    image_id: str
    prompt_id: str
    correct: bool
    checks: tuple[CheckResult, ...]


@dataclass(frozen=True)
class PositionScore:
    """Aggregated position scores.

    Attributes:
        images: Per-image results, in the order of ``requested``.
        image_accuracy: Share of images whose checks all passed.
        prompt_accuracy: Share of prompts with at least one correct image (GenEval's "correct prompts").
        relation_accuracy: Per canonical relation, the share of its checks that passed (relations never requested
            are left out).
        relation_counts: Per canonical relation, how many checks requested it.
    """

    images: tuple[ImageResult, ...]
    image_accuracy: float
    prompt_accuracy: float
    relation_accuracy: dict[str, float] = field(default_factory=dict)
    relation_counts: dict[str, int] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        """Number of scored images."""
        return len(self.images)

    @property
    def num_prompts(self) -> int:
        """Number of distinct prompts among the scored images."""
        return len({r.prompt_id for r in self.images})

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary (no per-image details)."""
        return {
            "image_accuracy": self.image_accuracy,
            "prompt_accuracy": self.prompt_accuracy,
            "num_images": self.num_images,
            "num_prompts": self.num_prompts,
            "relation_accuracy": dict(self.relation_accuracy),
            "relation_counts": dict(self.relation_counts),
        }


def most_confident(detections: Sequence[Detection], name: str) -> Detection | None:
    """The highest-scoring detection named ``name`` (case-insensitive), or ``None``; ties keep the first."""
    key = normalise_name(name)
    best: Detection | None = None
    for det in detections:
        if normalise_name(det.name) == key and (best is None or det.score > best.score):
            best = det
    return best


def check_relation(
    detections: Sequence[Detection], request: RelationRequest, threshold: float = POSITION_THRESHOLD
) -> CheckResult:
    """Check one requested relation against one image's detections, looking only at this request's two boxes."""
    subj = most_confident(detections, request.subject)
    obj = most_confident(detections, request.object)
    missing = [n for n, d in ((request.subject, subj), (request.object, obj)) if d is None]
    if subj is None or obj is None:
        return CheckResult(request, False, (), "not detected: " + ", ".join(repr(n) for n in missing))
    found = tuple(sorted(relations_from_boxes(subj.box, obj.box, threshold)))
    if request.relation in found:
        return CheckResult(request, True, found, "")
    seen = " and ".join(found) if found else "no relation"
    return CheckResult(request, False, found, f"expected {request.relation!r}, found {seen}")


def check_image(
    detections: Sequence[Detection],
    requests: Sequence[RelationRequest],
    *,
    image_id: str = "",
    prompt_id: str = "",
    threshold: float = POSITION_THRESHOLD,
) -> ImageResult:
    """Check every requested relation of one image independently (no accumulation across checks)."""
    checks = tuple(check_relation(detections, req, threshold) for req in requests)
    return ImageResult(image_id, prompt_id, all(c.passed for c in checks), checks)


def score_position(
    detections_per_image: Mapping[str, Sequence[Detection]],
    requested: Mapping[str, Sequence[RelationRequest]],
    prompt_ids: Mapping[str, str] | None = None,
    threshold: float = POSITION_THRESHOLD,
) -> PositionScore:
    """Score spatial relations on a set of images.

    Args:
        detections_per_image: Image id -> its detections (an image with nothing detected maps to an empty list).
        requested: Image id -> the relations its prompt asks for. Every image listed here is scored.
        prompt_ids: Image id -> prompt id, to aggregate per prompt (several images per prompt). Default: each
            image is its own prompt.
        threshold: GenEval's position threshold.

    Returns:
        The per-image results and their aggregates. An image is correct when all of its checks pass; a prompt is
        correct when any of its images is.

    Raises:
        ValueError: an image in ``requested`` has no entry in ``detections_per_image`` or in ``prompt_ids``, or
            has no requests, or ``requested`` is empty.
    """
    if not requested:
        raise ValueError("Nothing to score: no image has requested relations.")
    results: list[ImageResult] = []
    passed: dict[str, int] = {}
    counts: dict[str, int] = {}
    for image_id, reqs in requested.items():
        if image_id not in detections_per_image:
            raise ValueError(
                f"Image {image_id!r} has requested relations but no detections entry; give it an empty list if "
                "nothing was detected."
            )
        if not reqs:
            raise ValueError(f"Image {image_id!r} has an empty list of requested relations.")
        if prompt_ids is not None and image_id not in prompt_ids:
            raise ValueError(f"Image {image_id!r} has no prompt id in prompt_ids.")
        prompt_id = prompt_ids[image_id] if prompt_ids is not None else image_id
        result = check_image(
            detections_per_image[image_id], reqs, image_id=image_id, prompt_id=prompt_id, threshold=threshold
        )
        results.append(result)
        for check in result.checks:
            rel = check.request.relation
            counts[rel] = counts.get(rel, 0) + 1
            passed[rel] = passed.get(rel, 0) + int(check.passed)
    by_prompt: dict[str, bool] = {}
    for r in results:
        by_prompt[r.prompt_id] = by_prompt.get(r.prompt_id, False) or r.correct
    order = [r for r in SPATIAL_RELATIONS if r in counts]
    return PositionScore(
        images=tuple(results),
        image_accuracy=sum(r.correct for r in results) / len(results),
        prompt_accuracy=sum(by_prompt.values()) / len(by_prompt),
        relation_accuracy={r: passed[r] / counts[r] for r in order},
        relation_counts={r: counts[r] for r in order},
    )


# ----------------------------------------------------------------------------------------------------------------
# Reading user-supplied boxes
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PositionRecord:
    """One image to score, as read from a boxes file (see :func:`read_position_jsonl`)."""

    image_id: str
    prompt_id: str
    detections: tuple[Detection, ...]
    requests: tuple[RelationRequest, ...]


def _require_str(obj: Mapping[str, object], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}, field {key!r}: expected a non-empty string, got {value!r}.")
    return value


def parse_detection(obj: object, where: str) -> Detection:
    """Parse ``{"name": str, "box": [x0, y0, x1, y1], "score": float (optional)}``; errors name ``where``."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected an object {{'name', 'box', 'score'?}}, got {obj!r}.")
    name = _require_str(obj, "name", where)
    box = as_box(obj.get("box"), f"{where}, field 'box'")
    score = obj.get("score", 1.0)
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise ValueError(f"{where}, field 'score': expected a number, got {score!r}.")
    return Detection(name=name, box=box, score=float(score))


def parse_request(obj: object, where: str) -> RelationRequest:
    """Parse ``{"subject": str, "relation": str, "object": str}``; errors name ``where`` and the field."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected an object {{'subject', 'relation', 'object'}}, got {obj!r}.")
    subject = _require_str(obj, "subject", where)
    obj_name = _require_str(obj, "object", where)
    relation = _require_str(obj, "relation", where)
    try:
        return RelationRequest(subject=subject, relation=relation, object=obj_name)
    except ValueError as exc:
        raise ValueError(f"{where}, field 'relation': {exc}") from None


def read_position_jsonl(path: str | Path) -> list[PositionRecord]:
    """Read user-supplied boxes to score, one image per line.

    Each line is ``{"image_id": str, "prompt_id": str (optional, default image_id), "detections": [{"name",
    "box", "score"?}, ...], "relations": [{"subject", "relation", "object"}, ...]}``. Blank lines are skipped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line is not valid JSON or breaks the schema; the message names the file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Boxes file {str(path)!r} does not exist.")
    records: list[PositionRecord] = []
    seen: set[str] = set()
    for where, obj in iter_jsonl_objects(path):
        image_id = str(obj.get("image_id", "")).strip()
        if not image_id:
            raise ValueError(f"{where}, field 'image_id': missing or empty.")
        if image_id in seen:
            raise ValueError(f"{where}, field 'image_id': {image_id!r} appears twice.")
        seen.add(image_id)
        prompt_id = str(obj.get("prompt_id", image_id))
        dets, rels = obj.get("detections"), obj.get("relations")
        if not isinstance(dets, list):
            raise ValueError(f"{where}, field 'detections': expected a list of objects, got {dets!r}.")
        if not isinstance(rels, list) or not rels:
            raise ValueError(f"{where}, field 'relations': expected a non-empty list of objects, got {rels!r}.")
        records.append(
            PositionRecord(
                image_id=image_id,
                prompt_id=prompt_id,
                detections=tuple(parse_detection(d, f"{where}, detections[{i}]") for i, d in enumerate(dets)),
                requests=tuple(parse_request(r, f"{where}, relations[{i}]") for i, r in enumerate(rels)),
            )
        )
    if not records:
        raise ValueError(f"Boxes file {str(path)!r} has no records.")
    return records


def score_records(records: Sequence[PositionRecord], threshold: float = POSITION_THRESHOLD) -> PositionScore:
    """Score records read with :func:`read_position_jsonl` (a thin wrapper over :func:`score_position`)."""
    return score_position(
        {r.image_id: r.detections for r in records},
        {r.image_id: r.requests for r in records},
        {r.image_id: r.prompt_id for r in records},
        threshold,
    )
