"""Tests for l2s_core.tokens: phrase -> attention-axis token positions with CLIP-like and T5-like fake tokenizers."""

from __future__ import annotations

import re

import pytest

from l2s_core.prompts import explicit_triplet, parse_relations
from l2s_core.tokens import PhraseNotFoundError, PhraseTruncatedError, locate_phrase, phrase_token_positions

# --- A tiny CLIP-like tokenizer: lower-cased words and punctuation, one id per word except a few two-piece words.
CLIP_VOCAB = {
    "a": 1, "cat": 2, "to": 3, "the": 4, "left": 5, "of": 6, "bed": 7, "dog": 8, "photo": 9, "fire": 10,
    "teddy": 11, "bear": 12, ",": 13, ".": 14, "and": 15, "word": 16, "above": 17, "red": 18, "right": 19,
}  # fmt: skip
CLIP_PIECES = {"hydrant": [20, 21], "toothbrush": [22, 23]}  # words the fake BPE splits in two


def clip_encode(text: str) -> list[int]:
    """Ids without start/end tokens, like ``tokenizer(text, add_special_tokens=False)``."""
    ids: list[int] = []
    for word in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()):
        ids.extend(CLIP_PIECES.get(word) or [CLIP_VOCAB[word]])
    return ids


# --- A tiny T5-like (sentencepiece) tokenizer: a word after whitespace or at the start gets a "▁" prefix; a word
# glued to preceding punctuation does not; a digit-initial word after whitespace is split into a bare "▁" + word.
T5_VOCAB = {
    "▁": 100, "▁a": 101, "▁cat": 102, "▁to": 103, "▁the": 104, "▁left": 105, "▁of": 106, "▁bed": 107, "▁dog": 108,
    "▁robot": 109, "3d": 110, "▁(": 111, ")": 112, "▁teddy": 113, "▁bear": 114, "cat": 115, "▁above": 116,
}  # fmt: skip
BARE = T5_VOCAB["▁"]


def t5_encode(text: str) -> list[int]:
    """Ids without the end token ``</s>``."""
    ids: list[int] = []
    for m in re.finditer(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()):
        piece = m.group()
        after_space = m.start() == 0 or text[m.start() - 1].isspace()
        if not after_space:
            ids.append(T5_VOCAB[piece])
        elif piece[0].isdigit():
            ids.extend([BARE, T5_VOCAB[piece]])
        else:
            ids.append(T5_VOCAB["▁" + piece])
    return ids


def test_fake_tokenizers() -> None:
    assert clip_encode("a fire hydrant, and") == [1, 10, 20, 21, 13, 15]
    assert t5_encode("a cat (3d robot)") == [101, 102, 111, 110, 109, 112]
    assert t5_encode("3d robot") == [BARE, 110, 109]


# ------------------------------------------------------------------------------------------------------- CLIP-like


def test_clip_repeated_noun_subject_is_first_object_is_second() -> None:
    prompt = "a cat to the left of a cat bed"
    assert clip_encode(prompt) == [1, 2, 3, 4, 5, 6, 1, 2, 7]
    (t,) = parse_relations(prompt)
    assert (t.subject, t.object) == ("cat", "cat bed")
    # Attention axis: 0 = start token, so prompt index i sits at position i + 1.
    assert phrase_token_positions(clip_encode, prompt, t.subject_span, offset=1, max_length=77) == [2]
    assert phrase_token_positions(clip_encode, prompt, t.object_span, offset=1, max_length=77) == [8, 9]


def test_clip_repeated_noun_object_is_not_the_first_match() -> None:
    prompt = "a cat bed to the left of a cat"
    (t,) = parse_relations(prompt)
    assert (t.subject, t.object) == ("cat bed", "cat")
    assert phrase_token_positions(clip_encode, prompt, t.subject_span, offset=1, max_length=77) == [2, 3]
    # "cat" also occurs at index 1 (inside "cat bed"); the span's occurrence is index 8.
    assert phrase_token_positions(clip_encode, prompt, t.object_span, offset=1, max_length=77) == [9]


def test_explicit_triplet_spans_feed_token_lookup() -> None:
    prompt = "a cat bed to the left of a cat"
    t = explicit_triplet(prompt, "cat", "left of", "cat bed")
    assert phrase_token_positions(clip_encode, prompt, t.subject_span, offset=1, max_length=77) == [9]
    assert phrase_token_positions(clip_encode, prompt, t.object_span, offset=1, max_length=77) == [2, 3]


def test_clip_multi_token_phrases_and_punctuation() -> None:
    prompt = "a photo of a fire hydrant, and a teddy bear."
    # a photo of a fire hydrant(2) , and a teddy bear .
    # 0 1     2  3 4    5 6        7 8   9 10    11   12
    assert clip_encode(prompt) == [1, 9, 6, 1, 10, 20, 21, 13, 15, 1, 11, 12, 14]
    start = prompt.index("fire hydrant")
    assert phrase_token_positions(clip_encode, prompt, (start, start + 12), offset=1, max_length=77) == [5, 6, 7]
    start = prompt.index("teddy bear")
    assert phrase_token_positions(clip_encode, prompt, (start, start + 10), offset=1, max_length=77) == [11, 12]


def _long_prompt(filler_words: int) -> str:
    return "a cat to the left of a dog " + "word " * filler_words + "and a red teddy bear"


