"""Test-time optimisation of a noisy latent against a relation classifier, as a pure function.

This module owns the Learn-to-Steer inner loop. At one denoising step it repeatedly runs the denoiser on the latent
(through a caller-supplied closure that returns the subject/object attention maps), scores the maps with the
relation classifier, and takes a plain gradient-descent step on the latent against the cross-entropy to the target
relation: ``z <- z - step_size * dCE/dz`` (no normalisation, no momentum, as in the official code).

Differences from the official loop:

* The latent is optimised as an fp32 master copy whatever dtype the model runs in; the closure
  casts to the model dtype itself. The returned latent is fp32; callers cast it back.
* Batches larger than 1 are supported, each sample with its own targets and its own stop rule (the official loop
  is batch 1). Sample ``b`` of a batch gets exactly the updates it would get alone.
* An optional early stop on the target probability; the default (None) keeps the official behaviour.
* Non-finite losses or gradients stop the loop with a warning and keep the last good latent, except on the first
  forward: non-finite maps or logits there mean the denoiser or the classifier is broken (nothing was updated yet
  that could have caused them), and :class:`NonFiniteOutputError` is raised instead of returning an unsteered latent.

Inference mode: ``torch.inference_mode()`` cannot be left with ``torch.enable_grad()``. This function raises a
``RuntimeError`` when called inside inference mode; the caller (the ComfyUI adapter) must wrap the call in
``torch.inference_mode(False)``. Latents *created* under inference mode are accepted: the fp32 master is a fresh copy.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .overlap import attention_overlap, check_overlap_weight
from .update_rule import OFFICIAL_UPDATE, UpdateRule, apply_update, sample_statistics

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Target value meaning "this sample has no relation for this triplet" (the CE default ``ignore_index``)."""

MapsFn = Callable[[Tensor, int], Tensor]
"""``maps_fn(latent_leaf, triplet_index) -> maps``.

``latent_leaf`` has the latent's shape, is fp32 and requires grad; ``maps`` is (B, 2, C, S, S) (subject, object),
differentiable w.r.t. ``latent_leaf``, in the dtype the classifier expects (fp32 for ours). The closure casts the
latent to the model dtype itself and builds the maps of the given triplet's subject and object words."""

RowsMapsFn = Callable[[Tensor, int, Tensor], Tensor]
"""``maps_fn(latent_rows_leaf, triplet_index, rows) -> maps`` for ``active_rows_only``: the latent of the samples
``rows`` ((A,) long indices into the batch) only, and their (A, 2, C, S, S) maps."""

ClassifierFn = Callable[[Tensor, Tensor], Tensor]
"""``classifier(maps (B, 2, C, S, S), step_index LongTensor (B,)) -> logits (B, R)``; ``RelationClassifier`` fits."""

STOP_REASONS: tuple[str, ...] = (
    "iterations",
    "loss_threshold",
    "early_stop_probability",
    "non_finite_gradient",
    "no_targets",
)
"""Values of :attr:`RefineResult.stopped`. ``non_finite_gradient`` also covers a non-finite loss."""


class NonFiniteOutputError(ValueError):
    """The first forward of :func:`refine_latent` gave non-finite attention maps or classifier logits.

    Attributes:
        source: ``"maps"`` (the denoiser's attention maps) or ``"logits"`` (the classifier's output on finite maps).
        step_index: the classifier step index of the call.
    """

    def __init__(self, message: str, source: str, step_index: int) -> None:
        super().__init__(message)
        self.source = source
        self.step_index = step_index


