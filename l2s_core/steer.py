"""One steered denoising step: everything between "the sampler is at step i" and the refined latent.

The ComfyUI nodes, the toy-world sampler and the benchmarks all steer through :func:`steer_step`; each of them only
supplies a :data:`LayersFn`, a closure that runs its denoiser on a latent and returns the two objects' recorded
layers (ComfyUI: the attention override; diffusers: the recording processors). This module owns the rest:

* the relation index of each triplet's requested relation in the classifier's classes;
* the classifier step index of the step (the official table, through :class:`.steps.ScheduleWindow`, so partial
  schedules use the noise levels they really have);
* the per-layer maps -> classifier input (:func:`.layout.classifier_input`) and the channel check against the
  classifier;
* the per-step loss threshold, the step size, the iterations and the optional early stop
  (:class:`.settings.SteeringSettings`);
* the test-time optimisation itself (:func:`.optimize.refine_latent`) and the passes each sample cost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .checkpoint import LoadedClassifier
from .layout import LayerMaps, check_channel_count, classifier_input
from .optimize import IGNORE_INDEX, IterationRecord, RefineResult, refine_latent
from .settings import SteeringSettings
from .steps import ScheduleWindow

logger = logging.getLogger(__name__)

LayersFn = Callable[[Tensor, int], tuple[list[LayerMaps], list[LayerMaps]]]
"""``(latent_leaf, triplet_index) -> (subject_layers, object_layers)``: run the denoiser on the latent with the
triplet's phrases recorded. The latent leaf is the fp32 latent being optimised, in the scale the caller passed.
With ``active_rows_only`` a third argument, the (A,) batch indices of the samples the leaf holds, follows."""


@dataclass(frozen=True)
class SteerStepResult:
    """What one steered step did.

    Attributes:
        refined: the optimisation's result (the new fp32 latent, per-iteration records, why it stopped).
        classifier_step: the classifier step index the step used.
        passes: forward+backward passes per sample (a sample costs one at every iteration it was evaluated).
    """

    refined: RefineResult
    classifier_step: int
    passes: tuple[int, ...]

    @property
    def settled(self) -> tuple[bool, ...]:
        """Per sample: the step found the classifier already at the early-stop probability and changed nothing.

        With :attr:`.settings.SteeringSettings.settle`, such a sample is not steered at later steps.
        """
        return tuple(stop == "early_stop_probability" and not any(r.updated_samples[b] for r in self.refined.records)
                     for b, stop in enumerate(self.refined.sample_stops))

    @property
    def latent(self) -> Tensor:
        """The refined latent (fp32)."""
        return self.refined.latent


class NoAttentionRecordedError(RuntimeError):
    """The denoiser forward recorded no text attention (its attention bypassed the hook)."""


def steer_step(latent: Tensor, layers_fn: LayersFn, classifier: LoadedClassifier,
               relations: Sequence[Sequence[str]], *, layout: str, settings: SteeringSettings,
               window: ScheduleWindow, step: int, on_maps: Callable[[Tensor], None] | None = None,
               on_iteration: Callable[[IterationRecord], None] | None = None,
               active_rows_only: bool = False, skip: Sequence[bool] | None = None) -> SteerStepResult:
    """Refine ``latent`` at step ``step`` of the schedule until the classifier reads the requested relations.

    Args:
        latent: (B, ...) noisy latent in the scale the step size was tuned for (diffusers' ``z_t``).
        layers_fn: runs the denoiser and returns the recorded layers (:data:`LayersFn`).
        classifier: the loaded relation classifier.
        relations: per triplet, the requested relation of every sample (``relations[t][b]``; canonical names or
            synonyms the classifier knows).
        layout: "unet" or "joint" (how the layers are ordered into channels).
        settings: step size, iterations, thresholds and early stop.
        window: where the schedule sits in its from-noise run (:meth:`.steps.ScheduleWindow.from_noise` for a whole
            run).
        step: the step of the schedule (0 = noisiest).
        on_maps: called with every classifier input ``(B, 2, C, S, S)`` (e.g. to keep a preview).
        on_iteration: called after every iteration (progress, cancellation).
        active_rows_only: ``layers_fn`` takes a third argument, the (A,) indices of the samples its latent holds,
            and each forward runs only the samples still being steered (:func:`.optimize.refine_latent`).
        skip: per sample, True to leave it unsteered at this step (no target, no update; e.g. settled samples).

    Raises:
        NoAttentionRecordedError: a forward recorded no attention layer.
        ValueError: a relation the classifier does not know, or maps whose channel count does not fit it.
        NonFiniteOutputError: (from :func:`.optimize.refine_latent`) non-finite maps or logits at the first call.
    """
    batch = latent.shape[0]
    targets = []
    for per_sample in relations:
        if len(per_sample) != batch:
            raise ValueError(f"steer_step: {len(per_sample)} relations for a batch of {batch}; give one per sample.")
        targets.append(torch.tensor([classifier.relation_index(r) for r in per_sample], dtype=torch.long,
                                    device=latent.device))
    if skip is not None:
        if len(skip) != batch:
            raise ValueError(f"steer_step: {len(skip)} skip flags for a batch of {batch}; give one per sample.")
        skipped = torch.tensor(list(skip), dtype=torch.bool, device=latent.device)  # (B,)
        targets = [torch.where(skipped, torch.full_like(t, IGNORE_INDEX), t) for t in targets]
    class_step = window.classifier_step(step, classifier.trained_steps, classifier.trained_num_steps)

    def maps_fn(z_leaf: Tensor, triplet: int, *rows: Tensor) -> Tensor:
        subject, obj = layers_fn(z_leaf, triplet, *rows)
        if not subject:
            raise NoAttentionRecordedError("No text attention was recorded during the steering forward pass.")
        maps = classifier_input(subject, obj, layout, classifier.map_size)  # (B, 2, C, S, S)
        check_channel_count(classifier.channels, maps.shape[2], expected_family=classifier.family)
        if on_maps is not None:
            on_maps(maps)
        return maps

    refined = refine_latent(latent, maps_fn, classifier.model, targets, step_index=class_step,
                            step_size=settings.step_size, iterations=settings.iterations,
                            loss_threshold=settings.threshold_for(window.full_index(step)),
                            early_stop_probability=settings.early_stop_probability,
                            update_rule=settings.update_rule, on_iteration=on_iteration,
                            active_rows_only=active_rows_only, overlap_weight=settings.overlap_weight)
    passes = tuple(sum(1 for r in refined.records if not math.isnan(r.losses[b])) for b in range(batch))
    return SteerStepResult(refined, class_step, passes)
