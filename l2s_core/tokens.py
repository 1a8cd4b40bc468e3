"""Token positions: where a prompt phrase sits on the text-token (attention key) axis.

This module owns the mapping from a character span of the prompt (from :mod:`.prompts`) to the positions of the
phrase's tokens on the attention map's text axis, for any tokenizer given as an ``encode`` callable. It replaces the
official ``find_word_token_inds``, which matched only the first sub-token, always took the first
occurrence and ignored truncation:

* the whole token sequence of the phrase must match, not just its first token;
* among several occurrences, the one nearest the parsed span is chosen ("a cat to the left of a cat bed": the subject
  "cat" is the first "cat", the object "cat bed" the second);
* a phrase beyond the text encoder's window (77 CLIP tokens) raises :class:`PhraseTruncatedError`, a phrase whose
  tokens do not occur raises :class:`PhraseNotFoundError`.

Position conventions: ``encode`` returns ids *without* special tokens; ``offset`` is the number of special tokens in
front of the prompt on the attention axis (1 for CLIP's start token, 0 for T5), so position = ``offset + index``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence

logger = logging.getLogger(__name__)

__all__ = ["PhraseNotFoundError", "PhraseTruncatedError", "locate_phrase", "phrase_token_positions"]


class PhraseNotFoundError(ValueError):
    """The phrase's token ids do not occur in the prompt's token ids."""


class PhraseTruncatedError(ValueError):
    """The phrase lies (partly) beyond the tokens the text encoder keeps."""


def _occurrences(prompt_ids: Sequence[int], phrase_ids: Sequence[int]) -> list[int]:
    """Start indices of every exact, contiguous occurrence of ``phrase_ids`` in ``prompt_ids``."""
    k = len(phrase_ids)
    first = phrase_ids[0]
    return [
        i
        for i in range(len(prompt_ids) - k + 1)
        if prompt_ids[i] == first and all(prompt_ids[i + t] == phrase_ids[t] for t in range(1, k))
    ]


def locate_phrase(
    prompt_ids: Sequence[int],
    phrase_ids: Sequence[int],
    expected_start: int,
    *,
    offset: int,
    max_length: int | None,
    phrase: str,
    ignorable_leading_ids: Collection[int] = (),
    reserve_end_token: bool = True,
) -> list[int]:
    """Find the attention-axis positions of a phrase's tokens inside the prompt's tokens.

    Args:
        prompt_ids: token ids of the whole prompt, without special tokens.
        phrase_ids: token ids of the phrase alone, without special tokens.
        expected_start: number of prompt tokens before the phrase (the length of the tokenised prompt prefix up to
            the phrase's character span); among several occurrences the nearest one wins (ties: the earlier).
        offset: special tokens before the prompt on the attention axis (1 for CLIP's start token, 0 for T5).
        max_length: tokens the text encoder keeps (77 for CLIP, 256/512 for T5), special tokens included; None for
            no limit.
        phrase: the phrase text, for error messages.
        ignorable_leading_ids: ids of bare word-boundary pieces (T5's "▁"). When the phrase is not found and its
            first id is one of them, the search is repeated without it.
        reserve_end_token: whether the last of the ``max_length`` slots holds an end token (True for CLIP and T5).

    Returns:
        Attention-axis positions ``offset + index``, one per phrase token, ascending.

    Raises:
        PhraseNotFoundError: the phrase has no tokens or does not occur in the prompt's tokens.
        PhraseTruncatedError: a phrase token falls at or beyond the last usable position.
        ValueError: ``offset`` or ``max_length`` is out of range.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0 (1 for CLIP's start token, 0 for T5), got {offset}.")
    if max_length is not None and max_length <= offset + int(reserve_end_token):
        raise ValueError(
            f"max_length={max_length} leaves no room for prompt tokens with offset={offset} and "
            f"reserve_end_token={reserve_end_token}; expected e.g. 77 for CLIP or 512 for T5."
        )
    ids = list(phrase_ids)
    if not ids:
        raise PhraseNotFoundError(
            f"Phrase {phrase!r} encodes to no tokens, so it has no attention map. Use a phrase made of words that "
            "are in the prompt."
        )
    starts = _occurrences(prompt_ids, ids)
    if not starts and len(ids) > 1 and ids[0] in ignorable_leading_ids:
        ids = ids[1:]
        starts = _occurrences(prompt_ids, ids)
    if not starts:
        raise PhraseNotFoundError(
            f"Phrase {phrase!r} was not found among the prompt's tokens: its token ids {list(phrase_ids)} do not "
            f"occur in the prompt's token ids {list(prompt_ids)}. The phrase must be written in the prompt exactly "
            "(same spelling); if it is, the tokenizer splits it differently in context: give the subject/object "
            "explicitly as the words of the prompt."
        )
    start = min(starts, key=lambda i: (abs(i - expected_start), i))
    positions = [offset + start + t for t in range(len(ids))]
    if max_length is not None:
        usable = max_length - int(reserve_end_token)
        if positions[-1] >= usable:
            raise PhraseTruncatedError(
                f"Phrase {phrase!r} starts at token {positions[0]} (ends at {positions[-1]}), but the text encoder "
                f"keeps only {max_length} tokens (positions 0..{usable - 1} for words, "
                f"{offset} start token(s){' and 1 end token' if reserve_end_token else ''}), so the phrase is cut "
                "off and cannot be steered. Shorten the prompt or move the phrase towards its start."
            )
    if len(starts) > 1:
        logger.debug(
            "Phrase %r occurs at token indices %s; using %d (expected %d).", phrase, starts, start, expected_start
        )
    return positions


def phrase_token_positions(
    encode: Callable[[str], list[int]],
    prompt: str,
    span: tuple[int, int],
    *,
    offset: int,
    max_length: int | None,
    ignorable_leading_ids: Collection[int] = (),
    reserve_end_token: bool = True,
) -> list[int]:
    """Attention-axis positions of the tokens of ``prompt[span[0]:span[1]]``.

    Encodes the prompt, the phrase and the prompt prefix before the phrase (right-stripped, so a trailing space
    does not add a stray word-boundary piece for sentencepiece tokenizers); the prefix length is the expected start
    used to pick the right occurrence, then :func:`locate_phrase` does the matching.

    Args:
        encode: text -> token ids without special tokens (e.g. ``lambda s: tok(s, add_special_tokens=False)
            .input_ids``).
        prompt: the full prompt.
        span: ``[start, end)`` character span of the phrase in ``prompt`` (e.g. ``RelationTriplet.subject_span``).
        offset: special tokens before the prompt on the attention axis (1 for CLIP, 0 for T5).
        max_length: tokens the text encoder keeps, special tokens included (77 for CLIP); None for no limit.
        ignorable_leading_ids: ids of bare word-boundary pieces (T5's "▁"), see :func:`locate_phrase`.
        reserve_end_token: whether the last of the ``max_length`` slots holds an end token.

    Returns:
        Attention-axis positions, one per phrase token, ascending.

    Raises:
        ValueError: the span is empty or outside the prompt.
        PhraseNotFoundError: the phrase's tokens do not occur in the prompt's tokens.
        PhraseTruncatedError: the phrase lies beyond the encoder's window.
    """
    start, end = span
    if not 0 <= start < end <= len(prompt):
        raise ValueError(
            f"Span {span} is not a non-empty character span of the prompt (length {len(prompt)}); expected "
            "0 <= start < end <= len(prompt), e.g. a RelationTriplet's subject_span."
        )
    phrase = prompt[start:end]
    expected_start = len(encode(prompt[:start].rstrip()))
    return locate_phrase(
        encode(prompt),
        encode(phrase),
        expected_start,
        offset=offset,
        max_length=max_length,
        phrase=phrase,
        ignorable_leading_ids=ignorable_leading_ids,
        reserve_end_token=reserve_end_token,
    )
