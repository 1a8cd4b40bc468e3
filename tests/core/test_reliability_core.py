"""Issue 11 in l2s_core: partial schedules (img2img), per-step seeds, and non-finite classifier output.

The ComfyUI side of the same items is tested through the HTTP API in tests/comfyui/test_reliability_sampling_comfy.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from toy_denoiser import ToyAttentionDenoiser

from l2s_core.optimize import NonFiniteOutputError, refine_latent
from l2s_core.settings import SteeringOptions
from l2s_core.steps import (
    SEED_MODULUS,
    ScheduleWindow,
    classifier_step_index,
    full_steps_for_denoise,
    progress_at_sigma,
    step_seed,
)

OFFICIAL_50 = [5, 10, 15, 20, 25, 49]
SUBJECT, OBJECT = [1], [3]


# ---------------------------------------------------------------------------------------------- partial schedules


@pytest.mark.parametrize(("steps", "denoise", "full"), [(20, 1.0, 20), (20, 0.99999, 20), (20, 0.5, 40),
                                                         (4, 0.75, 5), (4, 0.01, 400), (20, 0.99, 20), (3, 0.3, 10)])
def test_full_steps_follow_comfyuis_ksampler_rule(steps: int, denoise: float, full: int) -> None:
    assert full_steps_for_denoise(steps, denoise) == full


@pytest.mark.parametrize("denoise", [0.0, -0.1, 1.5, math.nan])
def test_full_steps_reject_a_denoise_that_runs_nothing(denoise: float) -> None:
    with pytest.raises(ValueError, match="denoise must be in"):
        full_steps_for_denoise(20, denoise)


def _tail_step(step: int, num_steps: int, full_steps: int) -> int:
    return ScheduleWindow.tail(num_steps, full_steps).classifier_step(step, OFFICIAL_50, 50)


def test_a_from_noise_schedule_maps_exactly_as_before() -> None:
    for n in (4, 20, 50):
        window = ScheduleWindow.from_noise(n)
        assert not window.partial and window == ScheduleWindow.tail(n, n)
        assert [window.classifier_step(i, OFFICIAL_50, 50) for i in range(n)] == [
            classifier_step_index(i, n, OFFICIAL_50, 50) for i in range(n)]


def test_a_partial_schedule_uses_the_classifier_steps_of_its_noise_level() -> None:
    # denoise 0.5 with 50 steps is the second half of a 100-step run: its first step sits at position 50 of 100,
    # i.e. training step round(50 * 49 / 99) = 25 -> the table's bucket 25; the last step is the end of the schedule.
    assert _tail_step(0, 50, 100) == 25
    assert _tail_step(49, 50, 100) == 49
    # The shortened schedule alone would claim the noisiest bucket at its first step.
    assert classifier_step_index(0, 50, OFFICIAL_50, 50) == 5
    # Lower denoise -> later classifier steps, never earlier ones.
    first = [_tail_step(0, 4, full_steps_for_denoise(4, d)) for d in (1.0, 0.75, 0.5, 0.01)]
    assert first == sorted(first) and first[0] == 5 and first[-1] == 49
    # The first half of a 20-step run (SplitSigmas) keeps the classifier steps of that half.
    head = ScheduleWindow(10, 20, 0)
    assert [head.classifier_step(i, OFFICIAL_50, 50) for i in range(10)] == [
        classifier_step_index(i, 20, OFFICIAL_50, 50) for i in range(10)]


def test_default_steered_range_keeps_the_official_noise_range() -> None:
    # SD/FLUX-dev steer the first half of a from-noise run (25 of 50).
    assert ScheduleWindow.from_noise(20).default_steered_steps(25, 50) == 10
    assert ScheduleWindow.tail(20, 40).default_steered_steps(25, 50) == 0  # denoise 0.5 starts where steering ends
    assert ScheduleWindow.tail(20, 2000).default_steered_steps(25, 50) == 0  # denoise 0.01
    assert ScheduleWindow.tail(4, 5).default_steered_steps(25, 50) == 2  # full 5 steps, end round(2.5)=3, offset 1
    assert ScheduleWindow.tail(30, 40).default_steered_steps(25, 50) == 10  # end 20 of 40, offset 10
    assert ScheduleWindow(10, 20, 0).default_steered_steps(25, 50) == 10  # the first half of a split run: all of it
    assert ScheduleWindow.from_noise(4).default_steered_steps(1, 4) == 1  # FLUX-schnell from noise


def test_settings_resolve_the_partial_default_and_keep_an_explicit_choice() -> None:
    assert SteeringOptions().resolve(20, "sd2", ScheduleWindow.tail(20, 40)).last_step == 0
    assert SteeringOptions().resolve(20, "sd2", ScheduleWindow.tail(20, 27)).last_step == 14 - 7  # end 14 of 27
    assert SteeringOptions().resolve(20, "sd2").last_step == 10
    assert SteeringOptions(last_step=3).resolve(20, "sd2", ScheduleWindow.tail(20, 40)).last_step == 3
    with pytest.raises(ValueError, match="window has 10 steps"):
        SteeringOptions().resolve(20, "sd2", ScheduleWindow.from_noise(10))


def test_a_window_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="at least as long"):
        ScheduleWindow.tail(20, 10)
    with pytest.raises(ValueError, match="at least as long"):
        ScheduleWindow(10, 20, 11)
    with pytest.raises(ValueError, match="outside the schedule"):
        ScheduleWindow(10, 20, 0).full_index(10)


def _discrete_percent_to_sigma(percent: float) -> float:
    """ComfyUI's ModelSamplingDiscrete.percent_to_sigma for SD's scaled-linear betas (1000 training steps)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    sigmas = ((1 - torch.cumprod(1 - betas, 0)) / torch.cumprod(1 - betas, 0)) ** 0.5
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    t = (1.0 - percent) * 999.0
    low = int(math.floor(t))
    high = min(low + 1, 999)
    w = t - low
    return float(torch.exp((1 - w) * sigmas[low].log() + w * sigmas[high].log()))


