"""Tests for l2s_core.prompts: rule-based relation parsing and the explicit override."""

from __future__ import annotations

import logging

import pytest

from l2s_core.prompts import (
    RELATION_SYNONYMS,
    IncompleteRelationError,
    NoRelationError,
    RelationTriplet,
    UnsupportedRelationError,
    explicit_triplet,
    parse_relations,
)
from l2s_core.relations import ABOVE, BELOW, LEFT_OF, RIGHT_OF, SPATIAL_RELATIONS

# (prompt, [(subject, relation, object), ...]) -- hand-written from the benchmarks' templates.
CASES: list[tuple[str, list[tuple[str, str, str]]]] = [
    # GenEval: "a photo of a {A} {rel} a {B}", rel in above / below / left of / right of, COCO names.
    ("a photo of a dog right of a teddy bear", [("dog", RIGHT_OF, "teddy bear")]),
    ("a photo of a fire hydrant left of a stop sign", [("fire hydrant", LEFT_OF, "stop sign")]),
    ("a photo of a hair drier above a toothbrush", [("hair drier", ABOVE, "toothbrush")]),
    ("a photo of a wine glass below a dining table", [("wine glass", BELOW, "dining table")]),
    ("a photo of a cell phone right of a laptop", [("cell phone", RIGHT_OF, "laptop")]),
    ("a photo of a potted plant left of a couch", [("potted plant", LEFT_OF, "couch")]),
    ("a photo of a hot dog above a pizza", [("hot dog", ABOVE, "pizza")]),
    ("a photo of a tennis racket below a sports ball", [("tennis racket", BELOW, "sports ball")]),
    ("a photo of a baseball bat left of a baseball glove", [("baseball bat", LEFT_OF, "baseball glove")]),
    ("a photo of a traffic light above a parking meter", [("traffic light", ABOVE, "parking meter")]),
    ("a photo of an umbrella above a bench", [("umbrella", ABOVE, "bench")]),
    ("a photo of an elephant right of a giraffe", [("elephant", RIGHT_OF, "giraffe")]),
    ("a photo of an orange below an apple", [("orange", BELOW, "apple")]),
    ("a photo of a computer mouse left of a computer keyboard", [("computer mouse", LEFT_OF, "computer keyboard")]),
    ("a photo of a tv remote right of a tv", [("tv remote", RIGHT_OF, "tv")]),
    ("a photo of a tie below a suitcase", [("tie", BELOW, "suitcase")]),
    ("a photo of a sink left of a refrigerator", [("sink", LEFT_OF, "refrigerator")]),
    ("a photo of a skis above a snowboard", [("skis", ABOVE, "snowboard")]),
    ("a photo of a train right of a bus", [("train", RIGHT_OF, "bus")]),
    ("a photo of a person left of a bicycle", [("person", LEFT_OF, "bicycle")]),
    ("a photo of a scissors below a vase", [("scissors", BELOW, "vase")]),
    ("a photo of an oven right of a microwave", [("oven", RIGHT_OF, "microwave")]),
    # T2I-CompBench spatial: "a {A} on the left of / on the right of / on the top of / on the bottom of a {B}".
    ("a woman on the left of a sheep", [("woman", LEFT_OF, "sheep")]),
    ("a man on the right of a mouse", [("man", RIGHT_OF, "mouse")]),
    ("a bicycle on the top of a girl", [("bicycle", ABOVE, "girl")]),
    ("a balloon on the bottom of a man", [("balloon", BELOW, "man")]),
    ("a suitcase on the left of a lamp", [("suitcase", LEFT_OF, "lamp")]),
    ("a chair on the right of a bird", [("chair", RIGHT_OF, "bird")]),
    ("a dog on the top of a sofa", [("dog", ABOVE, "sofa")]),
    ("a cat on the bottom of a table", [("cat", BELOW, "table")]),
    ("a giraffe on the left of a bowl", [("giraffe", LEFT_OF, "bowl")]),
    ("a vase on the right of a wallet", [("vase", RIGHT_OF, "wallet")]),
    # Compound nouns whose last word is also a posture verb stay whole; after a plural the word is the verb.
    ("a lamp to the left of a tv stand", [("lamp", LEFT_OF, "tv stand")]),
    ("a music stand to the right of a piano", [("music stand", RIGHT_OF, "piano")]),
    ("a night stand is below a lamp", [("night stand", BELOW, "lamp")]),
    ("a bird above a float", [("bird", ABOVE, "float")]),
    ("two dogs stand to the left of a cat", [("dogs", LEFT_OF, "cat")]),
    ("a dog standing to the left of a cat", [("dog", LEFT_OF, "cat")]),
    # VISOR: "a {A} to the left of / to the right of / above / below a {B}".
    ("a dog to the left of a teddy bear", [("dog", LEFT_OF, "teddy bear")]),
    ("an umbrella above a horse", [("umbrella", ABOVE, "horse")]),
    ("a cake to the right of a toaster", [("cake", RIGHT_OF, "toaster")]),
    ("a banana below a donut", [("banana", BELOW, "donut")]),
    ("a cow above a boat", [("cow", ABOVE, "boat")]),
    ("an airplane to the left of a kite", [("airplane", LEFT_OF, "kite")]),
    # Synonyms.
    ("a cup on top of a table", [("cup", ABOVE, "table")]),
    ("a lamp over a desk", [("lamp", ABOVE, "desk")]),
    ("a cat under a chair", [("cat", BELOW, "chair")]),
    ("a ball underneath a car", [("ball", BELOW, "car")]),
    ("a rug beneath a sofa", [("rug", BELOW, "sofa")]),
    ("a bird atop a fence", [("bird", ABOVE, "fence")]),
    ("a box on bottom of a shelf", [("box", BELOW, "shelf")]),
    ("a dog to the left side of a car", [("dog", LEFT_OF, "car")]),
    ("a horse on the right side of a barn", [("horse", RIGHT_OF, "barn")]),
    ("a truck left of a house", [("truck", LEFT_OF, "house")]),
    ("a dog to the far left of a cat", [("dog", LEFT_OF, "cat")]),
    # Adjectives kept, copulas / posture verbs / edge adverbs dropped, quantifiers dropped, plurals.
    ("a red dog to the left of a big teddy bear", [("red dog", LEFT_OF, "big teddy bear")]),
    ("a cat is sitting to the left of a dog", [("cat", LEFT_OF, "dog")]),
    ("two dogs are standing directly below three cats", [("dogs", BELOW, "cats")]),
    ("the apples are placed right of the bananas", [("apples", RIGHT_OF, "bananas")]),
    ("a plate that is just above a fork", [("plate", ABOVE, "fork")]),
    ("a vase right above a book", [("vase", ABOVE, "book")]),
    ("there is a dog to the right of a cat", [("dog", RIGHT_OF, "cat")]),
    ("a group of people left of a car", [("people", LEFT_OF, "car")]),
    ("three t-shirts to the right of two pairs of jeans", [("t-shirts", RIGHT_OF, "jeans")]),
    ("a dog to the left of a cat in a park", [("dog", LEFT_OF, "cat")]),
    ("a dog to the left of a cat with a hat", [("dog", LEFT_OF, "cat")]),
    # Documented nearest-phrase rule (same as the official parser): the subject is the phrase next to the relation.
    ("a book on a table to the left of a lamp", [("table", LEFT_OF, "lamp")]),
    # Capitalisation and punctuation.
    ("A Dog To The Left Of A Cat", [("Dog", LEFT_OF, "Cat")]),
    ("A photo of a Teddy Bear ABOVE a Fire Hydrant", [("Teddy Bear", ABOVE, "Fire Hydrant")]),
    ("a dog, to the left of a cat.", [("dog", LEFT_OF, "cat")]),
    ("a painting of a cow, above a boat.", [("cow", ABOVE, "boat")]),
    ("an image of a sheep below a bird!", [("sheep", BELOW, "bird")]),
    ("a dog  to   the left-of a cat", [("dog", LEFT_OF, "cat")]),
    # Intro phrases.
    ("a drawing of a rabbit above a turtle", [("rabbit", ABOVE, "turtle")]),
    ("an illustration of a car below a plane", [("car", BELOW, "plane")]),
    ("a 3d animation of a robot to the right of a tree", [("robot", RIGHT_OF, "tree")]),
    ("a top-down view of a plate left of a cup", [("plate", LEFT_OF, "cup")]),
    ("a hyper-realistic digital painting of a lion above a zebra", [("lion", ABOVE, "zebra")]),
    ("a cinematic sci-fi movie scene of a spaceship over a city", [("spaceship", ABOVE, "city")]),
    # Chains and conjunctions.
    ("a cat above a dog to the right of a horse", [("cat", ABOVE, "dog"), ("dog", RIGHT_OF, "horse")]),
    ("a dog left of a cat and a bird above a tree", [("dog", LEFT_OF, "cat"), ("bird", ABOVE, "tree")]),
    (
        "a car to the left of a bus, and a truck below a bridge",
        [("car", LEFT_OF, "bus"), ("truck", BELOW, "bridge")],
    ),
    ("a dog above a cat and left of a bird", [("dog", ABOVE, "cat"), ("dog", LEFT_OF, "bird")]),
    (
        "a photo of a lamp above a table below a painting",
        [("lamp", ABOVE, "table"), ("table", BELOW, "painting")],
    ),
    # Repeated noun: the object is the second "cat".
    ("a cat to the left of a cat bed", [("cat", LEFT_OF, "cat bed")]),
    ("a cat bed to the right of a cat", [("cat bed", RIGHT_OF, "cat")]),
]


