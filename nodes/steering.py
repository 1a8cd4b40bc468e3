"""The steering sampler: Learn-to-Steer's test-time optimisation wrapped around any stock ComfyUI sampler.

For each steered step of the schedule (the first ``last_step`` steps where the spatial conditioning is active), the
latent is refined by gradient steps on the classifier's cross-entropy (l2s_core.optimize), then exactly one step of
the chosen stock sampler runs on it; the steps in between and the rest of the schedule go to that sampler in one
call each. Multistep samplers (dpmpp_2m, uni_pc, ...) therefore restart their history after every steered step and
are first-order there; single-step samplers are unaffected.

Steering forwards run the conditional branch of the Spatial Prompt Encode entry only (the other positive entries are
left to the normal steps, :mod:`.steered_conditioning`) through ``calc_cond_batch`` with a
private copy of ``model_options`` that carries the attention capture, so every other forward keeps the user's fast
attention untouched. Gradients are taken with respect to the denoiser's scaled input (the diffusers ``z_t`` the
official step sizes were tuned for) and converted back to the sampler's latent.

A schedule that is not a whole run from pure noise (img2img, split sigmas) is placed in the from-noise schedule it is
part of (:class:`l2s_core.steps.ScheduleWindow`): the classifier gets the step embedding of the noise level, and the
default steered range is the part of the official range the schedule covers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_management
import comfy.samplers
import torch

from ..l2s_core.attention import MapRequest
from ..l2s_core.checkpoint import LoadedClassifier
from ..l2s_core.layout import LayerMaps
from ..l2s_core.optimize import IterationRecord, NonFiniteOutputError
from ..l2s_core.recompute import recomputed_blocks
from ..l2s_core.settings import SteeringOptions, SteeringSettings
from ..l2s_core.steer import NoAttentionRecordedError, steer_step
from ..l2s_core.steps import ScheduleWindow, progress_at_sigma, step_seed
from .autograd import autograd_weights, gradient_mode
from .capture import AttentionCapture
from .memory import MemoryChoice, choose_memory, recomputable_blocks
from .steered_conditioning import SteeredEntry, plan_steered_steps, spatial_entries

logger = logging.getLogger(__name__)

OVERRIDE_KEY = "optimized_attention_override"


@dataclass
class StepTrace:
    """What happened at one steered step."""

    step: int
    sigma: float
    classifier_step: int
    stopped: str
    records: tuple[IterationRecord, ...]
    maps_before: torch.Tensor  # (B, 2, S, S) channel-mean subject/object maps at the first iteration
    maps_after: torch.Tensor  # (B, 2, S, S) at the last iteration


@dataclass
class SteeringTrace:
    """Per-run record of steering, shown by the Attention Preview node and in the node's UI text.

    Attributes:
        relations: the steered relations, "subject relation object".
        steps: one record per steered step.
        num_steps: length of the schedule sampled.
        full_steps: length of the from-noise schedule it is part of (== num_steps for a whole run).
        offset: steps of that schedule before this one's first step (0 = from pure noise).
        notes: why steps were not steered (partial denoise past the steered range, conditioning inactive).
    """

    relations: list[str] = field(default_factory=list)
    steps: list[StepTrace] = field(default_factory=list)
    num_steps: int = 0
    full_steps: int = 0
    offset: int = 0
    notes: list[str] = field(default_factory=list)

    def reset(self) -> None:
        """Clear the record at the start of a sampling run (node outputs are cached across prompts)."""
        self.relations, self.steps, self.notes = [], [], []
        self.num_steps = self.full_steps = self.offset = 0

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary: target probability before and after each steered step."""
        return {
            "relations": self.relations,
            "num_steps": self.num_steps,
            "full_steps": self.full_steps,
            "offset": self.offset,
            "notes": self.notes,
            "steps": [
                {
                    "step": s.step,
                    "classifier_step": s.classifier_step,
                    "iterations": len(s.records),
                    "stopped": s.stopped,
                    "p_before": list(s.records[0].target_probabilities) if s.records else [],
                    "p_after": list(s.records[-1].target_probabilities) if s.records else [],
                }
                for s in self.steps
            ],
        }


@dataclass
class SteeringJob:
    """Everything one steering run needs besides the sampler's own arguments."""

    classifier: LoadedClassifier
    options: SteeringOptions
    trace: SteeringTrace = field(default_factory=SteeringTrace)
    on_iteration: Callable[[], None] | None = None
    on_start: Callable[[SteeringSettings, int], None] | None = None
    memory: str = "auto"
    """"auto", "fast" or "low" (:mod:`.memory`): whether steering forwards recompute each block in the backward."""
    window: ScheduleWindow | None = None
    """Where the sigmas sit in the from-noise run, when the caller knows it (KSampler: the tail given by steps and
    denoise); None estimates it from the sigmas on the model's noise scale."""


