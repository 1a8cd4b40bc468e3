"""A synthetic toy world: two coloured shapes on a plain background, with exact boxes and a known relation.

This module owns the scene definition of the toy world: what the toy text-to-image model is trained on
(:mod:`.build`), what its classifier's training images are (the ``toy`` source of ``python -m training triplets``),
and the palette its judge knows (:mod:`.judge`). A scene holds two objects with
multi-word names (colour + shape, e.g. "red square", "blue circle"); each object is drawn in one flat colour, and its
box is the tight bounding box of its drawn pixels (``(x0, y0, x1, y1)``, pixels, ``x1``/``y1`` exclusive). The
boxes never overlap, and the relation of the subject to the object is the *only* one the GenEval rule
(:mod:`training.geometry`) finds between the two boxes, so the label is unambiguous.

Everything is deterministic given a ``random.Random`` (or an integer seed). Object pairs can be biased toward a
"usual" arrangement (:func:`usual_relation`, :func:`sample_pair`) to build data sets where the object names alone
predict the relation, a shortcut the dual-inversion negatives of the training pipeline are meant to defeat.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from PIL import Image, ImageDraw

from l2s_core.relations import ABOVE, BELOW, LEFT_OF, RIGHT_OF, canonical_relation

from ..geometry import POSITION_THRESHOLD, Box, relations_from_boxes

logger = logging.getLogger(__name__)

Colour = tuple[int, int, int]

COLOURS: MappingProxyType[str, Colour] = MappingProxyType(
    {
        "red": (220, 30, 30),
        "green": (30, 160, 50),
        "blue": (30, 70, 220),
        "yellow": (240, 200, 20),
        "purple": (140, 50, 180),
        "orange": (245, 130, 20),
        "teal": (20, 190, 200),
        "black": (20, 20, 20),
        "white": (255, 255, 255),
    }
)
"""Object colours by name (flat RGB; no anti-aliasing, so every object pixel has exactly this colour)."""

SHAPES: tuple[str, ...] = ("square", "circle", "triangle", "diamond", "cross", "star")
"""Drawable shapes; each fills its placement box edge to edge on at least two sides."""

DEFAULT_KINDS: tuple[str, ...] = (
    "red square",
    "green triangle",
    "blue circle",
    "yellow star",
    "purple cross",
    "teal diamond",
)
"""The default object vocabulary: six kinds, each with its own colour and shape."""

BACKGROUNDS: tuple[Colour, ...] = ((200, 200, 200), (215, 205, 185), (185, 195, 210), (205, 215, 195))
"""Plain background colours (mid-light tints, distinct from every object colour, including white and black)."""

PAPER: Colour = (236, 236, 236)
"""The single background of the second toy world: a light neutral grey that no object colour is near (the nearest,
yellow, is 220 RGB units away), so every object stands out by eye and by colour distance."""

INVERSE: MappingProxyType[str, str] = MappingProxyType(
    {LEFT_OF: RIGHT_OF, RIGHT_OF: LEFT_OF, ABOVE: BELOW, BELOW: ABOVE}
)
"""The relation of B to A when A <r> B holds."""


@dataclass(frozen=True)
class ObjectKind:
    """A kind of toy object: a colour and a shape, named "<colour> <shape>"."""

    colour: str
    shape: str

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"Unknown toy colour {self.colour!r}; expected one of {', '.join(COLOURS)}.")
        if self.shape not in SHAPES:
            raise ValueError(f"Unknown toy shape {self.shape!r}; expected one of {', '.join(SHAPES)}.")

    @property
    def name(self) -> str:
        """The object's name in prompts, e.g. "red square"."""
        return f"{self.colour} {self.shape}"

    @property
    def rgb(self) -> Colour:
        """The flat colour the object is drawn in."""
        return COLOURS[self.colour]

    @classmethod
    def parse(cls, name: str) -> ObjectKind:
        """Parse "<colour> <shape>" (case-insensitive), e.g. "Blue Circle".

        Raises:
            ValueError: the name is not a known colour followed by a known shape.
        """
        words = name.strip().lower().split()
        if len(words) != 2:
            raise ValueError(
                f"Toy object name {name!r} must be '<colour> <shape>', e.g. 'red square'; colours: "
                f"{', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}."
            )
        return cls(colour=words[0], shape=words[1])


