"""Tests for l2s_core.families: the family table (layouts and recipes), name lookup and channel-count naming."""

from __future__ import annotations

import dataclasses

import pytest

from l2s_core.families import (
    FAMILIES,
    JOINT,
    PUBLISHED_FAMILIES,
    UNET,
    ModelFamily,
    describe_channel_count,
    get_family,
)


def test_family_keys_are_exactly_the_contract_names() -> None:
    assert set(FAMILIES) == {"sd14", "sd2", "sdxl", "sd3", "flux_schnell", "flux_dev", "toy"}
    for name, fam in FAMILIES.items():
        assert fam.name == name


@pytest.mark.parametrize(
    ("name", "display", "layout", "channels", "text_tokens", "resolution"),
    [
        ("sd14", "SD1.x", UNET, 128, 77, 512),
        ("sd2", "SD2.x", UNET, 195, 77, 512),
        ("sdxl", "SDXL", UNET, None, 77, 1024),
        ("sd3", "SD3", JOINT, None, 154, 1024),
        ("flux_schnell", "FLUX.1-schnell", JOINT, 1368, 512, 256),  # 16x16 grid of 2x2 patches of the /8 latent
        ("flux_dev", "FLUX.1-dev", JOINT, 1368, 512, 512),
        ("toy", "Toy world", UNET, None, 77, 128),
    ],
)
def test_family_fields(
    name: str, display: str, layout: str, channels: int | None, text_tokens: int, resolution: int
) -> None:
    fam = FAMILIES[name]
    assert (fam.display, fam.layout, fam.channels, fam.text_tokens, fam.default_resolution) == (
        display,
        layout,
        channels,
        text_tokens,
        resolution,
    )
    assert fam.map_size == 16


def test_channel_counts_follow_layers_times_heads() -> None:
    # SD1.4: 16 cross-attention layers x 8 heads.
    assert FAMILIES["sd14"].channels == 16 * 8
    # SD2.1: mid 8x8 (20 heads) + five 16x16 layers x 20 + five 32x32 x 10 + five 64x64 x 5.
    assert FAMILIES["sd2"].channels == 20 + 5 * 20 + 5 * 10 + 5 * 5 == 195
    # FLUX: (19 double + 38 single) x 24 heads.
    assert FAMILIES["flux_dev"].channels == FAMILIES["flux_schnell"].channels == (19 + 38) * 24 == 1368


# (num_steps, last_step, step_size, iterations) of the published runs.
PUBLISHED_STEERING = {
    "sd14": (50, 25, 7.5, 16),
    "sd2": (50, 25, 5.0, 16),
    "flux_schnell": (4, 1, 5.0, 16),
    "flux_dev": (50, 25, 5.0, 16),
}
# (num_steps, record_steps, classifier size, lr, epochs) of the published training runs.
PUBLISHED_TRAINING = {
    "sd14": (50, (5, 10, 15, 20, 25, 49), "small", 1e-4, 150),
    "sd2": (50, (5, 10, 15, 20, 25, 49), "small", 1e-4, 100),
    "flux_schnell": (4, (1, 3), "large", 5e-5, 200),
    "flux_dev": (50, (5, 10, 15, 20, 25, 49), "large", 5e-5, 200),
}


def test_published_families_carry_the_published_recipes() -> None:
    assert PUBLISHED_FAMILIES == ("sd14", "sd2", "flux_schnell", "flux_dev")
    for name in PUBLISHED_FAMILIES:
        fam = FAMILIES[name]
        assert fam.published and fam.borrows is None
        s, t = fam.steering_recipe(), fam.training_recipe()
        assert (s.num_steps, s.last_step, s.step_size, s.iterations) == PUBLISHED_STEERING[name]
        assert s.max_refinement_steps == 15 and s.loss_thresholds == (1e-5, 3e-5, 5e-5, 7e-5)
        assert (t.num_steps, t.record_steps, t.classifier_size, t.lr, t.epochs) == PUBLISHED_TRAINING[name]


@pytest.mark.parametrize(
    ("family", "steering_from", "training_from"),
    [("sdxl", "sd2", "sd2"), ("sd3", "flux_dev", "flux_dev"), ("toy", "toy", "sd2")],
)
def test_unpublished_families_borrow_what_they_lack(family: str, steering_from: str, training_from: str) -> None:
    fam = FAMILIES[family]
    assert not fam.published
    assert fam.steering_recipe() is FAMILIES[steering_from].steering_recipe()
    assert fam.training_source() is FAMILIES[training_from]
    assert fam.training_recipe() is FAMILIES[training_from].training


def test_toy_world_steers_with_its_own_step_size() -> None:
    toy = FAMILIES["toy"].steering_recipe()
    assert (toy.num_steps, toy.last_step, toy.iterations) == (20, 10, 16)  # the same half-schedule window as SD
    assert toy.step_size < FAMILIES["sd2"].steering_recipe().step_size


def test_threshold_for_steps() -> None:
    recipe = FAMILIES["flux_dev"].steering_recipe()
    assert [recipe.threshold_for(i) for i in (0, 1, 2, 3, 24, 49)] == [1e-5, 3e-5, 5e-5, 7e-5, 7e-5, 7e-5]
    with pytest.raises(ValueError, match=">= 0"):
        recipe.threshold_for(-1)


def test_steered_steps() -> None:
    assert FAMILIES["flux_schnell"].steering_recipe().steered_steps == (0,)
    sd2 = FAMILIES["sd2"].steering_recipe()
    assert sd2.steered_steps == tuple(range(25))
    assert sd2.steers(24) and not sd2.steers(25) and not sd2.steers(-1)


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
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAMILIES["sd2"].steering_recipe().step_size = 1.0  # type: ignore[misc]
    assert isinstance(FAMILIES["sd2"], ModelFamily)
