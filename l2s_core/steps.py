"""Step indices: which step embedding the classifier gets at each sampling step, and how far steering runs.

This module owns the official lookup table from the sampling step to the classifier's trained step index
(``assign_by_intervals``), our extension to schedules whose length differs from the one the classifier was trained
on (map by relative position), and the matching default for how many steps to steer.
It also places partial schedules (img2img, split sigmas) in the from-noise schedule they are the tail of, so that
both the classifier step and the default steered range follow the noise level rather than the position in the
shortened schedule, and derives the per-step seeds of steered sampler calls.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .fields import as_index

logger = logging.getLogger(__name__)


def _checked_trained_steps(trained_steps: Sequence[int]) -> list[int]:
    """Validate the trained step indices (non-empty, integers >= 0) and return them sorted ascending."""
    if len(trained_steps) == 0:
        raise ValueError(
            "The classifier's trained step indices are empty; expected e.g. [5, 10, 15, 20, 25, 49] (50-step "
            "models) or [1, 3] (FLUX-schnell). Read them from the checkpoint's training config."
        )
    steps = [as_index(a, "A trained step index") for a in trained_steps]
    negative = [a for a in steps if a < 0]
    if negative:
        raise ValueError(f"Trained step indices must be >= 0, got {negative} in {steps}.")
    return sorted(steps)


def step_index_table(trained_steps: Sequence[int], num_steps: int) -> list[int]:
    """Build the official table from sampling step to classifier step index.

    With ``A`` the trained indices sorted ascending, every step from the previous trained index + 1 up to ``a``
    (clipped at ``num_steps - 1``) gets ``a``; the first interval starts at 0. In words: each step uses the next
    trained index at or after it. Steps after the last trained index keep 0 (official behaviour; with the official
    lists, which end at ``num_steps - 1``, no step is after it). A trained index beyond the schedule still fills
    the remaining steps with its own value, as in the official code.

    Examples:
        ``step_index_table([1, 3], 4) == [1, 1, 3, 3]`` (FLUX-schnell);
        ``step_index_table([5, 10, 15, 20, 25, 49], 50)`` maps steps 0-5 to 5, 6-10 to 10, ..., 26-49 to 49;
        ``step_index_table([1, 2], 5) == [1, 1, 2, 0, 0]``.

    Args:
        trained_steps: Step indices the classifier was trained on (any order).
        num_steps: Length ``N`` of the sampling schedule.

    Returns:
        A list of length ``num_steps``.

    Raises:
        ValueError: ``trained_steps`` is empty or has negative/non-integer entries, or ``num_steps < 1``.
    """
    steps = _checked_trained_steps(trained_steps)
    num_steps = as_index(num_steps, "The number of sampling steps")
    if num_steps < 1:
        raise ValueError(f"The number of sampling steps must be >= 1, got {num_steps}.")
    table = [0] * num_steps
    start = 0
    for a in steps:
        for i in range(start, min(a, num_steps - 1) + 1):
            table[i] = a
        start = max(start, a + 1)
    return table


def _round_half_up_ratio(numerator: int, denominator: int) -> int:
    """``round(numerator / denominator)`` with ties rounded up, in exact integer arithmetic (both >= 0)."""
    return (2 * numerator + denominator) // (2 * denominator)


def scale_step_index(index: int, from_steps: int, to_steps: int) -> int:
    """Move step ``index`` of a ``from_steps`` schedule to a ``to_steps`` schedule by relative position.

    ``round(index * (to_steps - 1) / (from_steps - 1))`` with ties rounded up, so the first step stays first and
    the last stays last (e.g. step 49 of 50 -> 24 of 25; step 1 of 4 -> 2 of 8).

    Raises:
        ValueError: a count is not a positive integer, or ``index`` is outside ``0 .. from_steps - 1``.
    """
    index = as_index(index, "The step index")
    from_steps = as_index(from_steps, "The source schedule length")
    to_steps = as_index(to_steps, "The target schedule length")
    if from_steps < 1 or to_steps < 1 or not 0 <= index < from_steps:
        raise ValueError(
            f"Cannot scale step {index} of a {from_steps}-step schedule to {to_steps} steps: schedule lengths must "
            "be >= 1 and the step inside 0 .. length - 1."
        )
    return _round_half_up_ratio(index * (to_steps - 1), max(from_steps - 1, 1))


def classifier_step_index(step: int, num_steps: int, trained_steps: Sequence[int], trained_num_steps: int) -> int:
    """The step index to feed the classifier at sampling step ``step``.

    When the schedule has the training length (``num_steps == trained_num_steps``) this is the official table
    (:func:`step_index_table`). Otherwise the step is first mapped to the training schedule by relative position,
    ``i' = round(step * (trained_num_steps - 1) / max(num_steps - 1, 1))`` (ties rounded up, exact integer
    arithmetic), and the table of the training schedule is read at ``i'``. So the first step maps to the first
    trained bucket and the last step to the end of the training schedule, and the mapping is monotone.

    Why relative position: the classifier's step embedding stands for how noisy the latent is at that point of the
    training schedule. Without the sigmas, the relative position in the schedule is the closest proxy for the noise
    level; it is a design choice, not part of the official code, and classifiers were only
    validated at their training length.

    Args:
        step: 0-based sampling step, ``0 <= step < num_steps`` (0 = noisiest).
        num_steps: Length of the schedule being sampled.
        trained_steps: Step indices the classifier was trained on, each in ``[0, trained_num_steps)``.
        trained_num_steps: Length of the schedule the classifier was trained with (50, schnell 4).

    Returns:
        The classifier step index (an entry of ``trained_steps``, or 0 after the last trained index).

    Raises:
        ValueError: a step or count is out of range, or ``trained_steps`` is empty or leaves
            ``[0, trained_num_steps)``.
    """
    step = as_index(step, "The sampling step")
    num_steps = as_index(num_steps, "The number of sampling steps")
    trained_num_steps = as_index(trained_num_steps, "The classifier's training schedule length")
    if num_steps < 1:
        raise ValueError(f"The number of sampling steps must be >= 1, got {num_steps}.")
    if trained_num_steps < 1:
        raise ValueError(f"The classifier's training schedule length must be >= 1, got {trained_num_steps}.")
    if not 0 <= step < num_steps:
        raise ValueError(
            f"Sampling step {step} is outside the schedule of {num_steps} steps (valid: 0..{num_steps - 1})."
        )
    steps = _checked_trained_steps(trained_steps)
    outside = [a for a in steps if a >= trained_num_steps]
    if outside:
        raise ValueError(
            f"Trained step indices {outside} do not fit a training schedule of {trained_num_steps} steps "
            f"(valid: 0..{trained_num_steps - 1}). Check the checkpoint's trained steps and schedule length."
        )
    table = step_index_table(steps, trained_num_steps)
    if num_steps == trained_num_steps:
        return table[step]
    mapped = _round_half_up_ratio(step * (trained_num_steps - 1), max(num_steps - 1, 1))
    return table[mapped]


def default_last_steered_step(num_steps: int, official_last_step: int, official_num_steps: int) -> int:
    """Scale the official steering end to a schedule of another length, by relative position.

    The official runs steer steps ``0 .. end_idx - 1`` with ``end_idx`` 25 of 50 (SD, FLUX-dev) and 1 of 4
    (FLUX-schnell). ``official_last_step`` is that exclusive end; the result is the exclusive end for
    ``num_steps``: ``round(official_last_step * num_steps / official_num_steps)`` (ties up), at least 1 and at most
    ``num_steps``. E.g. 25 of 50 -> 10 of 20; 1 of 4 -> 2 of 8, and 1 for a 1-step schedule.

    Args:
        num_steps: Length of the schedule being sampled.
        official_last_step: Official exclusive end of steering (``end_idx``), ``1 <= . <= official_num_steps``.
        official_num_steps: Length of the official schedule.

    Returns:
        The number of leading steps to steer (steps ``0 .. result - 1``).

    Raises:
        ValueError: a count is not a positive integer or ``official_last_step`` exceeds ``official_num_steps``.
    """
    num_steps = as_index(num_steps, "The number of sampling steps")
    official_last_step = as_index(official_last_step, "The official last steered step")
    official_num_steps = as_index(official_num_steps, "The official number of steps")
    if num_steps < 1 or official_num_steps < 1:
        raise ValueError(
            f"Step counts must be >= 1, got num_steps={num_steps}, official_num_steps={official_num_steps}."
        )
    if not 1 <= official_last_step <= official_num_steps:
        raise ValueError(
            f"The official steering end must be in 1..{official_num_steps} (steps 0..end-1 are steered), "
            f"got {official_last_step}."
        )
    scaled = _round_half_up_ratio(official_last_step * num_steps, official_num_steps)
    return min(max(scaled, 1), num_steps)


# -- partial schedules (img2img, split sigmas) ----------------------------------------------------------------------
#
# A schedule that does not run all the way from pure noise to clean (KSampler denoise < 1, either half of
# SplitSigmas) is a window of a longer from-noise schedule: ComfyUI's KSampler runs the last ``steps`` steps of
# ``int(steps / denoise)``. Its step ``i`` is step ``offset + i`` of that full schedule, which is what the
# classifier's step embedding and the official steered range refer to (both are defined on a from-noise run).


def full_steps_for_denoise(steps: int, denoise: float) -> int:
    """Length of the from-noise schedule whose last ``steps`` steps a KSampler with ``denoise`` runs.

    This is ComfyUI's own rule (``KSampler.set_steps``): ``denoise > 0.9999`` runs the whole schedule, otherwise the
    last ``steps`` of ``int(steps / denoise)`` steps.

    Raises:
        ValueError: ``steps < 1`` or ``denoise`` not in (0, 1].
    """
    steps = as_index(steps, "The number of sampling steps")
    if steps < 1:
        raise ValueError(f"The number of sampling steps must be >= 1, got {steps}.")
    if not (isinstance(denoise, (int, float)) and 0.0 < denoise <= 1.0):
        raise ValueError(f"denoise must be in (0, 1] to run any step, got {denoise!r}.")
    if denoise > 0.9999:
        return steps
    return max(int(steps / denoise), steps)


def progress_at_sigma(sigma: float, percent_to_sigma: Callable[[float], float], tolerance: float = 1e-6) -> float:
    """Where a noise level sits on the model's from-noise scale: 0.0 = pure noise, 1.0 = clean.

    ``percent_to_sigma`` is the model's own map from that scale to sigma (ComfyUI's ``model_sampling
    .percent_to_sigma``; the ``normal`` and ``simple`` schedulers step uniformly along it). It must decrease with the
    percentage; it is inverted by bisection.

    Args:
        sigma: the noise level, >= 0.
        percent_to_sigma: decreasing map from [0, 1] to sigma.
        tolerance: bisection stops when the bracket is narrower than this.

    Returns:
        The percentage in [0, 1].
    """
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}.")
    low, high = 0.0, 1.0  # percent_to_sigma(low) >= sigma >= percent_to_sigma(high)
    if sigma >= percent_to_sigma(tolerance):
        return 0.0
    if sigma <= percent_to_sigma(1.0 - tolerance):
        return 1.0
    while high - low > tolerance:
        middle = 0.5 * (low + high)
        if percent_to_sigma(middle) >= sigma:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class ScheduleWindow:
    """Where the schedule being sampled sits in the from-noise schedule the model would have run.

    Attributes:
        num_steps: steps of the schedule being sampled, >= 1.
        full_steps: steps of the from-noise schedule it is a window of, >= ``offset + num_steps``.
        offset: steps of the full schedule before this one's first step (0 = starts from pure noise).
    """

    num_steps: int
    full_steps: int
    offset: int = 0

    def __post_init__(self) -> None:
        for name in ("num_steps", "full_steps", "offset"):
            as_index(getattr(self, name), f"The schedule window's {name}")
        if self.num_steps < 1 or self.offset < 0 or self.offset + self.num_steps > self.full_steps:
            raise ValueError(
                f"A schedule of {self.num_steps} steps (>= 1) starting at step {self.offset} (>= 0) does not fit a "
                f"from-noise schedule of {self.full_steps} steps: the full schedule must be at least as long."
            )

    @classmethod
    def from_noise(cls, num_steps: int) -> ScheduleWindow:
        """A whole run from pure noise."""
        return cls(num_steps, num_steps, 0)

    @classmethod
    def tail(cls, num_steps: int, full_steps: int) -> ScheduleWindow:
        """The last ``num_steps`` of a ``full_steps`` run (KSampler with denoise < 1, see :func:`full_steps_for_denoise`)."""
        return cls(num_steps, full_steps, full_steps - num_steps)

    @classmethod
    def estimate(cls, num_steps: int, start: float, second: float, end: float) -> ScheduleWindow:
        """Place a schedule of unknown origin (SamplerCustom sigmas) from the progress of its noise levels.

        ``start``, ``second`` and ``end`` are the progress (:func:`progress_at_sigma`) of its first, second and last
        sigma. Its ``num_steps`` steps span ``end - start`` of the from-noise scale, so a from-noise run spaced the
        same way has ``num_steps / (end - start)`` steps (exact for ComfyUI's ``simple`` scheduler, within about
        ``1 / (end - start)`` steps for the others) and this one starts at step ``start * full_steps``. A schedule
        whose first step lies less than one of its own steps below pure noise (``start < second - start``, e.g.
        ``ddim_uniform``) starts from noise; one that also ends clean is a whole run.

        Raises:
            ValueError: the progress values are not ordered ``0 <= start <= second <= end <= 1`` with
                ``start < end``.
        """
        num_steps = as_index(num_steps, "The number of sampling steps")
        if num_steps < 1:
            raise ValueError(f"The number of sampling steps must be >= 1, got {num_steps}.")
        if not 0.0 <= start <= second <= end <= 1.0 or start >= end:
            raise ValueError(
                f"The schedule's noise levels must decrease from start to end on the from-noise scale, got start "
                f"{start!r}, second {second!r}, end {end!r} (0 = pure noise, 1 = clean)."
            )
        from_noise = start < second - start or start == 0.0
        if from_noise and end >= 1.0:
            return cls.from_noise(num_steps)
        full = max(num_steps, round(num_steps / (end - start)))
        offset = 0 if from_noise else min(round(start * full), full - num_steps)
        if end >= 1.0:
            offset = full - num_steps  # ends clean: a tail
        return cls(num_steps, full, offset)

    @property
    def partial(self) -> bool:
        """True unless this is a whole run from pure noise to clean."""
        return self.full_steps != self.num_steps

    def full_index(self, step: int) -> int:
        """The full-schedule index of step ``step`` of this schedule."""
        step = as_index(step, "The sampling step")
        if not 0 <= step < self.num_steps:
            raise ValueError(
                f"Sampling step {step} is outside the schedule of {self.num_steps} steps (valid: "
                f"0..{self.num_steps - 1})."
            )
        return self.offset + step

    def classifier_step(self, step: int, trained_steps: Sequence[int], trained_num_steps: int) -> int:
        """The classifier step index of step ``step``: :func:`classifier_step_index` at its full-schedule index.

        For a whole run this is exactly :func:`classifier_step_index`; a window uses the classifier steps of the
        noise levels it really has (later ones for img2img).
        """
        return classifier_step_index(self.full_index(step), self.full_steps, trained_steps, trained_num_steps)

    def default_steered_steps(self, official_last_step: int, official_num_steps: int) -> int:
        """How many leading steps of this schedule the official preset steers.

        The official range, scaled to the full schedule (:func:`default_last_steered_step`), is kept where it
        overlaps this window. A window that starts past its end (e.g. ``denoise <= 0.5`` for SD and FLUX-dev, whose
        official range is the first half) gets 0: the layout already comes from the input latent.

        Returns:
            The number of leading steps to steer, ``0 .. num_steps``.
        """
        end = default_last_steered_step(self.full_steps, official_last_step, official_num_steps)
        return min(max(end - self.offset, 0), self.num_steps)


SEED_MODULUS = 2**64
"""Seeds are unsigned 64-bit integers (ComfyUI's KSampler accepts 0 .. 2**64 - 1)."""


def step_seed(seed: int, step: int) -> int:
    """The seed for the sampler call that starts at ``step``: ``seed + step`` wrapped into 0 .. 2**64 - 1.

    Steered steps call the stock sampler one step at a time; ancestral and SDE samplers draw fresh noise per call,
    so each call gets its own seed. Wrapping keeps every seed the stock KSampler accepts valid (``2**64 - 2`` plus
    step 2 wraps to 0 instead of overflowing torch's generator).
    """
    seed = as_index(seed, "The seed")
    step = as_index(step, "The sampling step")
    return (seed + step) % SEED_MODULUS
