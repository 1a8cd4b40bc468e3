"""Tests for l2s_core.optimize (test-time optimisation loop) and the toy denoiser test helper (tests/support/toy_denoiser.py)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import Tensor, nn
from toy_denoiser import ToyAttentionDenoiser

from l2s_core.optimize import (
    IterationRecord,
    RefineResult,
    refine_latent,
    target_probability,
)

# Official class order (alphabetical): above, below, is, to the left of, to the right of.
ABOVE, BELOW, IS, LEFT, RIGHT = range(5)
SUBJECT, OBJECT = [1], [3]
MAP_SIZE = 8


class CentreOfMassClassifier(nn.Module):
    """Hand-built relation classifier: a fixed linear readout of the subject-minus-object centre of mass.

    Image x grows to the right and y grows downwards, so "to the left of" scores -dx and "above" scores -dy.
    """

    def __init__(self, scale: float = 10.0) -> None:
        super().__init__()
        self.readout = nn.Linear(2, 5)
        with torch.no_grad():
            rows = torch.tensor([[0.0, -1.0], [0.0, 1.0], [0.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])  # (5, [dx, dy])
            self.readout.weight.copy_(rows * scale)
            self.readout.bias.zero_()
        self.seen_steps: list[Tensor] = []

    def forward(self, maps: Tensor, step_index: Tensor) -> Tensor:
        self.seen_steps.append(step_index)
        size = maps.shape[-1]
        coords = torch.linspace(-1.0, 1.0, size, dtype=maps.dtype)
        mass = maps.sum(dim=2)  # (B, 2, S, S)
        total = mass.sum(dim=(-2, -1))  # (B, 2)
        x = (mass.sum(dim=-2) * coords).sum(dim=-1) / total  # (B, 2)
        y = (mass.sum(dim=-1) * coords).sum(dim=-1) / total  # (B, 2)
        features = torch.stack([x[:, 0] - x[:, 1], y[:, 0] - y[:, 1]], dim=1)  # (B, 2)
        return self.readout(features)


@pytest.fixture()
def denoiser() -> ToyAttentionDenoiser:
    return ToyAttentionDenoiser(seed=0)


@pytest.fixture()
def classifier() -> CentreOfMassClassifier:
    return CentreOfMassClassifier()


def _latent(batch: int = 1, seed: int = 1) -> Tensor:
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def _maps_fn(denoiser: ToyAttentionDenoiser):
    return lambda latent, triplet: denoiser.object_maps(latent, SUBJECT, OBJECT, MAP_SIZE)


def _run(denoiser, classifier, latent, targets, **kwargs) -> RefineResult:
    settings = {"step_index": 0, "step_size": 5.0, "iterations": 12}
    settings.update(kwargs)
    return refine_latent(latent, _maps_fn(denoiser), classifier, targets, **settings)


def _probability(denoiser, classifier, latent: Tensor, target: int) -> float:
    with torch.no_grad():
        logits = classifier(denoiser.object_maps(latent, SUBJECT, OBJECT, MAP_SIZE), torch.zeros(1, dtype=torch.long))
    return float(logits.softmax(-1)[0, target])


# --------------------------------------------------------------------------------------------------------------
# target_probability


def test_target_probability_hand_computed() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    probs = target_probability(logits, torch.tensor([1, -100]))
    assert probs[0].item() == pytest.approx(0.75)
    assert math.isnan(probs[1].item())


def test_target_probability_rejects_out_of_range_target() -> None:
    with pytest.raises(ValueError, match="2 classes"):
        target_probability(torch.zeros(1, 2), torch.tensor([2]))


# --------------------------------------------------------------------------------------------------------------
# the update rule, hand-computed


class DifferenceClassifier(nn.Module):
    """logits = [0, a * (subject - object)] on 1x1 single-channel maps."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))

    def forward(self, maps: Tensor, step_index: Tensor) -> Tensor:
        diff = maps[:, 0, 0, 0, 0] - maps[:, 1, 0, 0, 0]  # (B,)
        return torch.stack([torch.zeros_like(diff), self.a * diff], dim=1)  # (B, 2)