def model_layout(base_model: Any) -> tuple[str, int]:
    """("unet" | "joint", image patch size) of a ComfyUI BaseModel, or a clear error for other architectures."""
    diffusion_model = base_model.diffusion_model
    name = type(diffusion_model).__name__
    lineage = {cls.__name__ for cls in type(diffusion_model).__mro__}
    if "UNetModel" in lineage:
        return "unet", 1
    if lineage & {"Flux", "MMDiT"}:
        patch = getattr(diffusion_model, "patch_size", 2)
        return "joint", int(patch[-1] if isinstance(patch, (tuple, list)) else patch)
    raise ValueError(
        f"Learned Spatial Steer supports SD1.x, SD2.x, SDXL (UNet), SD3 and FLUX.1 models; this model's denoiser is "
        f"{name} ({type(base_model.model_config).__name__})."
    )


def capture_options(model_options: dict[str, Any], capture: AttentionCapture) -> dict[str, Any]:
    """A copy of model_options whose attention calls go through ``capture`` (the user's options stay untouched)."""
    options = model_options.copy()
    transformer_options = dict(options.get("transformer_options", {}))
    options["transformer_options"] = transformer_options
    capture.previous_override = transformer_options.get(OVERRIDE_KEY)
    transformer_options[OVERRIDE_KEY] = capture.override
    return options


def backward_capable_attention() -> Callable[..., torch.Tensor] | None:
    """PyTorch SDPA has a backward everywhere; fused kernels such as sage attention do not."""
    return getattr(comfy_attention, "attention_pytorch", None)


