"""Model families: the facts about each denoiser that decide how its attention becomes classifier input.

This module owns the per-family constants of method.md §0, §4.2, §4.3 and §4.5: how recorded layers are ordered
(``"unet"``: by resolution, then call order; ``"joint"``: MMDiT/FLUX block call order), how many attention channels
the official classifier for the family expects, how long the text sequence in the attention maps is, whether that
sequence starts with a CLIP start-of-text token, and whether a single-grid model's maps are renormalised. It also
names channel counts in error messages (:func:`describe_channel_count`).

Nothing here depends on torch; the other modules look families up by name with :func:`get_family`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

logger = logging.getLogger(__name__)

UNET = "unet"
JOINT = "joint"
LAYOUTS: tuple[str, ...] = (UNET, JOINT)


@dataclass(frozen=True)
class ModelFamily:
    """One denoiser family and the attention layout its classifiers are trained on.

    Attributes:
        name: Canonical key, e.g. ``"sd2"`` or ``"flux_dev"``.
        display: Human-readable name for messages and UI, e.g. ``"SD2.x"``.
        series: The architecture line shared by families with the same attention layout (``"FLUX.1"`` for both
            FLUX families); used to name a channel count.
        layout: ``"unet"`` (channels ordered by resolution ascending, then layer call order, then head; §4.2) or
            ``"joint"`` (MMDiT/FLUX: blocks in call order, double before single, then head; §4.3).
        channels: Attention channels (recorded layers x heads) the family's classifier sees, or ``None`` when it
            depends on the model config/resolution (no official classifier).
        text_tokens: Length of the text axis of the attention maps (77 CLIP, 512 T5 for the official FLUX runs,
            154 = 77 CLIP + 77 T5 for SD3 in ComfyUI).
        start_token: True when text position 0 is a CLIP start-of-text token (word positions then start at 1).
        renormalise_single_grid: For models whose maps come from one token grid (MMDiT/FLUX): whether the maps the
            classifier was trained on were renormalised to sum 1 per map. The official rule (§4.5) renormalises
            only when the grid was resized, so this is True for FLUX-dev (trained at 32, resized to 16) and False
            for FLUX-schnell (trained at 16, raw text-softmax probabilities). Multi-resolution (UNet) maps are
            always renormalised, whatever this says.
        map_size: Side of the square maps the classifier takes (16 for every official checkpoint).
        official_grid: Token grid side of the official training/inference runs (FLUX-dev 32, schnell 16), or
            ``None`` when the official maps come from several grids (SD) or there is no official classifier.
        default_resolution: Image side in pixels of the official runs (or the model's native size when there is no
            official classifier).
        official_num_steps: Sampling steps of the official runs (50, schnell 4), or ``None``.
        aliases: Extra accepted spellings for :func:`get_family` (matched case-insensitively, ignoring ``-_. ``).
    """

    name: str
    display: str
    series: str
    layout: str
    channels: int | None
    text_tokens: int
    start_token: bool
    renormalise_single_grid: bool
    map_size: int = 16
    official_grid: int | None = None
    default_resolution: int | None = None
    official_num_steps: int | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check internal consistency of the constant table."""
        assert self.layout in LAYOUTS, self.layout
        assert self.channels is None or self.channels > 0, self.channels
        assert self.text_tokens > 0 and self.map_size > 0