def test_update_is_plain_gradient_descent_hand_computed() -> None:
    # CE = softplus(-a d) with d = z0 - z1, so dCE/dz0 = -a (1 - p), dCE/dz1 = +a (1 - p), p = sigmoid(a d).
    # a = 2, z = (0, 0), s = 0.5: p = 0.5, grad = (-1, 1), z1 = (0.5, -0.5); then d = 1, p = sigmoid(2),
    # grad = (-2 (1 - sigmoid(2)), +...), z2 = z1 + 0.5 * 2 * (1 - sigmoid(2)) * (1, -1).
    maps_fn = lambda z, t: z.reshape(1, 2, 1, 1, 1)  # noqa: E731
    result = refine_latent(torch.zeros(1, 2), maps_fn, DifferenceClassifier(2.0), [torch.tensor([1])],
                           step_index=0, step_size=0.5, iterations=2)
    q = 1.0 - 1.0 / (1.0 + math.exp(-2.0))
    expected = torch.tensor([[0.5 + q, -0.5 - q]])
    torch.testing.assert_close(result.latent, expected)
    assert result.records[0].losses[0] == pytest.approx(math.log(2.0))
    assert result.records[1].losses[0] == pytest.approx(math.log1p(math.exp(-2.0)))
    assert result.records[1].target_probabilities[0] == pytest.approx(1.0 - q)
    assert result.stopped == "iterations" and all(r.updated for r in result.records)


# --------------------------------------------------------------------------------------------------------------
# steering on the toy denoiser


def test_steering_left_of_raises_target_probability(denoiser, classifier) -> None:
    latent = _latent()
    result = _run(denoiser, classifier, latent, [torch.tensor([LEFT])])
    probs = [r.target_probabilities[0] for r in result.records]
    assert len(result.records) == 12 and result.stopped == "iterations"
    assert all(b > a for a, b in zip(probs, probs[1:], strict=False))
    before = _probability(denoiser, classifier, latent, LEFT)
    after = _probability(denoiser, classifier, result.latent, LEFT)
    assert before < 0.25 and after > 0.6
    assert result.initial_target_probability[0] == pytest.approx(before, abs=1e-6)
    assert result.final_target_probability == (probs[-1],)
    assert result.latent.dtype == torch.float32 and not result.latent.requires_grad
    assert torch.equal(latent, _latent())  # the input is not modified


def test_loss_threshold_stops_early(denoiser, classifier) -> None:
    baseline = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])])
    losses = [r.losses[0] for r in baseline.records]
    threshold = (losses[4] + losses[5]) / 2  # losses 0..4 are above it, loss 5 is not
    result = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], loss_threshold=threshold)
    assert result.stopped == "loss_threshold" and result.sample_stops == ("loss_threshold",)
    assert len(result.records) == 6
    assert [r.updated for r in result.records] == [True] * 5 + [False]
    five = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], iterations=5)
    assert torch.equal(result.latent, five.latent)


def test_early_stop_probability_stops_before_max(denoiser, classifier) -> None:
    baseline = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])])
    probs = [r.target_probabilities[0] for r in baseline.records]
    p = (probs[3] + probs[4]) / 2
    result = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], early_stop_probability=p)
    assert result.stopped == "early_stop_probability"
    assert len(result.records) == 5 < 12
    assert result.records[-1].target_probabilities[0] >= p and not result.records[-1].updated
    four = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], iterations=4)
    assert torch.equal(result.latent, four.latent)


def test_early_stop_probability_needs_all_triplets(denoiser, classifier) -> None:
    # Two identical triplets follow the single-triplet trajectory; the stop waits until triplet 1 was also seen >= p.
    baseline = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])])
    probs = [r.target_probabilities[0] for r in baseline.records]
    p = (probs[3] + probs[4]) / 2
    twice = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT]), torch.tensor([LEFT])],
                 early_stop_probability=p)
    assert len(twice.records) == 6 and twice.stopped == "early_stop_probability"
    assert [r.triplet for r in twice.records] == [0, 1, 0, 1, 0, 1]


def test_round_robin_alternates_triplets(denoiser, classifier) -> None:
    calls: list[int] = []

    def maps_fn(latent: Tensor, triplet: int) -> Tensor:
        calls.append(triplet)
        return denoiser.object_maps(latent, SUBJECT, OBJECT, MAP_SIZE)

    result = refine_latent(_latent(), maps_fn, classifier, [torch.tensor([LEFT]), torch.tensor([ABOVE])],
                           step_index=0, step_size=5.0, iterations=6)
    assert calls == [0, 1, 0, 1, 0, 1]
    assert [r.triplet for r in result.records] == [0, 1, 0, 1, 0, 1]
    assert [r.iteration for r in result.records] == list(range(6))


