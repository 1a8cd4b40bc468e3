"""The update rules of a steering iteration: the official gradient step and the optional variants."""

from __future__ import annotations

import pytest
import torch

from l2s_core.optimize import refine_latent
from l2s_core.update_rule import OFFICIAL_UPDATE, UpdateRule, apply_update, sample_statistics


def _latent_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(3, 4, 8, 8, generator=generator) * torch.tensor([1.0, 2.0, 0.5]).reshape(3, 1, 1, 1)
    gradient = torch.randn(3, 4, 8, 8, generator=generator) * torch.tensor([1e-3, 10.0, 1.0]).reshape(3, 1, 1, 1)
    return latent, gradient


def test_the_official_rule_is_a_plain_gradient_step() -> None:
    latent, gradient = _latent_and_gradient()
    mask = torch.tensor([True, False, True])
    out = apply_update(latent, gradient, mask, 5.0, OFFICIAL_UPDATE, sample_statistics(latent))
    assert torch.equal(out[0], latent[0] - 5.0 * gradient[0])
    assert torch.equal(out[1], latent[1])  # not in the mask: untouched
    assert OFFICIAL_UPDATE.is_official and not UpdateRule(keep_statistics=True).is_official


def test_a_relative_step_moves_every_sample_by_the_same_share_of_its_std() -> None:
    latent, gradient = _latent_and_gradient()
    rule = UpdateRule(relative_step=0.05)
    out = apply_update(latent, gradient, torch.ones(3, dtype=torch.bool), 123.0, rule, sample_statistics(latent))
    moved = (out - latent).reshape(3, -1).pow(2).mean(dim=1).sqrt()  # (B,) RMS of each update
    _, std = sample_statistics(latent)
    assert torch.allclose(moved, 0.05 * std, rtol=1e-5)  # whatever the gradient's scale (1e-3 .. 10)
    direction = torch.nn.functional.cosine_similarity((latent - out).reshape(3, -1), gradient.reshape(3, -1))
    assert torch.allclose(direction, torch.ones(3), atol=1e-5)  # down the gradient


def test_keeping_statistics_restores_each_samples_mean_and_std() -> None:
    latent, gradient = _latent_and_gradient()
    start = sample_statistics(latent)
    out = apply_update(latent, gradient + 0.3, torch.ones(3, dtype=torch.bool), 5.0,
                       UpdateRule(keep_statistics=True), start)
    mean, std = sample_statistics(out)
    assert torch.allclose(mean, start[0], atol=1e-5) and torch.allclose(std, start[1], rtol=1e-5)
    assert (out - latent).abs().max() > 0.1  # it did move


def test_bad_relative_steps_are_refused() -> None:
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="relative_step"):
            UpdateRule(relative_step=bad)


def test_refine_latent_uses_the_rule_and_defaults_to_the_official_one() -> None:
    weights = torch.randn(2, 2 * 1 * 2 * 2, generator=torch.Generator().manual_seed(1))

    def maps_fn(z: torch.Tensor, triplet: int) -> torch.Tensor:
        return (z.reshape(1, 2, 1, 2, 2) * 3.0).tanh()  # (B, 2, C, S, S)

    def classifier(maps: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return maps.reshape(maps.shape[0], -1) @ weights.T  # (B, 2) logits

    latent = torch.randn(1, 8, generator=torch.Generator().manual_seed(2))
    target = [torch.tensor([1])]
    official = refine_latent(latent, maps_fn, classifier, target, step_index=0, step_size=0.5, iterations=1)
    explicit = refine_latent(latent, maps_fn, classifier, target, step_index=0, step_size=0.5, iterations=1,
                             update_rule=OFFICIAL_UPDATE)
    relative = refine_latent(latent, maps_fn, classifier, target, step_index=0, step_size=0.5, iterations=1,
                             update_rule=UpdateRule(relative_step=0.1))
    assert torch.equal(official.latent, explicit.latent)
    moved = (relative.latent - latent).pow(2).mean().sqrt()
    assert torch.allclose(moved, 0.1 * latent.std(), rtol=1e-5)


def test_blurring_spreads_a_single_cell_gradient_into_a_gaussian() -> None:
    from l2s_core.update_rule import blur_spatial

    spike = torch.zeros(1, 2, 9, 9)
    spike[0, 1, 4, 4] = 1.0
    blurred = blur_spatial(spike, 1.0)
    assert blurred[0, 0].abs().max() == 0  # channels are blurred separately
    assert blurred[0, 1].sum().item() == pytest.approx(1.0, abs=1e-5)  # mass kept away from the edges
    row = blurred[0, 1, 4]
    one_d = torch.exp(-0.5 * torch.arange(-4.0, 5.0) ** 2)
    one_d = one_d / one_d[1:8].sum()  # the kernel reaches 3 sigma = 3 cells
    assert row[4].item() == pytest.approx(float(one_d[4] * one_d[4]), rel=1e-4)  # separable: centre = k0 * k0
    assert row[3].item() == pytest.approx(float(one_d[3] * one_d[4]), rel=1e-4)
    flat = torch.full((1, 1, 5, 5), 2.0)
    torch.testing.assert_close(blur_spatial(flat, 2.0), flat)  # a constant stays constant (edges replicated)


def test_a_blurred_update_uses_the_blurred_gradient() -> None:
    from l2s_core.update_rule import blur_spatial

    latent, gradient = _latent_and_gradient()
    mask = torch.ones(3, dtype=torch.bool)
    rule = UpdateRule(smooth_sigma=1.5)
    out = apply_update(latent, gradient, mask, 2.0, rule, sample_statistics(latent))
    torch.testing.assert_close(out, latent - 2.0 * blur_spatial(gradient, 1.5))
    assert not rule.is_official and "blurred" in rule.describe()


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan")])
def test_bad_blur_sigmas_are_refused(sigma: float) -> None:
    with pytest.raises(ValueError, match="smooth_sigma"):
        UpdateRule(smooth_sigma=sigma)


def test_blurring_needs_a_spatial_grid() -> None:
    from l2s_core.update_rule import blur_spatial

    with pytest.raises(ValueError, match="spatial grid"):
        blur_spatial(torch.zeros(2, 5), 1.0)
