"""Tests for l2s_core.emphasis: ComfyUI's emphasis syntax -> weighted segments and plain text traced to the prompt.

Expected segments are ComfyUI's (``comfy/sd1_clip.py``: ``token_weights`` after ``escape_important``), written out by
hand here; tests/core/test_emphasis_tokens.py compares against ComfyUI's own functions when a checkout is available.
"""

from __future__ import annotations

import random

import pytest

from l2s_core.emphasis import PlainPrompt, emphasis_segments, escape_literal, strip_emphasis

W11 = 1.1
W121 = 1.1 * 1.1


@pytest.mark.parametrize(
    ("prompt", "segments"),
    [
        ("a blue circle above a red square", [("a blue circle above a red square", 1.0)]),
        ("a (blue circle:1.5) above a red square", [("a ", 1.0), ("blue circle", 1.5), (" above a red square", 1.0)]),
        ("a blue circle (above:1.3) a red square", [("a blue circle ", 1.0), ("above", 1.3), (" a red square", 1.0)]),
        ("((blue circle)) above", [("blue circle", W121), (" above", 1.0)]),
        ("(a (b) c)", [("a ", W11), ("b", W121), (" c", W11)]),
        ("((b:0.5))", [("b", 0.5 * 1.0)]),  # the inner weight replaces the outer one
        ("(b:x)", [("b:x", W11)]),  # not a number: the colon stays in the text
        ("(:1.5)", [(":1.5", W11)]),  # a colon at the start is not a weight
        ("(a:1:2)", [("a:1", 2.0)]),  # the last colon counts
        ("\\(a\\) b", [("(a) b", 1.0)]),  # escaped parentheses are text
        ("(\\(a\\):1.2)", [("(a)", 1.2)]),
        ("a ( b", [("a ", 1.0), ("( b", 1.0)]),  # unbalanced "(" stays as text, but starts a new segment
        ("a ) b", [("a ) b", 1.0)]),
        ("()", []),
        ("", []),
    ],
)
def test_segments_follow_comfyui_rules(prompt: str, segments: list[tuple[str, float]]) -> None:
    got = emphasis_segments(prompt)
    assert [s.text for s in got] == [t for t, _ in segments]
    assert [s.weight for s in got] == pytest.approx([w for _, w in segments])
    for s in got:  # each segment's slice of the prompt holds its text, escapes as written
        assert prompt[s.start : s.end].replace("\\(", "(").replace("\\)", ")") == s.text


@pytest.mark.parametrize(
    ("prompt", "plain"),
    [
        ("a (blue circle:1.5) above a red square", "a blue circle above a red square"),
        ("a blue circle (above:1.3) a red square", "a blue circle above a red square"),
        ("((blue circle)) above ((a red square))", "blue circle above a red square"),
        ("a(blue circle)above(a red square:0.8)", "a blue circle above a red square"),  # boundaries are word breaks
        ("a \\(small\\) dog", "a (small) dog"),
        ("no syntax at all", "no syntax at all"),
    ],
)
def test_plain_text(prompt: str, plain: str) -> None:
    assert strip_emphasis(prompt).text == plain


def test_spans_map_both_ways() -> None:
    prompt = "a (blue circle:1.5) (above:1.3) a \\(red\\) square"
    plain = strip_emphasis(prompt)
    assert plain.text == "a blue circle above a (red) square"
    for phrase in ("blue circle", "above", "red", "square"):
        start = plain.text.index(phrase)
        mapped = plain.to_prompt_span((start, start + len(phrase)))
        assert prompt[mapped[0] : mapped[1]] == phrase
        assert plain.to_text_span(mapped) == (start, start + len(phrase))
    paren = plain.text.index("(")
    assert prompt[plain.to_prompt_span((paren, paren + 1))[0]] == "("  # the escaped parenthesis, not its backslash
    assert plain.to_text_span((3, 3)) == (2, 2)  # a span of syntax only is empty
    with pytest.raises(ValueError, match="not a non-empty span"):
        plain.to_prompt_span((4, 4))


def test_span_across_syntax_covers_it() -> None:
    prompt = "a (blue) circle"
    plain = strip_emphasis(prompt)
    start = plain.text.index("blue circle")
    assert prompt[slice(*plain.to_prompt_span((start, start + len("blue circle"))))] == "blue) circle"


def test_random_prompts_keep_every_character_traceable() -> None:
    rng = random.Random(0)
    pieces = ["a", "cat", " ", "(", ")", ":", "1.5", "0.8", "\\(", "\\)", "\\", "dog ", "x"]
    for _ in range(3000):
        prompt = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        plain = strip_emphasis(prompt)
        assert isinstance(plain, PlainPrompt) and len(plain.text) == len(plain.origin)
        assert list(plain.origin) == sorted(plain.origin)
        assert all(c == " " or prompt[o] == c for c, o in zip(plain.text, plain.origin, strict=True)), prompt
        # The plain text is the segments' text, with at most a space added between two of them.
        joined = "".join(s.text for s in emphasis_segments(prompt))
        assert plain.text.replace(" ", "") == joined.replace(" ", ""), prompt


def test_escape_literal_round_trips_through_the_syntax() -> None:
    text = "a (small) dog :1.5)"
    assert [s.text for s in emphasis_segments(escape_literal(text))] == [text]
    assert strip_emphasis(escape_literal(text)).text == text