@dataclass(frozen=True)
class PlacedObject:
    """An object in a scene: its name and the tight box of its pixels ``(x0, y0, x1, y1)``, x1/y1 exclusive."""

    name: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Scene:
    """A rendered toy scene.

    Attributes:
        image: RGB image, ``size`` x ``size`` pixels.
        objects: ``(subject, object)``.
        relation: The canonical relation of the subject relative to the object (the only one that holds).
        background: The background colour.
    """

    image: Image.Image
    objects: tuple[PlacedObject, PlacedObject]
    relation: str
    background: Colour

    @property
    def subject(self) -> PlacedObject:
        """The first object (A in "A <relation> B")."""
        return self.objects[0]

    @property
    def object(self) -> PlacedObject:
        """The second object (B in "A <relation> B")."""
        return self.objects[1]


@dataclass(frozen=True)
class ToyWorldConfig:
    """How toy scenes are drawn.

    Attributes:
        size: Image side in pixels (>= 32).
        min_object_frac: Smallest object side as a share of ``size``.
        max_object_frac: Largest object side as a share of ``size``.
        gap: Minimum free pixels between the two boxes.
        threshold: GenEval position threshold used to check the relation.
        max_tries: Placement attempts before giving up.
        backgrounds: The background colours a scene picks from (uniformly).
    """

    size: int = 64
    min_object_frac: float = 0.18
    max_object_frac: float = 0.32
    gap: int = 1
    threshold: float = POSITION_THRESHOLD
    max_tries: int = 5000
    backgrounds: tuple[Colour, ...] = BACKGROUNDS

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"Toy images must be at least 32 px, got size={self.size}.")
        if not 0.05 <= self.min_object_frac <= self.max_object_frac <= 0.45:
            raise ValueError(
                "Toy object sizes need 0.05 <= min_object_frac <= max_object_frac <= 0.45, got "
                f"{self.min_object_frac} and {self.max_object_frac}."
            )
        if not self.backgrounds:
            raise ValueError("A toy world needs at least one background colour.")
        if self.gap < 0 or self.max_tries < 1:
            raise ValueError(f"gap must be >= 0 and max_tries >= 1, got {self.gap} and {self.max_tries}.")


def parse_kinds(names: Sequence[str]) -> tuple[ObjectKind, ...]:
    """Parse and check a vocabulary: at least two distinct "<colour> <shape>" names.

    Raises:
        ValueError: a name does not parse, a name repeats, or fewer than two kinds are given.
    """
    kinds = tuple(ObjectKind.parse(n) for n in names)
    names_seen = [k.name for k in kinds]
    if len(set(names_seen)) != len(names_seen):
        raise ValueError(f"Toy object kinds repeat a name: {names_seen}.")
    if len(kinds) < 2:
        raise ValueError(f"The toy world needs at least two object kinds, got {names_seen}.")
    return kinds


