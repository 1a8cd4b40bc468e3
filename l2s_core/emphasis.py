"""Prompt emphasis syntax: ``(word)``, ``((word))``, ``(word:1.3)`` and the escapes ``\\(`` / ``\\)``.

This module owns one mapping: from a prompt written with ComfyUI's emphasis syntax to the text its tokenizer really
encodes, with every character traced back to the prompt. It reproduces ComfyUI's rules exactly (``sd1_clip``:
``escape_important``, ``parse_parentheses``, ``token_weights``), so the same prompt gives the same segments:

* ``\\(`` and ``\\)`` are literal parentheses; they are never syntax;
* a balanced ``( ... )`` group multiplies the weight by 1.1 per level; ``(text:1.5)`` sets the weight to the number
  after the last colon, when that parses as a float (otherwise the colon and the number stay in the text);
* an unbalanced parenthesis stays in the text as a literal character;
* every weighted segment is tokenized on its own, so a segment boundary is also a word boundary
  (``a(blue)circle`` is read as the three words "a", "blue", "circle").

:func:`strip_emphasis` gives the plain text (segments joined, a space added at a boundary that has none) and, for
each of its characters, the index of the prompt character it came from. :mod:`.prompts` parses the plain text and
maps spans back with :meth:`PlainPrompt.to_prompt_span`; the token lookup encodes plain phrases, which tokenize to the
same ids as inside the weighted prompt. Weights do not move tokens; only the syntax characters disappear.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PlainPrompt", "WeightedSegment", "emphasis_segments", "escape_literal", "strip_emphasis"]

_ESCAPED_CLOSE = "\0\1"  # ComfyUI's placeholder for an escaped ")"
_ESCAPED_OPEN = "\0\2"  # ComfyUI's placeholder for an escaped "("
_NESTING_FACTOR = 1.1


@dataclass(frozen=True)
class WeightedSegment:
    """One run of prompt text with a single weight, as ComfyUI's tokenizer receives it.

    Attributes:
        text: the text that is tokenized (syntax removed, escapes resolved).
        weight: the emphasis weight (1.0 outside parentheses).
        start: index in the prompt of the segment's first character (escapes included).
        end: index in the prompt after the segment's last character.
    """

    text: str
    weight: float
    start: int
    end: int


@dataclass(frozen=True)
class PlainPrompt:
    """A prompt without emphasis syntax, with each character traced back to the prompt.

    Attributes:
        prompt: the prompt as written.
        text: the plain text: the segments' texts joined, with a space where two segments would otherwise touch.
        origin: for every character of ``text``, the index of the prompt character it comes from (an added space
            maps to the syntax character it replaces). Ascending.
    """

    prompt: str
    text: str
    origin: tuple[int, ...]

    def to_prompt_span(self, span: tuple[int, int]) -> tuple[int, int]:
        """Map a non-empty ``[start, end)`` span of :attr:`text` to the span of the prompt that holds it.

        Raises:
            ValueError: the span is empty or outside the text.
        """
        start, end = span
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"Span {span} is not a non-empty span of the plain text (length {len(self.text)}).")
        return (self.origin[start], self.origin[end - 1] + 1)

    def to_text_span(self, span: tuple[int, int]) -> tuple[int, int]:
        """Map a ``[start, end)`` span of the prompt to the span of :attr:`text` made of its characters.

        Syntax characters inside the span are skipped; a span holding only syntax maps to an empty span.
        """
        start, end = span
        first = next((i for i, o in enumerate(self.origin) if o >= start), len(self.origin))
        stop = next((i for i, o in enumerate(self.origin) if o >= end), len(self.origin))
        return (first, max(first, stop))


def _escape(prompt: str) -> str:
    """ComfyUI's ``escape_important``: both replacements keep the length, so indices stay the prompt's."""
    return prompt.replace("\\)", _ESCAPED_CLOSE).replace("\\(", _ESCAPED_OPEN)


def _parse_parentheses(text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """ComfyUI's ``parse_parentheses`` over ``text[lo:hi]``, returning each item as a ``[start, end)`` slice."""
    items: list[tuple[int, int]] = []
    start = lo  # start of the current item; the item is text[start:i] while scanning position i
    nesting = 0
    for i in range(lo, hi):
        char = text[i]
        if char == "(":
            if nesting == 0:
                if i > start:
                    items.append((start, i))
                start = i
            nesting += 1
        elif char == ")":
            nesting -= 1
            if nesting == 0:
                items.append((start, i + 1))
                start = i + 1
    if hi > start:
        items.append((start, hi))
    return items


