"""The generator's model of one example workflow: nodes with inputs and links, canvas placement, looks, thumbnail scene.

A workflow is defined once, as nodes whose inputs are literal values or :class:`Out` links (API-format inputs) plus
positions, sizes, titles and colours (what only the UI graph keeps); :mod:`.formats` writes both formats from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

POSITIVE_COLOUR = ("#232", "#353")
NEGATIVE_COLOUR = ("#322", "#533")
NOTE_COLOUR = ("#432", "#653")
STEER_COLOUR = ("#223", "#335")


class Out(NamedTuple):
    """An output slot of a node: an input given an ``Out`` is a link."""

    node: int
    slot: int


@dataclass(frozen=True)
class Node:
    """One node: class, inputs (literal values or ``Out`` links), canvas placement and looks."""

    id: int
    class_type: str
    inputs: dict[str, Any]
    pos: tuple[float, float]
    size: tuple[float, float] | None = None
    title: str | None = None
    colour: tuple[str, str] | None = None
    text: str | None = None  # notes only


class Scene(NamedTuple):
    """The relation a thumbnail pictures: the left and right object (label, RGB fill, shape) and a caption."""

    left: tuple[str, tuple[int, int, int], str]
    right: tuple[str, tuple[int, int, int], str]
    caption: str
    vertical: bool = False  # draw ``left`` above ``right`` instead of beside it


# the default prompt: teddy bear (object, blue) on the left, dog (subject, red) on the right
DOG_TEDDY = Scene(("teddy", (40, 80, 170), "box"), ("dog", (200, 70, 40), "box"), "dog to the right of teddy bear")


@dataclass
class Workflow:
    """One example workflow and what its thumbnail shows."""

    name: str
    title: str
    model: str
    settings: str
    chain: tuple[str, ...]
    nodes: list[Node] = field(default_factory=list)
    scene: Scene = DOG_TEDDY

    def add(self, class_type: str, pos: tuple[float, float], inputs: dict[str, Any] | None = None, *,
            title: str | None = None, size: tuple[float, float] | None = None,
            colour: tuple[str, str] | None = None) -> int:
        """Add a node and return its id (ids count from 1 in the order of addition)."""
        node_id = len(self.nodes) + 1
        self.nodes.append(Node(node_id, class_type, dict(inputs or {}), pos, size, title, colour))
        return node_id

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float]) -> int:
        """Add a MarkdownNote (frontend-only; not part of the API format)."""
        node_id = len(self.nodes) + 1
        self.nodes.append(Node(node_id, "MarkdownNote", {}, pos, size, None, NOTE_COLOUR, text))
        return node_id
