"""Steering settings resolve against the family's steering recipe once the schedule length is known."""

from __future__ import annotations

from l2s_core.families import get_family
from l2s_core.settings import SteeringOptions, SteeringSettings


def test_unset_options_take_the_family_recipe_scaled_to_the_schedule() -> None:
    sd2 = SteeringOptions().resolve(50, "sd2")
    assert (sd2.last_step, sd2.step_size, sd2.iterations) == (25, 5.0, 16)
    assert sd2.loss_thresholds == (1e-5, 3e-5, 5e-5, 7e-5) and sd2.early_stop_probability is None
    toy = SteeringOptions().resolve(20, "toy")  # the toy family's own step size; the first half of the schedule
    assert (toy.last_step, toy.step_size, toy.iterations) == (10, get_family("toy").steering_recipe().step_size, 16)
    assert toy.step_size != sd2.step_size
    assert SteeringOptions().resolve(50, "sdxl") == sd2  # borrowed
    assert SteeringOptions().resolve(50, "sd14").step_size == 7.5


def test_set_options_win_and_the_last_step_is_clipped_to_the_schedule() -> None:
    chosen = SteeringOptions(last_step=99, step_size=2.0, iterations=3, early_stop_probability=0.9).resolve(20, "sd2")
    assert chosen == SteeringSettings(last_step=20, step_size=2.0, iterations=3,
                                      loss_thresholds=(1e-5, 3e-5, 5e-5, 7e-5), early_stop_probability=0.9)
    assert SteeringOptions(last_step=0).resolve(20, "sd2").last_step == 0  # 0 turns steering off


def test_thresholds_per_step_repeat_the_last_entry() -> None:
    settings = SteeringSettings(last_step=5, step_size=5.0, iterations=16)
    assert [settings.threshold_for(i) for i in range(6)] == [1e-5, 3e-5, 5e-5, 7e-5, 7e-5, 7e-5]
