"""Tests for l2s_core.attention: the one definition of the maps the classifier reads."""

from __future__ import annotations

import pytest
import torch

from l2s_core.attention import (
    MapRequest,
    cross_attention_maps,
    joint_attention_maps,
    text_attention_probs,
    unet_layer_grid,
    without_saved_scores,
)


def _explicit_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) written out in float64. q: (B, H, N, D), k: (B, H, T, D) -> (B, H, N, T)."""
    logits = torch.einsum("bhnd,bhtd->bhnt", q.double(), k.double()) / q.shape[-1] ** 0.5
    return logits.softmax(dim=-1)


def test_cross_attention_maps_are_the_phrase_means_of_the_text_softmax() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 12, 8, generator=gen), torch.randn(2, 3, 7, 8, generator=gen)
    subject, obj = cross_attention_maps(q, k, (1,), (3, 4))
    probs = _explicit_probs(q, k)
    assert subject.dtype == torch.float32 and subject.shape == (2, 3, 12)
    torch.testing.assert_close(subject.double(), probs[..., 1], rtol=0, atol=1e-6)
    torch.testing.assert_close(obj.double(), probs[..., [3, 4]].mean(dim=-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(text_attention_probs(q, k).double(), probs, rtol=0, atol=1e-6)


def test_joint_attention_maps_equal_a_softmax_over_the_text_keys_only() -> None:
    gen = torch.Generator().manual_seed(1)
    q_img, k_txt = torch.randn(1, 2, 16, 4, generator=gen) * 3, torch.randn(1, 2, 5, 4, generator=gen) * 3
    subject, obj = joint_attention_maps(q_img.bfloat16(), k_txt.bfloat16(), (0,), (2, 3))
    probs = _explicit_probs(q_img.bfloat16().float(), k_txt.bfloat16().float())
    assert subject.dtype == torch.float32  # bf16 attention gives float32 maps
    torch.testing.assert_close(subject.double(), probs[..., 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(obj.double(), probs[..., [2, 3]].mean(dim=-1), rtol=0, atol=1e-6)


def test_recomputing_in_backward_keeps_values_and_gradients() -> None:
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(1, 2, 9, 4, generator=gen, requires_grad=True)
    k = torch.randn(1, 2, 5, 4, generator=gen, requires_grad=True)
    weight = torch.randn(1, 2, 9, generator=gen)

    def compute(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return cross_attention_maps(q, k, (1,), (2,))

    direct = compute(q, k)
    grads_direct = torch.autograd.grad(((direct[0] - direct[1]) * weight).sum(), (q, k))
    saved = without_saved_scores(compute, q, k)
    grads_saved = torch.autograd.grad(((saved[0] - saved[1]) * weight).sum(), (q, k))
    for a, b in zip((*direct, *grads_direct), (*saved, *grads_saved), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("queries", "latent", "shape", "grid"),
    [(64 * 64, (64, 64), None, (64, 64)), (8 * 8, (64, 64), None, (8, 8)), (4 * 3, (7, 5), None, (4, 3)),
     (16 * 12, (64, 48), [1, 8, 16, 12], (16, 12)), (16 * 12, (64, 48), [1, 8, 32, 24], (16, 12)),
     (12 * 16, (64, 48), [1, 8, 12, 16], (12, 16))],
)
def test_unet_layer_grid(queries: int, latent: tuple[int, int], shape: list[int] | None,
                         grid: tuple[int, int]) -> None:
    assert unet_layer_grid(queries, latent, shape) == grid


def test_unet_layer_grid_that_no_halving_gives_raises() -> None:
    with pytest.raises(ValueError, match="10 query tokens for a 64x64 latent"):
        unet_layer_grid(10, (64, 64))


def test_map_request_checks_positions_and_gives_the_token_grid() -> None:
    assert MapRequest("joint", 5, (1,), (2,), (63, 47), patch_size=2).image_grid == (32, 24)
    assert MapRequest("joint", 5, (1,), (2,), (63, 47)).is_joint
    with pytest.raises(ValueError, match=r"object phrase's token positions \[5\] fall outside"):
        MapRequest("unet", 5, (1,), (5,), (8, 8))
    with pytest.raises(ValueError, match="Unknown attention layout 'dit'"):
        MapRequest("dit", 5, (1,), (2,), (8, 8))
