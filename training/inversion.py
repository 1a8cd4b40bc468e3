"""Inversion math for data creation: fixed-point DDIM inversion (UNet families) and the RF-inversion path (flow).

This module owns the latent trajectories of data creation. It knows nothing about attention or files: the
denoiser enters as a callable, so the driver decides at which steps maps are recorded.

UNet families (SD1.x, SD2.x, SDXL)
    Generation step ``i`` (0 = noisiest) takes the latent at timestep ``t_i`` (``alpha_i`` = alphas_cumprod) to the
    previous timestep (``alpha_prev_i``), deterministic DDIM (eta 0)::

        z_{i+1} = sqrt(alpha_prev_i) * x0(z_i) + sqrt(1 - alpha_prev_i) * eps(z_i)

    Inversion solves this implicit equation for ``z_i`` given ``z_{i+1}``, from the clean latent up to the noisiest
    one, with ``K`` fixed-point iterations per step: ``z^(0) = z_{i+1}``, then ``K`` times
    ``eps = eps(z^(k)); z^(k+1) = sqrt(alpha_i) * (z_{i+1} - sqrt(1 - alpha_prev_i) * eps) / sqrt(alpha_prev_i)
    + sqrt(1 - alpha_i) * eps``. The first iteration is plain DDIM inversion; the official runs use K = 5 and
    guidance 1 (the conditional prediction only). The reconstruction is the DDIM generation from the inverted latent
    with the same prompt. Epsilon, v and sample prediction types are supported (the model output is converted to
    eps and x0 at the latent it was evaluated at).

Flow families (FLUX, SD3)
    RF-Inversion with controller strength gamma = 1 (inversion) and eta = 1 at every reconstruction step gives the
    model velocity zero weight in both directions, so the whole path is closed form:

    * inversion (controlled forward ODE, Algorithm 1, ``N`` Euler steps with step sizes ``s_k - s_{k+1}`` and the
      algorithm's time ``t_k = k / (N + 1)``): the model velocity cancels and the result is
      ``Y_inv = w * y0 + (1 - w) * y1`` with ``w`` a number that depends only on the sigmas
      (:func:`rf_inversion_y0_weight`; 0.1128 for the 4-step schnell schedule) and ``y1`` seeded Gaussian noise;
    * reconstruction (controlled reverse ODE with eta 1): the latent at step ``i`` is
      ``(1 - s_i / s_0) * y0 + (s_i / s_0) * Y_inv`` (``s_0 = 1`` for the flow schedules, giving
      ``(1 - sigma_i) * y0 + sigma_i * Y_inv``), and the final latent is exactly ``y0``.

    The driver therefore builds the latents of the recorded steps directly and runs the transformer only there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

Denoise = Callable[[torch.Tensor, int], torch.Tensor]
"""``denoise(latent, step_index) -> model output`` (same shape as the latent); step 0 is the noisiest."""

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class DDIMSchedule:
    """Deterministic DDIM schedule in generation order.

    Attributes:
        timesteps: Model timesteps, noisiest first (``len == N``).
        alphas: ``alphas_cumprod`` at each timestep.
        alphas_prev: ``alphas_cumprod`` after each step (the final one is the scheduler's final alpha).
        prediction_type: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
    """

    timesteps: tuple[int, ...]
    alphas: tuple[float, ...]
    alphas_prev: tuple[float, ...]
    prediction_type: str

    def __post_init__(self) -> None:
        """Check lengths and the prediction type."""
        n = len(self.timesteps)
        if n == 0 or len(self.alphas) != n or len(self.alphas_prev) != n:
            raise ValueError("A DDIM schedule needs one alpha and one previous alpha per timestep, and >= 1 step.")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"Unsupported prediction_type {self.prediction_type!r}; expected one of {PREDICTION_TYPES}."
            )

    @property
    def num_steps(self) -> int:
        """Number of generation steps N."""
        return len(self.timesteps)

    @classmethod
    def from_scheduler(cls, scheduler: Any, num_steps: int) -> DDIMSchedule:
        """Build the schedule the way diffusers' DDIMScheduler steps (eta 0), from its config.

        Args:
            scheduler: A diffusers DDIM-compatible scheduler (``alphas_cumprod``, ``final_alpha_cumprod`` or
                ``set_alpha_to_one``, ``config.num_train_timesteps``, ``set_timesteps``).
            num_steps: Number of inference steps N.

        Raises:
            ValueError: ``num_steps < 1`` or the scheduler has no ``alphas_cumprod``.
        """
        if num_steps < 1:
            raise ValueError(f"--steps must be >= 1, got {num_steps}.")
        if not hasattr(scheduler, "alphas_cumprod"):
            raise ValueError(
                f"The pipeline's scheduler {type(scheduler).__name__} has no alphas_cumprod; DDIM inversion needs a "
                "DDPM-style (beta) scheduler such as DDIMScheduler."
            )
        scheduler.set_timesteps(num_steps)
        timesteps = [int(t) for t in scheduler.timesteps]
        acp = scheduler.alphas_cumprod.double()
        if hasattr(scheduler, "final_alpha_cumprod"):
            final = float(scheduler.final_alpha_cumprod)
        else:
            final = 1.0 if bool(getattr(scheduler.config, "set_alpha_to_one", False)) else float(acp[0])
        stride = int(scheduler.config.num_train_timesteps) // num_steps
        alphas = [float(acp[t]) for t in timesteps]
        alphas_prev = [float(acp[t - stride]) if t - stride >= 0 else final for t in timesteps]
        prediction_type = str(getattr(scheduler.config, "prediction_type", "epsilon"))
        return cls(tuple(timesteps), tuple(alphas), tuple(alphas_prev), prediction_type)


def eps_and_x0(
    output: torch.Tensor, latent: torch.Tensor, alpha: float, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert a model output at ``latent`` (noise level ``alpha``) into (eps, x0), in float32."""
    out = output.float()
    z = latent.float()
    a, s = math.sqrt(alpha), math.sqrt(1.0 - alpha)
    if prediction_type == "epsilon":
        return out, (z - s * out) / a
    if prediction_type == "v_prediction":
        return a * out + s * z, a * z - s * out
    if prediction_type == "sample":
        return (z - a * out) / s, out
    raise ValueError(f"Unsupported prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}.")


def ddim_sample(denoise: Denoise, start: torch.Tensor, schedule: DDIMSchedule) -> torch.Tensor:
    """Deterministic DDIM generation from the noisiest latent ``start`` over all N steps.

    ``denoise`` is called once per step with the step index, so the caller can record at chosen steps.

    Returns:
        The final (clean) latent, float32.
    """
    z = start.float()
    for i in range(schedule.num_steps):
        eps, x0 = eps_and_x0(denoise(z, i), z, schedule.alphas[i], schedule.prediction_type)
        ap = schedule.alphas_prev[i]
        z = math.sqrt(ap) * x0 + math.sqrt(1.0 - ap) * eps
    return z


def ddim_invert_fixed_point(
    denoise: Denoise, clean: torch.Tensor, schedule: DDIMSchedule, iterations: int
) -> torch.Tensor:
    """Fixed-point DDIM inversion from the clean latent to the noisiest one.

    Args:
        denoise: Model call (conditioned on the source prompt, guidance 1).
        clean: The VAE latent of the image, already scaled.
        schedule: The generation schedule; inversion walks it backwards.
        iterations: Fixed-point iterations per step (>= 1; 1 is plain DDIM inversion).

    Returns:
        The inverted latent at step 0 (the noisiest), float32.

    Raises:
        ValueError: ``iterations < 1``.
    """
    if iterations < 1:
        raise ValueError(f"--fixed-point-iterations must be >= 1, got {iterations}.")
    target = clean.float()  # z_{i+1}
    for i in reversed(range(schedule.num_steps)):
        a, ap = schedule.alphas[i], schedule.alphas_prev[i]
        candidate = target
        for _ in range(iterations):
            eps, _x0 = eps_and_x0(denoise(candidate, i), candidate, a, schedule.prediction_type)
            candidate = math.sqrt(a) * (target - math.sqrt(1.0 - ap) * eps) / math.sqrt(ap) + math.sqrt(1.0 - a) * eps
        target = candidate
    return target


@dataclass(frozen=True)
class FlowSchedule:
    """A flow-matching schedule in generation order.

    Attributes:
        sigmas: ``N + 1`` noise levels, noisiest first, ending with 0.
        timesteps: The model timesteps of the N steps (``sigma * num_train_timesteps``).
    """

    sigmas: tuple[float, ...]
    timesteps: tuple[float, ...]

    @property
    def num_steps(self) -> int:
        """Number of steps N."""
        return len(self.timesteps)


def flow_schedule(scheduler: Any, num_steps: int, image_seq_len: int | None, flux_sigmas: bool) -> FlowSchedule:
    """The sigmas the diffusers FLUX / SD3 pipeline samples with.

    Args:
        scheduler: The pipeline's FlowMatchEulerDiscreteScheduler.
        num_steps: N.
        image_seq_len: Image tokens (for FLUX's dynamic shift ``mu``), or None.
        flux_sigmas: True for FLUX (``sigmas = linspace(1, 1/N, N)`` plus ``mu`` when the scheduler uses dynamic
            shifting, as FluxPipeline does), False for SD3 (``set_timesteps(N)`` as StableDiffusion3Pipeline does).

    Raises:
        ValueError: ``num_steps < 1``.
    """
    if num_steps < 1:
        raise ValueError(f"--steps must be >= 1, got {num_steps}.")
    kwargs: dict[str, Any] = {}
    if bool(getattr(scheduler.config, "use_dynamic_shifting", False)):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        if image_seq_len is None:
            raise ValueError("The scheduler uses dynamic shifting, which needs the image sequence length.")
        kwargs["mu"] = calculate_shift(
            image_seq_len,
            scheduler.config.get("base_image_seq_len", 256),
            scheduler.config.get("max_image_seq_len", 4096),
            scheduler.config.get("base_shift", 0.5),
            scheduler.config.get("max_shift", 1.15),
        )
    if flux_sigmas:
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / num_steps, num_steps).tolist(), **kwargs)
    else:
        scheduler.set_timesteps(num_steps, **kwargs)
    sigmas = tuple(float(s) for s in scheduler.sigmas)
    timesteps = tuple(float(t) for t in scheduler.timesteps)
    if len(sigmas) != len(timesteps) + 1 or sigmas[-1] != 0.0:
        raise ValueError(
            f"Unexpected flow schedule from {type(scheduler).__name__}: {len(sigmas)} sigmas ending in {sigmas[-1]} "
            f"for {len(timesteps)} timesteps (expected N + 1 sigmas ending in 0)."
        )
    return FlowSchedule(sigmas, timesteps)


