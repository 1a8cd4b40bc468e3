"""Tests for training.toy.scenes: determinism, exact boxes that match the drawn pixels, relations, bias."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from l2s_core.relations import ABOVE, BELOW, LEFT_OF, RIGHT_OF, SPATIAL_RELATIONS
from training.geometry import boxes_overlap, relations_from_boxes
from training.toy.scenes import (
    COLOURS,
    DEFAULT_KINDS,
    INVERSE,
    ObjectKind,
    Scene,
    ToyWorldConfig,
    parse_kinds,
    render_scene,
    sample_pair,
    usual_relation,
)


def _colour_bbox(scene: Scene, name: str) -> tuple[int, int, int, int] | None:
    """Tight box (x1/y1 exclusive) of the pixels that have exactly the object's colour."""
    pixels = np.asarray(scene.image)  # (H, W, 3)
    mask = np.all(pixels == np.array(ObjectKind.parse(name).rgb, dtype=np.uint8), axis=-1)  # (H, W)
    if not mask.any():
        return None
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def test_same_seed_same_scene_different_seed_different_scene() -> None:
    a = render_scene("red square", "blue circle", "left of", 123)
    b = render_scene("red square", "blue circle", "to the left of", random.Random(123))
    c = render_scene("red square", "blue circle", "to the left of", 124)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.objects == b.objects and a.relation == b.relation == LEFT_OF
    assert (a.objects, a.image.tobytes()) != (c.objects, c.image.tobytes())


@pytest.mark.parametrize("relation", SPATIAL_RELATIONS)
def test_boxes_match_drawn_pixels_and_relation_is_unique(relation: str) -> None:
    rng = random.Random(7)
    for _ in range(25):
        subj, obj = sample_pair(relation, rng)
        scene = render_scene(subj, obj, relation, rng)
        assert scene.image.size == (64, 64) and scene.image.mode == "RGB"
        assert (scene.subject.name, scene.object.name) == (subj, obj)
        for placed in scene.objects:
            # Every pixel of the object's colour lies inside its box, and the box is tight around them.
            assert _colour_bbox(scene, placed.name) == placed.box
        assert not boxes_overlap(scene.subject.box, scene.object.box)
        assert relations_from_boxes(scene.subject.box, scene.object.box) == {relation}
        # Everything outside the two boxes is background.
        pixels = np.asarray(scene.image).copy()  # (H, W, 3)
        for placed in scene.objects:
            x0, y0, x1, y1 = placed.box
            pixels[y0:y1, x0:x1] = scene.background
        assert np.all(pixels == np.array(scene.background, dtype=np.uint8))


def test_other_sizes_and_all_shapes() -> None:
    config = ToyWorldConfig(size=128)
    rng = random.Random(3)
    shapes = ["square", "circle", "triangle", "diamond", "cross", "star"]
    for i, shape in enumerate(shapes):
        a = f"{list(COLOURS)[i]} {shape}"
        b = f"{list(COLOURS)[i + 1]} {shapes[(i + 1) % len(shapes)]}"
        rel = SPATIAL_RELATIONS[i % 4]
        scene = render_scene(a, b, rel, rng, config)
        assert scene.image.size == (128, 128)
        assert _colour_bbox(scene, a) == scene.subject.box
        assert _colour_bbox(scene, b) == scene.object.box
        assert relations_from_boxes(scene.subject.box, scene.object.box) == {rel}


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="colour"):
        ObjectKind.parse("pink square")
    with pytest.raises(ValueError, match="shape"):
        ObjectKind.parse("red hexagon")
    with pytest.raises(ValueError, match="'<colour> <shape>'"):
        ObjectKind.parse("square")
    with pytest.raises(ValueError, match="two different objects"):
        render_scene("red square", "Red Square", ABOVE, 0)
    with pytest.raises(ValueError, match="Unknown spatial relation"):
        render_scene("red square", "blue circle", "next to", 0)
    with pytest.raises(ValueError, match="at least 32"):
        ToyWorldConfig(size=16)
    with pytest.raises(ValueError, match="repeat"):
        parse_kinds(["red square", "red  square"])
    with pytest.raises(ValueError, match="bias"):
        sample_pair(ABOVE, 0, bias=1.5)


def test_default_vocabulary() -> None:
    kinds = parse_kinds(DEFAULT_KINDS)
    assert len(kinds) >= 6
    assert all(len(k.name.split()) == 2 for k in kinds)
    assert len({k.colour for k in kinds}) == len(kinds) and len({k.shape for k in kinds}) == len(kinds)


def test_usual_relation_is_consistent_and_covers_every_relation() -> None:
    usual = Counter()
    for a in DEFAULT_KINDS:
        for b in DEFAULT_KINDS:
            if a != b:
                rel = usual_relation(a, b, DEFAULT_KINDS)
                assert usual_relation(b, a, DEFAULT_KINDS) == INVERSE[rel]
                usual[rel] += 1
    assert set(usual) == set(SPATIAL_RELATIONS)
    # First unordered pair (red square, green triangle) gets "to the left of"; the second "above".
    assert usual_relation("red square", "green triangle", DEFAULT_KINDS) == LEFT_OF
    assert usual_relation("red square", "blue circle", DEFAULT_KINDS) == ABOVE
    assert usual_relation("blue circle", "red square", DEFAULT_KINDS) == BELOW


def test_bias_controls_how_often_the_usual_arrangement_is_shown() -> None:
    rng = random.Random(0)
    for rel in (LEFT_OF, RIGHT_OF, ABOVE, BELOW):
        for _ in range(50):
            a, b = sample_pair(rel, rng, bias=1.0)
            assert usual_relation(a, b, DEFAULT_KINDS) == rel
    rng = random.Random(0)
    unbiased = [sample_pair(ABOVE, rng, bias=0.0) for _ in range(400)]
    share = sum(usual_relation(a, b, DEFAULT_KINDS) == ABOVE for a, b in unbiased) / len(unbiased)
    assert 0.1 < share < 0.45  # about a quarter of the pairs usually show "above"
    assert all(a != b for a, b in unbiased)