def test_case_table_is_large_enough() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize(("prompt", "expected"), CASES, ids=[c[0] for c in CASES])
def test_parse_relations(prompt: str, expected: list[tuple[str, str, str]]) -> None:
    triplets = parse_relations(prompt)
    assert [(t.subject, t.relation, t.object) for t in triplets] == expected
    for t in triplets:
        assert isinstance(t, RelationTriplet)
        assert t.relation in SPATIAL_RELATIONS
        assert prompt[t.subject_span[0] : t.subject_span[1]] == t.subject
        assert prompt[t.object_span[0] : t.object_span[1]] == t.object
        rel_text = prompt[t.relation_span[0] : t.relation_span[1]]
        assert " ".join(rel_text.lower().replace("-", " ").split()) in RELATION_SYNONYMS
        assert t.subject_span[1] <= t.relation_span[0] or t.subject_span[1] <= t.object_span[0]
        assert t.relation_span[1] <= t.object_span[0]


def test_spans_are_hand_checked() -> None:
    (t,) = parse_relations("a photo of a dog right of a teddy bear")
    assert t.subject_span == (13, 16)
    assert t.relation_span == (17, 25)
    assert t.object_span == (28, 38)
    t1, t2 = parse_relations("a dog above a cat and left of a bird")
    assert t1.subject_span == t2.subject_span == (2, 5)
    assert t2.relation_span == (22, 29)
    (t,) = parse_relations("a cat to the left of a cat bed")
    assert t.subject_span == (2, 5)
    assert t.object_span == (23, 30)


