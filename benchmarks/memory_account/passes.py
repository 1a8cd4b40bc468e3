"""The accounted passes: a plain sampling step, and one steering iteration with and without recomputation.

* :func:`plain_step`: ComfyUI's CFG step (``comfy.samplers.sampling_function``) in inference mode: one no-grad
  forward of cond and uncond batched together (batch 2; ComfyUI batches them whenever its memory estimate fits,
  which the account assumes) or, for FLUX.1-dev at CFG 1, of the cond alone (batch 1).
* :func:`steering_iteration`: one iteration of the pack's steering step, built from the pack's own pieces the way
  ``nodes/steering.py`` runs it: ``SteeringRun.start`` (the attention capture in a private copy of the model
  options, the recomputable blocks), ``gradient_mode``, ``recomputed_blocks(run.blocks, run.capture.replay)`` when
  recomputing (memory ``low``), the capture's ``begin`` / ``calc_cond_batch`` on the steered entry / ``end``,
  ``classifier_input``, the relation classifier, cross-entropy and ``torch.autograd.grad`` to the latent, then the
  latent update. It is a replica of ``SteeringRun.steer`` + one ``refine_latent`` iteration without their
  value-dependent checks (``.item()``, ``isfinite``), which the meta device cannot answer; :func:`pack_steer` runs the
  pack's real ``SteeringRun.steer`` (one iteration) and is what the CPU checks measure, so the replica is checked
  against the real thing.

Every attention call goes through ComfyUI's ``attention_pytorch`` (its default on NVIDIA GPUs, and the function the
capture differentiates), whose kernel :mod:`.attention` models. ComfyUI's free-memory query is answered with "plenty"
(the meta device has none to report), so cond and uncond are batched.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F

from .build import CFG_SCALE, OBJECT_POSITIONS, SUBJECT_POSITIONS, Setup

logger = logging.getLogger(__name__)

STEP_SIZE = 5.0
PLENTY = 1 << 50
"""Free memory reported to ComfyUI during the passes (bytes): enough to batch cond and uncond."""

Phase = Callable[[str], None]


def _no_phase(_: str) -> None:
    return None


@contextlib.contextmanager
def plenty_of_memory(setup: Setup) -> Iterator[None]:
    """ComfyUI's free-memory query answers :data:`PLENTY` inside the block (the meta device has nothing to say)."""
    mm = setup.m.model_management
    original = mm.get_free_memory
    mm.get_free_memory = lambda *args, **kwargs: PLENTY
    try:
        yield
    finally:
        mm.get_free_memory = original