_FAMILY_LIST: tuple[ModelFamily, ...] = (
    ModelFamily(
        name="sd14",
        display="SD1.x",
        series="SD1.x",
        layout=UNET,
        channels=128,  # 16 cross-attention layers x 8 heads (§4.2)
        text_tokens=77,
        start_token=True,
        renormalise_single_grid=True,
        default_resolution=512,
        official_num_steps=50,
        aliases=("sd1", "sd15", "sd1.4", "sd1.5", "sd1.x", "sdv1", "sd-v1-4", "sd-v1-5"),
    ),
    ModelFamily(
        name="sd2",
        display="SD2.x",
        series="SD2.x",
        layout=UNET,
        channels=195,  # 20 (8x8) + 5x20 (16x16) + 5x10 (32x32) + 5x5 (64x64) (§4.2)
        text_tokens=77,
        start_token=True,
        renormalise_single_grid=True,
        default_resolution=512,
        official_num_steps=50,
        aliases=("sd20", "sd21", "sd2.0", "sd2.1", "sd2.x", "sdv2", "sd21base", "sd2.1-base"),
    ),
    ModelFamily(
        name="sdxl",
        display="SDXL",
        series="SDXL",
        layout=UNET,
        channels=None,
        text_tokens=77,
        start_token=True,
        renormalise_single_grid=True,
        default_resolution=1024,
        aliases=("xl", "sd-xl", "sdxl1.0"),
    ),
    ModelFamily(
        name="sd3",
        display="SD3",
        series="SD3",
        layout=JOINT,
        channels=None,
        text_tokens=154,  # 77 CLIP positions followed by T5 (min 77): usually 154
        start_token=True,  # the sequence opens with the CLIP chunk, whose position 0 is the start token
        renormalise_single_grid=True,
        default_resolution=1024,
        aliases=("sd3.0", "sd35", "sd3.5"),
    ),
    ModelFamily(
        name="flux_schnell",
        display="FLUX.1-schnell",
        series="FLUX.1",
        layout=JOINT,
        channels=1368,  # (19 double + 38 single) x 24 heads (§4.3)
        text_tokens=512,
        start_token=False,
        renormalise_single_grid=False,  # official maps at 16x16 are raw (§4.5)
        official_grid=16,
        default_resolution=256,
        official_num_steps=4,
        aliases=("schnell", "flux1-schnell", "flux.1-schnell"),
    ),
    ModelFamily(
        name="flux_dev",
        display="FLUX.1-dev",
        series="FLUX.1",
        layout=JOINT,
        channels=1368,
        text_tokens=512,
        start_token=False,
        renormalise_single_grid=True,  # official maps recorded at 32x32, resized to 16 and renormalised (§4.5)
        official_grid=32,
        default_resolution=512,
        official_num_steps=50,
        aliases=("flux1-dev", "flux.1-dev"),
    ),
    ModelFamily(
        name="toy",
        display="Toy world",
        series="Toy world",
        layout=UNET,
        channels=None,
        text_tokens=77,
        start_token=True,
        renormalise_single_grid=True,
        aliases=("toy-world", "toyworld"),
    ),
)

FAMILIES: Mapping[str, ModelFamily] = MappingProxyType({f.name: f for f in _FAMILY_LIST})


def _normalise_key(name: str) -> str:
    """Lower-case a family spelling and drop separators, so "Flux.1-Dev" and "flux_1_dev" compare equal."""
    return "".join(ch for ch in name.strip().lower() if ch not in "-_. ")


def _build_alias_index(families: tuple[ModelFamily, ...]) -> Mapping[str, str]:
    """Map every normalised spelling (name, display name, aliases) to the canonical family name."""
    index: dict[str, str] = {}
    for fam in families:
        for spelling in (fam.name, fam.display, *fam.aliases):
            key = _normalise_key(spelling)
            assert index.get(key, fam.name) == fam.name, f"alias {spelling!r} is ambiguous"
            index[key] = fam.name
    return MappingProxyType(index)


_ALIAS_INDEX: Mapping[str, str] = _build_alias_index(_FAMILY_LIST)


def get_family(name: str) -> ModelFamily:
    """Look a model family up by name, display name or alias.

    Matching ignores case and the separators ``-``, ``_``, ``.`` and spaces, so ``"flux-dev"``, ``"FLUX.1-dev"``,
    ``"sd21"``, ``"SD1.5"`` and ``"flux_schnell"`` all resolve.

    Args:
        name: The family as written by a user or stored in a checkpoint.

    Returns:
        The :class:`ModelFamily`.

    Raises:
        ValueError: the name matches no family; the message lists the known ones.
    """
    if not isinstance(name, str):
        raise ValueError(f"A model family name must be a string such as 'sd2' or 'flux_dev', got {name!r}.")
    key = _normalise_key(name)
    if key in _ALIAS_INDEX:
        return FAMILIES[_ALIAS_INDEX[key]]
    known = ", ".join(f"{f.name} ({f.display})" for f in _FAMILY_LIST)
    raise ValueError(
        f"Unknown model family {name!r}. Known families: {known}. "
        "Aliases such as 'sd15', 'sd21', 'flux-dev' or 'schnell' are accepted (case-insensitive)."
    )


def describe_channel_count(channels: int) -> str:
    """Name the architecture that produces a given number of attention channels.

    Args:
        channels: Attention channels (layers x heads), e.g. 195.

    Returns:
        The architecture series, e.g. ``"SD1.x"`` (128), ``"SD2.x"`` (195), ``"FLUX.1"`` (1368), or
        ``"an unknown architecture"`` when no known family has that count.
    """
    series: list[str] = []
    for fam in _FAMILY_LIST:
        if fam.channels is not None and fam.channels == channels and fam.series not in series:
            series.append(fam.series)
    if not series:
        return "an unknown architecture"
    return " or ".join(series)
