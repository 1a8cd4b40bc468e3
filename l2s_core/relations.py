"""The spatial relations the published classifiers know, and their canonical names.

The official checkpoints map relation names to class indices with ``rel_name_to_idx``; the spatial names there are
exactly the four canonical strings below. Everything else in the pack refers to relations through these
constants, and user-facing aliases are resolved once, here; :func:`check_class_names` checks that a classifier
stores its spatial classes under these names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

ABOVE = "above"
BELOW = "below"
LEFT_OF = "to the left of"
RIGHT_OF = "to the right of"

SPATIAL_RELATIONS: tuple[str, ...] = (ABOVE, BELOW, LEFT_OF, RIGHT_OF)

RELATION_SYNONYMS: Mapping[str, str] = MappingProxyType(
    {
        "above": ABOVE,
        "over": ABOVE,
        "atop": ABOVE,
        "on top of": ABOVE,
        "on the top of": ABOVE,
        "below": BELOW,
        "under": BELOW,
        "underneath": BELOW,
        "beneath": BELOW,
        "on the bottom of": BELOW,
        "on bottom of": BELOW,
        "to the left of": LEFT_OF,
        "on the left of": LEFT_OF,
        "left of": LEFT_OF,
        "to the left side of": LEFT_OF,
        "on the left side of": LEFT_OF,
        "to the left hand side of": LEFT_OF,
        "on the left hand side of": LEFT_OF,
        "to the far left of": LEFT_OF,
        "on the far left of": LEFT_OF,
        "at the left of": LEFT_OF,
        "to the right of": RIGHT_OF,
        "on the right of": RIGHT_OF,
        "right of": RIGHT_OF,
        "to the right side of": RIGHT_OF,
        "on the right side of": RIGHT_OF,
        "to the right hand side of": RIGHT_OF,
        "on the right hand side of": RIGHT_OF,
        "to the far right of": RIGHT_OF,
        "on the far right of": RIGHT_OF,
        "at the right of": RIGHT_OF,
    }
)
"""Phrasings of the four relations -> canonical name: the one synonym table. The prompt parser matches these phrases
in prompts (whole words, case-insensitive, longest first); :func:`canonical_relation` accepts them as names."""

_SHORT_NAMES: Mapping[str, str] = MappingProxyType({"top": ABOVE, "bottom": BELOW, "left": LEFT_OF, "right": RIGHT_OF})
"""One-word names accepted where a relation is named on its own (an option, a class name), never matched in prompts
("right" is also a degree adverb there: "right above")."""


def canonical_relation(name: str) -> str:
    """Return the canonical relation for a user-written name.

    Accepts the canonical strings, common synonyms ("left of", "on top of", "under") and identifier spellings
    ("to_the_left_of", "RIGHT-OF").

    Raises:
        ValueError: the name is not a supported spatial relation; the message lists the supported ones.
    """
    key = " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())
    canonical = RELATION_SYNONYMS.get(key) or _SHORT_NAMES.get(key)
    if canonical is not None:
        return canonical
    supported = ", ".join(repr(r) for r in SPATIAL_RELATIONS)
    raise ValueError(
        f"Unknown spatial relation {name!r}. The relation classifiers know only {supported} "
        "(synonyms such as 'left of', 'on top of', 'under' are accepted)."
    )


def check_class_names(names: Sequence[str]) -> None:
    """Check a classifier's class names against what the steering asks for.

    The steering looks classes up by the canonical names (:data:`SPATIAL_RELATIONS`), so a spatial class stored
    under a synonym ("over", "left of") could never be steered. Other classes (the official "is") are kept as they
    are.

    Args:
        names: class names in class-index order.

    Raises:
        ValueError: a spatial class stored under a synonym, or no spatial class at all; the message names the class
            and the canonical name to store instead.
    """
    spatial = 0
    for name in names:
        key = " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())
        canonical = RELATION_SYNONYMS.get(key) or _SHORT_NAMES.get(key)
        if canonical is None:
            continue
        if name != canonical:
            raise ValueError(
                f"the class {name!r} must be stored under the canonical relation name {canonical!r} (the steering "
                f"asks for one of {list(SPATIAL_RELATIONS)}). Re-export the classifier with that class renamed."
            )
        spatial += 1
    if not spatial:
        raise ValueError(
            f"none of the classes {list(names)} is a spatial relation; expected some of {list(SPATIAL_RELATIONS)} "
            "(the official classifiers have all four, plus 'is')."
        )