@dataclass(frozen=True)
class IterationRecord:
    """Trace of one iteration (one forward, and at most one update) of :func:`refine_latent`.

    Attributes:
        iteration: 0-based iteration index ``k``.
        triplet: index of the relation triplet optimised at this iteration (``k % len(targets)``).
        losses: per-sample CE measured *before* this iteration's update; NaN for samples that were not evaluated
            (target ``-100`` for this triplet, or already stopped) and for non-finite values.
        target_probabilities: per-sample softmax probability of the target class, NaN where ``losses`` is NaN.
        updated_samples: per-sample flag, True where the latent of that sample was updated at this iteration.
    """

    iteration: int
    triplet: int
    losses: tuple[float, ...]
    target_probabilities: tuple[float, ...]
    updated_samples: tuple[bool, ...]

    @property
    def updated(self) -> bool:
        """True when any sample was updated at this iteration."""
        return any(self.updated_samples)

    @property
    def mean_loss(self) -> float:
        """Mean of the finite per-sample losses (NaN when there are none)."""
        finite = [v for v in self.losses if math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan


@dataclass(frozen=True)
class RefineResult:
    """Output of :func:`refine_latent`.

    Attributes:
        latent: the refined latent, fp32, detached, same shape and device as the input (callers cast back).
        records: one :class:`IterationRecord` per iteration that ran a forward pass (or was skipped, see there).
        stopped: why the loop ended, one of :data:`STOP_REASONS`.
        sample_stops: per-sample reason, one of :data:`STOP_REASONS`; "iterations" for samples still active at the end.
    """

    latent: Tensor
    records: tuple[IterationRecord, ...]
    stopped: str
    sample_stops: tuple[str, ...]

    @property
    def initial_target_probability(self) -> tuple[float, ...]:
        """Per-sample target probability at the first iteration (triplet 0, unmodified latent); () if none ran."""
        return self.records[0].target_probabilities if self.records else ()

    @property
    def final_target_probability(self) -> tuple[float, ...]:
        """Per-sample target probability last measured for each sample (before its last update); () if none ran.

        The latent returned may have had one more update after this measurement (the official loop does not
        re-check after its last update). With several triplets the values may refer to different triplets.
        """
        if not self.records:
            return ()
        last = list(self.records[0].target_probabilities)
        for record in self.records[1:]:
            for b, p in enumerate(record.target_probabilities):
                if not math.isnan(p):
                    last[b] = p
        return tuple(last)


def target_probability(logits: Tensor, targets: Tensor) -> Tensor:
    """Return the softmax probability of each sample's target class.

    Args:
        logits: (B, R) classifier logits.
        targets: (B,) integer class indices; ``-100`` means no target.

    Returns:
        (B,) fp32 probabilities, NaN where the target is ``-100``.

    Raises:
        ValueError: shapes do not match, or a target is outside ``0 .. R-1`` and not ``-100``.
    """
    if logits.ndim != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(
            f"target_probability expects logits (B, R) and targets (B,); got logits {tuple(logits.shape)} and "
            f"targets {tuple(targets.shape)}. Pass one target class index per sample."
        )
    _check_target_range(targets, logits.shape[1], "targets")
    targets = targets.to(device=logits.device, dtype=torch.long)
    valid = targets != IGNORE_INDEX
    probs = logits.detach().float().softmax(dim=-1)  # (B, R)
    picked = probs.gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1)  # (B,)
    return torch.where(valid, picked, torch.full_like(picked, math.nan))


