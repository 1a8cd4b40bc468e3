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


class ModelFile(NamedTuple):
    """A model file a loader node names, as the frontend's missing-models dialog reads it from
    ``properties.models``: the file name (the widget value), a direct download URL (the dialog downloads only from
    huggingface.co / civitai.com, and only ``.safetensors`` / ``.sft`` files) and the models folder it goes into."""

    name: str
    url: str
    directory: str


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
    models: tuple[ModelFile, ...] = ()
    collapsed: bool = False


class Scene(NamedTuple):
    """The relation a thumbnail pictures: the left and right object (label, RGB fill, shape) and a caption."""

    left: tuple[str, tuple[int, int, int], str]
    right: tuple[str, tuple[int, int, int], str]
    caption: str
    vertical: bool = False  # draw ``left`` above ``right`` instead of beside it


# the default prompt: teddy bear (object, blue) on the left, dog (subject, red) on the right
DOG_TEDDY = Scene(("teddy", (40, 80, 170), "box"), ("dog", (200, 70, 40), "box"), "dog to the right of teddy bear")


DEFAULT_ZOOM = 0.8
"""The canvas zoom a workflow opens at: the pack's report text (15 px) reads at 12 px on screen."""


@dataclass
class Workflow:
    """One example workflow and what its thumbnail shows.

    ``name`` is the short id (the API twin's file name, the images' prefix); ``file_name`` is the UI graph's file
    name, which ComfyUI's template browser shows as the template's title (and, with ``-``/``_`` as spaces, as its
    description): there is no other place a pack's template title can come from in ComfyUI 0.3.64.
    """

    name: str
    file_name: str
    title: str
    model: str
    settings: str
    chain: tuple[str, ...]
    nodes: list[Node] = field(default_factory=list)
    scene: Scene = DOG_TEDDY
    zoom: float = DEFAULT_ZOOM

    def add(self, class_type: str, pos: tuple[float, float], inputs: dict[str, Any] | None = None, *,
            title: str | None = None, size: tuple[float, float] | None = None,
            colour: tuple[str, str] | None = None, models: tuple[ModelFile, ...] = (),
            collapsed: bool = False) -> int:
        """Add a node and return its id (ids count from 1 in the order of addition)."""
        node_id = len(self.nodes) + 1
        self.nodes.append(Node(node_id, class_type, dict(inputs or {}), pos, size, title, colour,
                               models=tuple(models), collapsed=collapsed))
        return node_id

    def node(self, node_id: int) -> Node:
        """The node with id ``node_id``."""
        return self.nodes[node_id - 1]

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float]) -> int:
        """Add a MarkdownNote (frontend-only; not part of the API format)."""
        node_id = len(self.nodes) + 1
        self.nodes.append(Node(node_id, "MarkdownNote", {}, pos, size, None, NOTE_COLOUR, text))
        return node_id
