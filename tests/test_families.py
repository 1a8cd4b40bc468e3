"""Tests for l2s_core.families: the family table, name lookup and channel-count naming."""

from __future__ import annotations

import dataclasses

import pytest

from l2s_core.families import FAMILIES, JOINT, UNET, ModelFamily, describe_channel_count, get_family


def test_family_keys_are_exactly_the_contract_names() -> None:
    assert set(FAMILIES) == {"sd14", "sd2", "sdxl", "sd3", "flux_schnell", "flux_dev", "toy"}
    for name, fam in FAMILIES.items():
        assert fam.name == name


@pytest.mark.parametrize(
    ("name", "display", "layout", "channels", "text_tokens", "start_token"),
    [
        ("sd14", "SD1.x", UNET, 128, 77, True),
        ("sd2", "SD2.x", UNET, 195, 77, True),
        ("sdxl", "SDXL", UNET, None, 77, True),
        ("sd3", "SD3", JOINT, None, 154, True),
        ("flux_schnell", "FLUX.1-schnell", JOINT, 1368, 512, False),
        ("flux_dev", "FLUX.1-dev", JOINT, 1368, 512, False),
        ("toy", "Toy world", UNET, None, 77, True),
    ],
)
def test_family_fields(
    name: str, display: str, layout: str, channels: int | None, text_tokens: int, start_token: bool
) -> None:
    fam = FAMILIES[name]
    assert (fam.display, fam.layout, fam.channels, fam.text_tokens, fam.start_token) == (
        display,
        layout,
        channels,
        text_tokens,
        start_token,
    )
    assert fam.map_size == 16


def test_channel_counts_follow_layers_times_heads() -> None:
    # SD1.4: 16 cross-attention layers x 8 heads (method.md §4.2).
    assert FAMILIES["sd14"].channels == 16 * 8
    # SD2.1: mid 8x8 (20 heads) + five 16x16 layers x 20 + five 32x32 x 10 + five 64x64 x 5.
    assert FAMILIES["sd2"].channels == 20 + 5 * 20 + 5 * 10 + 5 * 5 == 195
    # FLUX: (19 double + 38 single) x 24 heads.
    assert FAMILIES["flux_dev"].channels == FAMILIES["flux_schnell"].channels == (19 + 38) * 24 == 1368


def test_single_grid_renormalisation_follows_official_runs() -> None:
    schnell, dev = FAMILIES["flux_schnell"], FAMILIES["flux_dev"]
    assert schnell.official_grid == 16 and not schnell.renormalise_single_grid  # raw at 16 (§4.5)
    assert dev.official_grid == 32 and dev.renormalise_single_grid  # 32 -> 16, renormalised
    # FLUX packs 2x2 latent patches of the /8 VAE latent: resolution = grid * 16.
    assert schnell.default_resolution == 256 and dev.default_resolution == 512
    assert schnell.official_num_steps == 4 and dev.official_num_steps == 50


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("sd14", "sd14"),
        ("sd1", "sd14"),
        ("SD15", "sd14"),
        ("sd1.5", "sd14"),
        ("SD1.x", "sd14"),
        ("sd2", "sd2"),
        ("sd21", "sd2"),
        ("SD2.1", "sd2"),
        ("sdxl", "sdxl"),
        ("SD3", "sd3"),
        ("flux-dev", "flux_dev"),
        ("FLUX.1-dev", "flux_dev"),
        ("  Flux_Dev ", "flux_dev"),
        ("flux_schnell", "flux_schnell"),
        ("schnell", "flux_schnell"),
        ("FLUX-SCHNELL", "flux_schnell"),
        ("Toy world", "toy"),
    ],
)
def test_get_family_accepts_aliases(alias: str, expected: str) -> None:
    assert get_family(alias) is FAMILIES[expected]


def test_get_family_unknown_lists_known_names() -> None:
    with pytest.raises(ValueError, match="Unknown model family 'sd9'") as info:
        get_family("sd9")
    message = str(info.value)
    for name in FAMILIES:
        assert name in message
    assert "flux-dev" in message  # alias hint


def test_get_family_rejects_non_string() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        get_family(195)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("channels", "expected"),
    [(128, "SD1.x"), (195, "SD2.x"), (1368, "FLUX.1"), (7, "an unknown architecture"), (0, "an unknown architecture")],
)
def test_describe_channel_count(channels: int, expected: str) -> None:
    assert describe_channel_count(channels) == expected


def test_table_is_immutable() -> None:
    with pytest.raises(TypeError):
        FAMILIES["new"] = FAMILIES["sd2"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAMILIES["sd2"].channels = 1  # type: ignore[misc]
    assert isinstance(FAMILIES["sd2"], ModelFamily)
