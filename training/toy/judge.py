"""Judge generated toy images with exact colour geometry: find each named object by its flat colour, then apply the
GenEval position rule (:mod:`training.geometry`) to the boxes.

What the judge checks, per image and requested "<subject> <relation> <object>":

1. **Colour assignment.** Every toy kind has its own flat colour (:data:`training.toy.scenes.COLOURS`) and the
   world's backgrounds are colours no object uses. Each pixel is assigned to its nearest palette colour, and counts
   for that colour only if it also lies within ``tolerance`` (Euclidean RGB distance) of it. The palette is the
   world's own object colours (``colours``; by default every toy colour) plus the two requested objects' colours and
   the world's backgrounds, so a colour added for another world never changes how this world is judged.
   Nearest-colour assignment keeps a generated image's slightly shifted colours on their object while blended edge
   pixels (closer to the background) are left out.
2. **Presence.** An object is the largest 4-connected component of its colour's pixels; it is present only if that
   component covers at least ``min_area`` of the image (a share of all pixels: 0.5 % by default, 82 pixels at
   128 px, where the smallest object the second world draws covers about 500), so a few stray pixels of the right colour
   never count as an object.
3. **A scene, not noise.** At least ``min_clean`` (half, by default) of the pixels away from both objects must still
   be the background (:func:`background_cleanliness`); an image that steering turned into coloured noise is wrong,
   whatever colour patches it happens to contain.
4. **Relation.** Both objects present, and the GenEval rule on their tight boxes finds the requested relation.

:func:`background_cleanliness` measures what steering can leave behind: the share of the pixels away from both
objects that are still the background colour.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..geometry import Detection, RelationRequest, check_relation
from .scenes import BACKGROUNDS, COLOURS, PAPER, Colour, ObjectKind

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 100.0
DEFAULT_MIN_AREA = 0.005
"""Smallest component, as a share of the image's pixels, that counts as an object."""
DEFAULT_BACKGROUNDS: tuple[Colour, ...] = (*BACKGROUNDS, PAPER)
"""Backgrounds of every toy world shipped so far (a bundle's metadata names its own)."""
CLEAN_TOLERANCE = 40.0
"""A background pixel is clean when it lies within this RGB distance of a background colour."""
CLEAN_MARGIN = 2
"""Pixels around each object's box left out of the cleanliness count (edge blending is not dirt)."""
DEFAULT_MIN_CLEAN = 0.5
"""Smallest background cleanliness of an image that counts as a scene (below it the image is noise, judged wrong)."""


@dataclass(frozen=True)
class Verdict:
    """The judgement of one image for one requested relation.

    Attributes:
        present: Whether each of (subject, object) was found.
        correct: Both present, the image is a scene (not noise) and the requested relation holds (GenEval rule).
        found: The relations that hold between the two boxes.
        reason: Why it failed ("" when correct).
        boxes: The boxes of the objects found, by name.
        noise: The image is mostly not background (judged wrong whatever it contains).
        clean: Its :func:`background_cleanliness` (computed once, here).
    """

    present: tuple[bool, bool]
    correct: bool
    found: tuple[str, ...]
    reason: str
    boxes: tuple[tuple[str, tuple[float, float, float, float]], ...] = ()
    noise: bool = False
    clean: float = 1.0

    def summary(self, relation: str) -> str:
        """A short reading, e.g. "below - wrong" or "above - right" or "object missing - wrong"."""
        if self.noise:
            return "noise, not a scene - wrong"
        if not all(self.present):
            missing = " and ".join(w for w, p in zip(("subject", "object"), self.present, strict=True) if not p)
            return f"{missing} missing - wrong"
        seen = " and ".join(self.found) if self.found else "no clear relation"
        return f"{seen} - {'right' if relation in self.found else 'wrong'}"


def _largest_component(mask: np.ndarray) -> tuple[int, tuple[int, int, int, int]] | None:
    """(pixel count, tight box (x0, y0, x1, y1) exclusive) of the largest 4-connected component, or None."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    best: tuple[int, tuple[int, int, int, int]] | None = None
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        queue = deque([(int(y0), int(x0))])
        seen[y0, x0] = True
        count, ys, xs = 0, [], []
        while queue:
            y, x = queue.popleft()
            count += 1
            ys.append(y)
            xs.append(x)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if best is None or count > best[0]:
            best = (count, (min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    return best


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"The toy judge expects an RGB image (H, W, 3), got shape {tuple(image.shape)}.")


def world_colours(kinds: Sequence[str]) -> tuple[str, ...]:
    """The object colours of a world's kinds (``"red square"`` -> ``"red"``), in order, for the judge's palette.

    Raises:
        ValueError: a name is not a toy kind.
    """
    return tuple(dict.fromkeys(ObjectKind.parse(name).colour for name in kinds))


@dataclass(frozen=True)
class Palette:
    """What the judge compares pixels with: a world's object colours (None: every toy colour) and its backgrounds."""

    colours: tuple[str, ...] | None = None
    backgrounds: tuple[Colour, ...] = DEFAULT_BACKGROUNDS

    @classmethod
    def of_world(cls, described: Mapping[str, Any]) -> Palette:
        """The palette of a bundle's world description (its metadata's ``"world"``: ``kinds``, ``backgrounds``).

        What the description lacks (older bundles) falls back to every toy colour and every known background.

        Raises:
            ValueError: a kind is not a toy kind.
        """
        kinds, backgrounds = described.get("kinds"), described.get("backgrounds")
        return cls(colours=world_colours(kinds) if kinds else None,
                   backgrounds=tuple(tuple(int(v) for v in c) for c in backgrounds) if backgrounds
                   else DEFAULT_BACKGROUNDS)