def test_ignored_target_leaves_sample_unchanged_for_that_triplet(denoiser, classifier) -> None:
    latent = _latent(batch=2)
    targets = [torch.tensor([LEFT, -100]), torch.tensor([ABOVE, ABOVE])]
    one = _run(denoiser, classifier, latent, targets, iterations=1)
    assert torch.equal(one.latent[1], latent[1]) and not torch.equal(one.latent[0], latent[0])
    assert one.records[0].updated_samples == (True, False)
    assert math.isnan(one.records[0].losses[1]) and math.isnan(one.records[0].target_probabilities[1])
    two = _run(denoiser, classifier, latent, targets, iterations=2)
    assert two.records[1].updated_samples == (True, True)
    assert not torch.equal(two.latent[1], latent[1])


def test_all_ignored_sample_is_never_touched(denoiser, classifier) -> None:
    latent = _latent(batch=2)
    result = _run(denoiser, classifier, latent, [torch.tensor([LEFT, -100])], iterations=3)
    assert torch.equal(result.latent[1], latent[1])
    assert result.sample_stops == ("iterations", "no_targets")
    nothing = _run(denoiser, classifier, latent, [torch.tensor([-100, -100])])
    assert nothing.stopped == "no_targets" and nothing.records == () and torch.equal(nothing.latent, latent)


@pytest.mark.parametrize(
    "targets",
    [
        [torch.tensor([LEFT, RIGHT])],
        [torch.tensor([LEFT, BELOW]), torch.tensor([-100, BELOW])],
    ],
    ids=["one_triplet", "round_robin_with_ignore"],
)
def test_batch_of_two_equals_two_single_runs(denoiser, classifier, targets) -> None:
    latent = _latent(batch=2, seed=3)
    kwargs = {"early_stop_probability": 0.6, "iterations": 16}
    batched = _run(denoiser, classifier, latent, targets, **kwargs)
    stop_lengths = set()
    for b in range(2):
        single = _run(denoiser, classifier, latent[b : b + 1], [t[b : b + 1] for t in targets], **kwargs)
        torch.testing.assert_close(batched.latent[b : b + 1], single.latent, rtol=1e-5, atol=1e-6)
        assert batched.sample_stops[b] == single.sample_stops[0]
        per_sample = [r.losses[b] for r in batched.records[: len(single.records)]]
        assert per_sample == pytest.approx([r.losses[0] for r in single.records], rel=1e-5, nan_ok=True)
        assert all(math.isnan(r.losses[b]) for r in batched.records[len(single.records) :])
        stop_lengths.add(len(single.records))
    assert len(batched.records) == max(stop_lengths)
    assert len(stop_lengths) == 2  # the samples really stopped at different iterations


@pytest.mark.parametrize(
    "targets",
    [
        [torch.tensor([LEFT, RIGHT, ABOVE])],
        [torch.tensor([LEFT, BELOW, -100]), torch.tensor([-100, BELOW, ABOVE])],
    ],
    ids=["one_triplet", "round_robin_with_ignore"],
)
def test_active_rows_only_runs_only_the_active_samples_with_the_same_result(denoiser, classifier, targets) -> None:
    latent = _latent(batch=3, seed=3)
    kwargs = {"early_stop_probability": 0.6, "iterations": 16}
    full = _run(denoiser, classifier, latent, targets, **kwargs)
    seen_rows: list[list[int]] = []

    def rows_maps_fn(latent_rows: Tensor, triplet: int, rows: Tensor) -> Tensor:
        seen_rows.append(rows.tolist())
        assert latent_rows.shape[0] == rows.numel()
        return denoiser.object_maps(latent_rows, SUBJECT, OBJECT, MAP_SIZE)

    rows_only = refine_latent(latent, rows_maps_fn, classifier, targets, step_index=0, step_size=5.0,
                              active_rows_only=True, **kwargs)
    torch.testing.assert_close(rows_only.latent, full.latent, rtol=1e-5, atol=1e-6)
    assert rows_only.sample_stops == full.sample_stops
    for a, b in zip(rows_only.records, full.records, strict=True):
        assert a.losses == pytest.approx(b.losses, rel=1e-5, nan_ok=True)
        assert a.updated_samples == b.updated_samples
        active = [i for i, v in enumerate(b.losses) if not math.isnan(v)]
        assert seen_rows[a.iteration] == active  # the forward saw exactly the evaluated samples
    assert min(len(r) for r in seen_rows) < 3  # some forwards really ran fewer samples