def _token_weights(text: str, lo: int, hi: int, weight: float, out: list[tuple[int, int, float]]) -> None:
    """ComfyUI's ``token_weights`` over ``text[lo:hi]``: append ``(start, end, weight)`` per plain run."""
    for start, end in _parse_parentheses(text, lo, hi):
        if end - start >= 2 and text[start] == "(" and text[end - 1] == ")":
            inner_lo, inner_hi = start + 1, end - 1
            inner_weight = weight * _NESTING_FACTOR
            colon = text.rfind(":", inner_lo, inner_hi)
            if colon > inner_lo:
                try:
                    inner_weight = float(text[colon + 1 : inner_hi])
                    inner_hi = colon
                except ValueError:
                    pass
            _token_weights(text, inner_lo, inner_hi, inner_weight, out)
        else:
            out.append((start, end, weight))


def _unescaped(escaped: str, start: int, end: int) -> tuple[str, list[int]]:
    """The text of ``escaped[start:end]`` with escapes resolved, and each character's prompt index."""
    chars: list[str] = []
    origin: list[int] = []
    i = start
    while i < end:
        pair = escaped[i : i + 2]
        if i + 1 < end and pair in (_ESCAPED_CLOSE, _ESCAPED_OPEN):
            chars.append(")" if pair == _ESCAPED_CLOSE else "(")
            origin.append(i + 1)  # the parenthesis itself; the backslash is at i
            i += 2
        else:
            chars.append(escaped[i])
            origin.append(i)
            i += 1
    return "".join(chars), origin


def emphasis_segments(prompt: str) -> tuple[WeightedSegment, ...]:
    """Split a prompt into weighted segments exactly as ComfyUI's tokenizer does.

    Args:
        prompt: the prompt as written, e.g. ``"a (blue circle:1.5) above ((a red square))"``.

    Returns:
        The non-empty segments in order, e.g. ``("a ", 1.0), ("blue circle", 1.5), (" above ", 1.0),
        ("a red square", 1.21)``.
    """
    escaped = _escape(prompt)
    runs: list[tuple[int, int, float]] = []
    _token_weights(escaped, 0, len(escaped), 1.0, runs)
    segments = []
    for start, end, weight in runs:
        text, _ = _unescaped(escaped, start, end)
        if text:
            segments.append(WeightedSegment(text=text, weight=weight, start=start, end=end))
    return tuple(segments)


def strip_emphasis(prompt: str) -> PlainPrompt:
    """The prompt's plain text (what the tokenizer encodes) and where each character came from.

    Where two segments meet without whitespace on either side, a space is inserted: ComfyUI tokenizes each segment
    separately, so such a boundary separates words.
    """
    escaped = _escape(prompt)
    runs: list[tuple[int, int, float]] = []
    _token_weights(escaped, 0, len(escaped), 1.0, runs)
    chars: list[str] = []
    origin: list[int] = []
    previous_end = 0
    for start, end, _ in runs:
        text, where = _unescaped(escaped, start, end)
        if not text:
            continue
        if chars and not chars[-1].isspace() and not text[0].isspace():
            chars.append(" ")
            origin.append(previous_end if start > previous_end else previous_end - 1)  # the syntax it replaces
        chars.extend(text)
        origin.extend(where)
        previous_end = end
    return PlainPrompt(prompt=prompt, text="".join(chars), origin=tuple(origin))


def escape_literal(text: str) -> str:
    """Escape parentheses so ComfyUI's tokenizer reads ``text`` literally (``"a (b)"`` -> ``"a \\(b\\)"``)."""
    return text.replace("(", "\\(").replace(")", "\\)")