def test_progress_inverts_the_models_percent_scale() -> None:
    for percent in (0.0, 0.1, 0.5, 0.9, 1.0):
        sigma = _discrete_percent_to_sigma(percent) if 0.0 < percent < 1.0 else (20.0 if percent == 0 else 0.0)
        assert progress_at_sigma(sigma, _discrete_percent_to_sigma) == pytest.approx(percent, abs=1e-5)
    flux = lambda p: 1.0 if p <= 0 else 0.0 if p >= 1 else 1.0 - p  # noqa: E731 (unshifted flow)
    assert progress_at_sigma(0.25, flux) == pytest.approx(0.75, abs=1e-5)
    with pytest.raises(ValueError, match="sigma must be"):
        progress_at_sigma(math.nan, flux)


def test_estimated_windows_for_unknown_schedules() -> None:
    # 'simple'-like schedules: step j of M at progress j / M, the last sigma 0 (progress 1).
    for full, n in ((40, 20), (8, 4), (400, 4), (27, 20)):
        window = ScheduleWindow.estimate(n, (full - n) / full, (full - n + 1) / full, 1.0)
        assert window == ScheduleWindow.tail(n, full)
    assert ScheduleWindow.estimate(20, 0.0, 0.05, 1.0) == ScheduleWindow.from_noise(20)
    # ddim_uniform from noise: its first step sits 18 / 999 below the top, its steps are 50 / 999 apart.
    assert ScheduleWindow.estimate(20, 48 / 999, 98 / 999, 1.0) == ScheduleWindow.from_noise(20)
    assert ScheduleWindow.estimate(10, 48 / 999, 98 / 999, 548 / 999) == ScheduleWindow(10, 20, 0)  # its first half
    # The first and the middle part of a 'simple' 20-step run cut by SplitSigmas.
    assert ScheduleWindow.estimate(10, 0.0, 0.05, 0.5) == ScheduleWindow(10, 20, 0)
    assert ScheduleWindow.estimate(5, 0.25, 0.30, 0.5) == ScheduleWindow(5, 20, 5)
    with pytest.raises(ValueError, match="must decrease"):
        ScheduleWindow.estimate(20, 0.5, 0.4, 1.0)
    with pytest.raises(ValueError, match="must decrease"):
        ScheduleWindow.estimate(20, 1.0, 1.0, 1.0)


# ------------------------------------------------------------------------------------------------------- seeds


@pytest.mark.parametrize(("seed", "step", "expected"), [
    (0, 0, 0), (7, 3, 10), (2**64 - 2, 1, 2**64 - 1), (2**64 - 2, 2, 0), (2**64 - 1, 5, 4)])
def test_step_seeds_wrap_into_the_unsigned_64_bit_range(seed: int, step: int, expected: int) -> None:
    value = step_seed(seed, step)
    assert value == expected and 0 <= value < SEED_MODULUS
    torch.Generator().manual_seed(value)  # every wrapped seed is one torch accepts


def test_a_seed_past_the_range_is_wrapped_too_and_non_integers_are_refused() -> None:
    assert step_seed(2**64 + 3, 0) == 3
    with pytest.raises(ValueError, match="integer"):
        step_seed(1.5, 0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- non-finite output


class _Readout(nn.Module):
    """A linear readout of the maps' mean per channel group; ``poison`` fills its weight with NaN."""

    def __init__(self, poison: float | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 5)
        if poison is not None:
            with torch.no_grad():
                self.linear.weight.fill_(poison)

    def forward(self, maps: Tensor, step_index: Tensor) -> Tensor:
        return self.linear(maps.mean(dim=(2, 3, 4)) * 100.0)  # (B, 2) -> (B, 5)


def _refine(classifier: nn.Module, maps_scale: float = 1.0, iterations: int = 3):
    denoiser = ToyAttentionDenoiser(seed=0)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    calls: list[int] = []

    def maps_fn(z: Tensor, triplet: int) -> Tensor:
        calls.append(triplet)
        return denoiser.object_maps(z, SUBJECT, OBJECT, 8) * maps_scale

    result = refine_latent(latent, maps_fn, classifier, [torch.tensor([3])], step_index=5, step_size=5.0,
                           iterations=iterations)
    return result, calls


@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_non_finite_logits_on_the_first_call_raise(poison: float) -> None:
    with pytest.raises(NonFiniteOutputError, match="non-finite logits") as caught:
        _refine(_Readout(poison))
    assert caught.value.source == "logits" and caught.value.step_index == 5
    assert "Re-export or re-download" in str(caught.value)


def test_non_finite_maps_on_the_first_call_name_the_denoiser() -> None:
    with pytest.raises(NonFiniteOutputError, match="attention maps") as caught:
        _refine(_Readout(), maps_scale=math.nan)
    assert caught.value.source == "maps" and "dtype" in str(caught.value)


def test_a_finite_classifier_still_runs_every_iteration() -> None:
    result, calls = _refine(_Readout(), iterations=3)
    assert len(calls) == 3 and result.stopped == "iterations"
    assert all(math.isfinite(p) for r in result.records for p in r.target_probabilities)
