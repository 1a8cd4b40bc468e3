"""The steering sampler: Learn-to-Steer's test-time optimisation wrapped around any stock ComfyUI sampler.

For each of the first ``last_step`` steps of the schedule, the latent is refined by gradient steps on the
classifier's cross-entropy (l2s_core.optimize), then exactly one step of the chosen stock sampler runs on it; the
rest of the schedule goes to that sampler in one call. Multistep samplers (dpmpp_2m, uni_pc, ...) therefore restart
their history after every steered step and are first-order there; single-step samplers are unaffected.

Steering forwards run the conditional branch only (method.md §5.1) through ``calc_cond_batch`` with a private copy
of ``model_options`` that carries the attention capture, so every other forward keeps the user's fast attention
untouched. Gradients are taken with respect to the denoiser's scaled input (the diffusers ``z_t`` the official step
sizes were tuned for, method.md §5.6) and converted back to the sampler's latent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_management
import comfy.model_patcher
import comfy.samplers
import torch

from ..l2s_core.checkpoint import LoadedClassifier
from ..l2s_core.layout import check_channel_count, classifier_input
from ..l2s_core.optimize import IterationRecord, refine_latent
from ..l2s_core.settings import SteeringOptions, SteeringSettings
from ..l2s_core.steps import classifier_step_index
from .autograd import autograd_weights, gradient_mode
from .capture import AttentionCapture, CaptureRequest
from .spatial_prompt import SPEC_KEY, SpatialSpec

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
    """Per-run record of steering, shown by the Attention Preview node and in the node's UI text."""

    relations: list[str] = field(default_factory=list)
    steps: list[StepTrace] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary: target probability before and after each steered step."""
        return {
            "relations": self.relations,
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


def find_spec(conds: list[dict[str, Any]]) -> SpatialSpec:
    for cond in conds:
        spec = cond.get(SPEC_KEY)
        if isinstance(spec, SpatialSpec):
            return spec
    raise ValueError(
        "The positive conditioning carries no spatial relation. Encode the prompt with the 'Spatial Prompt Encode' "
        "node (it works like CLIP Text Encode and records which tokens name the two objects)."
    )


def _capture_options(model_options: dict[str, Any], capture: AttentionCapture, base_model: Any,
                     layout: str) -> dict[str, Any]:
    """A copy of model_options whose attention calls go through ``capture`` (the user's options stay untouched)."""
    options = model_options.copy()
    transformer_options = dict(options.get("transformer_options", {}))
    options["transformer_options"] = transformer_options
    if hasattr(comfy_attention, "wrap_attn"):
        capture.previous_override = transformer_options.get(OVERRIDE_KEY)
        transformer_options[OVERRIDE_KEY] = capture.override
        return options
    if layout != "unet":
        raise RuntimeError("Steering SD3/FLUX models needs ComfyUI 0.3.60 or newer (attention override); update ComfyUI.")
    diffusion_model = base_model.diffusion_model
    for block_name, blocks in (("input", diffusion_model.input_blocks), ("middle", [diffusion_model.middle_block]),
                               ("output", diffusion_model.output_blocks)):
        for number, block in enumerate(blocks):
            if any(type(m).__name__ == "SpatialTransformer" for m in block.modules()):
                options = comfy.model_patcher.set_model_options_patch_replace(
                    options, capture.attn2_replace, "attn2", block_name, number)
    return options


def _backward_capable_attention() -> Callable[..., torch.Tensor] | None:
    """PyTorch SDPA has a backward everywhere; fused kernels such as sage attention do not."""
    return getattr(comfy_attention, "attention_pytorch", None)


def steer_step(model: Any, x: torch.Tensor, sigmas: torch.Tensor, step: int, extra_args: dict[str, Any],
               job: SteeringJob, settings: SteeringSettings, spec: SpatialSpec) -> torch.Tensor:
    """Refine the sampler's latent ``x`` at ``sigmas[step]``; returns the new latent in x's dtype."""
    guider = model.inner_model
    base = guider.inner_model
    positive = guider.conds["positive"]
    layout, patch = model_layout(base)
    text_length = int(positive[0]["cross_attn"].shape[1])
    classifier = job.classifier
    capture = AttentionCapture(grad_attention=_backward_capable_attention())
    options = _capture_options(extra_args.get("model_options", {}), capture, base, layout)
    batch = x.shape[0]
    device = x.device
    num_steps = len(sigmas) - 1
    class_step = classifier_step_index(step, num_steps, classifier.trained_steps, classifier.trained_num_steps)

    with gradient_mode():
        sigma = sigmas[step].detach().clone().to(device)
        sigma_in = sigma.expand(batch).clone()
        scale = float(base.model_sampling.calculate_input(sigma.reshape(1), torch.ones(1, device=device)).item())
        z = x.detach().clone().float() * scale
        targets = [torch.full((batch,), classifier.relation_index(t.relation), dtype=torch.long, device=device)
                   for t in spec.triplets]
        snapshots: list[torch.Tensor] = []

        def maps_fn(z_leaf: torch.Tensor, triplet: int) -> torch.Tensor:
            positions = spec.positions[triplet]
            capture.begin(CaptureRequest(layout, text_length, positions.subject, positions.object,
                                         (x.shape[-2], x.shape[-1]), patch))
            try:
                comfy.samplers.calc_cond_batch(base, [positive], (z_leaf / scale).to(x.dtype), sigma_in, options)
            finally:
                subject, obj = capture.end()
            if not subject:
                raise RuntimeError("No text attention was captured during the steering forward pass.")
            maps = classifier_input(subject, obj, layout, classifier.map_size)  # (B, 2, C, S, S)
            check_channel_count(classifier.channels, maps.shape[2], expected_family=classifier.family)
            snapshots.append(maps.detach().mean(dim=2).cpu())  # (B, 2, S, S)
            return maps

        def on_iteration(record: IterationRecord) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            if job.on_iteration is not None:
                job.on_iteration()

        result = refine_latent(
            z, maps_fn, classifier.model, targets,
            step_index=class_step, step_size=settings.step_size, iterations=settings.iterations,
            loss_threshold=settings.threshold_for(step), early_stop_probability=settings.early_stop_probability,
            on_iteration=on_iteration,
        )
        new_x = (result.latent / scale).to(x.dtype)
    if snapshots:
        job.trace.steps.append(StepTrace(step, float(sigma), class_step, result.stopped, result.records,
                                         snapshots[0], snapshots[-1]))
    logger.info("L2S step %d: p(target) %s -> %s (%s, %d iterations)", step,
                _fmt(result.initial_target_probability), _fmt(result.final_target_probability), result.stopped,
                len(result.records))
    return new_x


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


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
        spec = find_spec(guider.conds.get("positive", []))
        job.trace.relations = [f"{t.subject} {t.relation} {t.object}" for t in spec.triplets]
        num_steps = len(sigmas) - 1
        settings = job.options.resolve(num_steps, job.classifier.family)
        steered = max(0, settings.last_step)
        job.trace.steps = []
        if job.on_start is not None:
            job.on_start(settings, num_steps)
        seed = extra_args.get("seed")

        def run_inner(x: torch.Tensor, first: int, last: int) -> torch.Tensor:
            args = extra_args if seed is None or first == 0 else {**extra_args, "seed": seed + first}
            shifted = None if callback is None else (lambda d: callback({**d, "i": d["i"] + first}))
            return inner.sampler_function(model, x, sigmas[first:last + 1], extra_args=args, callback=shifted,
                                          disable=disable, **inner.extra_options)

        if steered:
            job.classifier.model.to(x.device)
            with autograd_weights(guider.inner_model.diffusion_model), autograd_weights(job.classifier.model):
                for step in range(steered):
                    if float(sigmas[step]) <= 0:
                        break
                    comfy.model_management.throw_exception_if_processing_interrupted()
                    x = steer_step(model, x, sigmas, step, extra_args, job, settings, spec)
                    x = run_inner(x, step, step + 1)
        if steered < num_steps:
            x = run_inner(x, steered, num_steps)
        return x

    return comfy.samplers.KSAMPLER(sample, extra_options={}, inpaint_options=inner.inpaint_options)
