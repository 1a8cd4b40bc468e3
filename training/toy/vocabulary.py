"""Toy-world prompts and the CLIP token ids they have in ComfyUI's stock SD1 tokenizer.

This module owns the text side of the toy world. The toy text encoder has the CLIP-L architecture and consumes the
ids of ComfyUI's bundled CLIP tokenizer unchanged, so the stock CLIPTextEncode and our Spatial Prompt Encode work on
it. Every word of the toy language is a single token of the CLIP BPE vocabulary (``word</w>``); the ids below are
those of the public CLIP vocabulary (a test checks them against ComfyUI's tokenizer). Outside ComfyUI (training,
benchmark) a word-level tokenizer built from this table produces the same ids, so no BPE files are needed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from types import MappingProxyType

logger = logging.getLogger(__name__)

START_ID = 49406
"""CLIP ``<|startoftext|>``."""
END_ID = 49407
"""CLIP ``<|endoftext|>``; ComfyUI's SD1 tokenizer also pads with it."""
CONTEXT_LENGTH = 77
"""CLIP context window (start + 75 words + end)."""
VOCAB_SIZE = 49408
"""Rows of the CLIP-L token embedding."""

CLIP_TOKEN_IDS: MappingProxyType[str, int] = MappingProxyType(
    {
        "a": 320,
        "an": 550,
        "the": 518,
        "and": 537,
        "of": 539,
        "to": 531,
        "left": 1823,
        "right": 1155,
        "above": 4348,
        "below": 3788,
        "on": 525,
        "top": 1253,
        "under": 1798,
        "beneath": 16850,
        "over": 962,
        "next": 1131,
        "near": 2252,
        "side": 1145,
        "with": 593,
        "photo": 1125,
        "image": 2867,
        "picture": 1674,
        "red": 736,
        "green": 1901,
        "blue": 1746,
        "yellow": 4481,
        "purple": 5496,
        "orange": 4287,
        "teal": 22821,
        "black": 1449,
        "white": 1579,
        "square": 3999,
        "circle": 7117,
        "triangle": 14615,
        "diamond": 6235,
        "cross": 3417,
        "star": 1565,
        ",": 267,
        ".": 269,
    }
)
"""Word -> id of ``word</w>`` in the CLIP vocabulary (the ids ComfyUI's SD1 tokenizer produces for these words)."""

_WORD = re.compile(r"[a-z]+|[^\sa-z]")


def words_of(prompt: str) -> list[str]:
    """Split a prompt the way CLIP pre-tokenises plain lower-case English: words and single punctuation marks."""
    return _WORD.findall(prompt.lower())


def prompt_ids(prompt: str) -> list[int]:
    """The 77 CLIP ids ComfyUI's SD1 tokenizer gives ``prompt``: start, words, end, padded with the end id.

    Raises:
        ValueError: a word is not in the toy vocabulary, or the prompt is longer than 75 words.
    """
    words = words_of(prompt)
    unknown = sorted({w for w in words if w not in CLIP_TOKEN_IDS})
    if unknown:
        raise ValueError(
            f"The toy world does not know the word(s) {unknown} in {prompt!r}; its vocabulary is: "
            f"{', '.join(sorted(CLIP_TOKEN_IDS))}."
        )
    if len(words) > CONTEXT_LENGTH - 2:
        raise ValueError(f"Toy prompts hold at most {CONTEXT_LENGTH - 2} words, got {len(words)}.")
    ids = [START_ID, *(CLIP_TOKEN_IDS[w] for w in words), END_ID]
    return ids + [END_ID] * (CONTEXT_LENGTH - len(ids))


def pair_prompt(subject: str, obj: str) -> str:
    """The toy prompt naming two objects without their relation, e.g. "a red square and a blue circle"."""
    return f"a {subject} and a {obj}"


def relation_prompt(subject: str, relation: str, obj: str) -> str:
    """The toy prompt for "<subject> <relation> <object>", e.g. "a red square to the left of a blue circle"."""
    from l2s_core.relations import canonical_relation

    return f"a {subject} {canonical_relation(relation)} a {obj}"


def build_tokenizer(vocabulary: Sequence[str] | None = None):  # -> transformers.PreTrainedTokenizerFast
    """A word-level ``transformers`` tokenizer that gives the CLIP ids of the toy vocabulary (for diffusers).

    Lower-cases, splits on whitespace and punctuation, adds start/end ids and pads with the end id to 77, like
    ComfyUI's SD1 tokenizer on toy prompts. A word outside the vocabulary becomes the end id (``<|endoftext|>`` is
    the unknown token), so callers that need strictness check with :func:`prompt_ids` first.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = list(CLIP_TOKEN_IDS) if vocabulary is None else list(vocabulary)
    vocab = {w: CLIP_TOKEN_IDS[w] for w in words}
    vocab["<|startoftext|>"] = START_ID
    vocab["<|endoftext|>"] = END_ID
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", START_ID), ("<|endoftext|>", END_ID)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=CONTEXT_LENGTH,
    )
