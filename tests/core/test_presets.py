"""Steering modes: the presets resolve as documented, custom numbers mean what they say, bad values are refused."""

from __future__ import annotations

import pytest

from l2s_core.presets import PRESETS, STEERING_MODES, CustomValues, mode_options
from l2s_core.settings import SteeringOptions
from l2s_core.update_rule import OFFICIAL_UPDATE, UpdateRule


def test_every_mode_has_options() -> None:
    assert set(STEERING_MODES) == set(PRESETS) | {"custom"}
    assert mode_options("official") == SteeringOptions()


def test_official_is_the_family_recipe() -> None:
    resolved = mode_options("official").resolve(50, "sd14")
    assert (resolved.last_step, resolved.step_size, resolved.iterations) == (25, 7.5, 16)
    assert resolved.early_stop_probability is None and resolved.update_rule == OFFICIAL_UPDATE


def test_off_steers_nothing() -> None:
    assert mode_options("off").resolve(20, "toy").last_step == 0


def test_fast_and_quality_take_relative_steps_and_keep_the_statistics() -> None:
    for mode in ("fast", "quality"):
        resolved = mode_options(mode).resolve(20, "toy")
        assert resolved.update_rule == UpdateRule(relative_step=0.24, keep_statistics=True)
        assert resolved.last_step == 10 and resolved.iterations == 16  # the official range and cap


def test_fast_stops_early_and_quality_spends_the_full_budget() -> None:
    assert mode_options("fast").early_stop_probability == 0.9
    assert mode_options("quality").early_stop_probability is None  # only the official loss thresholds stop it


def test_custom_numbers_are_taken_as_given() -> None:
    resolved = mode_options("custom", CustomValues(3, 2.5, 4, 0.8)).resolve(20, "sd2")
    assert (resolved.last_step, resolved.step_size, resolved.iterations, resolved.early_stop_probability) == (
        3, 2.5, 4, 0.8)


def test_custom_probability_one_adds_no_early_stop() -> None:
    assert mode_options("custom", CustomValues(3, 5.0, 16, 1.0)).early_stop_probability is None


@pytest.mark.parametrize("values", [CustomValues(0, 5.0, 16), CustomValues(5, 5.0, 0), CustomValues(5, 0.0, 16)])
def test_custom_zero_steps_or_iterations_steer_nothing(values: CustomValues) -> None:
    assert mode_options("custom", values).resolve(20, "sd2").last_step == 0


@pytest.mark.parametrize("args, match", [((-1, 5.0, 16), "steered steps"), ((2, -1.0, 16), "step size"),
                                         ((2, 5.0, -3), "iterations"), ((2, 5.0, 16, 0.0), "early-stop")])
def test_bad_custom_values_are_refused(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CustomValues(*args)


def test_unknown_mode_and_custom_without_values() -> None:
    with pytest.raises(ValueError, match="Unknown steering mode 'fastest'"):
        mode_options("fastest")
    with pytest.raises(ValueError, match="needs its values"):
        mode_options("custom")
