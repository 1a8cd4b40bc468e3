"""How one steering iteration turns the loss gradient into a change of the latent.

The published loop takes a plain gradient step, ``z <- z - step_size * g`` (:data:`OFFICIAL_UPDATE`). Its size then
depends on how steep the classifier's loss happens to be: tiny where the classifier is already fairly sure, huge
where it is not, and different for every model and latent scale. Two optional changes, both off in the official
rule:

* ``relative_step``: every update moves each sample's latent by the same root-mean-square distance, a fraction of
  the standard deviation the latent had when the step began (``0.02`` = 2 %). The gradient gives the direction
  only, and ``step_size`` is not used.
* ``keep_statistics``: after every update, each sample's latent is shifted and scaled back to the mean and standard
  deviation it had when the step began. The sampler expects a latent at a given noise level; steering that drifts
  from it shows up as noise and speckles in the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class UpdateRule:
    """How a gradient becomes an update of the latent (see the module docstring).

    Attributes:
        relative_step: None (official: ``step_size * gradient``) or the RMS of each update as a fraction of the
            latent's standard deviation at the start of the step, > 0.
        keep_statistics: restore each sample's mean and standard deviation after every update.
    """

    relative_step: float | None = None
    keep_statistics: bool = False

    def __post_init__(self) -> None:
        if self.relative_step is not None and not (math.isfinite(self.relative_step) and self.relative_step > 0):
            raise ValueError(f"relative_step must be a finite number > 0 or None (official); got "
                             f"{self.relative_step!r}.")

    @property
    def is_official(self) -> bool:
        """True for the published rule (a plain gradient step)."""
        return self.relative_step is None and not self.keep_statistics

    def describe(self) -> str:
        """E.g. "gradient step" or "steps of 2 % of the latent's std, statistics kept"."""
        parts = ["gradient step" if self.relative_step is None
                 else f"steps of {100 * self.relative_step:g} % of the latent's std"]
        if self.keep_statistics:
            parts.append("statistics kept")
        return ", ".join(parts)


OFFICIAL_UPDATE = UpdateRule()
"""The published rule: ``z <- z - step_size * gradient``, nothing else."""


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast over a latent shaped like ``like``."""
    return values.reshape((like.shape[0],) + (1,) * (like.ndim - 1))


def sample_statistics(latent: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample mean and standard deviation of a (B, ...) latent, each (B,)."""
    flat = latent.detach().reshape(latent.shape[0], -1)  # (B, N)
    return flat.mean(dim=1), flat.std(dim=1)


def apply_update(latent: Tensor, gradient: Tensor, mask: Tensor, step_size: float, rule: UpdateRule,
                 start_statistics: tuple[Tensor, Tensor]) -> Tensor:
    """The latent after one update of the samples where ``mask`` is True; other samples are returned unchanged.

    Args:
        latent: (B, ...) fp32 latent.
        gradient: (B, ...) gradient of the loss with respect to ``latent``.
        mask: (B,) bool, the samples to update.
        step_size: the official step size (used when ``rule.relative_step`` is None).
        rule: the update rule.
        start_statistics: per-sample (mean, std), each (B,), of the latent when the step began.
    """
    start_mean, start_std = start_statistics
    if rule.relative_step is None:
        step = step_size * gradient
    else:
        rms = gradient.reshape(gradient.shape[0], -1).pow(2).mean(dim=1).sqrt()  # (B,)
        scale = rule.relative_step * start_std / rms.clamp_min(torch.finfo(rms.dtype).tiny)  # (B,)
        step = _per_sample(scale, gradient) * gradient
    updated = latent - step
    if rule.keep_statistics:
        mean, std = sample_statistics(updated)  # each (B,)
        ratio = start_std / std.clamp_min(torch.finfo(std.dtype).tiny)  # (B,)
        updated = (updated - _per_sample(mean, updated)) * _per_sample(ratio, updated) + _per_sample(start_mean,
                                                                                                      updated)
    return torch.where(_per_sample(mask, latent), updated, latent)
