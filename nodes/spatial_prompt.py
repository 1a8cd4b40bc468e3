"""From a prompt and a ComfyUI CLIP object to the relations to steer and their token positions.

Positions are read from ComfyUI's own tokenisation of the prompt (the token sequence the denoiser really attends to,
chunks and padding included), so long prompts split into 77-token chunks and T5 padding are accounted for. The
prompt is parsed with ComfyUI's emphasis syntax (``(blue circle:1.5)``, ``((red square))``, ``(above:1.3)``,
escaped ``\\(``; :mod:`l2s_core.emphasis`): each phrase is looked up by its plain words, which tokenize to the same
ids inside the weighted prompt, near the position of the plain text before it. The parsed relations and positions
travel inside the CONDITIONING under :data:`SPEC_KEY`, which ComfyUI carries unchanged into the sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..l2s_core.emphasis import escape_literal, strip_emphasis
from ..l2s_core.prompts import RelationTriplet, explicit_triplet, parse_relations
from ..l2s_core.tokens import PhraseNotFoundError, locate_phrase

SPEC_KEY = "l2s_spatial"

# Official FLUX classifiers saw T5 padded to 512 tokens; ComfyUI pads FLUX's T5 to 256 by default.
FLUX_T5_LENGTH = 512


@dataclass(frozen=True)
class PhrasePositions:
    """Token positions of one relation's two phrases on the denoiser's text axis."""

    subject: tuple[int, ...]
    object: tuple[int, ...]


@dataclass(frozen=True)
class SpatialSpec:
    """The relations of one prompt, ready for steering.

    Attributes:
        prompt: the text as typed.
        triplets: parsed (or explicitly given) relations, in order.
        positions: token positions per triplet, on the denoiser's text axis.
        encoder: which of ComfyUI's text encoders the positions refer to ("l", "h", "g" or "t5xxl").
        text_length: length of the text axis for this prompt.
    """

    prompt: str
    triplets: tuple[RelationTriplet, ...]
    positions: tuple[PhrasePositions, ...]
    encoder: str
    text_length: int

    def describe(self) -> str:
        """One line per relation, e.g. ``'dog' to the right of 'teddy bear' (tokens [5] / [9, 10])``."""
        return "\n".join(
            f"{t.subject!r} {t.relation} {t.object!r} (tokens {list(p.subject)} / {list(p.object)})"
            for t, p in zip(self.triplets, self.positions, strict=True)
        )


def _encoder_key(token_keys: Sequence[str]) -> str:
    """The text encoder whose token axis the denoiser's text attention uses."""
    keys = set(token_keys)
    if "t5xxl" in keys and "g" not in keys:
        return "t5xxl"  # FLUX: the DiT attends to T5 tokens only; CLIP-L is pooled
    for key in ("l", "h", "g"):  # SD1/SDXL/SD3 share CLIP-L positions; SD2 uses CLIP-H
        if key in keys:
            return key
    raise ValueError(
        f"This CLIP model produces tokens for {sorted(keys)}; Learn-to-Steer supports CLIP-L/H/G (SD1.x, SD2.x, "
        "SDXL, SD3) and T5 (FLUX.1) text encoders."
    )


def _sub_tokenizer(clip: Any, key: str) -> Any:
    tokenizer = clip.tokenizer
    for name in (f"clip_{key}", key):
        if hasattr(tokenizer, name):
            return getattr(tokenizer, name)
    clip_name = getattr(tokenizer, "clip", None)
    if isinstance(clip_name, str) and hasattr(tokenizer, clip_name):
        return getattr(tokenizer, clip_name)
    raise ValueError(f"Cannot find the tokenizer for text encoder {key!r} on this CLIP object.")


