"""The attention-overlap term: how much the subject's and the object's attention maps cover the same place.

When a denoiser is about to draw one of the two objects twice, or to leave one out, the two objects' words tend to
attend to the same region of the image. On the toy world's benchmark grid (plain sampling, 240 images) the overlap
defined here, measured at steps 3, 6 and 9 of 20, is 0.03-0.07 in images that end up showing both objects and
0.25-0.28 in images that lose one.

:func:`attention_overlap` is the shared mass of the two objects' maps after averaging over channels: for maps that
each sum to 1, ``sum_pixels min(subject, object)``, in [0, 1] (0: disjoint, 1: identical). Added to the classifier's
loss with a weight (:attr:`.settings.SteeringSettings.overlap_weight`), its gradient pushes the two objects' attention
apart while the classifier's loss puts them in the requested arrangement. It is differentiable almost everywhere
(``min`` passes the gradient to the smaller map at each pixel).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .layout import resize_and_renormalise


def attention_overlap(maps: Tensor) -> Tensor:
    """The per-sample overlap of the subject's and the object's attention, in [0, 1].

    Args:
        maps: classifier input ``(B, 2, C, S, S)`` (index 0 on dim 1 is the subject); each channel is averaged,
            and the channel means are renormalised to sum 1 before they are compared.

    Returns:
        ``(B,)`` float32, differentiable with respect to ``maps``.

    Raises:
        ValueError: ``maps`` is not ``(B, 2, C, S, S)``.
    """
    if maps.ndim != 5 or maps.shape[1] != 2:
        raise ValueError(f"attention_overlap expects maps (B, 2, C, S, S) with the subject and the object on dim 1; "
                         f"got {tuple(maps.shape)}.")
    mean = maps.float().mean(dim=2)  # (B, 2, C, S, S) -> (B, 2, S, S)
    mean = resize_and_renormalise(mean, mean.shape[-1], renormalise=True).flatten(2)  # each sums to 1; (B, 2, S*S)
    return torch.minimum(mean[:, 0], mean[:, 1]).sum(dim=-1)  # (B,)


def check_overlap_weight(weight: float) -> None:
    """Raise ValueError unless ``weight`` is a finite number >= 0 (0: the classifier's loss alone)."""
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"overlap_weight must be a finite number >= 0 (0 = the classifier's loss alone); got "
                         f"{weight!r}.")