def refine_latent(
    latent: Tensor,
    maps_fn: MapsFn,
    classifier: ClassifierFn,
    targets: Sequence[Tensor],
    *,
    step_index: int,
    step_size: float,
    iterations: int,
    loss_threshold: float = 0.0,
    early_stop_probability: float | None = None,
    update_rule: UpdateRule = OFFICIAL_UPDATE,
    on_iteration: Callable[[IterationRecord], None] | None = None,
    active_rows_only: bool = False,
    overlap_weight: float = 0.0,
) -> RefineResult:
    """Steer a noisy latent towards the target relations at one denoising step.

    Iteration ``k`` (``0 .. iterations-1``) optimises triplet ``t = k % len(targets)`` (official round robin):
    forward ``maps_fn`` on a fresh fp32 leaf copy of the latent, ``logits = classifier(maps, step_index)``,
    per-sample CE against ``targets[t]``. A sample is updated, ``z_b <- z_b - step_size * dCE_b/dz_b``, while its
    CE is above ``loss_threshold`` (the official rule; CE exactly 0 also stops); once its CE is at or below the
    threshold the sample stops for good. The gradient is that of the sum of per-sample CEs, so each sample's update
    equals its batch-1 update. Samples whose target for ``t`` is ``-100`` are not updated at that iteration; a
    sample with ``-100`` for every triplet never is. The loop ends when no sample is still active. As in the
    official code, the last update is not checked again.

    ``early_stop_probability`` ``p`` (optional): a sample also stops when, for every triplet it has a target for,
    the target probability last measured was ``>= p`` (a triplet not measured yet counts as not reached). With one
    triplet this is simply ``softmax(logits)[target] >= p``.

    Gradients are taken with ``torch.autograd.grad`` w.r.t. the latent leaf only, so nothing accumulates in
    ``.grad`` of the classifier's (or the model's) parameters and their ``requires_grad`` flags are untouched. The
    loop runs under ``torch.enable_grad()``, so it works when the caller is in ``torch.no_grad()``; it does not work
    under ``torch.inference_mode()`` (see the module docstring). A non-finite loss or gradient of a sample that
    would be updated logs a warning and stops the whole loop, keeping the latent from before that iteration; on the
    first forward, non-finite maps or logits raise :class:`NonFiniteOutputError` instead.

    Args:
        latent: (B, ...) noisy latent of any floating dtype; not modified.
        maps_fn: closure ``(latent_leaf, triplet_index) -> (B, 2, C, S, S)`` maps, see :data:`MapsFn`.
        classifier: ``(maps, step_index (B,) long) -> (B, R)`` logits, e.g. ``RelationClassifier`` in eval mode.
        targets: one (B,) integer tensor per relation triplet; class indices in ``0 .. R-1`` or ``-100``.
        step_index: classifier step index for this denoising step, passed as a (B,) LongTensor.
        step_size: gradient step size (official 5.0; 7.5 for SD 1.4), > 0.
        iterations: maximum forward+backward passes (official 16), >= 0.
        loss_threshold: per-sample CE early-exit threshold, >= 0 (official 1e-5 .. 7e-5 by step; 0 = never).
        early_stop_probability: optional target-probability stop in (0, 1]; None keeps the official rule only.
        update_rule: how a gradient becomes an update (:mod:`.update_rule`); the default is the official step.
        on_iteration: called with each :class:`IterationRecord`; exceptions it raises propagate (interrupts).
        active_rows_only: ``maps_fn`` is a :data:`RowsMapsFn` and each forward runs only the samples still being
            optimised for that triplet, so a batch whose samples stop early costs what its active samples cost.
            Needs a denoiser whose samples are independent (no batch statistics); the result equals the full-batch
            one up to float rounding.
        overlap_weight: weight of :func:`.overlap.attention_overlap` added to each sample's CE for its gradient
            (0 = the official loss). The stop rules and the recorded losses stay those of the CE alone.

    Returns:
        :class:`RefineResult` with the fp32 latent and the per-iteration trace.

    Raises:
        ValueError: bad arguments, or maps/logits of the wrong shape, or a target outside the classifier's classes.
        NonFiniteOutputError: the first forward gave non-finite maps or logits (a broken model or classifier).
        RuntimeError: called inside ``torch.inference_mode()``.
    """
    batch = _validate_arguments(latent, targets, step_index, step_size, iterations, loss_threshold,
                                early_stop_probability)
    check_overlap_weight(overlap_weight)
    device = latent.device
    target_list = [t.to(device=device, dtype=torch.long) for t in targets]  # each (B,)
    has_target = torch.stack([t != IGNORE_INDEX for t in target_list], dim=0)  # (K, B)
    num_triplets = len(target_list)

    z = latent.detach().to(dtype=torch.float32, copy=True)  # fp32 master latent, (B, ...)
    start_statistics = sample_statistics(z)  # per-sample (mean, std), each (B,), for the update rule
    active = has_target.any(dim=0)  # (B,) samples still being optimised
    sample_stops = ["iterations" if bool(a) else "no_targets" for a in active.tolist()]
    last_probability = torch.full((num_triplets, batch), -math.inf, device=device)  # (K, B)
    records: list[IterationRecord] = []
    stopped = "iterations" if bool(active.any()) else "no_targets"
    if stopped == "no_targets":
        logger.debug("refine_latent: every target is %d (ignore); the latent is returned unchanged", IGNORE_INDEX)

    first_forward = True
    with torch.enable_grad():
        for k in range(iterations):
            if not bool(active.any()):
                break
            t = k % num_triplets
            target = target_list[t]  # (B,)
            evaluated = active & has_target[t]  # (B,)
            nan_row = [math.nan] * batch
            if not bool(evaluated.any()):
                record = IterationRecord(k, t, tuple(nan_row), tuple(nan_row), (False,) * batch)
                records.append(record)
                if on_iteration is not None:
                    on_iteration(record)
                continue

            if active_rows_only:
                rows = evaluated.nonzero().squeeze(1)  # (A,) indices of the samples evaluated now
                z_leaf = z[rows].detach().requires_grad_(True)  # (A, ...)
                maps = maps_fn(z_leaf, t, rows)
                _check_maps(maps, rows.numel())
                steps = torch.full((rows.numel(),), step_index, dtype=torch.long, device=maps.device)  # (A,)
                row_logits = classifier(maps, steps)  # (A, R)
                _check_logits(row_logits, rows.numel(), [tg[rows] for tg in target_list])
                # (A, R) -> (B, R); the rows not evaluated hold zeros and are masked out below
                logits = row_logits.new_zeros((batch, row_logits.shape[1])).index_copy(
                    0, rows.to(row_logits.device), row_logits)
            else:
                rows = None
                z_leaf = z.detach().requires_grad_(True)
                maps = maps_fn(z_leaf, t)
                _check_maps(maps, batch)
                steps = torch.full((batch,), step_index, dtype=torch.long, device=maps.device)  # (B,)
                logits = classifier(maps, steps)
                _check_logits(logits, batch, target_list)
            overlap = None
            if overlap_weight > 0:
                overlap = attention_overlap(maps)  # (A,) or (B,)
                if rows is not None:  # (A,) -> (B,), zero for the rows not evaluated
                    overlap = overlap.new_zeros(batch).index_copy(0, rows.to(overlap.device), overlap)
            if first_forward:
                _check_first_forward_finite(maps, logits, step_index)
                first_forward = False
            logits_f = logits.float()
            target_dev = target.to(logits_f.device)
            losses = F.cross_entropy(logits_f, target_dev, reduction="none", ignore_index=IGNORE_INDEX)  # (B,)
            probs = target_probability(logits_f, target_dev).to(device)  # (B,)
            losses_det = losses.detach().to(device)

            below = torch.zeros_like(evaluated)  # (B,) stopped by the official CE rule
            reached = torch.zeros_like(evaluated)  # (B,) stopped by the probability rule
            update = torch.zeros_like(evaluated)  # (B,) updated at this iteration
            grad: Tensor | None = None
            finite_ok = bool(torch.isfinite(losses_det[evaluated]).all())
            if finite_ok:
                last_probability[t] = torch.where(evaluated, probs, last_probability[t])
                below = evaluated & ~(losses_det > loss_threshold)  # official rule: stop unless CE > threshold
                if early_stop_probability is not None:
                    met = (last_probability >= early_stop_probability) | ~has_target  # (K, B)
                    reached = evaluated & met.all(dim=0) & ~below
                update = evaluated & ~below & ~reached
                if bool(update.any()):
                    objective = losses if overlap is None else losses + overlap_weight * overlap.to(losses.device)
                    total = objective[update.to(losses.device)].sum()
                    (grad,) = torch.autograd.grad(total, z_leaf)
                    if rows is not None:  # (A, ...) -> (B, ...), zero for the samples not evaluated
                        grad = torch.zeros_like(z).index_copy(0, rows, grad.to(z.dtype))
                    finite_ok = bool(torch.isfinite(grad[update]).all())

            loss_row = _masked_row(losses_det, evaluated)
            prob_row = _masked_row(probs, evaluated)
            if not finite_ok:
                logger.warning(
                    "refine_latent: non-finite loss or gradient at iteration %d (triplet %d, step index %d); "
                    "stopping and keeping the last good latent (from before iteration %d).",
                    k, t, step_index, k,
                )
                stopped = "non_finite_gradient"
                for b in range(batch):
                    if bool(active[b]):
                        sample_stops[b] = stopped
                record = IterationRecord(k, t, loss_row, prob_row, (False,) * batch)
                records.append(record)
                if on_iteration is not None:
                    on_iteration(record)
                break

            if grad is not None:
                if update_rule.is_official:
                    mask = update.reshape((batch,) + (1,) * (z.ndim - 1))  # (B, 1, ..., 1)
                    z = torch.where(mask, z - step_size * grad.detach(), z)
                else:
                    z = apply_update(z, grad.detach(), update, step_size, update_rule, start_statistics)
            for b in range(batch):
                if bool(below[b]):
                    sample_stops[b] = "loss_threshold"
                elif bool(reached[b]):
                    sample_stops[b] = "early_stop_probability"
            finished = below | reached
            active = active & ~finished
            if not bool(active.any()):
                stopped = "loss_threshold" if bool(below.any()) else "early_stop_probability"
            record = IterationRecord(k, t, loss_row, prob_row, tuple(update.tolist()))
            records.append(record)
            if on_iteration is not None:
                on_iteration(record)

    return RefineResult(latent=z.detach(), records=tuple(records), stopped=stopped, sample_stops=tuple(sample_stops))