def pytorch_attention_options(setup: Setup) -> dict[str, Any]:
    """The patcher's model_options with every attention call sent to ``attention_pytorch`` (SDPA)."""
    grad_attention = setup.m.steering.backward_capable_attention()
    if grad_attention is None:
        raise RuntimeError("This ComfyUI has no attention_pytorch; the account needs ComfyUI >= 0.3.60.")
    options = dict(setup.patcher.model_options)
    transformer_options = dict(options.get("transformer_options", {}))

    def override(func: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        return grad_attention(*args, **kwargs)

    transformer_options[setup.m.steering.OVERRIDE_KEY] = override
    options["transformer_options"] = transformer_options
    return options


def _timestep(setup: Setup) -> torch.Tensor:
    return setup.sigmas[0].to(setup.device).expand(setup.x.shape[0]).clone()  # (B,)


def plain_step(setup: Setup, phase: Phase = _no_phase) -> None:
    """One CFG sampling step's denoiser work: ``sampling_function`` in inference mode."""
    cond_scale = CFG_SCALE if setup.negative else 1.0
    phase("forward")
    with torch.inference_mode(), plenty_of_memory(setup):
        denoised = setup.m.samplers.sampling_function(setup.base, setup.x, _timestep(setup), setup.negative or None,
                                                      setup.positive, cond_scale, pytorch_attention_options(setup))
        del denoised


def steering_run(setup: Setup, memory: str, iterations: int = 1) -> tuple[Any, Any]:
    """The pack's per-run steering context (``SteeringRun.start``) and the steered conditioning entry."""
    m = setup.m
    steering, spatial = m.steering, m.spatial_prompt
    triplet = m.prompts.RelationTriplet("a", m.relations.LEFT_OF, "b", (0, 1), (2, 16), (17, 18))
    spec = spatial.SpatialSpec(prompt="memory account", triplets=(triplet,),
                               positions=(spatial.PhrasePositions(SUBJECT_POSITIONS, OBJECT_POSITIONS),),
                               encoder="account", text_length=setup.text_length)
    steered = m.steered_conditioning.SteeredEntry(entry=setup.positive[0], index=0, spec=spec,
                                                  text_length=setup.text_length,
                                                  latent_size=(setup.x.shape[-2], setup.x.shape[-1]))
    # Threshold 0: the iteration updates (the official thresholds would only stop a trained classifier).
    settings = steering.SteeringSettings(last_step=1, step_size=STEP_SIZE, iterations=iterations,
                                         loss_thresholds=(0.0,))
    job = steering.SteeringJob(classifier=setup.classifier, options=steering.SteeringOptions(), memory=memory)
    window = m.steps.ScheduleWindow.from_noise(len(setup.sigmas) - 1)
    run = steering.SteeringRun.start(setup.base, pytorch_attention_options(setup), job, settings, window)
    return run, steered


def steering_iteration(setup: Setup, recompute: bool, phase: Phase = _no_phase) -> None:
    """One steering iteration as ``SteeringRun.steer`` runs it (see the module docstring); value-free."""
    m = setup.m
    run, steered = steering_run(setup, "low" if recompute else "fast")
    request = m.attention.MapRequest(setup.layout, setup.text_length, SUBJECT_POSITIONS, OBJECT_POSITIONS,
                                     steered.latent_size, setup.patch)
    classifier = setup.classifier
    target = torch.zeros(1, dtype=torch.long, device=setup.device)  # (B,)
    with m.autograd.gradient_mode(), plenty_of_memory(setup):
        sigma_in = _timestep(setup)
        z = setup.x.detach().clone().float() * setup.scale
        blocks = (m.recompute.recomputed_blocks(run.blocks, run.capture.replay) if recompute
                  else contextlib.nullcontext())
        with blocks:
            z_leaf = z.detach().requires_grad_(True)
            phase("forward")
            run.capture.begin(request)
            try:
                m.samplers.calc_cond_batch(setup.base, [[steered.entry]], (z_leaf / setup.scale).to(setup.x.dtype),
                                           sigma_in, run.model_options)
            finally:
                subject, obj = run.capture.end()
            maps = m.layout.classifier_input(subject, obj, setup.layout, classifier.map_size)  # (B, 2, C, S, S)
            del subject, obj
            steps = torch.zeros(1, dtype=torch.long, device=setup.device)  # (B,)
            logits = classifier.model(maps, steps)  # (B, R)
            losses = F.cross_entropy(logits.float(), target, reduction="none")  # (B,)
            phase("backward")
            (grad,) = torch.autograd.grad(losses.sum(), z_leaf)
            del maps, logits, losses
        phase("update")
        z = z - STEP_SIZE * grad
        new_x = (z / setup.scale).to(setup.x.dtype)
        del grad, new_x


def pack_steer(setup: Setup, recompute: bool, phase: Phase = _no_phase) -> None:
    """The pack's own ``SteeringRun.steer`` at step 0 with one iteration (real values: CPU checks only)."""
    run, steered = steering_run(setup, "low" if recompute else "fast")
    phase("steer")
    with plenty_of_memory(setup):
        new_x = run.steer(setup.x, setup.sigmas.to(setup.device), 0, steered)
    stops = [step.stopped for step in run.job.trace.steps]
    if stops != ["iterations"]:
        raise RuntimeError(f"The steering iteration did not run to its end: {stops}.")
    del new_x


PASSES: dict[str, Callable[[Setup, Phase], None]] = {
    "plain": plain_step,
    "fast": lambda setup, phase: steering_iteration(setup, False, phase),
    "low": lambda setup, phase: steering_iteration(setup, True, phase),
}
"""The three accounted passes: plain sampling, steering without (memory fast) and with (memory low) recomputation."""

PACK_PASSES: dict[str, Callable[[Setup, Phase], None]] = {
    "plain": plain_step,
    "fast": lambda setup, phase: pack_steer(setup, False, phase),
    "low": lambda setup, phase: pack_steer(setup, True, phase),
}
"""The same passes with the pack's real ``SteeringRun.steer`` (values needed: CPU only)."""
