"""Tests for l2s_core.steer: one steered step, as the nodes, the toy sampler and the benchmarks run it."""

from __future__ import annotations

import pytest
import torch
from toy_denoiser import ToyAttentionDenoiser

from l2s_core.checkpoint import LoadedClassifier
from l2s_core.classifier import RelationClassifier, published_config
from l2s_core.layout import LayerMaps, classifier_input
from l2s_core.optimize import refine_latent
from l2s_core.settings import SteeringSettings
from l2s_core.steer import NoAttentionRecordedError, steer_step
from l2s_core.steps import ScheduleWindow, classifier_step_index

RELATIONS = ("above", "below", "is", "to the left of", "to the right of")
SUBJECT, OBJECT = (1,), (3, 4)


@pytest.fixture(scope="module")
def denoiser() -> ToyAttentionDenoiser:
    return ToyAttentionDenoiser(seed=0, heads=2)


@pytest.fixture(scope="module")
def classifier(denoiser: ToyAttentionDenoiser) -> LoadedClassifier:
    torch.manual_seed(0)
    model = RelationClassifier(published_config("sd2")).eval().requires_grad_(False)
    return LoadedClassifier(model=model, relations=RELATIONS, trained_steps=(5, 10, 15, 20, 25, 49),
                            trained_num_steps=50, map_size=16, orig_map_size=16, family="toy",
                            channels=denoiser.channels, layout="unet")


def _layers(denoiser: ToyAttentionDenoiser, latent: torch.Tensor) -> tuple[list[LayerMaps], list[LayerMaps]]:
    """The toy denoiser's layers, as a recorder hands them over (per layer and phrase, token-averaged)."""
    subject, obj = [], []
    for index, ((h, w), probs) in enumerate(denoiser(latent)):
        s, o = probs[..., list(SUBJECT)].mean(-1), probs[..., list(OBJECT)].mean(-1)  # (B, heads, h*w)
        subject.append(LayerMaps.from_flat(index, (h, w), s))
        obj.append(LayerMaps.from_flat(index, (h, w), o))
    return subject, obj


def test_steer_step_is_the_official_loop_with_the_family_step_index(denoiser: ToyAttentionDenoiser,
                                                                     classifier: LoadedClassifier) -> None:
    latent = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    settings = SteeringSettings(last_step=10, step_size=1.0, iterations=4, loss_thresholds=(0.0,))
    window = ScheduleWindow.from_noise(20)
    seen: list[torch.Tensor] = []
    result = steer_step(latent, lambda z, t: _layers(denoiser, z), classifier,
                        [["to the left of", "above"]], layout="unet", settings=settings, window=window, step=3,
                        on_maps=seen.append)

    class_step = classifier_step_index(3, 20, classifier.trained_steps, 50)
    assert result.classifier_step == class_step == 10

    def maps_fn(z: torch.Tensor, triplet: int) -> torch.Tensor:
        return classifier_input(*_layers(denoiser, z), "unet", 16)

    expected = refine_latent(latent, maps_fn, classifier.model, [torch.tensor([3, 0])], step_index=class_step,
                             step_size=1.0, iterations=4, loss_threshold=0.0)
    torch.testing.assert_close(result.latent, expected.latent, rtol=0, atol=0)
    assert result.passes == (4, 4) and len(seen) == 4 and seen[0].shape == (2, 2, denoiser.channels, 16, 16)
    assert not torch.equal(result.latent, latent.float())


def test_steer_step_errors_name_the_problem(denoiser: ToyAttentionDenoiser, classifier: LoadedClassifier) -> None:
    latent = torch.randn(1, 4, 8, 8)
    settings = SteeringSettings(last_step=1, step_size=1.0, iterations=1)
    window = ScheduleWindow.from_noise(4)
    with pytest.raises(NoAttentionRecordedError, match="No text attention was recorded"):
        steer_step(latent, lambda z, t: ([], []), classifier, [["above"]], layout="unet", settings=settings,
                   window=window, step=0)
    with pytest.raises(ValueError, match="2 relations for a batch of 1"):
        steer_step(latent, lambda z, t: _layers(denoiser, z), classifier, [["above", "below"]], layout="unet",
                   settings=settings, window=window, step=0)
    with pytest.raises(ValueError, match="next to"):
        steer_step(latent, lambda z, t: _layers(denoiser, z), classifier, [["next to"]], layout="unet",
                   settings=settings, window=window, step=0)


def test_skipped_samples_are_not_steered_and_settled_ones_are_reported(denoiser: ToyAttentionDenoiser,
                                                                       classifier: LoadedClassifier) -> None:
    latent = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    window = ScheduleWindow.from_noise(20)
    plain = SteeringSettings(last_step=10, step_size=1.0, iterations=3, loss_thresholds=(0.0,))
    skipped = steer_step(latent, lambda z, t: _layers(denoiser, z), classifier, [["to the left of", "above"]],
                         layout="unet", settings=plain, window=window, step=3, skip=[True, False])
    torch.testing.assert_close(skipped.latent[0], latent[0].float(), rtol=0, atol=0)
    assert skipped.passes == (0, 3) and not torch.equal(skipped.latent[1], latent[1].float())
    assert skipped.settled == (False, False)  # skipping is not settling

    first = steer_step(latent, lambda z, t: _layers(denoiser, z), classifier, [["to the left of", "above"]],
                       layout="unet", settings=plain, window=window, step=3)
    p0 = first.refined.records[0].target_probabilities
    high, low = (0, 1) if p0[0] > p0[1] else (1, 0)
    assert p0[high] > p0[low]
    # an early-stop probability that one sample already meets at the start of the step and the other does not
    early = SteeringSettings(last_step=10, step_size=1.0, iterations=3, loss_thresholds=(0.0,),
                             early_stop_probability=(p0[0] + p0[1]) / 2, settle=True)
    result = steer_step(latent, lambda z, t: _layers(denoiser, z), classifier, [["to the left of", "above"]],
                        layout="unet", settings=early, window=window, step=3)
    assert result.settled[high] and not result.settled[low]
    assert result.passes[high] == 1


def test_settle_needs_an_early_stop_probability() -> None:
    with pytest.raises(ValueError, match="settle needs an early-stop probability"):
        SteeringSettings(last_step=1, step_size=1.0, iterations=1, settle=True)
