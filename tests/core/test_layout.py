"""Tests for l2s_core.layout: token averaging, channel order, resize/renormalisation and the classifier input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from l2s_core.families import FAMILIES, JOINT, UNET
from l2s_core.layout import (
    LayerMaps,
    check_channel_count,
    classifier_input,
    object_channels,
    order_layers,
    resize_and_renormalise,
    token_average,
)

# SD UNet at 512x512 in call order: (block, grid side, SD1.4 heads, SD2.1 heads).
SD_CALL_ORDER: list[tuple[str, int, int, int]] = [
    ("down0.a0", 64, 8, 5),
    ("down0.a1", 64, 8, 5),
    ("down1.a0", 32, 8, 10),
    ("down1.a1", 32, 8, 10),
    ("down2.a0", 16, 8, 20),
    ("down2.a1", 16, 8, 20),
    ("mid", 8, 8, 20),
    ("up1.a0", 16, 8, 20),
    ("up1.a1", 16, 8, 20),
    ("up1.a2", 16, 8, 20),
    ("up2.a0", 32, 8, 10),
    ("up2.a1", 32, 8, 10),
    ("up2.a2", 32, 8, 10),
    ("up3.a0", 64, 8, 5),
    ("up3.a1", 64, 8, 5),
    ("up3.a2", 64, 8, 5),
]
# Published UNet order: [8x8 mid] -> [16x16 down2.a0, a1, up1.a0..a2] -> [32x32 down1, up2] -> [64x64 down0, up3].
SD_CHANNEL_ORDER = [6, 4, 5, 7, 8, 9, 2, 3, 10, 11, 12, 0, 1, 13, 14, 15]


def sd_layers(heads_column: int, batch: int = 1, seed: int = 0) -> list[LayerMaps]:
    """Random positive SD-shaped layers; heads_column 2 = SD1.4, 3 = SD2.1."""
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for call_index, row in enumerate(SD_CALL_ORDER):
        side, heads = row[1], row[heads_column]
        maps = torch.rand(batch, heads, side, side, generator=gen) + 0.01  # (B, heads, h, w)
        layers.append(LayerMaps(call_index, (side, side), maps))
    return layers


# ---------------------------------------------------------------------------------------------------------------
# token_average


def test_token_average_single_token_is_the_column() -> None:
    probs = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)  # (B, heads, N, T)
    out = token_average(probs, [2])
    assert out.shape == (2, 3, 4)
    assert torch.equal(out, probs[..., 2])


def test_token_average_hand_values() -> None:
    # One batch, one head, two pixels, four tokens.
    probs = torch.tensor([[[[0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.3, 0.1]]]])  # (1, 1, 2, 4)
    out = token_average(probs, [1, 3])
    expected = torch.tensor([[[0.3, 0.1]]])  # (0.2+0.4)/2, (0.1+0.1)/2
    torch.testing.assert_close(out, expected)
    out3 = token_average(probs, (0, 1, 2))
    torch.testing.assert_close(out3, torch.tensor([[[0.2, 0.3]]]))


@pytest.mark.parametrize(
    ("positions", "match"),
    [
        ([], "at least one"),
        ([5], "outside the text sequence of length 5"),
        ([-1], "outside"),
        ([1, 1], "distinct"),
        ([1.0], "integer"),
        ([True], "bool"),
    ],
)
def test_token_average_validation(positions: list, match: str) -> None:
    probs = torch.rand(1, 2, 3, 5)
    with pytest.raises(ValueError, match=match):
        token_average(probs, positions)


def test_token_average_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match=r"\(B, heads, N, T\)"):
        token_average(torch.rand(2, 3, 5), [0])


# ---------------------------------------------------------------------------------------------------------------
# LayerMaps and order_layers


def test_layer_maps_validates_shape() -> None:
    with pytest.raises(ValueError, match="to match grid"):
        LayerMaps(0, (4, 4), torch.rand(1, 2, 4, 5))
    with pytest.raises(ValueError, match="to match grid"):
        LayerMaps(0, (4, 4), torch.rand(1, 2, 16))
    with pytest.raises(ValueError, match="positive"):
        LayerMaps(0, (0, 4), torch.rand(1, 2, 0, 4))
    with pytest.raises(ValueError, match=">= 0"):
        LayerMaps(-1, (2, 2), torch.rand(1, 2, 2, 2))


def test_layer_maps_from_flat_is_row_major() -> None:
    flat = torch.arange(6, dtype=torch.float32).reshape(1, 1, 6)  # (B, heads, h*w)
    layer = LayerMaps.from_flat(3, (2, 3), flat)
    assert layer.grid == (2, 3) and layer.heads == 1 and layer.call_index == 3
    assert torch.equal(layer.maps[0, 0], torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]))
    with pytest.raises(ValueError, match="h\\*w"):
        LayerMaps.from_flat(0, (2, 2), flat)


def test_order_layers_unet_matches_sd_channel_order() -> None:
    layers = sd_layers(3)
    ordered = order_layers(layers[::-1], UNET)  # input order must not matter
    assert [layer.call_index for layer in ordered] == SD_CHANNEL_ORDER
    assert [layer.grid[0] for layer in ordered] == [8] + [16] * 5 + [32] * 5 + [64] * 5


def test_order_layers_joint_is_call_order() -> None:
    layers = [LayerMaps(i, (2, 2), torch.rand(1, 1, 2, 2)) for i in (3, 0, 2, 1)]
    assert [layer.call_index for layer in order_layers(layers, JOINT)] == [0, 1, 2, 3]


def test_order_layers_validation() -> None:
    layer = LayerMaps(0, (2, 2), torch.rand(1, 1, 2, 2))
    with pytest.raises(ValueError, match="Unknown attention layout"):
        order_layers([layer], "dit")
    with pytest.raises(ValueError, match="No attention layers"):
        order_layers([], UNET)
    with pytest.raises(ValueError, match="distinct call indices"):
        order_layers([layer, LayerMaps(0, (4, 4), torch.rand(1, 1, 4, 4))], UNET)


@pytest.mark.parametrize(("family", "heads_column"), [("sd2", 3), ("sd14", 2)])
def test_sd_channel_counts(family: str, heads_column: int) -> None:
    out = object_channels(sd_layers(heads_column), UNET, 16)
    assert out.shape == (1, FAMILIES[family].channels, 16, 16)


def test_sd2_channel_layout_block_by_block() -> None:
    layers = sd_layers(3, batch=2)
    out = object_channels(layers, UNET, 16)
    assert out.shape[1] == 195 == 20 + 5 * 20 + 5 * 10 + 5 * 5
    # Hand-assembled: each layer resized to 16 and renormalised, concatenated in the published order.
    expected = torch.cat([resize_and_renormalise(layers[i].maps, 16, True) for i in SD_CHANNEL_ORDER], dim=1)
    torch.testing.assert_close(out, expected)
    # Block boundaries: mid 0..19, 16x16 20..119, 32x32 120..169, 64x64 170..194.
    torch.testing.assert_close(out[:, 0:20], resize_and_renormalise(layers[6].maps, 16, True))
    torch.testing.assert_close(out[:, 20:40], layers[4].maps / layers[4].maps.sum(dim=(-2, -1), keepdim=True))
    torch.testing.assert_close(
        out[:, 120:130],
        F.avg_pool2d(layers[2].maps, 2) / F.avg_pool2d(layers[2].maps, 2).sum(dim=(-2, -1), keepdim=True),
    )
    torch.testing.assert_close(out[:, 170:175], resize_and_renormalise(layers[0].maps, 16, True))


def test_flux_layout_1368_channels_in_call_order() -> None:
    # Value of each map = its expected channel index (layer * 24 + head); single grid equal to the map size -> raw.
    layers = []
    for layer_idx in range(57):
        values = torch.arange(24, dtype=torch.float32) + 24 * layer_idx
        maps = values.reshape(1, 24, 1, 1).expand(1, 24, 2, 2)  # (B, heads, h, w)
        layers.append(LayerMaps(layer_idx, (2, 2), maps))
    out = object_channels(list(reversed(layers)), JOINT, 2)
    assert out.shape == (1, FAMILIES["flux_dev"].channels, 2, 2)
    assert torch.equal(out[0, :, 0, 0], torch.arange(1368, dtype=torch.float32))


# ---------------------------------------------------------------------------------------------------------------
# resize_and_renormalise


def test_resize_32_to_16_is_2x2_average_pooling() -> None:
    maps = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(resize_and_renormalise(maps, 16, False), F.avg_pool2d(maps, 2))


def test_resize_64_to_16_is_mean_of_middle_2x2_of_each_4x4_block() -> None:
    maps = torch.rand(1, 2, 64, 64, generator=torch.Generator().manual_seed(2))
    blocks = maps.reshape(1, 2, 16, 4, 16, 4)  # (B, C, 16, 4, 16, 4): row block, row in block, col block, col
    middle = blocks[:, :, :, 1:3, :, 1:3].mean(dim=(3, 5))  # (B, C, 16, 16)
    torch.testing.assert_close(resize_and_renormalise(maps, 16, False), middle)


def test_resize_hand_values() -> None:
    block = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    # 4 -> 1: middle 2x2 = 5, 6, 9, 10 -> 7.5.
    assert resize_and_renormalise(block, 1, False).item() == 7.5
    # 2 -> 4 upsample, rows 0 and 1: sample positions -0.25, 0.25, 0.75, 1.25 (clamped) -> 0, .25, .75, 1.
    rows = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).reshape(1, 1, 2, 2)
    up = resize_and_renormalise(rows, 4, False)
    torch.testing.assert_close(up[0, 0, :, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    torch.testing.assert_close(up[0, 0, :, 3], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_resize_16_to_16_is_identity() -> None:
    maps = torch.rand(1, 4, 16, 16)
    assert torch.equal(resize_and_renormalise(maps, 16, False), maps)


def test_renormalised_maps_sum_to_one() -> None:
    maps = torch.rand(2, 5, 32, 32) * 3.0
    out = resize_and_renormalise(maps, 16, True)
    torch.testing.assert_close(out.sum(dim=(-2, -1)), torch.ones(2, 5))
    # Hand value: a constant 2x2 map of ones becomes 0.25 each (1 / (4 + 1e-8)).
    ones = resize_and_renormalise(torch.ones(1, 1, 2, 2), 2, True)
    torch.testing.assert_close(ones, torch.full((1, 1, 2, 2), 0.25))
    # A zero map stays zero (the 1e-8 guards the division).
    assert torch.equal(resize_and_renormalise(torch.zeros(1, 1, 2, 2), 2, True), torch.zeros(1, 1, 2, 2))


def test_resize_validation() -> None:
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        resize_and_renormalise(torch.rand(3, 4, 4), 2, True)
    with pytest.raises(ValueError, match="floating-point"):
        resize_and_renormalise(torch.ones(1, 1, 4, 4, dtype=torch.long), 2, True)
    with pytest.raises(ValueError, match="positive"):
        resize_and_renormalise(torch.rand(1, 1, 4, 4), 0, True)


# ---------------------------------------------------------------------------------------------------------------
# object_channels: the official renormalisation rule


def test_single_grid_equal_to_map_size_is_raw() -> None:
    # FLUX-schnell: 16x16 tokens, map size 16 -> raw probabilities, not renormalised.
    maps = [torch.rand(1, 3, 16, 16) * 0.01 for _ in range(2)]
    out = object_channels([LayerMaps(i, (16, 16), m) for i, m in enumerate(maps)], JOINT, 16)
    assert torch.equal(out, torch.cat(maps, dim=1))
    assert not torch.allclose(out.sum(dim=(-2, -1)), torch.ones(1, 6))


def test_single_grid_larger_than_map_size_is_pooled_and_renormalised() -> None:
    # FLUX-dev: 32x32 tokens -> 2x2 average pool, then each map sums to 1.
    maps = torch.rand(1, 4, 32, 32)
    out = object_channels([LayerMaps(0, (32, 32), maps)], JOINT, 16)
    pooled = F.avg_pool2d(maps, 2)
    torch.testing.assert_close(out, pooled / pooled.sum(dim=(-2, -1), keepdim=True))
    torch.testing.assert_close(out.sum(dim=(-2, -1)), torch.ones(1, 4))


def test_non_square_single_grid_is_resized_and_renormalised() -> None:
    maps = torch.rand(1, 2, 16, 24)
    out = object_channels([LayerMaps(0, (16, 24), maps)], JOINT, 16)
    assert out.shape == (1, 2, 16, 16)
    expected = F.interpolate(maps, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected / expected.sum(dim=(-2, -1), keepdim=True))


def test_multi_grid_always_renormalised_even_the_grid_at_map_size() -> None:
    a = torch.rand(1, 2, 16, 16) * 0.01
    b = torch.rand(1, 2, 32, 32)
    out = object_channels(
        [LayerMaps(0, (16, 16), a), LayerMaps(1, (32, 32), b)], UNET, 16, renormalise_single_grid=False
    )
    torch.testing.assert_close(out[:, :2], a / a.sum(dim=(-2, -1), keepdim=True))
    torch.testing.assert_close(out.sum(dim=(-2, -1)), torch.ones(1, 4))


def test_renormalise_single_grid_override() -> None:
    m16 = torch.rand(1, 2, 16, 16) * 0.01
    m32 = torch.rand(1, 2, 32, 32) * 0.01
    # True: renormalise even at the map size (FLUX-dev run at 256px).
    on = object_channels([LayerMaps(0, (16, 16), m16)], JOINT, 16, renormalise_single_grid=True)
    torch.testing.assert_close(on, m16 / m16.sum(dim=(-2, -1), keepdim=True))
    # False: resize but keep the per-pixel probability scale (FLUX-schnell run at 512px).
    off = object_channels([LayerMaps(0, (32, 32), m32)], JOINT, 16, renormalise_single_grid=False)
    torch.testing.assert_close(off, F.avg_pool2d(m32, 2))


def test_object_channels_casts_to_float32() -> None:
    maps = torch.rand(1, 2, 16, 16).to(torch.bfloat16)
    out = object_channels([LayerMaps(0, (16, 16), maps)], JOINT, 16)
    assert out.dtype == torch.float32
    assert torch.equal(out, maps.float())


def test_object_channels_rejects_mixed_batch() -> None:
    layers = [LayerMaps(0, (2, 2), torch.rand(1, 1, 2, 2)), LayerMaps(1, (2, 2), torch.rand(2, 1, 2, 2))]
    with pytest.raises(ValueError, match="batch size"):
        object_channels(layers, JOINT, 2)


# ---------------------------------------------------------------------------------------------------------------
# classifier_input, gradients, channel-count check


def test_classifier_input_stacks_subject_then_object() -> None:
    subj = sd_layers(2, batch=2, seed=3)
    obj = sd_layers(2, batch=2, seed=4)
    x = classifier_input(subj, obj, UNET, 16)
    assert x.shape == (2, 2, 128, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0], object_channels(subj, UNET, 16))
    torch.testing.assert_close(x[:, 1], object_channels(obj, UNET, 16))


def test_classifier_input_requires_same_structure() -> None:
    subj = sd_layers(2)
    with pytest.raises(ValueError, match="same layers"):
        classifier_input(subj, subj[:-1], UNET, 16)
    other_heads = [LayerMaps(layer.call_index, layer.grid, layer.maps[:, :4]) for layer in subj]
    with pytest.raises(ValueError, match="same layers"):
        classifier_input(subj, other_heads, UNET, 16)


@pytest.mark.parametrize(("layout", "grids"), [(UNET, [8, 16, 32, 64, 16]), (JOINT, [32, 32, 32])])
def test_gradients_flow_back_to_attention(layout: str, grids: list[int]) -> None:
    gen = torch.Generator().manual_seed(5)
    leaves = [torch.rand(1, 2, side * side, 6, generator=gen).requires_grad_(True) for side in grids]
    subj, obj = [], []
    for i, (side, probs) in enumerate(zip(grids, leaves, strict=True)):
        subj.append(LayerMaps.from_flat(i, (side, side), token_average(probs, [1, 2])))
        obj.append(LayerMaps.from_flat(i, (side, side), token_average(probs, [4])))
    x = classifier_input(subj, obj, layout, 16)
    weights = torch.rand(x.shape, generator=gen)
    (x * weights).sum().backward()
    for probs in leaves:
        assert probs.grad is not None
        assert torch.isfinite(probs.grad).all()
        used = probs.grad[..., [1, 2, 4]]
        assert used.abs().sum() > 0
        assert torch.equal(probs.grad[..., [0, 3, 5]], torch.zeros_like(probs.grad[..., [0, 3, 5]]))


def test_resize_and_renormalise_gradcheck() -> None:
    maps = (torch.rand(1, 2, 8, 8, dtype=torch.float64) + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: resize_and_renormalise(m, 4, True), (maps,))


def test_check_channel_count_passes_on_match() -> None:
    assert check_channel_count(195, 195) is None


def test_check_channel_count_names_both_architectures() -> None:
    with pytest.raises(ValueError) as info:
        check_channel_count(1368, 195)
    message = str(info.value)
    assert "expects 1368 attention channels (FLUX.1), but the model produced 195 (SD2.x)" in message
    assert "Load a classifier trained for this model family" in message


def test_check_channel_count_with_family_and_unknown_count() -> None:
    with pytest.raises(ValueError, match=r"trained for FLUX\.1-dev\) expects 1368 .* produced 7 \(an unknown"):
        check_channel_count(1368, 7, expected_family="flux-dev")
    with pytest.raises(ValueError, match=r"expects 128 attention channels \(SD1\.x\)"):
        check_channel_count(128, 1368, expected_family="sd14")
    with pytest.raises(ValueError, match="positive"):
        check_channel_count(0, 195)
