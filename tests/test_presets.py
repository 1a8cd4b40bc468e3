"""Tests for l2s_core.presets: the official per-family steering defaults (method.md §5.3)."""

from __future__ import annotations

import dataclasses

import pytest

from l2s_core.presets import PRESETS, SteeringPreset, get_preset

# (num_steps, last_step, step_size, iterations, cfg, guidance, resolution, dtype), straight from method.md §0 / §5.3.
EXPECTED = {
    "sd14": (50, 25, 7.5, 16, 7.5, None, 512, "fp32"),
    "sd2": (50, 25, 5.0, 16, 7.5, None, 512, "fp32"),
    "flux_schnell": (4, 1, 5.0, 16, None, None, 256, "bf16"),
    "flux_dev": (50, 25, 5.0, 16, None, 3.5, 512, "bf16"),
}


def test_preset_keys() -> None:
    assert set(PRESETS) == set(EXPECTED)
    assert all(preset.name == key for key, preset in PRESETS.items())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_official_values(name: str) -> None:
    p = PRESETS[name]
    got = (p.num_steps, p.last_step, p.step_size, p.iterations, p.cfg, p.guidance, p.resolution, p.model_dtype)
    assert got == EXPECTED[name]
    assert p.max_refinement_steps == 15
    assert p.loss_thresholds == (1e-5, 3e-5, 5e-5, 7e-5)


def test_threshold_for_steps() -> None:
    p = PRESETS["flux_dev"]
    assert [p.threshold_for(i) for i in (0, 1, 2, 3, 24, 49)] == [1e-5, 3e-5, 5e-5, 7e-5, 7e-5, 7e-5]
    with pytest.raises(ValueError, match=">= 0"):
        p.threshold_for(-1)


def test_steered_steps() -> None:
    assert PRESETS["flux_schnell"].steered_steps == (0,)
    assert PRESETS["sd2"].steered_steps == tuple(range(25))
    assert PRESETS["sd2"].steers(24) and not PRESETS["sd2"].steers(25) and not PRESETS["sd2"].steers(-1)


@pytest.mark.parametrize(
    ("alias", "key"),
    [
        ("flux-dev", "flux_dev"),
        ("FLUX.1-dev", "flux_dev"),
        ("flux_schnell", "flux_schnell"),
        ("Flux-Schnell", "flux_schnell"),
        ("sd14", "sd14"),
        ("SD1.4", "sd14"),
        ("sd2", "sd2"),
        ("sd2.1", "sd2"),
    ],
)
def test_get_preset_aliases(alias: str, key: str) -> None:
    assert get_preset(alias) is PRESETS[key]


def test_get_preset_unknown_lists_names() -> None:
    with pytest.raises(ValueError) as info:
        get_preset("sdxl")
    message = str(info.value)
    assert "'sdxl'" in message
    for key in PRESETS:
        assert repr(key) in message


def test_presets_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["sd2"].step_size = 1.0  # type: ignore[misc]
    assert isinstance(PRESETS["sd2"], SteeringPreset)


@pytest.mark.parametrize(
    ("family", "expected"),
    [("sd14", "sd14"), ("sd2", "sd2"), ("flux_dev", "flux_dev"), ("flux_schnell", "flux_schnell"),
     ("sdxl", "sd2"), ("toy", "sd2"), ("sd3", "flux_dev")],
)
def test_preset_for_family_borrows_the_nearest_official_preset(family: str, expected: str) -> None:
    from l2s_core.presets import preset_for_family

    assert preset_for_family(family).name == expected


def test_preset_for_unknown_family_is_an_error() -> None:
    from l2s_core.presets import preset_for_family

    with pytest.raises(ValueError, match="Unknown steering preset 'kandinsky'"):
        preset_for_family("kandinsky")
