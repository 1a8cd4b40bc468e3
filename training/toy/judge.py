"""Judge generated toy images with exact colour geometry: find each named object by its flat colour, then apply the
GenEval position rule (:mod:`training.geometry`) to the boxes.

Every toy kind has its own colour (:data:`training.synthetic.COLOURS`) and the backgrounds are tints that no object
uses, so an object is found without a learned detector: the pixels whose nearest palette colour (all object colours
and all backgrounds) is the object's colour and that lie within ``tolerance`` (Euclidean RGB distance) of it, the
largest 4-connected component of them, and the tight box of that component. An object is present when that
component has at least ``min_pixels`` pixels. Nearest-colour assignment keeps a generated image's slightly shifted
colours on their object while blended edge pixels (closer to the background) are left out.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..geometry import Detection, RelationRequest, check_relation
from ..synthetic import BACKGROUNDS, COLOURS, ObjectKind

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 100.0
DEFAULT_MIN_PIXELS = 12


@dataclass(frozen=True)
class Verdict:
    """The judgement of one image for one requested relation.

    Attributes:
        present: Whether each of (subject, object) was found.
        correct: Both present and the requested relation holds under the GenEval rule.
        found: The relations that hold between the two boxes.
        reason: Why it failed ("" when correct).
    """

    present: tuple[bool, bool]
    correct: bool
    found: tuple[str, ...]
    reason: str


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


def detect(image: np.ndarray, names: Sequence[str], *, tolerance: float = DEFAULT_TOLERANCE,
           min_pixels: int = DEFAULT_MIN_PIXELS) -> list[Detection]:
    """Find the named toy objects in an RGB image ``(H, W, 3)`` uint8; absent objects are left out.

    The detection score is the component's pixel count.

    Raises:
        ValueError: the image is not ``(H, W, 3)``, or a name is not a toy kind.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"detect expects an RGB image (H, W, 3), got shape {tuple(image.shape)}.")
    pixels = image.astype(np.float32)
    palette = np.asarray([*COLOURS.values(), *BACKGROUNDS], dtype=np.float32)  # (P, 3)
    distances = np.linalg.norm(pixels[:, :, None, :] - palette[None, None], axis=-1)  # (H, W, P)
    nearest = distances.argmin(axis=-1)  # (H, W)
    found: list[Detection] = []
    for name in names:
        kind = ObjectKind.parse(name)
        index = list(COLOURS).index(kind.colour)
        component = _largest_component((nearest == index) & (distances[:, :, index] <= tolerance))
        if component is not None and component[0] >= min_pixels:
            found.append(Detection(name=kind.name, box=tuple(float(v) for v in component[1]), score=float(component[0])))
    return found


def judge(image: np.ndarray, subject: str, relation: str, obj: str, *, tolerance: float = DEFAULT_TOLERANCE,
          min_pixels: int = DEFAULT_MIN_PIXELS) -> Verdict:
    """Judge one image against "<subject> <relation> <object>"."""
    detections = detect(image, (subject, obj), tolerance=tolerance, min_pixels=min_pixels)
    names = {d.name for d in detections}
    present = (ObjectKind.parse(subject).name in names, ObjectKind.parse(obj).name in names)
    result = check_relation(detections, RelationRequest(subject, relation, obj))
    return Verdict(present=present, correct=result.passed, found=result.found, reason=result.reason)
