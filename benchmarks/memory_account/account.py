"""The peak memory of one pass: resident weights plus the highest live total of what the pass allocates.

:func:`account_pass` runs a pass of :mod:`.passes` under a :class:`~.tracker.LiveBytes` with the attention kernel
modelled as :mod:`.attention` says. Allocations are labelled by what made them:

* ``cast weights``: compute-dtype copies of stored weights (``_to_copy`` of a weight storage: fp8 weights cast by
  ComfyUI's ``manual_cast`` operations), which a forward with gradients keeps for the backward unless recomputed;
* ``forward``: everything else allocated during the forward (activations, and what autograd keeps of them);
* ``backward``: gradients and the activations a recomputation rebuilds, allocated during the backward;
* ``update``: the latent update after the backward.

Peak = resident weights (the denoiser's; plus the classifier's for a steering pass) + the tracker's peak. The
latent, the conditioning and the CUDA context are not in it (the report adds the context when it compares with
cards).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from .attention import modelled_attention
from .build import Setup
from .meta_device import meta_answers
from .passes import PASSES, Phase
from .tracker import LiveBytes, storage_key

logger = logging.getLogger(__name__)

GIB = 1024**3


@dataclass(frozen=True)
class PassAccount:
    """The memory of one pass.

    Attributes:
        name: "plain", "fast" or "low".
        weight_bytes: resident weights (denoiser, plus classifier for steering).
        peak_bytes: the tracker's peak above the weights.
        peak_by_category: what was live at the peak, per category (see the module docstring).
        peak_phase: "forward", "backward" or "update": when the peak was reached.
        kept_bytes: live bytes at the end of the forward (what the backward needs; 0 for a plain pass).
    """

    name: str
    weight_bytes: int
    peak_bytes: int
    peak_by_category: dict[str, int] = field(default_factory=dict)
    peak_phase: str = ""
    kept_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        """Weights + peak."""
        return self.weight_bytes + self.peak_bytes

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "weight_bytes": self.weight_bytes, "peak_bytes": self.peak_bytes,
                "total_bytes": self.total_bytes, "peak_by_category": dict(self.peak_by_category),
                "peak_phase": self.peak_phase, "kept_bytes": self.kept_bytes}


class _Labels:
    """Labels allocations (cast weights / the current phase) and notes the live total when the forward ends."""

    def __init__(self, weights: list[torch.Tensor]) -> None:
        self.weight_keys = {storage_key(w) for w in weights}
        self.phase = "setup"
        self.kept = 0
        self.tracker: LiveBytes | None = None

    def classify(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.Tensor) \
                and storage_key(args[0]) in self.weight_keys:
            return "cast weights"
        return self.phase

    def set_phase(self, label: str) -> None:
        assert self.tracker is not None
        if self.phase == "forward" and label != "forward":
            self.kept = self.tracker.current
        self.phase = label
        self.tracker.phase(label)


def account_pass(setup: Setup, name: str, attention: str, passes: dict[str, Any] | None = None) -> PassAccount:
    """Run pass ``name`` once on ``setup`` under the tracker, attention modelled as ``attention``."""
    run = (passes or PASSES)[name]
    weights = [*setup.base.diffusion_model.parameters(), *setup.base.diffusion_model.buffers()]
    labels = _Labels(weights)
    tracker = LiveBytes(classify=labels.classify)
    labels.tracker = tracker
    phase: Phase = labels.set_phase
    with modelled_attention(setup.m.ops, attention), meta_answers() as scalars, tracker:
        run(setup, phase)
    if scalars.answered:
        logger.debug("%s: %d value questions on meta tensors answered with zero", name, scalars.answered)
    resident = setup.weight_bytes + (setup.classifier_bytes if name != "plain" else 0)
    peak = tracker.peak
    logger.info("%s %s %d px %s %s: weights %.2f GiB + peak %.2f GiB (%s, %s)", setup.arch.label, setup.weights,
                setup.resolution, name, attention, resident / GIB, peak.total / GIB, peak.phase,
                ", ".join(f"{k} {v / GIB:.2f}" for k, v in sorted(peak.by_category.items())))
    return PassAccount(name, resident, peak.total, dict(peak.by_category), peak.phase,
                       labels.kept if name != "plain" else 0)