def detect(image: np.ndarray, names: Sequence[str], *, tolerance: float = DEFAULT_TOLERANCE,
           min_area: float = DEFAULT_MIN_AREA, backgrounds: Sequence[Colour] = DEFAULT_BACKGROUNDS,
           colours: Sequence[str] | None = None) -> list[Detection]:
    """Find the named toy objects in an RGB image ``(H, W, 3)`` uint8; absent objects are left out.

    ``colours`` are the object colours the world draws (see :func:`world_colours`; None: every toy colour). The
    detection score is the component's pixel count.

    Raises:
        ValueError: the image is not ``(H, W, 3)``, or a name or colour is not a toy kind or colour.
    """
    _check_image(image)
    kinds = [ObjectKind.parse(name) for name in names]
    listed = tuple(COLOURS) if colours is None else tuple(colours)
    unknown = [c for c in listed if c not in COLOURS]
    if unknown:
        raise ValueError(f"Unknown toy colour(s) {unknown} in the judge's palette; expected some of {', '.join(COLOURS)}.")
    palette_names = list(dict.fromkeys([*listed, *(k.colour for k in kinds)]))
    pixels = image.astype(np.float32)
    palette = np.asarray([*(COLOURS[c] for c in palette_names), *backgrounds], dtype=np.float32)  # (P, 3)
    distances = np.linalg.norm(pixels[:, :, None, :] - palette[None, None], axis=-1)  # (H, W, P)
    nearest = distances.argmin(axis=-1)  # (H, W)
    min_pixels = max(1, int(np.ceil(min_area * image.shape[0] * image.shape[1])))
    found: list[Detection] = []
    for kind in kinds:
        index = palette_names.index(kind.colour)
        component = _largest_component((nearest == index) & (distances[:, :, index] <= tolerance))
        if component is not None and component[0] >= min_pixels:
            found.append(Detection(name=kind.name, box=tuple(float(v) for v in component[1]), score=float(component[0])))
    return found


def judge(image: np.ndarray, subject: str, relation: str, obj: str, *, tolerance: float = DEFAULT_TOLERANCE,
          min_area: float = DEFAULT_MIN_AREA, backgrounds: Sequence[Colour] = DEFAULT_BACKGROUNDS,
          min_clean: float = DEFAULT_MIN_CLEAN, colours: Sequence[str] | None = None) -> Verdict:
    """Judge one image against "<subject> <relation> <object>" (see the module docstring for what is checked).

    ``colours``: the world's object colours (:func:`world_colours`; None: every toy colour).
    """
    detections = detect(image, (subject, obj), tolerance=tolerance, min_area=min_area, backgrounds=backgrounds,
                        colours=colours)
    names = {d.name for d in detections}
    present = (ObjectKind.parse(subject).name in names, ObjectKind.parse(obj).name in names)
    result = check_relation(detections, RelationRequest(subject, relation, obj))
    boxes = tuple((d.name, d.box) for d in detections)
    verdict = Verdict(present=present, correct=result.passed, found=result.found, reason=result.reason, boxes=boxes)
    clean = background_cleanliness(image, verdict, backgrounds=backgrounds)
    if clean < min_clean:
        reason = f"not a scene: only {clean:.0%} of the background is background colour (noise)"
        return Verdict(present=present, correct=False, found=result.found, reason=reason, boxes=boxes, noise=True,
                       clean=clean)
    return replace(verdict, clean=clean)


def background_cleanliness(image: np.ndarray, verdict: Verdict, *, backgrounds: Sequence[Colour] = DEFAULT_BACKGROUNDS,
                           tolerance: float = CLEAN_TOLERANCE, margin: int = CLEAN_MARGIN) -> float:
    """Share of the pixels outside both objects' boxes (grown by ``margin``) within ``tolerance`` of a background.

    Objects the judge did not find leave their pixels in the count (a missing object's smudge is dirt too).
    Returns 1.0 when the boxes cover the whole image.
    """
    _check_image(image)
    h, w = image.shape[:2]
    outside = np.ones((h, w), dtype=bool)
    for _, (x0, y0, x1, y1) in verdict.boxes:
        outside[max(0, int(y0) - margin):min(h, int(y1) + margin), max(0, int(x0) - margin):min(w, int(x1) + margin)] = False
    if not outside.any():
        return 1.0
    palette = np.asarray(backgrounds, dtype=np.float32)  # (K, 3)
    distances = np.linalg.norm(image.astype(np.float32)[:, :, None, :] - palette[None, None], axis=-1)  # (H, W, K)
    clean = distances.min(axis=-1) <= tolerance  # (H, W)
    return float(clean[outside].mean())
