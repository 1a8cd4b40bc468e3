"""Prompt parsing: find (subject, relation, object) triplets and their character spans in a text prompt.

This module owns the rule-based replacement for the official spaCy ``PromptParser``. It needs no
model download, runs in plain Python string/regex work and is deterministic.

Why one module of about 600 lines: it is one grammar and its one result. The word tables, the tokeniser, the
phrase-edge rules and the messages that quote what was found describe a single reading of a prompt and change
together (a rule such as "*stand* after an article is a noun" needs the tables it consults beside it), and
:func:`explicit_triplet`, the override for prompts the rules cannot read, returns the same :class:`RelationTriplet`
through the same relation table and emphasis span mapping. Split, one grammar would be scattered over several files.

How a prompt is read:

1. The prompt is split into word tokens (letters/digits, with inner apostrophes) and punctuation tokens
   (``, . ; : ! ? & ( ) [ ] { } " |``). Everything else (spaces, hyphens, underscores) only glues words, so
   "t-shirt" is two words whose span covers the hyphen.
2. An intro phrase at the start is skipped: an optional article, up to five modifier words and a head noun such as
   photo / image / painting / drawing / illustration / animation / view / scene, followed by "of"
   ("a photo of", "a 3d animation of", "a top-down view of", "a cinematic sci-fi movie scene of", ...).
3. Relation phrases are matched word by word, case-insensitively, longest phrase first (see
   :data:`RELATION_SYNONYMS`). Phrases the classifiers cannot steer are matched too ("next to", "near", "behind",
   "in front of", "on side of", diagonals such as "above-left of", absolute positions such as "on the left", and the
   bare prepositions "on"/"in"), so that they separate noun phrases and can be reported.
4. Subject = the noun phrase that ends right before a supported relation, object = the noun phrase that starts right
   after it. A noun phrase is the maximal run of *content words* next to the relation: adjectives and compound nouns
   are kept ("red dog", "big teddy bear", "fire hydrant"); articles, quantifiers and possessives ("a", "the", "two",
   "some", "their"), copulas and posture/placement verbs ("is", "are", "sitting", "placed"), prepositions,
   conjunctions, relative pronouns and punctuation end it; "stand" and "float" after an article or a singular noun
   are nouns ("a tv stand", "a float"), elsewhere verbs ("two dogs stand"). Before the relation, copulas/verbs and
   degree adverbs ("directly", "just", "slightly", "right", "far") are dropped first, so "a cat is sitting directly
   to the left of a dog" gives ("cat", "to the left of", "dog"). After the relation, leading articles/quantifiers/verbs and collective
   phrases ("a pair of", "a group of") are skipped. As in the official parser, the *nearest* noun phrase wins:
   "a book on a table to the left of a lamp" gives subject "table".
5. Chains share the middle phrase ("A above B to the right of C" -> (A, above, B), (B, to the right of, C)); a
   conjunction or comma between two relations separates them ("A left of B and C above D" -> two triplets); "A above
   B and left of C" reuses the subject A for the second relation.

Emphasis syntax (``emphasis=True``, what ComfyUI prompts use): ``(blue circle:1.5)``, ``((red square))``,
``(above:1.3)`` and the escapes ``\\(`` / ``\\)`` are read the way ComfyUI's tokenizer reads them
(:mod:`.emphasis`): the syntax characters are removed before parsing, a weighted group is a word boundary, and every
span is mapped back to the prompt as written. Weights may sit on the subject, the relation, the object or any part
of them. Without ``emphasis`` (diffusers prompts), parentheses are ordinary punctuation.

Subject and object strings in a :class:`RelationTriplet` are the phrases as the text encoder reads them (original case):
the exact slices of the prompt, minus any emphasis syntax inside them; the spans are spans of the prompt as written.
The relation is the canonical name from :mod:`.relations`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from .emphasis import PlainPrompt, strip_emphasis
from .relations import RELATION_SYNONYMS, SPATIAL_RELATIONS, canonical_relation

logger = logging.getLogger(__name__)

__all__ = [
    "RELATION_SYNONYMS",
    "IncompleteRelationError",
    "NoRelationError",
    "RelationTriplet",
    "UnsupportedRelationError",
    "explicit_triplet",
    "parse_relations",
]


@dataclass(frozen=True)
class RelationTriplet:
    """One spatial relation of a prompt.

    Attributes:
        subject: the subject phrase as the text encoder reads it: ``prompt[subject_span[0]:subject_span[1]]``, with
            any emphasis syntax inside that slice removed ("blue circle" for the span ``blue) circle`` of
            ``(blue) circle``; the same as the slice when there is none).
        relation: canonical relation name (one of :data:`relations.SPATIAL_RELATIONS`).
        object: the object phrase, read the same way as ``subject``.
        subject_span: ``[start, end)`` character span of the subject in the original prompt.
        relation_span: ``[start, end)`` character span of the relation phrase as written (may be empty for an
            explicit triplet whose relation does not occur in the prompt).
        object_span: ``[start, end)`` character span of the object in the original prompt.
    """

    subject: str
    relation: str
    object: str
    subject_span: tuple[int, int]
    relation_span: tuple[int, int]
    object_span: tuple[int, int]


class NoRelationError(ValueError):
    """The prompt contains no relation phrase at all."""


class UnsupportedRelationError(ValueError):
    """The prompt only uses relations the classifiers cannot steer.

    Attributes:
        phrases: the unsupported relation phrases as written in the prompt, in order of appearance.
    """

    def __init__(self, message: str, phrases: tuple[str, ...]) -> None:
        super().__init__(message)
        self.phrases = phrases


class IncompleteRelationError(ValueError):
    """A supported relation was found, but no subject before it or no object after it (for every such relation)."""


# --------------------------------------------------------------------------------------------------------------------
# Vocabulary (all immutable).

_SUPPORTED = "supported"
_UNSUPPORTED = "unsupported"  # a relation between two objects the four classes cannot express
_WEAK = "weak"  # bare "on"/"in"/...: reported when nothing else is there, never warned about
_ABSOLUTE = "absolute"  # "on the left": a place in the image, not a relation between two objects
_DIAGONAL = "diagonal"  # "above-left of": needs a diagonal classifier

_UNSUPPORTED_PHRASES: tuple[str, ...] = (
    "next to",
    "near",
    "near to",
    "nearby",
    "close to",
    "beside",
    "besides",
    "alongside",
    "behind",
    "in front of",
    "in back of",
    "on side of",
    "on the side of",
    "by the side of",
    "at the side of",
    "adjacent to",
    "across from",
    "opposite",
    "opposite to",
    "opposite of",
    "between",
    "among",
    "around",
    "surrounding",
    "inside",
    "inside of",
    "outside",
    "outside of",
    "far from",
    "away from",
)
_WEAK_PHRASES: tuple[str, ...] = ("on", "in", "into", "onto", "within", "against", "along", "through")
_ABSOLUTE_PHRASES: tuple[str, ...] = tuple(
    f"{prep} the {side}{suffix}"
    for prep in ("on", "to", "at", "in")
    for side in ("left", "right", "top", "bottom", "far left", "far right")
    for suffix in ("", " side", " hand side")
    if not (side in ("top", "bottom") and suffix == " hand side")
)


def _diagonal_phrases() -> tuple[str, ...]:
    vertical = ("above", "below", "top", "bottom", "upper", "lower")
    phrases: list[str] = []
    for v in vertical:
        for h in ("left", "right"):
            for body in (f"{v} {h} of", f"{v} to the {h} of", f"{v} and to the {h} of", f"{v} and {h} of"):
                phrases.append(body)
                phrases.extend(f"{prep} the {body}" for prep in ("to", "on", "at", "in"))
    phrases.extend(f"diagonally {p}" for p in RELATION_SYNONYMS)
    phrases.extend(("diagonal to", "diagonal from", "diagonally from", "diagonally across from"))
    return tuple(phrases)


class _Entry(NamedTuple):
    words: tuple[str, ...]
    kind: str
    canonical: str  # canonical relation for supported entries, "" otherwise


def _build_index() -> tuple[Mapping[tuple[str, ...], _Entry], Mapping[str, tuple[int, ...]]]:
    """Relation phrases by word tuple, and for each first word the phrase lengths to try (longest first)."""
    entries: dict[tuple[str, ...], _Entry] = {}

    def add(phrases: Iterable[str], kind: str, canonical: str = "") -> None:
        for phrase in phrases:
            words = tuple(phrase.split())
            entries.setdefault(words, _Entry(words, kind, canonical))

    for phrase, canonical in RELATION_SYNONYMS.items():
        add((phrase,), _SUPPORTED, canonical)
    add(_diagonal_phrases(), _DIAGONAL)
    add(_UNSUPPORTED_PHRASES, _UNSUPPORTED)
    add(_ABSOLUTE_PHRASES, _ABSOLUTE)
    add(_WEAK_PHRASES, _WEAK)
    lengths: dict[str, set[int]] = {}
    for words in entries:
        lengths.setdefault(words[0], set()).add(len(words))
    return (
        MappingProxyType(entries),
        MappingProxyType({first: tuple(sorted(ks, reverse=True)) for first, ks in lengths.items()}),
    )


_RELATION_INDEX, _PHRASE_LENGTHS = _build_index()

_DETERMINERS = frozenset(
    "a an the one two three four five six seven eight nine ten eleven twelve some several many multiple various few "
    "his her their its my your our this these those another each every any both all".split()
)
_FILLERS = frozenset(
    "is are was were be been being am that which who whose where "
    "sit sits sitting seated stand stands standing lie lies lying lay lays laying rest rests resting "
    "placed positioned located situated put kept stored mounted hung hang hangs hanging "
    "float floats floating hover hovers hovering fly flies flying perched parked stacked balanced "
    "lean leans leaning appear appears appearing shown seen depicted pictured displayed visible "
    "sleeping sleeps walking walks running runs jumping jumps hiding hides peeking looming rising towering "
    "grazing swimming waiting wearing wears holding holds carrying carries eating eats playing plays riding rides "
    "looking looks watching watches drinking reading using".split()
)
_NOUN_FILLERS = frozenset(("stand", "float"))
"""Fillers that are also nouns: a noun after an article or after a singular noun ("a float", "tv stand", "night
stand"); after a plural they stay verbs ("two dogs stand to the left of a cat")."""
_ARTICLES = frozenset(("a", "an", "the"))
_EDGE_ADVERBS = frozenset(
    "directly just slightly immediately right straight exactly somewhat far way partially partly clearly".split()
)
_CONJUNCTIONS = frozenset(("and", "&", "plus", "but", "while", "whereas"))
_STOP_WORDS = frozenset(
    "and or but nor while whereas with without plus also then there here it they them he she we you "
    "of in on at by for from into onto to near beside behind inside outside under over above below across along "
    "against around through between among within beyond toward towards off about as like next than when not no".split()
)
_COLLECTIVES = frozenset(
    "pair pairs group groups bunch bunches couple herd herds flock flocks lot lots number row rows pack swarm crowd "
    "stack stacks pile piles collection handful".split()
)
_INTRO_HEADS = frozenset(
    "photo photograph picture pic image painting drawing illustration sketch render rendering animation view scene "
    "shot closeup up cartoon artwork depiction snapshot still portrait photography".split()
)
_PUNCT_SKIPPABLE = frozenset((",", ":", '"', "(", ")", "[", "]", "{", "}", "|"))
_NON_CONTENT = _STOP_WORDS | _DETERMINERS | _FILLERS
_LEFT_EDGE_SKIP = _FILLERS | _EDGE_ADVERBS | _PUNCT_SKIPPABLE
_RIGHT_EDGE_SKIP = _DETERMINERS | _FILLERS | _PUNCT_SKIPPABLE

_TOKEN_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*|[,.;:!?&()\[\]{}\"|]")
_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


class _Match(NamedTuple):
    start: int  # token index, inclusive
    end: int  # token index, exclusive
    entry: _Entry


class _Tokens(NamedTuple):
    """The prompt's tokens as parallel lists (plain lists index faster than per-token objects)."""

    words: list[str]  # lower-cased token text; punctuation tokens are single non-alphanumeric characters
    starts: list[int]  # character start in the original prompt
    ends: list[int]  # character end (exclusive)

    def span(self, first: int, stop: int) -> tuple[int, int]:
        """Character span of tokens ``first .. stop - 1``."""
        return (self.starts[first], self.ends[stop - 1])


def _tokenize(prompt: str) -> _Tokens:
    lowered = prompt.lower()
    if len(lowered) != len(prompt):  # a few characters change length when lower-cased; keep spans exact
        found = [(m.group().lower(), m.start(), m.end()) for m in _TOKEN_RE.finditer(prompt)]
        return _Tokens([w for w, _, _ in found], [s for _, s, _ in found], [e for _, _, e in found])
    words = _TOKEN_RE.findall(lowered)
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for word in words:
        # Characters skipped by the regex are never alphanumeric nor listed punctuation, so the next occurrence of
        # the token text is the token itself.
        pos = lowered.find(word, pos)
        starts.append(pos)
        pos += len(word)
        ends.append(pos)
    return _Tokens(words, starts, ends)


def _is_content(word: str) -> bool:
    return word[0].isalnum() and word not in _NON_CONTENT and not word.isdigit()


def _is_noun_filler(words: list[str], k: int) -> bool:
    """Whether ``words[k]`` is a filler used as a noun: "stand" in "a tv stand", "float" in "a float"."""
    if words[k] not in _NOUN_FILLERS or k == 0:
        return False
    before = words[k - 1]
    plural = before.endswith("s") and not before.endswith("ss")
    return before in _ARTICLES or (_is_content(before) and not plural)


def _is_phrase_word(words: list[str], k: int) -> bool:
    """Whether ``words[k]`` belongs to a noun phrase: a content word, or a filler used as a noun."""
    return _is_content(words[k]) or _is_noun_filler(words, k)


def _intro_end(words: list[str]) -> int:
    """Return the token index after a leading intro phrase such as "a photo of" (0 when there is none)."""
    i = 1 if words and words[0] in ("a", "an", "the") else 0
    for j in range(i, min(i + 6, len(words) - 1)):
        word = words[j]
        if not word[0].isalnum() or word in _STOP_WORDS or word in _DETERMINERS or word in RELATION_SYNONYMS:
            return 0
        if word in _INTRO_HEADS and words[j + 1] == "of":
            return j + 2
    return 0


def _find_relations(words: list[str], begin: int) -> list[_Match]:
    """Relation phrases (supported or not) from token ``begin`` on, left to right, longest phrase first."""
    matches: list[_Match] = []
    i = begin
    n = len(words)
    while i < n:
        lengths = _PHRASE_LENGTHS.get(words[i])
        found: _Entry | None = None
        if lengths:
            for k in lengths:
                if i + k <= n:
                    found = _RELATION_INDEX.get(tuple(words[i : i + k]))
                    if found is not None:
                        break
        if found is None:
            i += 1
            continue
        matches.append(_Match(i, i + len(found.words), found))
        i += len(found.words)
    return matches


def _left_phrase(words: list[str], lo: int, hi: int) -> tuple[int, int] | None | str:
    """Noun phrase ending right before token ``hi`` (searching no further left than ``lo``).

    Returns the token range ``(first, last + 1)``, ``"conj"`` when only a conjunction precedes the relation (the
    caller then reuses the previous subject), or None when there is no phrase.
    """
    j = hi - 1
    while j >= lo and words[j] in _LEFT_EDGE_SKIP and not _is_noun_filler(words, j):
        j -= 1
    if j < lo:
        return None
    if words[j] in _CONJUNCTIONS:
        return "conj"
    end = j + 1
    while j >= lo and _is_phrase_word(words, j):
        j -= 1
    return (j + 1, end) if j + 1 < end else None


def _right_phrase(words: list[str], lo: int, hi: int) -> tuple[int, int] | None:
    """Noun phrase starting at token ``lo`` or after skippable words (searching no further right than ``hi``)."""
    i = lo
    while i < hi:
        word = words[i]
        if (word in _RIGHT_EDGE_SKIP and not _is_noun_filler(words, i)) or word.isdigit():
            i += 1
        elif word in _COLLECTIVES and i + 1 < hi and words[i + 1] == "of":
            i += 2
        else:
            break
    start = i
    while i < hi and _is_phrase_word(words, i):
        i += 1
    return (start, i) if i > start else None


def _supported_list() -> str:
    return ", ".join(repr(r) for r in SPATIAL_RELATIONS)


def _synonym_hint() -> str:
    return "also written as 'left of', 'on the left of', 'right of', 'on top of', 'over', 'under', 'beneath'"


def _match_text(prompt: str, tokens: _Tokens, m: _Match) -> str:
    start, end = tokens.span(m.start, m.end)
    return prompt[start:end]


def _unsupported_message(prompt: str, tokens: _Tokens, matches: list[_Match], shown: str) -> str:
    reasons: list[str] = []
    for m in matches:
        text = _match_text(prompt, tokens, m)
        kind = m.entry.kind
        if kind == _DIAGONAL:
            reasons.append(
                f"{text!r} is a diagonal relation; the four-class relation classifiers cannot express it "
                "(steer one axis instead, e.g. 'above' or 'to the left of')"
            )
        elif kind == _ABSOLUTE:
            reasons.append(
                f"{text!r} is an absolute position in the image, not a relation between two objects "
                "(write 'A to the left of B')"
            )
        else:
            reasons.append(f"{text!r} is not a relation the classifiers were trained on")
    return (
        f"Prompt {shown!r} has no relation the relation classifiers can steer: {'; '.join(reasons)}. "
        f"Supported relations: {_supported_list()} ({_synonym_hint()}). Rephrase the prompt, e.g. "
        "'a dog to the left of a cat', or set subject, relation and object explicitly (the explicit override)."
    )


def parse_relations(prompt: str, *, emphasis: bool = False) -> list[RelationTriplet]:
    """Parse a prompt into spatial-relation triplets, in order of appearance.

    Args:
        prompt: the text prompt, e.g. ``"a photo of a dog right of a teddy bear"``.
        emphasis: read ComfyUI's emphasis syntax (``(blue circle:1.5) above (a red square)``, escapes ``\\(``):
            the syntax is removed before parsing and spans point into the prompt as written (see :mod:`.emphasis`).

    Returns:
        One :class:`RelationTriplet` per supported relation phrase that has a subject and an object. Chains give
        (A, r1, B), (B, r2, C); "A r1 B and C r2 D" gives two independent triplets. Relations the classifiers cannot
        steer, and supported relations without subject or object, are logged as warnings when at least one
        triplet is returned.

    Raises:
        NoRelationError: the prompt contains no relation phrase at all.
        UnsupportedRelationError: the prompt only uses relations the classifiers cannot steer (e.g. "next to",
            "near", "behind", "in front of", "on side of", "above-left of").
        IncompleteRelationError: supported relation phrases were found, but none has both a subject and an object.
    """
    if not emphasis:
        return _parse(prompt, prompt)
    plain = strip_emphasis(prompt)
    return [_to_prompt(t, plain) for t in _parse(plain.text, prompt)]


def _map_span(plain: PlainPrompt, span: tuple[int, int]) -> tuple[int, int]:
    """A span of the plain text as a span of the prompt (an empty span stays empty, after the same character)."""
    if span[0] < span[1]:
        return plain.to_prompt_span(span)
    at = plain.origin[span[0] - 1] + 1 if span[0] > 0 else 0
    return (at, at)


def _to_prompt(triplet: RelationTriplet, plain: PlainPrompt) -> RelationTriplet:
    """A triplet found in the plain text, with its spans moved into the prompt as written."""
    return RelationTriplet(
        subject=triplet.subject,
        relation=triplet.relation,
        object=triplet.object,
        subject_span=_map_span(plain, triplet.subject_span),
        relation_span=_map_span(plain, triplet.relation_span),
        object_span=_map_span(plain, triplet.object_span),
    )


def _parse(prompt: str, shown: str) -> list[RelationTriplet]:
    """:func:`parse_relations` on plain text ``prompt``; ``shown`` is the prompt as written, for messages."""
    tokens = _tokenize(prompt)
    words = tokens.words
    begin = _intro_end(words)
    matches = _find_relations(words, begin)
    supported_idx = [k for k, m in enumerate(matches) if m.entry.kind == _SUPPORTED]
    if not supported_idx:
        if matches:
            unsupported = tuple(_match_text(prompt, tokens, m) for m in matches)
            raise UnsupportedRelationError(_unsupported_message(prompt, tokens, matches, shown), unsupported)
        raise NoRelationError(
            f"No spatial relation found in prompt {shown!r}. Supported relations: {_supported_list()} "
            f"({_synonym_hint()}). Write the relation into the prompt, e.g. 'a dog to the left of a cat', or set "
            "subject, relation and object explicitly (the explicit override)."
        )

    triplets: list[RelationTriplet] = []
    problems: list[str] = []
    previous_subject: tuple[int, int] | None = None  # token range of the last triplet's subject
    previous_was_triplet = False
    for k, m in enumerate(matches):
        rel_text = _match_text(prompt, tokens, m)
        if m.entry.kind != _SUPPORTED:
            if m.entry.kind != _WEAK:
                problems.append(f"{rel_text!r} is not a relation the classifiers can steer; ignored")
            previous_was_triplet = False
            continue
        lo = matches[k - 1].end if k > 0 else begin
        hi = matches[k + 1].start if k + 1 < len(matches) else len(words)
        left = _left_phrase(words, lo, m.start)
        if left == "conj":
            left = previous_subject if previous_was_triplet else None
        right = _right_phrase(words, m.end, hi)
        if not isinstance(left, tuple) or right is None:
            missing = "subject before it" if not isinstance(left, tuple) else "object after it"
            problems.append(f"relation {rel_text!r} has no {missing}; ignored")
            previous_was_triplet = False
            continue
        s_span = tokens.span(*left)
        o_span = tokens.span(*right)
        triplets.append(
            RelationTriplet(
                subject=prompt[s_span[0] : s_span[1]],
                relation=m.entry.canonical,
                object=prompt[o_span[0] : o_span[1]],
                subject_span=s_span,
                relation_span=tokens.span(m.start, m.end),
                object_span=o_span,
            )
        )
        previous_subject = left
        previous_was_triplet = True

    if not triplets:
        raise IncompleteRelationError(
            f"Prompt {shown!r} has a spatial relation but no complete 'subject relation object' triplet: "
            f"{'; '.join(problems)}. Write it as e.g. 'a dog to the left of a cat', or set subject, relation and "
            "object explicitly (the explicit override)."
        )
    for problem in problems:
        logger.warning("Prompt %r: %s. Steering uses only the supported relations.", shown, problem)
    return triplets


# --------------------------------------------------------------------------------------------------------------------
# Explicit override.


def _phrase_pattern(phrase: str) -> re.Pattern[str] | None:
    words = _WORD_RE.findall(phrase)
    if not words:
        return None
    body = r"[\s\-_]+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_])", re.IGNORECASE)


