"""Model families: every per-family fact in one table.

Each :class:`ModelFamily` says how its denoiser's attention becomes classifier input (layer order, channel count,
text length, map side) and carries the family's recipes: how the published runs steered (:class:`SteeringRecipe`)
and how their classifiers were trained (:class:`TrainingRecipe`). A family without a published classifier names the
family it ``borrows`` the missing recipes from; :meth:`ModelFamily.steering_recipe` and
:meth:`ModelFamily.training_recipe` resolve that, so no other module keeps a family table or a borrow rule. Adding a
family is one entry here plus its framework detectors (``nodes/steering.py:model_layout`` and the text encoders of
``nodes/spatial_prompt.py`` for ComfyUI, ``training/models.py`` for diffusers).

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

CLASSIFIER_SIZES: tuple[str, ...] = ("small", "large")
"""The two published classifier sizes: "small" (SD: 2-layer extractor and head, width 128) and "large" (FLUX)."""

OFFICIAL_LOSS_THRESHOLDS: tuple[float, ...] = (1e-5, 3e-5, 5e-5, 7e-5)
"""Published per-step cross-entropy early-exit thresholds: step 0 -> 1e-5, 1 -> 3e-5, 2 -> 5e-5, 3 and later 7e-5."""


def loss_threshold(thresholds: tuple[float, ...], step: int) -> float:
    """The CE early-exit threshold of denoising step ``step``: entry ``step``, the last entry for later steps.

    Raises:
        ValueError: ``step`` is negative.
    """
    if step < 0:
        raise ValueError(
            f"threshold_for() needs a denoising step index >= 0 (0 = noisiest step); got {step}. "
            "Pass the 0-based position of the step in the sampling schedule."
        )
    return thresholds[min(step, len(thresholds) - 1)]


@dataclass(frozen=True)
class SteeringRecipe:
    """How a family's published runs steered (the test-time optimisation schedule).

    Attributes:
        num_steps: length of the sampling schedule of the runs (``num_inference_steps``).
        last_step: exclusive end of steering; steps ``0 .. last_step - 1`` are steered. Other schedule lengths scale
            it by relative position (:func:`l2s_core.steps.default_last_steered_step`).
        step_size: gradient-descent step on the latent (``z <- z - step_size * dL/dz``).
        iterations: forward+backward passes per steered step (the published loop runs 15 refinements plus 1).
        loss_thresholds: per-step CE early-exit thresholds; step ``i`` uses entry ``i``, later steps the last entry.
    """

    num_steps: int
    last_step: int
    step_size: float
    iterations: int = 16
    loss_thresholds: tuple[float, ...] = OFFICIAL_LOSS_THRESHOLDS

    def __post_init__(self) -> None:
        """Check the table entry."""
        assert 1 <= self.last_step <= self.num_steps, (self.last_step, self.num_steps)
        assert self.step_size > 0 and self.iterations >= 1 and self.loss_thresholds

    @property
    def max_refinement_steps(self) -> int:
        """The published ``max_refinement_steps`` (the loop runs ``k = 0 .. max_refinement_steps``)."""
        return self.iterations - 1

    @property
    def steered_steps(self) -> tuple[int, ...]:
        """The denoising step indices that are steered: ``0 .. last_step - 1``."""
        return tuple(range(self.last_step))

    def steers(self, step: int) -> bool:
        """Return True when denoising step ``step`` (0 = noisiest) is steered."""
        return 0 <= step < self.last_step

    def threshold_for(self, step: int) -> float:
        """Return the CE early-exit threshold for denoising step ``step`` (0-based; see :func:`loss_threshold`)."""
        return loss_threshold(self.loss_thresholds, step)


@dataclass(frozen=True)
class TrainingRecipe:
    """How a family's published classifiers were trained.

    Attributes:
        num_steps: length of the inversion schedule the maps were recorded on (the classifier's step-embedding size).
        record_steps: the step indices of that schedule whose maps were recorded (the classifier's trained steps).
            Other schedule lengths scale them by relative position (:func:`l2s_core.steps.scale_step_index`).
        classifier_size: "small" or "large" (:data:`CLASSIFIER_SIZES`; the architectures are in
            :func:`l2s_core.classifier.published_config`).
        lr: AdamW learning rate.
        epochs: maximum number of epochs.
    """

    num_steps: int
    record_steps: tuple[int, ...]
    classifier_size: str
    lr: float
    epochs: int

    def __post_init__(self) -> None:
        """Check the table entry."""
        assert self.classifier_size in CLASSIFIER_SIZES, self.classifier_size
        assert self.record_steps and all(0 <= s < self.num_steps for s in self.record_steps), self.record_steps
        assert self.lr > 0 and self.epochs >= 1


@dataclass(frozen=True)
class ModelFamily:
    """One denoiser family: its attention layout and its recipes.

    Attributes:
        name: Canonical key, e.g. ``"sd2"`` or ``"flux_dev"``.
        display: Human-readable name for messages and UI, e.g. ``"SD2.x"``.
        series: The architecture line shared by families with the same attention layout (``"FLUX.1"`` for both
            FLUX families); used to name a channel count.
        layout: ``"unet"`` (channels ordered by resolution ascending, then layer call order, then head) or
            ``"joint"`` (MMDiT/FLUX: blocks in call order, double before single, then head).
        channels: Attention channels (recorded layers x heads) the family's classifier sees, or ``None`` when it
            depends on the model config/resolution (no published classifier).
        text_tokens: Length of the text axis of the attention maps (77 CLIP, 512 T5 for the published FLUX runs,
            154 = 77 CLIP + 77 T5 for SD3 in ComfyUI).
        map_size: Side of the square maps the classifier takes (16 for every published checkpoint).
        default_resolution: Image side in pixels of the published runs (or the model's native size when there is no
            published classifier).
        published: True when the paper's authors released a classifier checkpoint for the family.
        steering: The family's own steering recipe, or ``None`` to borrow one.
        training: The family's own training recipe, or ``None`` to borrow one.
        borrows: The family whose recipes fill in the ``None`` ones (the nearest published family).
        aliases: Extra accepted spellings for :func:`get_family` (matched case-insensitively, ignoring ``-_. ``).
    """

    name: str
    display: str
    series: str
    layout: str
    channels: int | None
    text_tokens: int
    map_size: int = 16
    default_resolution: int | None = None
    published: bool = False
    steering: SteeringRecipe | None = None
    training: TrainingRecipe | None = None
    borrows: str | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check internal consistency of the constant table."""
        assert self.layout in LAYOUTS, self.layout
        assert self.channels is None or self.channels > 0, self.channels
        assert self.text_tokens > 0 and self.map_size > 0
        assert self.borrows is not None or (self.steering is not None and self.training is not None), self.name
        assert not self.published or (self.steering is not None and self.training is not None), self.name

    def steering_recipe(self) -> SteeringRecipe:
        """The family's steering recipe, or the one it borrows."""
        if self.steering is not None:
            return self.steering
        return get_family(str(self.borrows)).steering_recipe()

    def training_source(self) -> ModelFamily:
        """The family whose training recipe (and published classifier architecture) this family uses."""
        return self if self.training is not None else get_family(str(self.borrows)).training_source()

    def training_recipe(self) -> TrainingRecipe:
        """The family's training recipe, or the one it borrows."""
        recipe = self.training_source().training
        assert recipe is not None
        return recipe


_SD_RECORD_STEPS: tuple[int, ...] = (5, 10, 15, 20, 25, 49)
"""Published record steps of every 50-step family (SD1.4, SD2.1, FLUX.1-dev)."""

_FAMILY_LIST: tuple[ModelFamily, ...] = (
    ModelFamily(
        name="sd14",
        display="SD1.x",
        series="SD1.x",
        layout=UNET,
        channels=128,  # 16 cross-attention layers x 8 heads
        text_tokens=77,
        default_resolution=512,
        published=True,
        steering=SteeringRecipe(num_steps=50, last_step=25, step_size=7.5),
        training=TrainingRecipe(num_steps=50, record_steps=_SD_RECORD_STEPS, classifier_size="small", lr=1e-4,
                                epochs=150),
        aliases=("sd1", "sd15", "sd1.4", "sd1.5", "sd1.x", "sdv1", "sd-v1-4", "sd-v1-5"),
    ),
    ModelFamily(
        name="sd2",
        display="SD2.x",
        series="SD2.x",
        layout=UNET,
        channels=195,  # 20 (8x8) + 5x20 (16x16) + 5x10 (32x32) + 5x5 (64x64)
        text_tokens=77,
        default_resolution=512,
        published=True,
        steering=SteeringRecipe(num_steps=50, last_step=25, step_size=5.0),
        training=TrainingRecipe(num_steps=50, record_steps=_SD_RECORD_STEPS, classifier_size="small", lr=1e-4,
                                epochs=100),
        aliases=("sd20", "sd21", "sd2.0", "sd2.1", "sd2.x", "sdv2", "sd21base", "sd2.1-base"),
    ),
    ModelFamily(
        name="sdxl",
        display="SDXL",
        series="SDXL",
        layout=UNET,
        channels=None,
        text_tokens=77,
        default_resolution=1024,
        borrows="sd2",  # the nearest published UNet family
        aliases=("xl", "sd-xl", "sdxl1.0"),
    ),
    ModelFamily(
        name="sd3",
        display="SD3",
        series="SD3",
        layout=JOINT,
        channels=None,
        text_tokens=154,  # 77 CLIP positions followed by T5 (min 77): usually 154
        default_resolution=1024,
        borrows="flux_dev",  # the nearest published joint-attention family
        aliases=("sd3.0", "sd35", "sd3.5"),
    ),
    ModelFamily(
        name="flux_schnell",
        display="FLUX.1-schnell",
        series="FLUX.1",
        layout=JOINT,
        channels=1368,  # (19 double + 38 single) x 24 heads
        text_tokens=512,
        default_resolution=256,
        published=True,
        steering=SteeringRecipe(num_steps=4, last_step=1, step_size=5.0),
        training=TrainingRecipe(num_steps=4, record_steps=(1, 3), classifier_size="large", lr=5e-5, epochs=200),
        aliases=("schnell", "flux1-schnell", "flux.1-schnell"),
    ),
    ModelFamily(
        name="flux_dev",
        display="FLUX.1-dev",
        series="FLUX.1",
        layout=JOINT,
        channels=1368,
        text_tokens=512,
        default_resolution=512,
        published=True,
        steering=SteeringRecipe(num_steps=50, last_step=25, step_size=5.0),
        training=TrainingRecipe(num_steps=50, record_steps=_SD_RECORD_STEPS, classifier_size="large", lr=5e-5,
                                epochs=200),
        aliases=("flux1-dev", "flux.1-dev"),
    ),
    ModelFamily(
        name="toy",
        display="Toy world",
        series="Toy world",
        layout=UNET,
        channels=None,
        text_tokens=77,
        default_resolution=128,
        # The toy world's latents are mean colours per 8x8 cell at unit scale; SD2.1's step of 5 overshoots there
        # (measured on the toy benchmark: README, "Toy world"), so the toy family has its own step size.
        steering=SteeringRecipe(num_steps=20, last_step=10, step_size=1.0),
        borrows="sd2",  # training recipe and classifier architecture
        aliases=("toy-world", "toyworld"),
    ),
)

FAMILIES: Mapping[str, ModelFamily] = MappingProxyType({f.name: f for f in _FAMILY_LIST})

PUBLISHED_FAMILIES: tuple[str, ...] = tuple(f.name for f in _FAMILY_LIST if f.published)
"""The families the paper's authors released classifiers for: sd14, sd2, flux_schnell, flux_dev."""


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