def _masked_row(values: Tensor, mask: Tensor) -> tuple[float, ...]:
    """Return ``values`` (B,) as floats, NaN where ``mask`` (B,) is False."""
    nan = torch.full_like(values, math.nan, dtype=torch.float32)
    return tuple(torch.where(mask, values.float(), nan).tolist())


def _check_target_range(target: Tensor, num_classes: int, label: str) -> None:
    """Raise ValueError when a target is neither ``-100`` nor in ``0 .. num_classes-1``."""
    bad = (target != IGNORE_INDEX) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"{label} holds class indices {sorted(set(target[bad].tolist()))}, but the classifier has "
            f"{num_classes} classes (0..{num_classes - 1}); use -100 for 'no relation'. Map relation names with "
            "the checkpoint's relation_index()."
        )


def _validate_arguments(
    latent: Tensor,
    targets: Sequence[Tensor],
    step_index: int,
    step_size: float,
    iterations: int,
    loss_threshold: float,
    early_stop_probability: float | None,
) -> int:
    """Validate :func:`refine_latent` arguments and return the batch size."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "refine_latent needs autograd, but it was called inside torch.inference_mode(), which "
            "torch.enable_grad() cannot leave. Wrap the call in `with torch.inference_mode(False):` "
            "(the ComfyUI adapter does this)."
        )
    if not isinstance(latent, Tensor) or not latent.is_floating_point() or latent.ndim < 1:
        raise ValueError(
            f"latent must be a floating-point tensor (B, ...); got "
            f"{type(latent).__name__ if not isinstance(latent, Tensor) else f'{latent.dtype} {tuple(latent.shape)}'}."
        )
    batch = latent.shape[0]
    if len(targets) == 0:
        raise ValueError("targets is empty; pass one (B,) tensor of class indices per relation triplet.")
    for i, target in enumerate(targets):
        if not isinstance(target, Tensor) or target.shape != (batch,) or target.is_floating_point():
            found = f"{target.dtype} {tuple(target.shape)}" if isinstance(target, Tensor) else type(target).__name__
            raise ValueError(
                f"targets[{i}] must be an integer tensor of shape ({batch},) (one class index per sample, -100 for "
                f"none); got {found}."
            )
        bad = (target != IGNORE_INDEX) & (target < 0)
        if bool(bad.any()):
            raise ValueError(
                f"targets[{i}] holds negative class indices {sorted(set(target[bad].tolist()))}; only -100 "
                "(ignore) may be negative."
            )
    if isinstance(step_index, bool) or not isinstance(step_index, int) or step_index < 0:
        raise ValueError(f"step_index must be an int >= 0 (classifier step index); got {step_index!r}.")
    if not math.isfinite(step_size) or step_size <= 0:
        raise ValueError(f"step_size must be a finite number > 0 (official 5.0 or 7.5); got {step_size!r}.")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0 (official 16); got {iterations!r}.")
    if not math.isfinite(loss_threshold) or loss_threshold < 0:
        raise ValueError(f"loss_threshold must be a finite number >= 0 (official 1e-5..7e-5); got {loss_threshold!r}.")
    if early_stop_probability is not None and not 0.0 < early_stop_probability <= 1.0:
        raise ValueError(
            f"early_stop_probability must be in (0, 1] or None (off, official); got {early_stop_probability!r}."
        )
    return batch


def _check_maps(maps: Tensor, batch: int) -> None:
    """Raise ValueError unless ``maps`` is (B, 2, C, S, S)."""
    if not isinstance(maps, Tensor) or maps.ndim != 5 or maps.shape[0] != batch or maps.shape[1] != 2:
        found = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(
            f"maps_fn must return maps of shape ({batch}, 2, C, S, S) (subject, object); got {found}. "
            "Stack the subject and object maps on dim 1 and keep the latent's batch size."
        )


def _check_first_forward_finite(maps: Tensor, logits: Tensor, step_index: int) -> None:
    """Raise :class:`NonFiniteOutputError` when the first forward's maps or logits hold NaN or infinity."""
    if not bool(torch.isfinite(maps.detach()).all()):
        bad = int((~torch.isfinite(maps.detach())).sum())
        raise NonFiniteOutputError(
            f"The attention maps of the first steering forward (classifier step {step_index}) hold {bad} non-finite "
            f"values of {maps.numel()}: the denoiser produced NaN or infinity on the unmodified latent. Check the "
            "model and its dtype (fp16 overflow: try bf16 or fp32) before steering.",
            source="maps", step_index=step_index,
        )
    if not bool(torch.isfinite(logits.detach()).all()):
        shown = logits.detach().float().cpu()[:2].tolist()  # the first samples' logits, (<=2, R)
        raise NonFiniteOutputError(
            f"The relation classifier gave non-finite logits (first samples: {shown}) on finite "
            f"attention maps (first steering forward, classifier step {step_index}): its weights are broken "
            "(NaN or infinity) or overflow in its dtype. Re-export or re-download the classifier file.",
            source="logits", step_index=step_index,
        )


def _check_logits(logits: Tensor, batch: int, targets: Sequence[Tensor]) -> None:
    """Raise ValueError unless ``logits`` is (B, R) and every target is a valid class index."""
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        found = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"classifier must return logits of shape ({batch}, R); got {found}.")
    for i, target in enumerate(targets):
        _check_target_range(target, logits.shape[1], f"targets[{i}]")