def test_triplet_is_frozen() -> None:
    (t,) = parse_relations("a cow above a boat")
    with pytest.raises(AttributeError):
        t.subject = "horse"  # type: ignore[misc]


# The 80 COCO class names as GenEval writes them (multi-word names included).
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
GENEVAL_RELATIONS = (("above", ABOVE), ("below", BELOW), ("left of", LEFT_OF), ("right of", RIGHT_OF))


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def test_coco_names_complete() -> None:
    assert len(COCO_NAMES) == 80
    assert len(set(COCO_NAMES)) == 80
    assert sum(" " in n for n in COCO_NAMES) == 18


@pytest.mark.parametrize("index", range(80), ids=COCO_NAMES)
def test_geneval_template_all_coco_names(index: int) -> None:
    subject = COCO_NAMES[index]
    obj = COCO_NAMES[(index + 37) % 80]
    phrase, canonical = GENEVAL_RELATIONS[index % 4]
    prompt = f"a photo of {_article(subject)} {subject} {phrase} {_article(obj)} {obj}"
    (t,) = parse_relations(prompt)
    assert (t.subject, t.relation, t.object) == (subject, canonical, obj)
    # The object as subject too (every name on both sides of the relation).
    prompt = f"a photo of {_article(obj)} {obj} {phrase} {_article(subject)} {subject}"
    (t,) = parse_relations(prompt)
    assert (t.subject, t.relation, t.object) == (obj, canonical, subject)


@pytest.mark.parametrize(
    ("prompt", "phrase"),
    [
        ("a car near a train", "near"),
        ("a cat next to a chair", "next to"),
        ("a bird on side of a dog", "on side of"),
        ("a man behind a tree", "behind"),
        ("a dog in front of a house", "in front of"),
        ("a cat beside a lamp", "beside"),
        ("a cat on a table", "on"),
        ("a photo of a dog on the side of a car", "on the side of"),
    ],
)
def test_unsupported_relations(prompt: str, phrase: str) -> None:
    with pytest.raises(UnsupportedRelationError) as info:
        parse_relations(prompt)
    message = str(info.value)
    assert repr(phrase) in message
    assert info.value.phrases == (phrase,)
    for relation in SPATIAL_RELATIONS:
        assert repr(relation) in message
    assert "explicit" in message
    assert isinstance(info.value, ValueError)