def test_classifier_receives_long_step_index(denoiser, classifier) -> None:
    _run(denoiser, classifier, _latent(batch=2), [torch.tensor([LEFT, RIGHT])], step_index=7, iterations=2)
    assert len(classifier.seen_steps) == 2
    for steps in classifier.seen_steps:
        assert steps.dtype == torch.long and steps.shape == (2,) and steps.tolist() == [7, 7]


# --------------------------------------------------------------------------------------------------------------
# non-finite values


class _NaNGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D401
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad * math.nan


@pytest.mark.parametrize("where", ["maps", "gradient"])
def test_non_finite_stops_and_keeps_last_good_latent(denoiser, classifier, caplog, where) -> None:
    calls = {"n": 0}

    def maps_fn(latent: Tensor, triplet: int) -> Tensor:
        k = calls["n"]
        calls["n"] += 1
        if k == 2 and where == "gradient":
            latent = _NaNGradient.apply(latent)
        maps = denoiser.object_maps(latent, SUBJECT, OBJECT, MAP_SIZE)
        return maps * math.nan if k == 2 and where == "maps" else maps

    with caplog.at_level(logging.WARNING, logger="l2s_core.optimize"):
        result = refine_latent(_latent(), maps_fn, classifier, [torch.tensor([LEFT])],
                               step_index=0, step_size=5.0, iterations=8)
    assert result.stopped == "non_finite_gradient" and calls["n"] == 3
    assert len(result.records) == 3 and not result.records[2].updated
    two = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], iterations=2)
    assert torch.equal(result.latent, two.latent)
    assert torch.isfinite(result.latent).all()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("iteration 2" in m and "last good latent" in m for m in messages)


# --------------------------------------------------------------------------------------------------------------
# autograd hygiene and modes


def test_classifier_parameters_get_no_gradient(denoiser, classifier) -> None:
    classifier.readout.bias.requires_grad_(False)
    _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], iterations=3)
    assert classifier.readout.weight.grad is None and classifier.readout.bias.grad is None
    assert classifier.readout.weight.requires_grad is True
    assert classifier.readout.bias.requires_grad is False


def test_works_inside_no_grad(denoiser, classifier) -> None:
    reference = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], iterations=3)
    with torch.no_grad():
        inside = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], iterations=3)
    assert torch.equal(reference.latent, inside.latent)
    assert torch.is_grad_enabled()


def test_inference_mode_is_refused_with_a_clear_error(denoiser, classifier) -> None:
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inference_mode\(False\)"):
        _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], iterations=1)


def test_latent_created_in_inference_mode_is_accepted(denoiser, classifier) -> None:
    with torch.inference_mode():
        latent = _latent()
    reference = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], iterations=2)
    with torch.inference_mode(), torch.inference_mode(False):  # the adapter's pattern
        result = _run(denoiser, classifier, latent, [torch.tensor([LEFT])], iterations=2)
    assert torch.equal(reference.latent, result.latent)


def test_fp32_master_latent_with_bf16_model(denoiser, classifier) -> None:
    # The "model" sees the latent rounded to bf16. Values lie in [1, 2), where a bf16 step is 2**-7; every update
    # is far below half of it, so a bf16 master latent would never move. The fp32 master accumulates them.
    latent = (1.5 + 0.1 * _latent()).clamp(1.0, 1.99).to(torch.bfloat16).float()
    maps_fn = lambda z, t: denoiser.object_maps(z.to(torch.bfloat16).float(), SUBJECT, OBJECT, MAP_SIZE)  # noqa: E731
    kwargs = {"step_index": 0, "step_size": 1e-4}
    one = refine_latent(latent, maps_fn, classifier, [torch.tensor([LEFT])], iterations=1, **kwargs)
    many = refine_latent(latent, maps_fn, classifier, [torch.tensor([LEFT])], iterations=10, **kwargs)
    delta = many.latent - latent
    assert many.latent.dtype == torch.float32
    assert delta.abs().max() > 0 and delta.abs().max() < 2.0**-9
    torch.testing.assert_close(delta, 10 * (one.latent - latent), rtol=1e-3, atol=1e-9)
    assert torch.equal(many.latent.to(torch.bfloat16).float(), latent)  # invisible at bf16 resolution
    bf16_in = refine_latent(latent.to(torch.bfloat16), maps_fn, classifier, [torch.tensor([LEFT])], iterations=3,
                            **kwargs)
    assert bf16_in.latent.dtype == torch.float32


