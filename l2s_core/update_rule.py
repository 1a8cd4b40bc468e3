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
* ``smooth_sigma``: the gradient is blurred with a Gaussian of this standard deviation (in latent cells) over the
  latent's last two (spatial) dimensions before it is used, so an update moves regions rather than single cells.
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
    smooth_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.relative_step is not None and not (math.isfinite(self.relative_step) and self.relative_step > 0):
            raise ValueError(f"relative_step must be a finite number > 0 or None (official); got "
                             f"{self.relative_step!r}.")
        if self.smooth_sigma is not None and not (math.isfinite(self.smooth_sigma) and self.smooth_sigma > 0):
            raise ValueError(f"smooth_sigma must be a finite number > 0 (latent cells) or None (official); got "
                             f"{self.smooth_sigma!r}.")

    @property
    def is_official(self) -> bool:
        """True for the published rule (a plain gradient step)."""
        return self.relative_step is None and not self.keep_statistics and self.smooth_sigma is None

    def describe(self) -> str:
        """E.g. "gradient step" or "steps of 2 % of the latent's std, statistics kept"."""
        parts = ["gradient step" if self.relative_step is None
                 else f"steps of {100 * self.relative_step:g} % of the latent's std"]
        if self.keep_statistics:
            parts.append("statistics kept")
        if self.smooth_sigma is not None:
            parts.append(f"gradient blurred (sigma {self.smooth_sigma:g} cells)")
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
    if rule.smooth_sigma is not None:
        gradient = blur_spatial(gradient, rule.smooth_sigma)
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


def blur_spatial(values: Tensor, sigma: float) -> Tensor:
    """``values`` (B, ..., H, W) blurred by a separable Gaussian of ``sigma`` cells over H and W (edges replicated).

    Raises:
        ValueError: fewer than 3 dimensions (no spatial grid to blur).
    """
    if values.ndim < 3:
        raise ValueError(f"Blurring the gradient needs a latent with a spatial grid (B, ..., H, W); got shape "
                         f"{tuple(values.shape)}. Leave smooth_sigma unset for this model.")
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=values.dtype, device=values.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (K,)
    height, width = values.shape[-2:]
    flat = values.reshape(-1, 1, height, width)  # (B, ..., H, W) -> (N, 1, H, W)
    flat = torch.nn.functional.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = torch.nn.functional.conv2d(flat, kernel.reshape(1, 1, 1, -1))  # along W
    flat = torch.nn.functional.conv2d(flat, kernel.reshape(1, 1, -1, 1))  # along H
    return flat.reshape(values.shape)  # (N, 1, H, W) -> (B, ..., H, W)
