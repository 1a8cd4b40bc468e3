"""Official test-time-optimisation defaults per model family (method.md §0, §5.2, §5.3).

This module owns the steering schedule the official ``run.py`` uses for each published classifier: how many
denoising steps the schedule has, which of them are steered, the gradient step size, how many forward+backward
passes each steered step gets, and the per-step cross-entropy early-exit thresholds. Sampler settings (CFG, FLUX
guidance, resolution, model dtype) are carried as plain fields so that docs and nodes can show them; nothing here
applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Official per-step CE early-exit thresholds, keyed by denoising step: 0 -> 1e-5, 1 -> 3e-5, 2 -> 5e-5, 3+ -> 7e-5.
OFFICIAL_LOSS_THRESHOLDS: tuple[float, ...] = (1e-5, 3e-5, 5e-5, 7e-5)


@dataclass(frozen=True)
class SteeringPreset:
    """The official steering schedule of one model family.

    Attributes:
        name: canonical key in :data:`PRESETS` ("sd14", "sd2", "flux_schnell", "flux_dev").
        display: human-readable model name.
        num_steps: length of the official sampling schedule (``num_inference_steps``).
        last_step: the official ``end_idx``; steps ``0 .. last_step - 1`` are steered.
        step_size: gradient-descent step size on the latent (``z <- z - step_size * dL/dz``).
        iterations: forward+backward passes per steered step (official ``max_refinement_steps`` 15, plus 1).
        loss_thresholds: per-step CE thresholds; step ``i`` uses entry ``i``, later steps the last entry.
        cfg: classifier-free guidance scale of the official runs, or None where the model has no CFG (FLUX).
        guidance: FLUX distilled guidance embedding value, or None where the model has none.
        resolution: official image side in pixels (square images).
        model_dtype: dtype the official code ran the denoiser in ("fp32" or "bf16").
    """

    name: str
    display: str
    num_steps: int
    last_step: int
    step_size: float
    iterations: int
    loss_thresholds: tuple[float, ...]
    cfg: float | None
    guidance: float | None
    resolution: int
    model_dtype: str

    @property
    def max_refinement_steps(self) -> int:
        """The official ``max_refinement_steps`` value (the loop runs ``k = 0 .. max_refinement_steps``)."""
        return self.iterations - 1

    @property
    def steered_steps(self) -> tuple[int, ...]:
        """The denoising step indices that are steered: ``0 .. last_step - 1``."""
        return tuple(range(self.last_step))

    def steers(self, step: int) -> bool:
        """Return True when denoising step ``step`` (0 = noisiest) is steered (official ``should_run``)."""
        return 0 <= step < self.last_step

    def threshold_for(self, step: int) -> float:
        """Return the CE early-exit threshold for denoising step ``step``.

        Args:
            step: 0-based denoising step index (0 = noisiest).

        Raises:
            ValueError: ``step`` is negative.
        """
        if step < 0:
            raise ValueError(
                f"threshold_for() needs a denoising step index >= 0 (0 = noisiest step); got {step}. "
                "Pass the 0-based position of the step in the sampling schedule."
            )
        return self.loss_thresholds[min(step, len(self.loss_thresholds) - 1)]


PRESETS: dict[str, SteeringPreset] = {
    "sd14": SteeringPreset(
        name="sd14",
        display="Stable Diffusion 1.4",
        num_steps=50,
        last_step=25,
        step_size=7.5,
        iterations=16,
        loss_thresholds=OFFICIAL_LOSS_THRESHOLDS,
        cfg=7.5,
        guidance=None,
        resolution=512,
        model_dtype="fp32",
    ),
    "sd2": SteeringPreset(
        name="sd2",
        display="Stable Diffusion 2.1-base",
        num_steps=50,
        last_step=25,
        step_size=5.0,
        iterations=16,
        loss_thresholds=OFFICIAL_LOSS_THRESHOLDS,
        cfg=7.5,
        guidance=None,
        resolution=512,
        model_dtype="fp32",
    ),
    "flux_schnell": SteeringPreset(
        name="flux_schnell",
        display="FLUX.1-schnell",
        num_steps=4,
        last_step=1,
        step_size=5.0,
        iterations=16,
        loss_thresholds=OFFICIAL_LOSS_THRESHOLDS,
        cfg=None,
        guidance=None,
        resolution=256,
        model_dtype="bf16",
    ),
    "flux_dev": SteeringPreset(
        name="flux_dev",
        display="FLUX.1-dev",
        num_steps=50,
        last_step=25,
        step_size=5.0,
        iterations=16,
        loss_thresholds=OFFICIAL_LOSS_THRESHOLDS,
        cfg=None,
        guidance=3.5,
        resolution=512,
        model_dtype="bf16",
    ),
}

_ALIASES: dict[str, str] = {
    "sd1_4": "sd14",
    "sd_1_4": "sd14",
    "sd21": "sd2",
    "sd2_1": "sd2",
    "sd_2_1": "sd2",
    "sd2_1_base": "sd2",
    "flux_1_schnell": "flux_schnell",
    "flux1_schnell": "flux_schnell",
    "schnell": "flux_schnell",
    "flux_1_dev": "flux_dev",
    "flux1_dev": "flux_dev",
    "dev": "flux_dev",
}


def get_preset(name: str) -> SteeringPreset:
    """Return the official preset for a model family.

    Accepts the canonical keys and common spellings: "flux-dev", "FLUX.1-dev", "flux_schnell", "SD2.1", "sd1.4".

    Args:
        name: family name.

    Raises:
        ValueError: the name is not a known family; the message lists the known names.
    """
    key = "_".join(name.strip().lower().replace("-", " ").replace(".", " ").replace("_", " ").split())
    key = _ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    known = ", ".join(repr(k) for k in PRESETS)
    raise ValueError(
        f"Unknown steering preset {name!r}. Known presets: {known} "
        "(hyphens and 'FLUX.1-' spellings such as 'flux-dev' are accepted)."
    )


# Families without an official classifier borrow the preset of the nearest published one: UNet families the SD2.1
# settings, joint-attention families the FLUX.1-dev settings. Step counts are rescaled by the caller.
_BORROWED_PRESETS: dict[str, str] = {"sdxl": "sd2", "toy": "sd2", "sd3": "flux_dev"}


def preset_for_family(family: str) -> SteeringPreset:
    """The preset a classifier of ``family`` (a canonical l2s_core.families name) steers with by default.

    Official families get their own preset; SDXL and the toy world borrow SD2.1's, SD3 borrows FLUX.1-dev's.

    Raises:
        ValueError: unknown family.
    """
    return get_preset(_BORROWED_PRESETS.get(family, family))
