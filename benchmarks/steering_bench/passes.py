"""The measured passes: the plain forward, the plain forward+backward, the pack's steering iteration, the reference."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .bench import Bench, pytorch_attention_options, sigma_in
from .models import MODELS
from .reference_capture import full_probability_capture_class


def plain_forward(bench: Bench) -> None:
    """(1) The positive branch of a normal sampling step (inference mode) with SDPA attention."""
    with torch.inference_mode():
        bench.m.samplers.calc_cond_batch(bench.base, [bench.positive], bench.x, sigma_in(bench),
                                         pytorch_attention_options(bench))


def plain_forward_default_attention(bench: Bench) -> None:
    """(1) with the attention function ComfyUI picked for this device (sub-quadratic on CPU)."""
    with torch.inference_mode():
        bench.m.samplers.calc_cond_batch(bench.base, [bench.positive], bench.x, sigma_in(bench), bench.model_options)


def plain_forward_backward(bench: Bench) -> None:
    """(b) Forward + gradient w.r.t. the latent of a scalar loss on the denoiser output, no capture."""
    base = bench.base
    options = pytorch_attention_options(bench)
    with bench.m.autograd.gradient_mode():
        sigma = bench.sigmas[0]
        scale = float(base.model_sampling.calculate_input(sigma.reshape(1), torch.ones(1, device=bench.device)).item())
        z = (bench.x.detach().clone() * scale).requires_grad_(True)
        out = bench.m.samplers.calc_cond_batch(base, [bench.positive], z / scale, sigma_in(bench), options)[0]
        loss = out.float().square().mean()
        (grad,) = torch.autograd.grad(loss, z)
        del grad


def _steering_run(bench: Bench, iterations: int, on_iteration: Callable[[], None] | None,
                  memory: str) -> tuple[Any, Any]:
    """The node's own per-run steering context (public ``SteeringRun``) and the steered conditioning entry."""
    m = bench.m
    steering, prompts, spatial = m.steering, m.prompts, m.spatial_prompt
    triplet = prompts.RelationTriplet("a", m.relations.LEFT_OF, "b", (0, 1), (2, 16), (17, 18))
    spec = spatial.SpatialSpec(prompt="benchmark", triplets=(triplet,),
                               positions=(spatial.PhrasePositions(bench.subject, bench.object),),
                               encoder=MODELS[bench.args.model].encoder, text_length=bench.text_length)
    steered = m.steered_conditioning.SteeredEntry(entry=bench.positive[0], index=0, spec=spec,
                                                  text_length=bench.text_length,
                                                  latent_size=(bench.x.shape[-2], bench.x.shape[-1]))
    # Threshold 0: every iteration updates (the official thresholds would only stop a trained classifier).
    settings = steering.SteeringSettings(last_step=1, step_size=5.0, iterations=iterations, loss_thresholds=(0.0,))
    job = steering.SteeringJob(classifier=bench.classifier, options=steering.SteeringOptions(),
                               on_iteration=on_iteration, memory=memory)
    window = m.steps.ScheduleWindow.from_noise(len(bench.sigmas) - 1)
    return steering.SteeringRun.start(bench.base, bench.model_options, job, settings, window), steered


def steering_iterations(bench: Bench, iterations: int, on_iteration: Callable[[], None] | None = None,
                        memory: str = "auto") -> list[str]:
    """(2)/(a) ``iterations`` iterations of the pack's steering step at step 0; returns the stop reasons.

    ``memory`` is the steering node's ``memory`` input: "fast" keeps every block's activations for the backward,
    "low" recomputes each block in the backward, "auto" chooses by what ComfyUI reports free.
    """
    run, steered = _steering_run(bench, iterations, on_iteration, memory)
    run.steer(bench.x, bench.sigmas, 0, steered)
    return [step.stopped for step in run.job.trace.steps]


def steering_iteration(bench: Bench, memory: str = "auto") -> None:
    """(2)/(a) One iteration of the pack's steering step, run to its end."""
    stops = steering_iterations(bench, 1, memory=memory)
    if stops != ["iterations"]:
        raise RuntimeError(f"The steering iteration did not run to the end: {stops}.")


def reference_iteration(bench: Bench) -> None:
    """(c) The steering iteration with a capture that materialises every attention call's full probabilities.

    Without recomputation (``memory`` fast), as the official code keeps everything for its backward.
    """
    steering = bench.m.steering
    original = steering.AttentionCapture
    steering.AttentionCapture = full_probability_capture_class(bench.m.capture)
    try:
        steering_iteration(bench, memory="fast")
    finally:
        steering.AttentionCapture = original


STEERING_MEMORY = ("auto", "fast", "low")
"""The steering node's ``memory`` input values (``l2s_core.recompute.MEMORY_MODES``)."""


def steer_mode(memory: str) -> str:
    """The measured mode of a steering iteration with this ``memory`` input, e.g. "steer_low"."""
    return f"steer_{memory}"


MODE_FUNCTIONS: dict[str, Callable[[Bench], None]] = {
    "plain": plain_forward,
    **{steer_mode(memory): functools.partial(steering_iteration, memory=memory) for memory in STEERING_MEMORY},
    "plain_fwd_bwd": plain_forward_backward,
    "reference": reference_iteration,
}
"""Every measurable pass: (p) plain sampling's forward, (a) a steering iteration per ``memory`` input, (b) the
plain forward+backward, (c) the full-probability reference."""


def measured_modes(memory: tuple[str, ...], lean: bool) -> tuple[str, ...]:
    """The memory figures of a run: plain sampling, a steering iteration per ``memory``, unless ``lean`` (b), (c)."""
    return ("plain", *(steer_mode(m) for m in memory), *(() if lean else ("plain_fwd_bwd", "reference")))