def _occurrences(prompt: str, phrase: str, role: str, shown: str) -> list[tuple[int, int]]:
    pattern = _phrase_pattern(phrase)
    if pattern is None:
        raise ValueError(
            f"The explicit {role} {phrase!r} contains no word. Give the {role} as it is written in the prompt, "
            "e.g. 'teddy bear'."
        )
    spans = [m.span() for m in pattern.finditer(prompt)]
    if not spans:
        raise ValueError(
            f"The explicit {role} {phrase!r} does not occur in the prompt {shown!r} as whole words. The {role} "
            "must be written in the prompt so its tokens can be found; fix the spelling or add it to the prompt."
        )
    return spans


def explicit_triplet(
    prompt: str, subject: str, relation: str, object: str, *, emphasis: bool = False
) -> RelationTriplet:
    """Build a triplet from a user-given subject, relation and object, bypassing the parser.

    Subject and object are found case-insensitively as whole words (words may be separated by any run of spaces,
    hyphens or underscores in the prompt). The first subject occurrence that has an object occurrence after it is
    used, with the first such object occurrence; otherwise the first non-overlapping pair in either order. The
    relation span is the first occurrence of one of the relation's phrasings between subject and object, else
    anywhere in the prompt, else an empty span at the end of the subject.

    Args:
        prompt: the text prompt.
        subject: the subject phrase as written in the prompt (e.g. "cat").
        relation: a relation name or synonym, resolved to the canonical name.
        object: the object phrase as written in the prompt (e.g. "cat bed").
        emphasis: read ComfyUI's emphasis syntax, as in :func:`parse_relations` ("blue circle" is found in
            ``a (blue circle:1.5) ...`` and in ``a (blue) circle ...``).

    Returns:
        The triplet; its subject/object are the prompt's slices (original case, emphasis syntax removed).

    Raises:
        ValueError: the relation is unknown, or the subject/object is missing from the prompt, or every subject
            occurrence overlaps every object occurrence.
    """
    if not emphasis:
        return _explicit(prompt, prompt, subject, relation, object)
    plain = strip_emphasis(prompt)
    return _to_prompt(_explicit(plain.text, prompt, subject, relation, object), plain)