def _content(chunks: Sequence[Sequence[Any]], sub: Any) -> tuple[list[int], list[int]]:
    """Content token ids of ComfyUI token chunks and their positions on the concatenated text axis.

    Start tokens, end tokens and padding are skipped; embeddings (tensors in place of ids) get id -1.
    """
    ids: list[int] = []
    positions: list[int] = []
    start = int(getattr(sub, "tokens_start", 0))
    end_token = getattr(sub, "end_token", None)
    offset = 0
    for chunk in chunks:
        for index in range(start, len(chunk)):
            token = chunk[index][0]
            value = int(token) if isinstance(token, int) or hasattr(token, "__index__") else -1
            if end_token is not None and value == end_token:
                break
            ids.append(value)
            positions.append(offset + index)
        offset += len(chunk)
    return ids, positions


def tokenizer_options_for(clip: Any, t5_length: int) -> dict[str, int]:
    """Tokenizer options that pad FLUX's T5 to ``t5_length`` tokens (empty for other text encoders)."""
    keys = clip.tokenize("").keys()
    if _encoder_key(list(keys)) == "t5xxl" and t5_length > 0:
        return {"t5xxl_min_length": int(t5_length)}
    return {}


def build_spatial_spec(clip: Any, prompt: str, tokens: dict[str, Any],
                       explicit: tuple[str, str, str] | None = None) -> SpatialSpec:
    """Parse ``prompt`` (or use the explicit subject/relation/object) and locate every phrase's tokens.

    Args:
        clip: ComfyUI CLIP object (only its tokenizer is used).
        prompt: the prompt text, with ComfyUI's emphasis syntax if any.
        tokens: ``clip.tokenize(prompt, ...)`` output, the tokens that will be encoded.
        explicit: optional (subject, relation, object) that bypasses parsing.

    Raises:
        ValueError: no supported relation, or a phrase whose tokens are not in the encoded prompt.
    """
    if explicit:
        triplets: tuple[RelationTriplet, ...] = (explicit_triplet(prompt, *explicit, emphasis=True),)
    else:
        triplets = tuple(parse_relations(prompt, emphasis=True))
    plain = strip_emphasis(prompt)
    key = _encoder_key(list(tokens.keys()))
    sub = _sub_tokenizer(clip, key)
    chunks = tokens[key]
    prompt_ids, axis = _content(chunks, sub)
    text_length = sum(len(chunk) for chunk in chunks)
    if key != "t5xxl" and "t5xxl" in tokens:
        text_length += sum(len(chunk) for chunk in tokens["t5xxl"])  # SD3: CLIP chunk, then T5 tokens
        axis_limit = len(chunks[0])
    else:
        axis_limit = text_length

    def encode(text: str) -> list[int]:
        """Content ids of plain text (parentheses escaped, so ComfyUI reads them literally)."""
        return _content(sub.tokenize_with_weights(escape_literal(text)), sub)[0]

    ignorable: tuple[int, ...] = ()
    if key == "t5xxl":
        piece = sub.tokenizer.convert_tokens_to_ids("\u2581")
        ignorable = (int(piece),) if isinstance(piece, int) and piece >= 0 else ()

    positions = []
    for triplet in triplets:
        found = []
        for phrase, span in ((triplet.subject, triplet.subject_span), (triplet.object, triplet.object_span)):
            before = plain.text[: plain.to_text_span(span)[0]].rstrip()
            content_index = locate_phrase(
                prompt_ids, encode(phrase), len(encode(before)),
                offset=0, max_length=None, phrase=phrase, ignorable_leading_ids=ignorable,
            )
            axis_positions = tuple(axis[i] for i in content_index)
            if max(axis_positions) >= axis_limit:
                raise ValueError(
                    f"The phrase {phrase!r} lies past the first {axis_limit} text tokens the model attends to with "
                    "its CLIP encoder; shorten the prompt or move the relation earlier."
                )
            found.append(axis_positions)
        positions.append(PhrasePositions(subject=found[0], object=found[1]))
    return SpatialSpec(prompt=prompt, triplets=triplets, positions=tuple(positions), encoder=key,
                       text_length=text_length)


__all__ = ["SPEC_KEY", "FLUX_T5_LENGTH", "PhraseNotFoundError", "PhrasePositions", "SpatialSpec",
           "build_spatial_spec", "tokenizer_options_for"]
