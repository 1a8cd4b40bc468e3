"""Steering modes a user picks by name: ``official``, ``fast``, ``quality``, ``custom`` and ``off``.

* ``official``: the published loop, bit for bit (the family's steering recipe: step size, iterations, loss
  thresholds, steered range). Use it to reproduce the paper.
* ``fast``: every update moves the latent by 24 % of its standard deviation in the gradient's direction (a step of
  known size, whatever the classifier's loss landscape), with the latent's mean and standard deviation kept, and a
  step stops once the classifier gives the requested relation p >= 0.9: on the toy world about a tenth of the
  official passes for a higher accuracy than the official loop's (README, "Beyond the official loop").
* ``quality``: the same updates for the full official budget, with no early stop beyond the official loss
  thresholds, at the official number of passes. On the world shipped before the current toy world it was the most
  accurate mode; on the current one it is more accurate than the official loop but not than ``fast``, and its
  larger total update loses more objects and leaves dirtier backgrounds (README, "The toy world"). Its cost does
  not depend on how sure the classifier gets (a stop at p >= 0.99, measured before, ended most steps after a pass
  or two with a confident classifier and lost accuracy).
* ``custom``: every number is given explicitly (steered steps, step size, iterations, early-stop probability) with
  the official update rule.
* ``off``: no steering; the node samples as the plain sampler would.

The presets are defined relative to the family's recipe (its steered range and its cap of 16 passes per step) and to
the latent's own spread, so one name fits every model family. They were chosen on the toy world, the only place here
where accuracy is measured end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import SteeringOptions
from .update_rule import UpdateRule

STEERING_MODES: tuple[str, ...] = ("official", "fast", "quality", "custom", "off")
"""The mode names, in the order a node lists them."""

PRESETS: dict[str, SteeringOptions] = {
    "official": SteeringOptions(),
    "fast": SteeringOptions(early_stop_probability=0.9,
                            update_rule=UpdateRule(relative_step=0.24, keep_statistics=True)),
    "quality": SteeringOptions(update_rule=UpdateRule(relative_step=0.24, keep_statistics=True)),
    "off": SteeringOptions(last_step=0),
}
"""The options of each named preset (``custom`` is built from the user's numbers by :func:`custom_options`)."""


@dataclass(frozen=True)
class CustomValues:
    """The explicit numbers of ``custom`` mode; each means what it says (no "0 = default" values).

    Attributes:
        steered_steps: steps 0 .. steered_steps-1 are steered (0: none).
        step_size: the gradient step on the latent per iteration (official: 5; 7.5 for SD1.x; 1 for the toy world;
            0: none).
        iterations: forward/backward passes per steered step at most (official: 16; 0: none).
        early_stop_probability: a sample stops its step once the classifier gives the requested relation this
            probability; 1.0 adds no stop to the official loss thresholds (which already stop at p > 0.99999).
    """

    steered_steps: int
    step_size: float
    iterations: int
    early_stop_probability: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.steered_steps < 0:
            problems.append(f"steered steps must be >= 0 (got {self.steered_steps})")
        if not self.step_size >= 0:
            problems.append(f"the step size must be >= 0 (got {self.step_size})")
        if self.iterations < 0:
            problems.append(f"iterations must be >= 0 (got {self.iterations})")
        if not 0 < self.early_stop_probability <= 1:
            problems.append(f"the early-stop probability must be in (0, 1], 1 = no early stop "
                            f"(got {self.early_stop_probability})")
        if problems:
            raise ValueError("Custom steering: " + "; ".join(problems) + ".")


def custom_options(values: CustomValues) -> SteeringOptions:
    """The :class:`SteeringOptions` of ``custom`` mode: the official rule with the user's numbers."""
    steers = values.steered_steps > 0 and values.iterations > 0 and values.step_size > 0
    return SteeringOptions(
        last_step=values.steered_steps if steers else 0,
        step_size=values.step_size,
        iterations=values.iterations if steers else 1,
        early_stop_probability=None if values.early_stop_probability >= 1 else values.early_stop_probability,
    )


def mode_options(mode: str, custom: CustomValues | None = None) -> SteeringOptions:
    """The options of a steering mode (:data:`STEERING_MODES`); ``custom`` needs ``custom`` values.

    Raises:
        ValueError: an unknown mode, or ``custom`` without values.
    """
    if mode == "custom":
        if custom is None:
            raise ValueError("Steering mode 'custom' needs its values (steered steps, step size, iterations, "
                             "early-stop probability).")
        return custom_options(custom)
    if mode not in PRESETS:
        raise ValueError(f"Unknown steering mode {mode!r}; choose one of {', '.join(STEERING_MODES)}.")
    return PRESETS[mode]