def _explicit(prompt: str, shown: str, subject: str, relation: str, object: str) -> RelationTriplet:
    """:func:`explicit_triplet` on plain text ``prompt``; ``shown`` is the prompt as written, for messages."""
    canonical = canonical_relation(relation)
    subj_spans = _occurrences(prompt, subject, "subject", shown)
    obj_spans = _occurrences(prompt, object, "object", shown)

    pair: tuple[tuple[int, int], tuple[int, int]] | None = None
    for s in subj_spans:
        after = [o for o in obj_spans if o[0] >= s[1]]
        if after:
            pair = (s, after[0])
            break
    if pair is None:
        for s in subj_spans:
            before = [o for o in obj_spans if o[1] <= s[0]]
            if before:
                pair = (s, before[-1])
                break
    if pair is None:
        raise ValueError(
            f"The explicit subject {subject!r} and object {object!r} overlap everywhere in the prompt {shown!r}; "
            "they must be two different places of the prompt (e.g. 'cat' and 'cat bed' in 'a cat left of a cat bed')."
        )
    s_span, o_span = pair

    phrases = sorted((p for p, c in RELATION_SYNONYMS.items() if c == canonical), key=len, reverse=True)
    rel_pattern = re.compile(
        r"(?<![^\W_])(?:" + "|".join(r"[\s\-]+".join(map(re.escape, p.split())) for p in phrases) + r")(?![^\W_])",
        re.IGNORECASE,
    )
    gap = (s_span[1], o_span[0]) if s_span[1] <= o_span[0] else (o_span[1], s_span[0])
    found = rel_pattern.search(prompt, gap[0], gap[1]) or rel_pattern.search(prompt)
    rel_span = found.span() if found else (s_span[1], s_span[1])
    return RelationTriplet(
        subject=prompt[s_span[0] : s_span[1]],
        relation=canonical,
        object=prompt[o_span[0] : o_span[1]],
        subject_span=s_span,
        relation_span=rel_span,
        object_span=o_span,
    )
