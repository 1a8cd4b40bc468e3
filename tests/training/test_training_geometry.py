"""Tests for training.geometry: the GenEval position rule on hand-computed boxes, and the position scorer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from l2s_core.relations import ABOVE, BELOW, LEFT_OF, RIGHT_OF
from training.geometry import (
    Detection,
    RelationRequest,
    as_box,
    check_image,
    holds,
    position_components,
    read_position_jsonl,
    relation_from_boxes,
    relations_from_boxes,
    score_position,
    score_records,
    xywh_to_xyxy,
)

UNIT = (0.0, 0.0, 10.0, 10.0)  # a 10x10 box at the origin; centre (5, 5)


def test_left_of_by_hand() -> None:
    # centres (5,5) and (35,5): offset (-30, 0); shrink x by 0.1*(10+10) = 2 -> -28; / |offset| 30 -> -0.9333.
    b = (30.0, 0.0, 40.0, 10.0)
    dx, dy = position_components(UNIT, b)
    assert dx == pytest.approx(-28 / 30)
    assert dy == 0.0
    assert relations_from_boxes(UNIT, b) == {LEFT_OF}
    assert relation_from_boxes(UNIT, b) == LEFT_OF
    assert holds("to the left of", UNIT, b) and holds("left of", UNIT, b)
    assert not holds(RIGHT_OF, UNIT, b) and not holds(ABOVE, UNIT, b)


@pytest.mark.parametrize(
    ("box_b", "expected"),
    [
        ((30.0, 0.0, 40.0, 10.0), LEFT_OF),  # B to the right, so A is left of B
        ((-30.0, 0.0, -20.0, 10.0), RIGHT_OF),
        ((0.0, 30.0, 10.0, 40.0), ABOVE),  # B lower in the image (y grows downward), so A is above B
        ((0.0, -30.0, 10.0, -20.0), BELOW),
    ],
)
def test_each_relation(box_b: tuple[float, float, float, float], expected: str) -> None:
    assert relations_from_boxes(UNIT, box_b) == {expected}
    assert relation_from_boxes(UNIT, box_b, exclusive=True) == expected
    # The reverse pair is in the inverse relation.
    inverse = {LEFT_OF: RIGHT_OF, RIGHT_OF: LEFT_OF, ABOVE: BELOW, BELOW: ABOVE}[expected]
    assert relation_from_boxes(box_b, UNIT) == inverse


def test_normalised_component_exactly_half_is_not_enough() -> None:
    # Offset -4 on x, shrink 2 -> -2; -2 / 4 = -0.5 exactly: the rule needs dx < -0.5, so no relation.
    assert position_components(UNIT, (4.0, 0.0, 14.0, 10.0)) == (-0.5, 0.0)
    assert relations_from_boxes(UNIT, (4.0, 0.0, 14.0, 10.0)) == frozenset()
    # Offset -5: (5 - 2) / 5 = 0.6 > 0.5 -> left of (even though the boxes overlap: GenEval has no overlap test).
    assert position_components(UNIT, (5.0, 0.0, 15.0, 10.0)) == pytest.approx((-0.6, 0.0))
    assert relation_from_boxes(UNIT, (5.0, 0.0, 15.0, 10.0)) == LEFT_OF


def test_normalises_by_the_original_offset_length() -> None:
    # Offset -3.9, shrink 2 -> -1.9. Divided by the ORIGINAL length 3.9 this is -0.487 (no relation); divided by the
    # shrunk length it would be -1 (left of). The rule uses the original length.
    b = (3.9, 0.0, 13.9, 10.0)
    dx, _ = position_components(UNIT, b)
    assert dx == pytest.approx(-1.9 / 3.9)
    assert relation_from_boxes(UNIT, b) is None


def test_overlapping_and_too_close_boxes_have_no_relation() -> None:
    # Offset (-1, -1), shrink 2 per axis -> (0, 0): no relation.
    assert position_components(UNIT, (1.0, 1.0, 11.0, 11.0)) is None
    assert relations_from_boxes(UNIT, (1.0, 1.0, 11.0, 11.0)) == frozenset()
    assert relation_from_boxes(UNIT, (1.0, 1.0, 11.0, 11.0)) is None
    # Same box: offset 0.
    assert relation_from_boxes(UNIT, UNIT) is None
    assert not holds(LEFT_OF, UNIT, UNIT)
    # Offset exactly the shrink amount (2) -> 0.
    assert position_components(UNIT, (2.0, 0.0, 12.0, 10.0)) is None


def test_threshold_parameter() -> None:
    # Offset -4.1: with threshold 0.1 -> (4.1 - 2) / 4.1 = 0.512 -> left; with 0.15 -> (4.1 - 3) / 4.1 = 0.268 -> none.
    b = (4.1, 0.0, 14.1, 10.0)
    assert relation_from_boxes(UNIT, b, 0.1) == LEFT_OF
    assert relation_from_boxes(UNIT, b, 0.15) is None
    # Threshold 0: pure centre direction.
    assert relation_from_boxes(UNIT, (0.5, 0.0, 10.5, 10.0), 0.0) == LEFT_OF
    with pytest.raises(ValueError, match="threshold"):
        position_components(UNIT, b, -0.1)


def test_diagonal_pairs() -> None:
    # Offset (-30, -30): shrunk (-28, -28) / 42.43 = -0.66 on both axes -> left of AND above; exact tie -> None.
    b = (30.0, 30.0, 40.0, 40.0)
    assert relations_from_boxes(UNIT, b) == {LEFT_OF, ABOVE}
    assert holds(LEFT_OF, UNIT, b) and holds(ABOVE, UNIT, b)
    assert relation_from_boxes(UNIT, b) is None
    # Offset (-30, -24): shrunk (-28, -22) / 38.42 = (-0.729, -0.573): both hold, x dominates.
    b2 = (30.0, 24.0, 40.0, 34.0)
    dx, dy = position_components(UNIT, b2)
    assert (dx, dy) == pytest.approx((-28 / 38.4187, -22 / 38.4187), abs=1e-4)
    assert relations_from_boxes(UNIT, b2) == {LEFT_OF, ABOVE}
    assert relation_from_boxes(UNIT, b2) == LEFT_OF
    assert relation_from_boxes(UNIT, b2, exclusive=True) is None
    # Offset (-30, -20): shrunk (-28, -18) / 36.06 = (-0.776, -0.499): only left of.
    assert relations_from_boxes(UNIT, (30.0, 20.0, 40.0, 30.0)) == {LEFT_OF}


def test_box_helpers() -> None:
    assert xywh_to_xyxy(1, 2, 3, 4) == (1.0, 2.0, 4.0, 6.0)
    assert as_box([0, 0, 1, 1]) == (0.0, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"subject_box.*x0 <= x1"):
        as_box([10, 0, 5, 5], "line 3, field 'subject_box'")
    with pytest.raises(ValueError, match="four numbers"):
        as_box([1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        as_box([0, 0, float("nan"), 1])
    with pytest.raises(ValueError, match="Unknown spatial relation"):
        holds("next to", UNIT, UNIT)


def _official_accumulating_scorer(detections: list[Detection], requests: list[RelationRequest]) -> bool:
    """The lenient official behaviour: found relations accumulate over the checks of an image."""
    true_rels: set[str] = set()
    ok = True
    for req in requests:
        subj = next(d for d in detections if d.name == req.subject)
        obj = next(d for d in detections if d.name == req.object)
        true_rels |= relations_from_boxes(subj.box, obj.box)
        ok = ok and req.relation in true_rels
    return ok


def test_no_accumulation_across_checks() -> None:
    dets = [
        Detection("cat", (0, 0, 10, 10)),
        Detection("dog", (30, 30, 40, 40)),  # cat is left of AND above the dog
        Detection("cup", (0, 50, 10, 60)),
        Detection("bowl", (30, 50, 40, 60)),  # cup is only left of the bowl
    ]
    requests = [RelationRequest("cat", "left of", "dog"), RelationRequest("cup", "above", "bowl")]
    # The official accumulation passes "cup above bowl" because "above" was found for the cat/dog pair.
    assert _official_accumulating_scorer(dets, requests) is True
    result = check_image(dets, requests)
    assert result.checks[0].passed
    assert set(result.checks[0].found) == {LEFT_OF, ABOVE}
    assert not result.checks[1].passed
    assert result.checks[1].found == (LEFT_OF,)
    assert "expected 'above'" in result.checks[1].reason
    assert result.correct is False


def test_score_position_aggregates_per_image_prompt_and_relation() -> None:
    good = [Detection("cat", (0, 0, 10, 10)), Detection("dog", (30, 0, 40, 10))]
    bad = [Detection("cat", (30, 0, 40, 10)), Detection("dog", (0, 0, 10, 10))]
    req = [RelationRequest("cat", "to the left of", "dog")]
    req_above = [RelationRequest("cat", "above", "dog")]
    score = score_position(
        {"p1_a": bad, "p1_b": good, "p2_a": bad, "p3_a": []},
        {"p1_a": req, "p1_b": req, "p2_a": req, "p3_a": req_above},
        {"p1_a": "p1", "p1_b": "p1", "p2_a": "p2", "p3_a": "p3"},
    )
    assert score.num_images == 4 and score.num_prompts == 3
    assert score.image_accuracy == pytest.approx(1 / 4)
    assert score.prompt_accuracy == pytest.approx(1 / 3)  # p1 has one correct image
    assert score.relation_counts == {ABOVE: 1, LEFT_OF: 3}
    assert score.relation_accuracy == {ABOVE: 0.0, LEFT_OF: pytest.approx(1 / 3)}
    missing = score.images[3].checks[0]
    assert not missing.passed and "not detected" in missing.reason and "'cat'" in missing.reason
    assert score.to_dict()["num_prompts"] == 3


def test_most_confident_instance_is_scored() -> None:
    dets = [
        Detection("Cat", (50, 0, 60, 10), score=0.9),  # confident cat is right of the dog
        Detection("cat", (0, 0, 10, 10), score=0.4),  # a weaker cat on the left is ignored
        Detection("dog", (30, 0, 40, 10), score=0.8),
    ]
    assert check_image(dets, [RelationRequest("cat", LEFT_OF, "dog")]).correct is False
    assert check_image(dets, [RelationRequest("cat", RIGHT_OF, "dog")]).correct is True


def test_score_position_errors() -> None:
    req = [RelationRequest("cat", LEFT_OF, "dog")]
    with pytest.raises(ValueError, match="no detections entry"):
        score_position({}, {"img": req})
    with pytest.raises(ValueError, match="Nothing to score"):
        score_position({}, {})
    with pytest.raises(ValueError, match="same name"):
        RelationRequest("cat", LEFT_OF, "Cat")
    with pytest.raises(ValueError, match="Unknown spatial relation"):
        RelationRequest("cat", "near", "dog")


def test_read_position_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "boxes.jsonl"
    lines = [
        {
            "image_id": "0",
            "prompt_id": "p",
            "detections": [{"name": "cat", "box": [0, 0, 10, 10]}, {"name": "dog", "box": [30, 0, 40, 10]}],
            "relations": [{"subject": "cat", "relation": "left of", "object": "dog"}],
        },
        {
            "image_id": "1",
            "prompt_id": "p",
            "detections": [],
            "relations": [{"subject": "cat", "relation": "above", "object": "dog"}],
        },
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    records = read_position_jsonl(path)
    assert [r.image_id for r in records] == ["0", "1"]
    score = score_records(records)
    assert score.image_accuracy == 0.5 and score.prompt_accuracy == 1.0

    bad = dict(lines[0], detections=[{"name": "cat", "box": [10, 0, 0, 10]}])
    path.write_text(json.dumps(lines[1]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"boxes\.jsonl line 2, detections\[0\], field 'box'"):
        read_position_jsonl(path)
    bad = dict(lines[0], relations=[{"subject": "cat", "relation": "next to", "object": "dog"}])
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"boxes\.jsonl line 1, relations\[0\], field 'relation'"):
        read_position_jsonl(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_position_jsonl(tmp_path / "nope.jsonl")