def test_clip_truncation_boundary() -> None:
    # Prefix "a cat to the left of a dog" is 8 tokens, then the fillers, then "and a red teddy bear".
    prompt = _long_prompt(62)  # "teddy bear" at indices 8 + 62 + 3 = 73, 74 -> positions 74, 75: the last usable
    start = prompt.index("teddy bear")
    span = (start, start + len("teddy bear"))
    assert phrase_token_positions(clip_encode, prompt, span, offset=1, max_length=77) == [74, 75]

    prompt = _long_prompt(63)  # positions 75, 76; 76 is the end-token slot of a 77-token window
    start = prompt.index("teddy bear")
    span = (start, start + len("teddy bear"))
    with pytest.raises(PhraseTruncatedError, match=r"'teddy bear' starts at token 75 .* keeps only 77 tokens"):
        phrase_token_positions(clip_encode, prompt, span, offset=1, max_length=77)
    # No end token reserved, or no window: the phrase fits.
    assert phrase_token_positions(clip_encode, prompt, span, offset=1, max_length=77, reserve_end_token=False) == [
        75,
        76,
    ]
    assert phrase_token_positions(clip_encode, prompt, span, offset=1, max_length=None) == [75, 76]
    # The subject at the start of the same long prompt is fine.
    assert phrase_token_positions(clip_encode, prompt, (2, 5), offset=1, max_length=77) == [2]


def test_clip_phrase_far_beyond_window() -> None:
    prompt = _long_prompt(200)
    start = prompt.index("teddy")
    with pytest.raises(PhraseTruncatedError, match="Shorten the prompt"):
        phrase_token_positions(clip_encode, prompt, (start, start + 5), offset=1, max_length=77)


def test_locate_phrase_not_found_names_phrase_and_ids() -> None:
    with pytest.raises(PhraseNotFoundError, match=r"'horse'.*\[30\].*\[1, 2, 3\]"):
        locate_phrase([1, 2, 3], [30], 0, offset=1, max_length=77, phrase="horse")
    # Partial matches do not count: the official code checked only the first token.
    with pytest.raises(PhraseNotFoundError):
        locate_phrase([1, 2, 3], [2, 4], 1, offset=1, max_length=77, phrase="cat bed")
    with pytest.raises(PhraseNotFoundError, match="no tokens"):
        locate_phrase([1, 2, 3], [], 0, offset=1, max_length=77, phrase="")


def test_locate_phrase_picks_nearest_occurrence() -> None:
    ids = [5, 2, 7, 2, 9, 2]
    assert locate_phrase(ids, [2], 0, offset=0, max_length=None, phrase="x") == [1]
    assert locate_phrase(ids, [2], 3, offset=0, max_length=None, phrase="x") == [3]
    assert locate_phrase(ids, [2], 5, offset=1, max_length=None, phrase="x") == [6]
    assert locate_phrase(ids, [2], 2, offset=0, max_length=None, phrase="x") == [1]  # tie -> earlier


def test_locate_phrase_bad_arguments() -> None:
    with pytest.raises(ValueError, match="offset"):
        locate_phrase([1], [1], 0, offset=-1, max_length=77, phrase="a")
    with pytest.raises(ValueError, match="max_length"):
        locate_phrase([1], [1], 0, offset=1, max_length=2, phrase="a")
    with pytest.raises(ValueError, match="Span"):
        phrase_token_positions(clip_encode, "a cat", (3, 3), offset=1, max_length=77)
    with pytest.raises(ValueError, match="Span"):
        phrase_token_positions(clip_encode, "a cat", (2, 9), offset=1, max_length=77)


# --------------------------------------------------------------------------------------------------------- T5-like


def test_t5_positions_have_no_start_offset() -> None:
    prompt = "a cat to the left of a cat bed"
    (t,) = parse_relations(prompt)
    assert phrase_token_positions(t5_encode, prompt, t.subject_span, offset=0, max_length=512) == [1]
    assert phrase_token_positions(t5_encode, prompt, t.object_span, offset=0, max_length=512) == [7, 8]


def test_t5_bare_leading_piece_is_ignorable() -> None:
    prompt = "a cat to the left of a (3d robot)"
    # ▁a ▁cat ▁to ▁the ▁left ▁of ▁a ▁( 3d ▁robot )  -> "3d" is glued to "(" in context, so no bare "▁" before it.
    assert t5_encode(prompt) == [101, 102, 103, 104, 105, 106, 101, 111, 110, 109, 112]
    start = prompt.index("3d")
    span = (start, start + len("3d robot"))
    assert t5_encode("3d robot") == [BARE, 110, 109]
    assert phrase_token_positions(t5_encode, prompt, span, offset=0, max_length=512, ignorable_leading_ids={BARE}) == [
        8,
        9,
    ]
    with pytest.raises(PhraseNotFoundError, match="'3d robot'"):
        phrase_token_positions(t5_encode, prompt, span, offset=0, max_length=512)


def test_locate_phrase_only_strips_ignorable_first_id() -> None:
    assert locate_phrase(
        [7, 8, 9], [100, 8], 0, offset=0, max_length=None, phrase="x", ignorable_leading_ids={100}
    ) == [1]
    with pytest.raises(PhraseNotFoundError):
        locate_phrase([7, 8, 9], [101, 8], 0, offset=0, max_length=None, phrase="x", ignorable_leading_ids={100})
    # A lone bare piece is never dropped (that would leave nothing to match).
    with pytest.raises(PhraseNotFoundError):
        locate_phrase([7, 8, 9], [100], 0, offset=0, max_length=None, phrase="x", ignorable_leading_ids={100})


def test_t5_truncation_without_start_token() -> None:
    prompt = "a cat to the left of a dog"
    (t,) = parse_relations(prompt)
    # ▁dog is index 7; with max_length 8 and the end token reserved only indices 0..6 are usable.
    with pytest.raises(PhraseTruncatedError, match="starts at token 7"):
        phrase_token_positions(t5_encode, prompt, t.object_span, offset=0, max_length=8)
    assert phrase_token_positions(t5_encode, prompt, t.object_span, offset=0, max_length=9) == [7]