def rf_inversion_y0_weight(sigmas: Sequence[float], gamma: float = 1.0) -> float:
    """Weight of the clean latent y0 in the RF-inverted latent, for controller strength ``gamma = 1``.

    The controlled forward ODE of RF-Inversion (Algorithm 1, as in the diffusers community pipeline) runs ``N``
    Euler steps ``k = 0 .. N-1`` over the ``N + 1`` sigmas (noisiest first, ending in 0), with time
    ``t_k = k / (N + 1)`` and step size ``sigmas[k] - sigmas[k + 1]``::

        Y_{k+1} = Y_k + dt_k * [u + gamma * ((y1 - Y_k) / (1 - t_k) - u)]

    With ``gamma = 1`` the model velocity ``u`` cancels, and ``Y_k = w_k * y0 + (1 - w_k) * y1`` with
    ``w_0 = 1``, ``w_{k+1} = w_k * (1 - dt_k / (1 - t_k))``. For the 4-step schnell sigmas [1, .75, .5, .25, 0]
    this gives ``w = 0.1128``, i.e. ``Y_inv ~ 0.887 * y1 + 0.113 * y0``.

    Args:
        sigmas: The ``N + 1`` sigmas of the schedule, noisiest first, ending in 0.
        gamma: Only 1 is supported (the closed form needs it).

    Returns:
        ``w``; the inverted latent is ``w * y0 + (1 - w) * y1``.

    Raises:
        ValueError: ``gamma != 1`` or fewer than 2 sigmas.
    """
    if gamma != 1.0:
        raise ValueError(f"The closed-form RF-inversion path needs gamma = 1, got {gamma}.")
    if len(sigmas) < 2:
        raise ValueError("RF inversion needs at least two sigmas (one step).")
    count = len(sigmas)
    weight = 1.0
    for k in range(count - 1):
        t_k = k / count
        dt = float(sigmas[k]) - float(sigmas[k + 1])
        weight *= 1.0 - dt / (1.0 - t_k)
    return weight


