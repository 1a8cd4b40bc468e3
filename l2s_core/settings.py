"""Steering settings: what a user asks for (:class:`SteeringOptions`) and what a run uses (:class:`SteeringSettings`).

This module owns the resolution of the user's steering inputs against the steering recipe of the classifier's
family (:meth:`.families.ModelFamily.steering_recipe`) once the length of the schedule is known. The ComfyUI nodes and the toy-world benchmark
share it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .families import OFFICIAL_LOSS_THRESHOLDS, get_family, loss_threshold
from .overlap import check_overlap_weight
from .steps import ScheduleWindow
from .update_rule import OFFICIAL_UPDATE, UpdateRule


@dataclass(frozen=True)
class SteeringSettings:
    """How hard and how long to steer.

    Attributes:
        last_step: steps 0 .. last_step-1 of the schedule are steered (0 turns steering off).
        step_size: gradient step on the scaled latent (official: 5; 7.5 for SD1.4).
        iterations: forward/backward passes per steered step (official: 16).
        loss_thresholds: per-step cross-entropy below which a sample stops (official 1e-5, 3e-5, 5e-5, then 7e-5).
        early_stop_probability: optional; a sample stops once the classifier gives the target this probability.
        update_rule: how a gradient becomes an update of the latent (official: a plain gradient step).
        settle: a sample whose steered step starts with the classifier already at ``early_stop_probability`` (so
            nothing was changed) is not steered at the later steps; needs ``early_stop_probability``.
        overlap_weight: weight of the attention-overlap term (:mod:`.overlap`) added to the classifier's loss
            (official: 0, the classifier's loss alone).
    """

    last_step: int
    step_size: float
    iterations: int
    loss_thresholds: tuple[float, ...] = OFFICIAL_LOSS_THRESHOLDS
    early_stop_probability: float | None = None
    update_rule: UpdateRule = OFFICIAL_UPDATE
    settle: bool = False
    overlap_weight: float = 0.0

    def __post_init__(self) -> None:
        check_overlap_weight(self.overlap_weight)
        if self.settle and self.early_stop_probability is None:
            raise ValueError("settle needs an early-stop probability: a sample settles when a step starts with the "
                             "classifier already that sure.")

    def threshold_for(self, step: int) -> float:
        """The cross-entropy threshold of denoising step ``step`` (the last entry for later steps)."""
        return loss_threshold(self.loss_thresholds, step)


@dataclass(frozen=True)
class SteeringOptions:
    """The node's steering inputs; ``None`` means "the steering recipe of the classifier's family".

    ``steered_share`` (used only when ``last_step`` is None) keeps the first part of the recipe's steered range,
    rounded to whole steps with at least one kept: 0.5 steers the first 5 of the 10 steps the recipe steers.

    Resolved per run by :meth:`resolve`, because the number of steps is known only when sampling starts.
    """

    last_step: int | None = None
    step_size: float | None = None
    iterations: int | None = None
    early_stop_probability: float | None = None
    update_rule: UpdateRule = OFFICIAL_UPDATE
    steered_share: float | None = None
    settle: bool = False
    overlap_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.steered_share is not None and not 0 < self.steered_share <= 1:
            raise ValueError(f"steered_share must be in (0, 1] or None (all of the default range); got "
                             f"{self.steered_share!r}.")

    def resolve(self, num_steps: int, family: str, window: ScheduleWindow | None = None) -> SteeringSettings:
        """Fill the unset fields from the family's steering recipe, scaled to a ``num_steps`` schedule.

        Args:
            num_steps: length of the schedule being sampled.
            family: the classifier's family (selects the recipe).
            window: where the schedule sits in the from-noise run it is part of (img2img: ComfyUI's KSampler runs
                the last ``steps`` of ``int(steps / denoise)``); None for a whole run from pure noise. The default
                steered range then covers the steps whose place in the full run the recipe steers, which
                is none when the schedule starts past it (:meth:`.steps.ScheduleWindow.default_steered_steps`).
        """
        recipe = get_family(family).steering_recipe()
        window = ScheduleWindow.from_noise(num_steps) if window is None else window
        if window.num_steps != num_steps:
            raise ValueError(f"The schedule window has {window.num_steps} steps, the schedule {num_steps}.")
        last_step = self.last_step
        if last_step is None:
            last_step = window.default_steered_steps(recipe.last_step, recipe.num_steps)
            if self.steered_share is not None and last_step > 0:
                last_step = max(1, round(last_step * self.steered_share))
        return SteeringSettings(
            last_step=min(last_step, num_steps),
            step_size=recipe.step_size if self.step_size is None else self.step_size,
            iterations=recipe.iterations if self.iterations is None else self.iterations,
            loss_thresholds=recipe.loss_thresholds,
            early_stop_probability=self.early_stop_probability,
            update_rule=self.update_rule,
            settle=self.settle,
            overlap_weight=self.overlap_weight,
        )