def test_diagonal_relation_is_unsupported() -> None:
    with pytest.raises(UnsupportedRelationError) as info:
        parse_relations("a cat above-left of a dog")
    assert info.value.phrases == ("above-left of",)
    assert "diagonal" in str(info.value)
    with pytest.raises(UnsupportedRelationError):
        parse_relations("a cat to the upper right of a dog")
    with pytest.raises(UnsupportedRelationError):
        parse_relations("a cat above and to the left of a dog")


def test_absolute_position_is_unsupported() -> None:
    with pytest.raises(UnsupportedRelationError) as info:
        parse_relations("a dog on the left and a cat on the right")
    assert info.value.phrases == ("on the left", "on the right")
    assert "absolute position" in str(info.value)


@pytest.mark.parametrize("prompt", ["a photo of a dog", "", "a photo of a cat and a dog", "a red left shoe"])
def test_no_relation(prompt: str) -> None:
    with pytest.raises(NoRelationError) as info:
        parse_relations(prompt)
    message = str(info.value)
    for relation in SPATIAL_RELATIONS:
        assert repr(relation) in message
    assert "subject, relation and object explicitly" in message


@pytest.mark.parametrize("prompt", ["to the left of a cat", "a dog above", "a dog above and below a cat"])
def test_incomplete_relation(prompt: str) -> None:
    with pytest.raises(IncompleteRelationError, match="no complete"):
        parse_relations(prompt)


def test_mixed_supported_and_unsupported_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="l2s_core.prompts"):
        triplets = parse_relations("a cat next to a dog and a bird above a fish")
    assert [(t.subject, t.relation, t.object) for t in triplets] == [("bird", ABOVE, "fish")]
    assert any("'next to'" in r.getMessage() for r in caplog.records)


def test_weak_prepositions_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="l2s_core.prompts"):
        parse_relations("a dog in a park to the left of a cat on a mat")
    assert caplog.records == []


def test_parse_is_deterministic() -> None:
    prompt = "a photo of a hot dog left of a wine glass and a cake above a plate"
    assert parse_relations(prompt) == parse_relations(prompt)


# ---------------------------------------------------------------------------------------------------------------
# explicit_triplet


def test_explicit_triplet_picks_object_after_subject() -> None:
    t = explicit_triplet("a cat to the left of a cat bed", "cat", "left", "cat bed")
    assert t == RelationTriplet("cat", LEFT_OF, "cat bed", (2, 5), (6, 20), (23, 30))


def test_explicit_triplet_object_before_subject() -> None:
    t = explicit_triplet("a cat bed left of a cat", "cat", "left of", "cat bed")
    assert (t.subject_span, t.relation_span, t.object_span) == ((20, 23), (10, 17), (2, 9))


def test_explicit_triplet_case_insensitive_whole_word() -> None:
    prompt = "A Teddy-Bear above a DOG and a dogwood"
    t = explicit_triplet(prompt, "teddy bear", "ABOVE", "dog")
    assert (t.subject, t.relation, t.object) == ("Teddy-Bear", ABOVE, "DOG")
    assert t.object_span == (21, 24)
    assert t.relation_span == (13, 18)


def test_explicit_triplet_relation_absent_gives_empty_span() -> None:
    t = explicit_triplet("a cat and a dog", "cat", "to_the_right_of", "dog")
    assert t.relation == RIGHT_OF
    assert t.relation_span == (5, 5)


def test_explicit_triplet_accepts_prompt_synonyms() -> None:
    t = explicit_triplet("a cup atop a table", "cup", "atop", "table")
    assert t.relation == ABOVE
    assert t.relation_span == (6, 10)


def test_explicit_triplet_errors() -> None:
    with pytest.raises(ValueError, match="'horse' does not occur"):
        explicit_triplet("a cat left of a dog", "horse", "left of", "dog")
    with pytest.raises(ValueError, match="object 'ca' does not occur"):
        explicit_triplet("a cat left of a dog", "dog", "left of", "ca")
    with pytest.raises(ValueError, match="Unknown spatial relation"):
        explicit_triplet("a cat near a dog", "cat", "near", "dog")
    with pytest.raises(ValueError, match="overlap"):
        explicit_triplet("a cat bed", "cat", "above", "cat bed")
    with pytest.raises(ValueError, match="contains no word"):
        explicit_triplet("a cat left of a dog", "  ", "left of", "dog")


def test_spans_exact_when_lowercasing_changes_length() -> None:
    prompt = "İstanbul skyline above a café"  # "İ".lower() is two characters
    (t,) = parse_relations(prompt)
    assert (t.subject, t.relation, t.object) == ("İstanbul skyline", ABOVE, "café")
    assert t.subject_span == (0, 16)
    assert prompt[t.object_span[0] : t.object_span[1]] == "café"


