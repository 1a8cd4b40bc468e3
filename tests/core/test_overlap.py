"""Tests for l2s_core.overlap (the attention-overlap term) and its use in refine_latent."""

from __future__ import annotations

import pytest
import torch
from test_optimize import LEFT, MAP_SIZE, OBJECT, SUBJECT, CentreOfMassClassifier, DifferenceClassifier
from torch import Tensor
from toy_denoiser import ToyAttentionDenoiser

from l2s_core.optimize import refine_latent
from l2s_core.overlap import attention_overlap
from l2s_core.settings import SteeringOptions, SteeringSettings


def _blob(row: int, col: int, size: int = 4) -> Tensor:
    """(size, size) map with all its mass on one cell."""
    grid = torch.zeros(size, size)
    grid[row, col] = 1.0
    return grid


def test_identical_maps_overlap_fully_and_disjoint_maps_not_at_all() -> None:
    same = torch.stack([_blob(0, 0), _blob(0, 0)]).reshape(1, 2, 1, 4, 4)  # (B, 2, C, S, S)
    apart = torch.stack([_blob(0, 0), _blob(3, 3)]).reshape(1, 2, 1, 4, 4)
    assert attention_overlap(same).item() == pytest.approx(1.0)
    assert attention_overlap(apart).item() == pytest.approx(0.0)


def test_overlap_is_the_shared_mass_of_the_channel_means_hand_computed() -> None:
    # subject: channels put 1 on (0,0) and on (0,1) -> mean 0.5/0.5; object: all on (0,1) -> shared mass 0.5.
    # Scaling a map does not matter: each channel mean is renormalised to sum 1.
    subject = torch.stack([_blob(0, 0), _blob(0, 1)])  # (C=2, 4, 4)
    obj = torch.stack([_blob(0, 1), _blob(0, 1)]) * 3.0
    maps = torch.stack([subject, obj]).unsqueeze(0)  # (1, 2, 2, 4, 4)
    assert attention_overlap(maps).item() == pytest.approx(0.5)


def test_overlap_gradient_moves_the_smaller_map_at_shared_cells() -> None:
    maps = torch.stack([_blob(0, 0) * 0.6 + _blob(1, 1) * 0.4, _blob(0, 0)]).reshape(1, 2, 1, 4, 4)
    maps.requires_grad_(True)
    attention_overlap(maps).sum().backward()
    assert maps.grad is not None and torch.isfinite(maps.grad).all()
    assert maps.grad.abs().sum() > 0


def test_overlap_rejects_maps_without_subject_and_object() -> None:
    with pytest.raises(ValueError, match=r"\(B, 2, C, S, S\)"):
        attention_overlap(torch.rand(1, 3, 1, 4, 4))


def test_refine_latent_adds_the_weighted_overlap_to_the_gradient() -> None:
    # maps = softmax of the latent's two rows over 2 cells; the update must be the gradient of CE + w * overlap.
    def maps_fn(z: Tensor, triplet: int) -> Tensor:
        return z.reshape(1, 2, 1, 1, 2).softmax(dim=-1)  # (1, 2, C=1, S=1, 2 cells)

    latent = torch.tensor([[0.3, -0.2, 0.1, 0.4]])
    classifier = DifferenceClassifier(2.0)
    weight, step = 1.5, 0.5
    result = refine_latent(latent, maps_fn, classifier, [torch.tensor([1])], step_index=0, step_size=step,
                           iterations=1, overlap_weight=weight)
    z = latent.clone().requires_grad_(True)
    maps = maps_fn(z, 0)
    logits = classifier(maps, torch.zeros(1, dtype=torch.long))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([1])) + weight * attention_overlap(maps).sum()
    (grad,) = torch.autograd.grad(loss, z)
    torch.testing.assert_close(result.latent, latent - step * grad)
    official = refine_latent(latent, maps_fn, classifier, [torch.tensor([1])], step_index=0, step_size=step,
                             iterations=1)
    assert not torch.allclose(official.latent, result.latent)  # the term changed the update
    assert result.records[0].losses == official.records[0].losses  # the recorded loss is the CE alone


def test_overlap_term_with_active_rows_only_equals_the_full_batch() -> None:
    denoiser, classifier = ToyAttentionDenoiser(seed=0), CentreOfMassClassifier()
    latent = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    targets = [torch.tensor([LEFT, LEFT, LEFT])]
    kwargs = {"step_index": 0, "step_size": 5.0, "iterations": 8, "early_stop_probability": 0.6,
              "overlap_weight": 2.0}
    full = refine_latent(latent, lambda z, t: denoiser.object_maps(z, SUBJECT, OBJECT, MAP_SIZE), classifier,
                         targets, **kwargs)
    rows = refine_latent(latent, lambda z, t, r: denoiser.object_maps(z, SUBJECT, OBJECT, MAP_SIZE), classifier,
                         targets, active_rows_only=True, **kwargs)
    torch.testing.assert_close(rows.latent, full.latent, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_bad_overlap_weight_is_refused(weight: float) -> None:
    with pytest.raises(ValueError, match="overlap_weight"):
        refine_latent(torch.zeros(1, 2), lambda z, t: z.reshape(1, 2, 1, 1, 1), DifferenceClassifier(1.0),
                      [torch.tensor([1])], step_index=0, step_size=1.0, iterations=1, overlap_weight=weight)
    with pytest.raises(ValueError, match="overlap_weight"):
        SteeringSettings(last_step=1, step_size=1.0, iterations=1, overlap_weight=weight)


def test_options_carry_the_overlap_weight_into_the_settings() -> None:
    assert SteeringOptions().resolve(20, "sd21").overlap_weight == 0.0
    assert SteeringOptions(overlap_weight=2.0).resolve(20, "sd21").overlap_weight == 2.0