@dataclass
class SteeringRun:
    """One sampling run's steering context: the model unwrapped and the attention capture installed once.

    Build it with :meth:`start` when a run has steps to steer, then call :meth:`steer` at each of them. The capture
    lives in a private copy of the run's ``model_options``; the user's options are never modified.

    Attributes:
        base: ComfyUI's BaseModel (the guider's inner model).
        layout: "unet" or "joint"; ``patch`` the image patch size of a joint-attention model.
        capture: the attention capture of the steering forwards.
        model_options: the run's model options plus the capture's attention override.
        job, settings, window: what to steer, how hard, and where the schedule sits in its from-noise run.
        blocks: the blocks recomputed in the backward when memory says so.
        memory: what ``job.memory`` resolved to (decided at the first steered step; None before).
    """

    base: Any
    layout: str
    patch: int
    capture: AttentionCapture
    model_options: dict[str, Any]
    job: SteeringJob
    settings: SteeringSettings
    window: ScheduleWindow
    blocks: list[torch.nn.Module] = field(default_factory=list)
    memory: MemoryChoice | None = None
    settled: list[bool] | None = None  # per sample, with settings.settle: no longer steered

    @classmethod
    def start(cls, base: Any, model_options: dict[str, Any], job: SteeringJob, settings: SteeringSettings,
              window: ScheduleWindow) -> SteeringRun:
        """Unwrap the model and install the capture for a run (``model_options`` is copied, never changed)."""
        layout, patch = model_layout(base)
        capture = AttentionCapture(grad_attention=backward_capable_attention())
        return cls(base, layout, patch, capture, capture_options(model_options, capture), job, settings, window,
                   recomputable_blocks(base.diffusion_model))

    def steer(self, x: torch.Tensor, sigmas: torch.Tensor, step: int, steered: SteeredEntry) -> torch.Tensor:
        """Refine the sampler's latent ``x`` at ``sigmas[step]``; returns the new latent in x's dtype.

        Only ``steered.entry`` (the spatial conditioning) is run, with its own tokens and area.
        """
        base, spec, classifier, job = self.base, steered.spec, self.job.classifier, self.job
        batch, device = x.shape[0], x.device
        if self.settled is not None and all(self.settled):
            job.trace.notes.append(f"step {step} not steered: every image settled (the classifier already read the "
                                   "relation at the start of an earlier step)")
            return x
        with gradient_mode(base.diffusion_model):
            sigma = sigmas[step].detach().clone().to(device)
            sigma_in = sigma.expand(batch).clone()
            scale = float(base.model_sampling.calculate_input(sigma.reshape(1), torch.ones(1, device=device)).item())
            z = x.detach().clone().float() * scale
            relations = [[t.relation] * batch for t in spec.triplets]
            snapshots: list[torch.Tensor] = []

            def layers_fn(z_leaf: torch.Tensor, triplet: int) -> tuple[list[LayerMaps], list[LayerMaps]]:
                positions = spec.positions[triplet]
                self.capture.begin(MapRequest(self.layout, steered.text_length, positions.subject, positions.object,
                                              steered.latent_size, self.patch))
                try:
                    comfy.samplers.calc_cond_batch(base, [[steered.entry]], (z_leaf / scale).to(x.dtype), sigma_in,
                                                   self.model_options)
                finally:
                    layers = self.capture.end()
                return layers

            def on_iteration(record: IterationRecord) -> None:
                comfy.model_management.throw_exception_if_processing_interrupted()
                if job.on_iteration is not None:
                    job.on_iteration()

            if self.memory is None:
                self.memory = choose_memory(job.memory, base.diffusion_model, device,
                                            lambda: layers_fn(z.clone().requires_grad_(True), 0))
                job.trace.notes.append(self.memory.describe())
                logger.info("L2S: %s", self.memory.describe())
            recomputing = (recomputed_blocks(self.blocks, self.capture.replay) if self.memory.recompute
                           else contextlib.nullcontext())
            try:
                with recomputing:
                    result = steer_step(
                        z, layers_fn, classifier, relations, layout=self.layout, settings=self.settings,
                        window=self.window, step=step,
                        on_maps=lambda maps: snapshots.append(maps.detach().mean(dim=2).cpu()),  # (B, 2, S, S)
                        on_iteration=on_iteration, skip=self.settled,
                    )
            except NoAttentionRecordedError as error:
                raise RuntimeError(
                    f"No text attention was captured during the steering forward pass (text length "
                    f"{steered.text_length}, latent area {steered.latent_size}). The model's attention does not go "
                    "through ComfyUI's attention functions; another custom node may have replaced them."
                ) from error
            except NonFiniteOutputError as error:
                raise ValueError(_non_finite_message(error, classifier)) from error
            refined = result.refined
            new_x = (refined.latent / scale).to(x.dtype)
            if self.settings.settle:
                self.settled = [a or b for a, b in zip(self.settled or [False] * batch, result.settled, strict=True)]
        if snapshots:
            job.trace.steps.append(StepTrace(step, float(sigma), result.classifier_step, refined.stopped,
                                             refined.records, snapshots[0], snapshots[-1]))
        logger.info("L2S step %d (classifier step %d): p(target) %s -> %s (%s, %d iterations)", step,
                    result.classifier_step, _fmt(refined.initial_target_probability),
                    _fmt(refined.final_target_probability), refined.stopped, len(refined.records))
        return new_x