# ------------------------------------------------------------------------------- ComfyUI emphasis syntax (issue 11)

WEIGHTED_CASES: list[tuple[str, list[tuple[str, str, str]]]] = [
    ("a (blue circle:1.5) above a red square", [("blue circle", ABOVE, "red square")]),
    ("a blue circle (above:1.3) a red square", [("blue circle", ABOVE, "red square")]),
    ("a blue circle above a (red square:1.2)", [("blue circle", ABOVE, "red square")]),
    ("((blue circle)) above ((a red square))", [("blue circle", ABOVE, "red square")]),
    ("a (blue) circle (to the left of:0.9) a (red (square))", [("blue circle", LEFT_OF, "red square")]),
    ("a(blue circle)above(a red square)", [("blue circle", ABOVE, "red square")]),  # groups are word breaks
    ("(a photo of:1.2) a (dog:1.3) right of a cat", [("dog", RIGHT_OF, "cat")]),
    ("a (dog:1.1) (left of:1.2) a (cat:0.9) and a (bird above:1.1) a tree",
     [("dog", LEFT_OF, "cat"), ("bird", ABOVE, "tree")]),
    ("a \\(small\\) dog to the left of a cat", [("dog", LEFT_OF, "cat")]),  # escaped: literal punctuation
]


@pytest.mark.parametrize(("prompt", "expected"), WEIGHTED_CASES)
def test_weighted_prompts_parse_like_their_plain_text(prompt: str, expected: list[tuple[str, str, str]]) -> None:
    triplets = parse_relations(prompt, emphasis=True)
    assert [(t.subject, t.relation, t.object) for t in triplets] == expected
    for t in triplets:  # spans point into the prompt as written and hold the phrase's words in order
        for phrase, span in ((t.subject, t.subject_span), (t.object, t.object_span)):
            written = prompt[span[0] : span[1]]
            assert [w for w in written.replace("(", " ").replace(")", " ").split() if ":" not in w] == phrase.split()
        relation_words = prompt[t.relation_span[0] : t.relation_span[1]].lower()
        assert relation_words.split()[0] in ("above", "left", "to", "right")


def test_weighted_subject_span_is_inside_the_group() -> None:
    prompt = "a (blue circle:1.5) above a red square"
    (t,) = parse_relations(prompt, emphasis=True)
    assert t.subject_span == (3, 14) and prompt[3:14] == "blue circle"
    assert prompt[t.relation_span[0] : t.relation_span[1]] == "above"
    assert prompt[t.object_span[0] : t.object_span[1]] == "red square"


def test_without_emphasis_parentheses_stay_punctuation() -> None:
    # Diffusers prompts have no emphasis syntax: the weight number is text and ends the phrase.
    with pytest.raises(IncompleteRelationError, match="has no subject before it"):
        parse_relations("a (blue circle:1.5) above a red square")
    (t,) = parse_relations("((blue circle)) above a red square")
    assert (t.subject, t.object) == ("blue circle", "red square")


def test_weighted_prompt_errors_quote_the_prompt_as_written() -> None:
    with pytest.raises(UnsupportedRelationError, match=r"Prompt 'a \(dog:1.2\) next to a cat' has no relation"):
        parse_relations("a (dog:1.2) next to a cat", emphasis=True)
    with pytest.raises(NoRelationError, match=r"in prompt '\(a dog:1.2\) and a cat'"):
        parse_relations("(a dog:1.2) and a cat", emphasis=True)


def test_explicit_triplet_reads_emphasis() -> None:
    prompt = "a (blue) circle (above:1.3) a (red square:1.2)"
    t = explicit_triplet(prompt, "blue circle", "above", "red square", emphasis=True)
    assert (t.subject, t.relation, t.object) == ("blue circle", ABOVE, "red square")
    assert prompt[t.subject_span[0] : t.subject_span[1]] == "blue) circle"
    assert prompt[t.relation_span[0] : t.relation_span[1]] == "above"
    assert prompt[t.object_span[0] : t.object_span[1]] == "red square"
    with pytest.raises(ValueError, match="'blue circle' does not occur"):
        explicit_triplet(prompt, "blue circle", "above", "red square")  # without emphasis: ") c" splits the words
    empty = explicit_triplet("a (cat:1.2) and a dog", "cat", "left of", "dog", emphasis=True)
    assert empty.relation_span == (6, 6)  # an absent relation: empty span right after "cat", before ":1.2)"
