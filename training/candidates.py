"""Candidate items of the ``triplets`` command: one possible (image, subject, object, relation) fact before selection.

Every source (:mod:`training.sources`) produces :class:`Candidate` objects; :mod:`training.splits` picks from them
and :mod:`training.triplets` writes the chosen ones to ``items.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .geometry import Box


@dataclass(frozen=True)
class Candidate:
    """One possible item, before selection.

    Attributes:
        image: Image path as it will be written (relative to the image root, or as given).
        image_id: Source image id; splits never share one.
        subject: Subject name (A in "A <relation> B").
        object: Object name (B).
        relation: Canonical relation of A relative to B.
        subject_box: ``(x0, y0, x1, y1)`` pixels, or None.
        object_box: Same for B.
        image_size: ``(width, height)`` or None.
        origin: Where the candidate came from, for error messages ("items.jsonl line 3").
        image_field: The field of ``origin`` that gave the image path, for error messages.
    """

    image: str
    image_id: str
    subject: str
    object: str
    relation: str
    subject_box: Box | None = None
    object_box: Box | None = None
    image_size: tuple[int, int] | None = None
    origin: str = ""
    image_field: str = "image"

    def key(self) -> tuple[str, str, str, str]:
        """Identity of the fact (image, subject, object, relation), for de-duplication."""
        return (self.image_id, self.subject, self.object, self.relation)