def _rng(rng: random.Random | int) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def _shape_points(shape: str, box: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    """Polygon vertices for ``shape`` inside the inclusive pixel box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "cross":
        tx, ty = (x1 - x0) / 6.0, (y1 - y0) / 6.0  # half arm thickness: a third of the side
        return [
            (cx - tx, y0),
            (cx + tx, y0),
            (cx + tx, cy - ty),
            (x1, cy - ty),
            (x1, cy + ty),
            (cx + tx, cy + ty),
            (cx + tx, y1),
            (cx - tx, y1),
            (cx - tx, cy + ty),
            (x0, cy + ty),
            (x0, cy - ty),
            (cx - tx, cy - ty),
        ]
    if shape == "star":
        rx, ry = (x1 - x0) / 2.0, (y1 - y0) / 2.0
        points = []
        for i in range(10):
            angle = -math.pi / 2 + i * math.pi / 5
            scale = 1.0 if i % 2 == 0 else 0.45
            points.append((cx + scale * rx * math.cos(angle), cy + scale * ry * math.sin(angle)))
        return points
    raise AssertionError(f"no polygon for shape {shape!r}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: int | Colour) -> None:
    """Draw a filled ``shape`` inside ``box`` = (x0, y0, x1, y1), x1/y1 exclusive, without anti-aliasing."""
    inclusive = (box[0], box[1], box[2] - 1, box[3] - 1)
    if shape == "square":
        draw.rectangle(inclusive, fill=fill)
    elif shape == "circle":
        draw.ellipse(inclusive, fill=fill)
    else:
        draw.polygon(_shape_points(shape, inclusive), fill=fill)


def _object_mask(kind: ObjectKind, box: tuple[int, int, int, int], size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw_shape(ImageDraw.Draw(mask), kind.shape, box, 255)
    return mask


def _sample_box(rng: random.Random, config: ToyWorldConfig) -> tuple[int, int, int, int]:
    lo = max(4, round(config.min_object_frac * config.size))
    hi = max(lo, round(config.max_object_frac * config.size))
    w = rng.randint(lo, hi)
    h = min(hi, max(lo, round(w * rng.uniform(0.8, 1.25))))
    x0 = rng.randint(0, config.size - w)
    y0 = rng.randint(0, config.size - h)
    return (x0, y0, x0 + w, y0 + h)


def _separated(a: Box, b: Box, gap: int) -> bool:
    """True when the boxes are at least ``gap`` pixels apart on some axis (so they cannot overlap)."""
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def render_scene(
    subject: str | ObjectKind,
    obj: str | ObjectKind,
    relation: str,
    rng: random.Random | int,
    config: ToyWorldConfig | None = None,
) -> Scene:
    """Draw "<subject> <relation> <object>" as a toy scene.

    The two objects get random sizes and positions (rejection sampling) until their drawn boxes do not overlap and
    the requested relation is the only one the GenEval rule finds; the boxes reported are measured from the drawn
    pixels.

    Args:
        subject: Name ("red square") or kind of the first object.
        obj: Name or kind of the second object; must differ from ``subject``.
        relation: Spatial relation (aliases accepted).
        rng: Random source (used and advanced) or an integer seed.
        config: Drawing settings (default :class:`ToyWorldConfig`).

    Returns:
        The scene, with the canonical relation.

    Raises:
        ValueError: unknown names or relation, or subject and object are the same kind.
        RuntimeError: no valid placement was found within ``config.max_tries`` (only with extreme settings).
    """
    config = config or ToyWorldConfig()
    rng = _rng(rng)
    kind_a = subject if isinstance(subject, ObjectKind) else ObjectKind.parse(subject)
    kind_b = obj if isinstance(obj, ObjectKind) else ObjectKind.parse(obj)
    if kind_a == kind_b:
        raise ValueError(f"A toy scene needs two different objects, got {kind_a.name!r} twice.")
    relation = canonical_relation(relation)
    background = config.backgrounds[rng.randrange(len(config.backgrounds))]
    for _ in range(config.max_tries):
        box_a, box_b = _sample_box(rng, config), _sample_box(rng, config)
        if not _separated(box_a, box_b, config.gap):
            continue
        if relations_from_boxes(box_a, box_b, config.threshold) != {relation}:
            continue
        mask_a = _object_mask(kind_a, box_a, config.size)
        mask_b = _object_mask(kind_b, box_b, config.size)
        tight_a, tight_b = mask_a.getbbox(), mask_b.getbbox()
        if tight_a is None or tight_b is None:
            continue
        if relations_from_boxes(tight_a, tight_b, config.threshold) != {relation}:
            continue
        image = Image.new("RGB", (config.size, config.size), background)
        image.paste(kind_a.rgb, (0, 0, config.size, config.size), mask_a)
        image.paste(kind_b.rgb, (0, 0, config.size, config.size), mask_b)
        return Scene(
            image=image,
            objects=(PlacedObject(kind_a.name, tuple(tight_a)), PlacedObject(kind_b.name, tuple(tight_b))),
            relation=relation,
            background=background,
        )
    raise RuntimeError(
        f"Could not place {kind_a.name!r} {relation} {kind_b.name!r} in a {config.size}px image after "
        f"{config.max_tries} tries; lower max_object_frac or raise size."
    )


def render_single(kind: str | ObjectKind, rng: random.Random | int, config: ToyWorldConfig | None = None
                  ) -> tuple[Image.Image, PlacedObject]:
    """Draw one object alone at a random size and place: the image and the object with its tight box.

    The toy build mixes such scenes in (``solo_images``) so that each object's words are tied to its look on their
    own, not only next to the companion a biased pair usually brings.

    Raises:
        ValueError: unknown name.
    """
    config = config or ToyWorldConfig()
    rng = _rng(rng)
    kind = kind if isinstance(kind, ObjectKind) else ObjectKind.parse(kind)
    background = config.backgrounds[rng.randrange(len(config.backgrounds))]
    box = _sample_box(rng, config)
    mask = _object_mask(kind, box, config.size)
    tight = mask.getbbox()
    assert tight is not None, "a sampled box is at least 4 px wide, so the shape has pixels"
    image = Image.new("RGB", (config.size, config.size), background)
    image.paste(kind.rgb, (0, 0, config.size, config.size), mask)
    return image, PlacedObject(kind.name, tuple(tight))


def usual_relation(subject: str, obj: str, kinds: Sequence[str]) -> str:
    """The "usual" arrangement of an ordered pair of kinds, for co-occurrence bias.

    The unordered pairs of ``kinds`` (in list order) are assigned the four relations in turn; the reversed pair gets
    the inverse relation, so ``usual_relation(b, a) == INVERSE[usual_relation(a, b)]``. With at least three kinds
    every relation is the usual one for some ordered pair.

    Raises:
        ValueError: a name is not in ``kinds``, or both names are the same.
    """
    names = [ObjectKind.parse(k).name for k in kinds]
    a, b = ObjectKind.parse(subject).name, ObjectKind.parse(obj).name
    for n in (a, b):
        if n not in names:
            raise ValueError(f"{n!r} is not one of the toy kinds {names}.")
    if a == b:
        raise ValueError(f"A pair needs two different kinds, got {a!r} twice.")
    i, j = names.index(a), names.index(b)
    lo, hi = min(i, j), max(i, j)
    pair_index = sum(len(names) - 1 - k for k in range(lo)) + (hi - lo - 1)
    rel = (LEFT_OF, ABOVE, RIGHT_OF, BELOW)[pair_index % 4]
    return rel if i < j else INVERSE[rel]


def sample_pair(
    relation: str, rng: random.Random | int, kinds: Sequence[str] = DEFAULT_KINDS, bias: float = 0.0
) -> tuple[str, str]:
    """Pick an ordered (subject, object) pair of distinct kinds to show in ``relation``.

    With probability ``bias`` the pair is drawn from the pairs whose usual arrangement (:func:`usual_relation`) is
    ``relation``; otherwise uniformly from all ordered pairs. ``bias=0`` gives no co-occurrence shortcut.

    Raises:
        ValueError: ``bias`` is outside [0, 1], or the kinds or relation are invalid.
    """
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"The co-occurrence bias must be in [0, 1], got {bias}.")
    rng = _rng(rng)
    relation = canonical_relation(relation)
    names = [k.name for k in parse_kinds(kinds)]
    pairs = [(a, b) for a in names for b in names if a != b]
    if bias > 0.0 and rng.random() < bias:
        usual = [p for p in pairs if usual_relation(p[0], p[1], names) == relation]
        if usual:
            return usual[rng.randrange(len(usual))]
    return pairs[rng.randrange(len(pairs))]