def rf_inverted_latent(y0: torch.Tensor, y1: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """``Y_inv = w * y0 + (1 - w) * y1`` with ``w`` from :func:`rf_inversion_y0_weight` (float32)."""
    w = rf_inversion_y0_weight(sigmas)
    return w * y0.float() + (1.0 - w) * y1.float()


def rf_reconstruction_latent(
    y0: torch.Tensor, inverted: torch.Tensor, sigmas: Sequence[float], step: int
) -> torch.Tensor:
    """Latent at reconstruction step ``step`` of the controlled reverse ODE with eta = 1.

    The reverse ODE with eta 1 uses only the conditional field ``(y0 - X) / (1 - t_i)`` with ``t_i = 1 - s_i``,
    so each Euler step scales the distance to y0 by ``s_{i+1} / s_i``: ``X_i = y0 + (s_i / s_0) * (Y_inv - y0)``.

    Args:
        y0: Clean latent.
        inverted: ``Y_inv`` (the reconstruction's start, step 0).
        sigmas: The ``N + 1`` sigmas, noisiest first.
        step: Step index ``0 <= step <= N`` (N gives y0).

    Returns:
        Float32 latent.
    """
    if not 0 <= step < len(sigmas):
        raise ValueError(f"Step {step} is outside 0..{len(sigmas) - 1}.")
    ratio = float(sigmas[step]) / float(sigmas[0])
    return y0.float() + ratio * (inverted.float() - y0.float())


def psnr(reference: torch.Tensor, image: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images with values in [0, 1] (same shape).

    Returns ``inf`` for identical images.
    """
    if reference.shape != image.shape:
        raise ValueError(f"PSNR needs images of the same shape, got {tuple(reference.shape)} and {tuple(image.shape)}.")
    mse = torch.mean((reference.double() - image.double()) ** 2).item()
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(1.0 / mse)