def _non_finite_message(error: NonFiniteOutputError, classifier: LoadedClassifier) -> str:
    """Say which file is broken and how, for a NaN/inf at the first classifier call."""
    name = classifier.source_path or "the relation classifier (built in memory)"
    if error.source == "maps":
        return (f"Learned Spatial Steer: {error} The classifier ({name}) was not the cause.")
    broken = [n for n, t in list(classifier.model.named_parameters()) + list(classifier.model.named_buffers())
              if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        listed = ", ".join(broken[:5]) + (f" and {len(broken) - 5} more" if len(broken) > 5 else "")
        what = f"its weights hold NaN or infinity ({listed})"
    else:
        what = "its weights are finite but its logits overflow"
    return (
        f"Learned Spatial Steer: the relation classifier {name} gives non-finite logits at the first steering step "
        f"(classifier step {error.step_index}), so it cannot steer: {what}. The file is damaged or was exported "
        "from a diverged training run; re-export it from a good checkpoint (python -m training export) or "
        "download it again, and load it with Load Relation Classifier."
    )


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def _schedule_window(job: SteeringJob, base: Any, sigmas: torch.Tensor) -> ScheduleWindow:
    """Where the sigmas sit in the from-noise run: given by the node (KSampler), else estimated from the sigmas."""
    num_steps = len(sigmas) - 1
    if job.window is not None and job.window.num_steps == num_steps:
        return job.window
    model_sampling = base.model_sampling

    def progress(sigma: torch.Tensor) -> float:
        return progress_at_sigma(float(sigma), lambda p: float(model_sampling.percent_to_sigma(p)))

    if float(sigmas[0]) >= float(model_sampling.sigma_max) * (1 - 1e-5) and float(sigmas[-1]) <= 0:
        return ScheduleWindow.from_noise(num_steps)  # ComfyUI's own "from pure noise" test (KSAMPLER.max_denoise)
    start, second, end = progress(sigmas[0]), progress(sigmas[1]), progress(sigmas[-1])
    if start >= end:
        return ScheduleWindow.from_noise(num_steps)  # not a decreasing schedule: nothing to place
    return ScheduleWindow.estimate(num_steps, start, min(max(second, start), end), end)


def steering_sampler(job: SteeringJob, inner: Any) -> comfy.samplers.KSAMPLER:
    """A SAMPLER that steers the first steps and hands every step to the stock sampler ``inner`` (a KSAMPLER)."""
    if not isinstance(inner, comfy.samplers.KSAMPLER):
        raise ValueError(
            f"Learned Spatial Steer can wrap k-diffusion samplers (KSamplerSelect and similar); got {type(inner).__name__}."
        )

    @torch.no_grad()
    def sample(model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None = None,
               callback: Callable[[dict[str, Any]], None] | None = None, disable: bool | None = None,
               **_: Any) -> torch.Tensor:
        extra_args = {} if extra_args is None else extra_args
        guider = model.inner_model
        positive = guider.conds.get("positive", [])
        num_steps = len(sigmas) - 1
        if num_steps < 1:
            return x
        window = _schedule_window(job, guider.inner_model, sigmas)
        settings = job.options.resolve(num_steps, job.classifier.family, window)
        job.trace.reset()
        job.trace.num_steps, job.trace.full_steps, job.trace.offset = num_steps, window.full_steps, window.offset
        candidates = [s for s in range(max(0, settings.last_step)) if float(sigmas[s]) > 0]
        plan = plan_steered_steps(positive, x, sigmas, candidates)  # fails here, before any sampling work
        _note_unsteered(job, settings, window, candidates, plan)
        specs = [e.spec for e in plan.values()] or [spec for _, _, spec in spatial_entries(positive)]
        job.trace.relations = list(dict.fromkeys(f"{t.subject} {t.relation} {t.object}"
                                                 for spec in specs for t in spec.triplets))
        if job.on_start is not None:
            job.on_start(settings, num_steps)
        seed = extra_args.get("seed")

        def run_inner(x: torch.Tensor, first: int, last: int) -> torch.Tensor:
            args = extra_args if seed is None or first == 0 else {**extra_args, "seed": step_seed(seed, first)}
            shifted = None if callback is None else (lambda d: callback({**d, "i": d["i"] + first}))
            return inner.sampler_function(model, x, sigmas[first:last + 1], extra_args=args, callback=shifted,
                                          disable=disable, **inner.extra_options)

        done = 0
        if plan:
            job.classifier.model.to(x.device)
            run = SteeringRun.start(guider.inner_model, extra_args.get("model_options", {}), job, settings, window)
            with autograd_weights(guider.inner_model.diffusion_model), autograd_weights(job.classifier.model):
                for step, steered in sorted(plan.items()):
                    if step > done:
                        x = run_inner(x, done, step)
                    comfy.model_management.throw_exception_if_processing_interrupted()
                    x = run.steer(x, sigmas, step, steered)
                    x = run_inner(x, step, step + 1)
                    done = step + 1
        if done < num_steps:
            x = run_inner(x, done, num_steps)
        return x

    return comfy.samplers.KSAMPLER(sample, extra_options={}, inpaint_options=inner.inpaint_options)


def _note_unsteered(job: SteeringJob, settings: SteeringSettings, window: ScheduleWindow, candidates: list[int],
                    plan: dict[int, SteeredEntry]) -> None:
    """Record (trace notes and log) where the schedule sits and why fewer steps than asked are steered."""
    if window.partial:
        note = (f"partial schedule: these {window.num_steps} steps are steps {window.offset}.."
                f"{window.offset + window.num_steps - 1} of a {window.full_steps}-step run from noise; classifier "
                "steps follow that run")
        if job.options.last_step is None:
            note += (f"; the official range covers {settings.last_step} of them"
                     + (" (nothing is steered: the layout comes from the input latent; use custom mode "
                        "to steer anyway)" if settings.last_step == 0 else ""))
        job.trace.notes.append(note)
    skipped = [s for s in candidates if s not in plan]
    if skipped:
        job.trace.notes.append(f"steps {skipped} not steered: the Spatial Prompt Encode conditioning is not active "
                               "there (ConditioningSetTimestepRange)")
    for note in job.trace.notes:
        logger.info("L2S: %s", note)
