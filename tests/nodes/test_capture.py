"""Tests for nodes/capture.py: recording subject/object attention maps through ComfyUI's attention hooks.

No ComfyUI is needed: the hooks are called directly with tiny CPU tensors, the way ComfyUI's attention functions
would call them, and every recorded map is compared with a reference computed independently here.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from devtools.pack_loader import load_pack_module

capture_module = load_pack_module("nodes.capture")
AttentionCapture = capture_module.AttentionCapture
MapRequest = capture_module.MapRequest


class FakeAttention:
    """Stands in for a ComfyUI attention function: records its calls and returns a sentinel tensor."""

    def __init__(self, value: float = 7.0) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.result = torch.full((1,), value)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.calls.append((args, kwargs))
        return self.result


def _unet_request(text_length: int = 5, subject: tuple[int, ...] = (1,), obj: tuple[int, ...] = (2, 3),
                  latent: tuple[int, int] = (16, 24)) -> Any:
    return MapRequest("unet", text_length, subject, obj, latent)


def _unet_options(h: int, w: int, block: tuple[str, int] = ("input", 1), index: int = 0,
                  batch: int = 2, channels: int = 8) -> dict[str, Any]:
    return {"block": block, "block_index": index, "activations_shape": [batch, channels, h, w]}


def _reference_unet_maps(q: torch.Tensor, k: torch.Tensor, heads: int, positions: tuple[int, ...],
                         grid: tuple[int, int]) -> torch.Tensor:
    """Text-softmax cross-attention, averaged over ``positions``: q (B, N, H*D), k (B, T, H*D) -> (B, H, h, w)."""
    b, n, inner = q.shape
    d = inner // heads
    q4 = q.reshape(b, n, heads, d).permute(0, 2, 1, 3)  # (B, H, N, D)
    k4 = k.reshape(b, k.shape[1], heads, d).permute(0, 2, 1, 3)  # (B, H, T, D)
    probs = torch.softmax(torch.einsum("bhnd,bhtd->bhnt", q4, k4) / math.sqrt(d), dim=-1)  # (B, H, N, T)
    averaged = probs[..., list(positions)].mean(dim=-1)  # (B, H, N)
    return averaged.reshape(b, heads, *grid)  # (B, H, h, w)


def _reference_joint_maps(q4: torch.Tensor, k4: torch.Tensor, text_length: int, grid: tuple[int, int],
                          positions: tuple[int, ...]) -> torch.Tensor:
    """Image queries x text keys, softmax over the text keys only: q4, k4 (B, H, L, D) -> (B, H, h, w)."""
    b, heads, _, d = q4.shape
    n_img = grid[0] * grid[1]
    q_img = q4[:, :, text_length:text_length + n_img]  # (B, H, N_img, D)
    k_txt = k4[:, :, :text_length]  # (B, H, T, D)
    probs = torch.softmax(torch.einsum("bhnd,bhtd->bhnt", q_img, k_txt) / math.sqrt(d), dim=-1)  # (B, H, N_img, T)
    return probs[..., list(positions)].mean(dim=-1).reshape(b, heads, *grid)  # (B, H, h, w)


# -- UNet layout through the attention override ------------------------------------------------------------------


def test_unet_cross_attention_maps_match_independent_reference() -> None:
    torch.manual_seed(0)
    b, heads, d, (h, w), t = 2, 2, 4, (2, 3), 5
    q = torch.randn(b, h * w, heads * d)
    k = torch.randn(b, t, heads * d)
    v = torch.randn(b, t, heads * d)
    func = FakeAttention()
    capture = AttentionCapture()
    capture.begin(_unet_request(text_length=t))
    options = _unet_options(h, w, batch=b)

    out = capture.override(func, q, k, v, heads, transformer_options=options)

    assert out is func.result
    assert len(func.calls) == 1
    args, kwargs = func.calls[0]
    assert args[0] is q and args[1] is k and args[2] is v and args[3] == heads
    assert kwargs == {"transformer_options": options}
    subject, obj = capture.end()
    assert len(subject) == len(obj) == 1
    assert subject[0].call_index == obj[0].call_index == 0
    assert subject[0].grid == obj[0].grid == (h, w)
    assert subject[0].maps.dtype == torch.float32
    torch.testing.assert_close(subject[0].maps, _reference_unet_maps(q, k, heads, (1,), (h, w)), rtol=0, atol=1e-6)
    torch.testing.assert_close(obj[0].maps, _reference_unet_maps(q, k, heads, (2, 3), (h, w)), rtol=0, atol=1e-6)


def test_unet_maps_hand_computed() -> None:
    # One head, D = 1 (scale 1), T = 3 keys [1, 0, 0]. Query ln 2 -> logits [ln 2, 0, 0] -> softmax [1/2, 1/4, 1/4];
    # query 0 -> uniform [1/3, 1/3, 1/3]. Grid 1x2: position 0 gets query ln 2, position 1 gets query 0.
    q = torch.tensor([[[math.log(2.0)], [0.0]]])  # (1, 2, 1)
    k = torch.tensor([[[1.0], [0.0], [0.0]]])  # (1, 3, 1)
    capture = AttentionCapture()
    capture.begin(MapRequest("unet", 3, (0,), (1, 2), (1, 2)))
    capture.override(FakeAttention(), q, k, k, 1, transformer_options=_unet_options(1, 2, batch=1, channels=1))
    subject, obj = capture.end()
    torch.testing.assert_close(subject[0].maps, torch.tensor([[[[0.5, 1 / 3]]]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(obj[0].maps, torch.tensor([[[[0.25, 1 / 3]]]]), rtol=0, atol=1e-6)


def test_no_request_records_nothing_and_calls_func() -> None:
    q, k = torch.randn(1, 6, 4), torch.randn(1, 5, 4)
    func = FakeAttention()
    capture = AttentionCapture()
    out = capture.override(func, q, k, k, 2, transformer_options=_unet_options(2, 3, batch=1))
    assert out is func.result
    assert len(func.calls) == 1
    assert capture.subject == [] and capture.object == []
    # After a pass has ended the capture is inactive again.
    capture.begin(_unet_request())
    capture.end()
    capture.override(func, q, k, k, 2, transformer_options=_unet_options(2, 3, batch=1))
    assert len(func.calls) == 2
    assert capture.subject == [] and capture.object == []


def test_self_attention_is_not_recorded() -> None:
    # attn1: keys are the N = 6 image tokens, not the 5 text tokens.
    q = torch.randn(1, 6, 4)
    func = FakeAttention()
    capture = AttentionCapture()
    capture.begin(_unet_request(text_length=5))
    out = capture.override(func, q, q, q, 2, transformer_options=_unet_options(2, 3, batch=1))
    assert out is func.result and len(func.calls) == 1
    subject, obj = capture.end()
    assert subject == [] and obj == []


def test_n_equal_t_only_second_call_of_a_block_is_recorded() -> None:
    # N == T == text_length == 4: attn1 (first call of the block) and attn2 (second) look alike.
    torch.manual_seed(1)
    heads, d = 2, 2
    q_self, q_cross = torch.randn(1, 4, heads * d), torch.randn(1, 4, heads * d)
    k_self, k_cross = torch.randn(1, 4, heads * d), torch.randn(1, 4, heads * d)
    func = FakeAttention()
    capture = AttentionCapture()
    capture.begin(_unet_request(text_length=4, subject=(0,), obj=(3,), latent=(2, 2)))
    options = _unet_options(2, 2, block=("input", 1), index=0, batch=1)
    capture.override(func, q_self, k_self, k_self, heads, transformer_options=options)
    assert capture.subject == []
    capture.override(func, q_cross, k_cross, k_cross, heads, transformer_options=options)
    # The next transformer block (another block_index) starts its own count: its first call is attn1 again.
    capture.override(func, q_self, k_self, k_self, heads,
                     transformer_options=_unet_options(2, 2, block=("input", 1), index=1, batch=1))
    assert len(func.calls) == 3
    subject, obj = capture.end()
    assert len(subject) == len(obj) == 1
    torch.testing.assert_close(subject[0].maps, _reference_unet_maps(q_cross, k_cross, heads, (0,), (2, 2)),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(obj[0].maps, _reference_unet_maps(q_cross, k_cross, heads, (3,), (2, 2)),
                               rtol=0, atol=1e-6)


def test_unet_layers_get_consecutive_call_indices() -> None:
    capture = AttentionCapture()
    capture.begin(_unet_request(text_length=5))
    k = torch.randn(1, 5, 4)
    capture.override(FakeAttention(), torch.randn(1, 6, 4), k, k, 2,
                     transformer_options=_unet_options(2, 3, block=("input", 1), batch=1))
    capture.override(FakeAttention(), torch.randn(1, 24, 4), k, k, 2,
                     transformer_options=_unet_options(4, 6, block=("output", 3), batch=1))
    subject, obj = capture.end()
    assert [layer.call_index for layer in subject] == [0, 1] == [layer.call_index for layer in obj]
    assert [layer.grid for layer in subject] == [(2, 3), (4, 6)]


def test_begin_clears_an_earlier_pass() -> None:
    capture = AttentionCapture()
    k = torch.randn(1, 5, 4)
    capture.begin(_unet_request(text_length=5))
    capture.override(FakeAttention(), torch.randn(1, 6, 4), k, k, 2, transformer_options=_unet_options(2, 3, batch=1))
    capture.begin(_unet_request(text_length=5))
    assert capture.subject == [] and capture.object == []
    capture.override(FakeAttention(), torch.randn(1, 6, 4), k, k, 2, transformer_options=_unet_options(2, 3, batch=1))
    subject, _ = capture.end()
    assert [layer.call_index for layer in subject] == [0]


# -- attention function choice and chaining -----------------------------------------------------------------------


def test_grad_attention_is_used_only_while_grad_is_enabled() -> None:
    q, k = torch.randn(1, 6, 4), torch.randn(1, 5, 4)
    func, grad_func = FakeAttention(1.0), FakeAttention(2.0)
    capture = AttentionCapture(grad_attention=grad_func)
    capture.begin(_unet_request(text_length=5))
    options = _unet_options(2, 3, batch=1)

    with torch.enable_grad():
        out = capture.override(func, q, k, k, 2, transformer_options=options)
    assert out is grad_func.result
    assert len(grad_func.calls) == 1 and func.calls == []
    args, kwargs = grad_func.calls[0]
    assert args[0] is q and args[1] is k and args[3] == 2 and kwargs == {"transformer_options": options}

    with torch.no_grad():
        out = capture.override(func, q, k, k, 2, transformer_options=options)
    assert out is func.result
    assert len(func.calls) == 1 and len(grad_func.calls) == 1

    with torch.inference_mode():
        out = capture.override(func, q, k, k, 2, transformer_options=options)
    assert out is func.result
    assert len(func.calls) == 2 and len(grad_func.calls) == 1
    subject, _ = capture.end()
    assert len(subject) == 3  # recorded on every path


def test_grad_attention_is_not_used_without_a_request() -> None:
    func, grad_func = FakeAttention(1.0), FakeAttention(2.0)
    capture = AttentionCapture(grad_attention=grad_func)
    with torch.enable_grad():
        out = capture.override(func, torch.randn(1, 6, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4), 2)
    assert out is func.result and grad_func.calls == []


def test_previous_override_is_chained() -> None:
    q, k, v = torch.randn(1, 6, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    func, grad_func = FakeAttention(1.0), FakeAttention(2.0)
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    sentinel = torch.full((1,), 3.0)

    def previous(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append((args, kwargs))
        return sentinel

    capture = AttentionCapture(grad_attention=grad_func, previous_override=previous)
    capture.begin(_unet_request(text_length=5))
    options = _unet_options(2, 3, batch=1)
    with torch.no_grad():
        out = capture.override(func, q, k, v, 2, "extra", transformer_options=options, skip_reshape=False)
    assert out is sentinel
    assert func.calls == [] and grad_func.calls == []  # the previous override decides whether to call func
    args, kwargs = seen[0]
    assert args[0] is func and args[1] is q and args[2] is k and args[3] is v and args[4] == 2 and args[5] == "extra"
    assert kwargs == {"transformer_options": options, "skip_reshape": False}
    with torch.enable_grad():
        assert capture.override(func, q, k, v, 2, transformer_options=options) is sentinel
    assert seen[1][0][0] is grad_func  # the backward-capable function is what gets passed down the chain
    subject, _ = capture.end()
    assert len(subject) == 2
    # Without a request the previous override still runs.
    assert capture.override(func, q, k, v, 2) is sentinel and seen[2][0][0] is func


# -- joint layout (FLUX, SD3) -------------------------------------------------------------------------------------


def _joint_request(text_length: int = 3, latent: tuple[int, int] = (6, 4)) -> Any:
    return MapRequest("joint", text_length, (0,), (1, 2), latent, patch_size=2)


def test_joint_maps_skip_reshape_match_text_only_softmax() -> None:
    torch.manual_seed(2)
    b, heads, d, t = 2, 2, 4, 3
    grid = (3, 2)  # latent 6x4, patch 2
    length = t + grid[0] * grid[1]  # text first, then the 6 image tokens
    q4, k4, v4 = (torch.randn(b, heads, length, d) for _ in range(3))
    func = FakeAttention()
    capture = AttentionCapture()
    capture.begin(_joint_request(t))

    out = capture.override(func, q4, k4, v4, heads, skip_reshape=True, transformer_options={})
    capture.override(func, q4, k4, v4, heads, skip_reshape=True, transformer_options={})  # a second layer

    assert out is func.result and len(func.calls) == 2
    subject, obj = capture.end()
    assert [layer.call_index for layer in subject] == [0, 1]
    assert subject[0].grid == obj[0].grid == grid
    torch.testing.assert_close(subject[0].maps, _reference_joint_maps(q4, k4, t, grid, (0,)), rtol=0, atol=1e-6)
    torch.testing.assert_close(obj[0].maps, _reference_joint_maps(q4, k4, t, grid, (1, 2)), rtol=0, atol=1e-6)


def test_joint_maps_ignore_image_keys() -> None:
    # The softmax runs over the text keys only: changing the image keys must not change the maps.
    torch.manual_seed(3)
    q4, k4 = torch.randn(1, 2, 9, 4), torch.randn(1, 2, 9, 4)
    k4_other = k4.clone()
    k4_other[:, :, 3:] = 10.0 * torch.randn(1, 2, 6, 4)
    maps = []
    for keys in (k4, k4_other):
        capture = AttentionCapture()
        capture.begin(_joint_request(3))
        capture.override(FakeAttention(), q4, keys, keys, 2, skip_reshape=True)
        maps.append(capture.end()[0][0].maps)
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=0)


def test_joint_maps_without_skip_reshape_sd3_layout() -> None:
    torch.manual_seed(4)
    b, heads, d, t, length = 2, 2, 4, 3, 9
    q4, k4 = torch.randn(b, heads, length, d), torch.randn(b, heads, length, d)
    q = q4.transpose(1, 2).reshape(b, length, heads * d)  # (B, L, H*D)
    k = k4.transpose(1, 2).reshape(b, length, heads * d)  # (B, L, H*D)
    capture = AttentionCapture()
    capture.begin(_joint_request(t))
    capture.override(FakeAttention(), q, k, k, heads, transformer_options={})
    subject, obj = capture.end()
    assert subject[0].grid == (3, 2)
    torch.testing.assert_close(subject[0].maps, _reference_joint_maps(q4, k4, t, (3, 2), (0,)), rtol=0, atol=1e-6)
    torch.testing.assert_close(obj[0].maps, _reference_joint_maps(q4, k4, t, (3, 2), (1, 2)), rtol=0, atol=1e-6)


def test_joint_odd_latent_rounds_grid_up_and_ignores_trailing_tokens() -> None:
    # Latent 5x3, patch 2 -> grid (3, 2); two extra tokens after the image (e.g. reference images) are ignored.
    torch.manual_seed(5)
    request = _joint_request(3, latent=(5, 3))
    assert request.image_grid == (3, 2)
    q4, k4 = torch.randn(1, 2, 3 + 6 + 2, 4), torch.randn(1, 2, 3 + 6 + 2, 4)
    capture = AttentionCapture()
    capture.begin(request)
    capture.override(FakeAttention(), q4, k4, k4, 2, skip_reshape=True)
    subject, _ = capture.end()
    torch.testing.assert_close(subject[0].maps, _reference_joint_maps(q4, k4, 3, (3, 2), (0,)), rtol=0, atol=1e-6)


def test_joint_image_only_attention_is_ignored() -> None:
    q4 = torch.randn(1, 2, 6, 4)  # image tokens only (SD3.5 extra self-attention): 6 < 3 + 6
    func = FakeAttention()
    capture = AttentionCapture()
    capture.begin(_joint_request(3))
    out = capture.override(func, q4, q4, q4, 2, skip_reshape=True)
    assert out is func.result and len(func.calls) == 1
    subject, obj = capture.end()
    assert subject == [] and obj == []


# -- gradients ----------------------------------------------------------------------------------------------------


def test_gradients_flow_from_unet_maps_to_q_and_k() -> None:
    torch.manual_seed(6)
    heads, d = 2, 4
    q = torch.randn(1, 6, heads * d, requires_grad=True)
    k = torch.randn(1, 5, heads * d, requires_grad=True)
    weight = torch.randn(1, heads, 2, 3)
    capture = AttentionCapture()
    capture.begin(_unet_request(text_length=5))
    with torch.enable_grad():
        capture.override(FakeAttention(), q, k, k, heads, transformer_options=_unet_options(2, 3, batch=1))
        subject, obj = capture.end()
        ((subject[0].maps + 2 * obj[0].maps) * weight).sum().backward()
    q_ref, k_ref = q.detach().clone().requires_grad_(True), k.detach().clone().requires_grad_(True)
    ref = _reference_unet_maps(q_ref, k_ref, heads, (1,), (2, 3)) + 2 * _reference_unet_maps(
        q_ref, k_ref, heads, (2, 3), (2, 3))
    (ref * weight).sum().backward()
    assert q.grad is not None and k.grad is not None
    assert q.grad.abs().sum() > 0 and k.grad.abs().sum() > 0
    torch.testing.assert_close(q.grad, q_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(k.grad, k_ref.grad, rtol=1e-5, atol=1e-6)


def test_gradients_flow_from_joint_maps_to_image_queries_and_text_keys() -> None:
    torch.manual_seed(7)
    q4 = torch.randn(1, 2, 9, 4, requires_grad=True)
    k4 = torch.randn(1, 2, 9, 4, requires_grad=True)
    capture = AttentionCapture()
    capture.begin(_joint_request(3))
    with torch.enable_grad():
        capture.override(FakeAttention(), q4, k4, k4, 2, skip_reshape=True)
        subject, _ = capture.end()
        (subject[0].maps * torch.randn(1, 2, 3, 2)).sum().backward()
    assert q4.grad is not None and k4.grad is not None
    assert q4.grad[:, :, 3:].abs().sum() > 0 and k4.grad[:, :, :3].abs().sum() > 0
    assert torch.count_nonzero(q4.grad[:, :, :3]) == 0  # text queries play no part
    assert torch.count_nonzero(k4.grad[:, :, 3:]) == 0  # nor do image keys


@pytest.mark.parametrize(
    ("latent", "grid"),
    [((64, 48), (32, 24)), ((64, 48), (64, 48)), ((64, 48), (8, 6)), ((63, 47), (32, 24)), ((63, 47), (16, 12)),
     ((63, 47), (63, 47))],
)
def test_grid_without_activations_shape_follows_the_latent_size(latent: tuple[int, int], grid: tuple[int, int]) -> None:
    n = grid[0] * grid[1]
    torch.manual_seed(9)
    q, k = torch.randn(1, n, 2), torch.randn(1, 5, 2)
    capture = AttentionCapture()
    capture.begin(_unet_request(text_length=5, latent=latent))
    capture.override(FakeAttention(), q, k, k, 1, transformer_options={})
    subject, _ = capture.end()
    assert subject[0].grid == grid
    torch.testing.assert_close(subject[0].maps, _reference_unet_maps(q, k, 1, (1,), grid), rtol=0, atol=1e-6)


def test_override_grid_falls_back_when_activations_shape_does_not_fit() -> None:
    # activations_shape missing or describing another layer: the latent size decides.
    k = torch.randn(1, 5, 2)
    capture = AttentionCapture()
    capture.begin(_unet_request(text_length=5, latent=(64, 48)))
    capture.override(FakeAttention(), torch.randn(1, 32 * 24, 2), k, k, 1,
                     transformer_options={"block": ("input", 4), "block_index": 0})
    capture.override(FakeAttention(), torch.randn(1, 16 * 12, 2), k, k, 1,
                     transformer_options={"block": ("input", 7), "block_index": 0,
                                          "activations_shape": [1, 8, 32, 24]})
    subject, _ = capture.end()
    assert [layer.grid for layer in subject] == [(32, 24), (16, 12)]


def test_grid_that_matches_no_downsampling_raises() -> None:
    k = torch.randn(1, 5, 2)
    capture = AttentionCapture()
    capture.begin(_unet_request(text_length=5, latent=(64, 48)))
    with pytest.raises(ValueError, match=r"100 query tokens for a 64x48 latent"):
        capture.override(FakeAttention(), torch.randn(1, 100, 2), k, k, 1, transformer_options={})


# -- request validation and copying -------------------------------------------------------------------------------


def test_capture_request_rejects_positions_outside_the_text() -> None:
    with pytest.raises(ValueError, match=r"subject phrase's token positions \[5\] fall outside .* 5 text tokens"):
        MapRequest("unet", 5, (5,), (1,), (8, 8))
    with pytest.raises(ValueError, match=r"object phrase's token positions \[-1, 2\]"):
        MapRequest("unet", 5, (1,), (-1, 2), (8, 8))


def test_capture_request_rejects_empty_positions() -> None:
    with pytest.raises(ValueError, match="The object phrase has no token positions"):
        MapRequest("joint", 5, (1,), (), (8, 8))
    with pytest.raises(ValueError, match="The subject phrase has no token positions"):
        MapRequest("joint", 5, (), (1,), (8, 8))


def test_capture_request_rejects_unknown_layout() -> None:
    with pytest.raises(ValueError, match=r"Unknown attention layout 'dit'; expected one of \['unet', 'joint'\]"):
        MapRequest("dit", 5, (1,), (2,), (8, 8))


def test_capture_request_image_grid() -> None:
    assert MapRequest("joint", 5, (1,), (2,), (128, 96)).image_grid == (64, 48)
    assert MapRequest("joint", 5, (1,), (2,), (63, 47), patch_size=2).image_grid == (32, 24)


def test_deepcopy_returns_the_same_capture() -> None:
    capture = AttentionCapture()
    assert copy.deepcopy(capture) is capture
    # ComfyUI deep-copies model_options, which carry the bound override: it must still reach this capture.
    options = {"transformer_options": {"optimized_attention_override": capture.override}}
    copied = copy.deepcopy(options)
    assert copied["transformer_options"]["optimized_attention_override"].__self__ is capture