# --------------------------------------------------------------------------------------------------------------
# callbacks and validation


def test_on_iteration_reports_each_record_and_can_interrupt(denoiser, classifier) -> None:
    seen: list[IterationRecord] = []
    result = _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], iterations=3, on_iteration=seen.append)
    assert tuple(seen) == result.records

    class Interrupted(Exception):
        pass

    def stop(record: IterationRecord) -> None:
        if record.iteration == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        _run(denoiser, classifier, _latent(), [torch.tensor([LEFT])], on_iteration=stop)


def test_zero_iterations_returns_the_latent(denoiser, classifier) -> None:
    latent = _latent().to(torch.float64)
    result = _run(denoiser, classifier, latent, [torch.tensor([LEFT])], iterations=0)
    assert result.records == () and result.stopped == "iterations"
    assert result.latent.dtype == torch.float32 and torch.equal(result.latent, latent.float())


@pytest.mark.parametrize(
    ("targets", "kwargs", "message"),
    [
        ([], {}, "targets is empty"),
        ([torch.tensor([LEFT, LEFT])], {}, r"shape \(1,\)"),
        ([torch.tensor([1.0])], {}, "integer tensor"),
        ([torch.tensor([-3])], {}, "negative class indices"),
        ([torch.tensor([5])], {}, "5 classes"),
        ([torch.tensor([LEFT])], {"step_size": 0.0}, "step_size"),
        ([torch.tensor([LEFT])], {"iterations": -1}, "iterations"),
        ([torch.tensor([LEFT])], {"step_index": -1}, "step_index"),
        ([torch.tensor([LEFT])], {"loss_threshold": -0.1}, "loss_threshold"),
        ([torch.tensor([LEFT])], {"early_stop_probability": 1.5}, "early_stop_probability"),
    ],
)
def test_bad_arguments_raise_value_error(denoiser, classifier, targets, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        _run(denoiser, classifier, _latent(), targets, **kwargs)


def test_bad_maps_shape_raises(classifier) -> None:
    with pytest.raises(ValueError, match=r"\(1, 2, C, S, S\)"):
        refine_latent(_latent(), lambda z, t: z, classifier, [torch.tensor([LEFT])],
                      step_index=0, step_size=1.0, iterations=1)


# --------------------------------------------------------------------------------------------------------------
# the toy denoiser


def test_toy_denoiser_shapes_and_normalisation(denoiser) -> None:
    layers = denoiser(_latent(batch=2))
    assert [grid for grid, _ in layers] == [(8, 8), (4, 4)]
    for (h, w), probs in layers:
        assert probs.shape == (2, 2, h * w, 8)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, h * w))
    maps = denoiser.object_maps(_latent(batch=2), [1, 2], [3], 16)
    assert maps.shape == (2, 2, denoiser.channels, 16, 16) and denoiser.channels == 4
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(2, 2, 4), rtol=1e-5, atol=1e-5)


def test_toy_denoiser_is_seeded_and_per_sample(denoiser) -> None:
    latent = _latent(batch=2)
    same = ToyAttentionDenoiser(seed=torch.Generator().manual_seed(0))
    other = ToyAttentionDenoiser(seed=1)
    maps = denoiser.object_maps(latent, SUBJECT, OBJECT, MAP_SIZE)
    assert torch.equal(maps, same.object_maps(latent, SUBJECT, OBJECT, MAP_SIZE))
    assert not torch.allclose(maps, other.object_maps(latent, SUBJECT, OBJECT, MAP_SIZE))
    torch.testing.assert_close(maps[1:], denoiser.object_maps(latent[1:], SUBJECT, OBJECT, MAP_SIZE))
    assert list(denoiser.parameters()) == []


def test_toy_denoiser_rejects_bad_input(denoiser) -> None:
    with pytest.raises(ValueError, match="even H and W"):
        denoiser(torch.zeros(1, 4, 7, 8))
    with pytest.raises(ValueError, match="subject_positions"):
        denoiser.object_maps(_latent(), [8], OBJECT, MAP_SIZE)
