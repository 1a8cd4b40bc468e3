"""Step indices: which step embedding the classifier gets at each sampling step, and how far steering runs.

This module owns method.md §2.5 (the official lookup table from the sampling step to the classifier's trained step
index, ``assign_by_intervals``) and our documented extension to schedules whose length differs from the one the
classifier was trained on (§5.6: "map by relative position"), plus the matching default for how many steps to steer.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def _as_int(value: object, what: str) -> int:
    """Return ``value`` as a Python int, rejecting bools, floats and other non-integers."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got the bool {value!r}.")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r} ({type(value).__name__}).") from None


def _checked_trained_steps(trained_steps: Sequence[int]) -> list[int]:
    """Validate the trained step indices (non-empty, integers >= 0) and return them sorted ascending."""
    if len(trained_steps) == 0:
        raise ValueError(
            "The classifier's trained step indices are empty; expected e.g. [5, 10, 15, 20, 25, 49] (50-step "
            "models) or [1, 3] (FLUX-schnell). Read them from the checkpoint's training config."
        )
    steps = [_as_int(a, "A trained step index") for a in trained_steps]
    negative = [a for a in steps if a < 0]
    if negative:
        raise ValueError(f"Trained step indices must be >= 0, got {negative} in {steps}.")
    return sorted(steps)


def step_index_table(trained_steps: Sequence[int], num_steps: int) -> list[int]:
    """Build the official table from sampling step to classifier step index (method.md §2.5, exactly).

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
    num_steps = _as_int(num_steps, "The number of sampling steps")
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


def classifier_step_index(step: int, num_steps: int, trained_steps: Sequence[int], trained_num_steps: int) -> int:
    """The step index to feed the classifier at sampling step ``step``.

    When the schedule has the training length (``num_steps == trained_num_steps``) this is the official table
    (:func:`step_index_table`). Otherwise the step is first mapped to the training schedule by relative position,
    ``i' = round(step * (trained_num_steps - 1) / max(num_steps - 1, 1))`` (ties rounded up, exact integer
    arithmetic), and the table of the training schedule is read at ``i'``. So the first step maps to the first
    trained bucket and the last step to the end of the training schedule, and the mapping is monotone.

    Why relative position: the classifier's step embedding stands for how noisy the latent is at that point of the
    training schedule. Without the sigmas, the relative position in the schedule is the closest proxy for the noise
    level; it is a design choice, not part of the official code (method.md §5.6), and classifiers were only
    validated at their training length.

    Args:
        step: 0-based sampling step, ``0 <= step < num_steps`` (0 = noisiest).
        num_steps: Length of the schedule being sampled.
        trained_steps: Step indices the classifier was trained on, each in ``[0, trained_num_steps)``.
        trained_num_steps: Length of the schedule the classifier was trained with (50, schnell 4).

    Returns:
        The classifier step index (an entry of ``trained_steps``, or 0 after the last trained index, §2.5).

    Raises:
        ValueError: a step or count is out of range, or ``trained_steps`` is empty or leaves
            ``[0, trained_num_steps)``.
    """
    step = _as_int(step, "The sampling step")
    num_steps = _as_int(num_steps, "The number of sampling steps")
    trained_num_steps = _as_int(trained_num_steps, "The classifier's training schedule length")
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
    num_steps = _as_int(num_steps, "The number of sampling steps")
    official_last_step = _as_int(official_last_step, "The official last steered step")
    official_num_steps = _as_int(official_num_steps, "The official number of steps")
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
