"""Tests for l2s_core.steps: the official step-index table and the relative-position mapping."""

from __future__ import annotations

from itertools import pairwise

import pytest

from l2s_core.steps import classifier_step_index, default_last_steered_step, scale_step_index, step_index_table

OFFICIAL_50 = [5, 10, 15, 20, 25, 49]


def test_schnell_table() -> None:
    assert step_index_table([1, 3], 4) == [1, 1, 3, 3]


def test_fifty_step_table_by_hand() -> None:
    expected = [5] * 6 + [10] * 5 + [15] * 5 + [20] * 5 + [25] * 5 + [49] * 24
    assert len(expected) == 50
    table = step_index_table(OFFICIAL_50, 50)
    assert table == expected
    assert table[0] == 5 and table[5] == 5 and table[6] == 10 and table[25] == 25 and table[26] == 49


def test_table_sorts_trained_steps() -> None:
    assert step_index_table([49, 5, 25, 10, 20, 15], 50) == step_index_table(OFFICIAL_50, 50)
    assert step_index_table([3, 1, 3], 4) == [1, 1, 3, 3]


def test_steps_after_last_trained_index_stay_zero() -> None:
    # The official table: steps after the last trained index stay 0. The official lists end at N-1, so this only shows for other lists.
    assert step_index_table([1, 2], 5) == [1, 1, 2, 0, 0]
    table = step_index_table([5, 10, 15, 20, 25], 50)
    assert table[:26] == [5] * 6 + [10] * 5 + [15] * 5 + [20] * 5 + [25] * 5
    assert table[26:] == [0] * 24


def test_trained_index_past_the_schedule_is_clipped() -> None:
    # Interval clipped at N-1; the value stays the trained index (as in the official code).
    assert step_index_table([5, 10], 8) == [5] * 6 + [10] * 2
    assert step_index_table(OFFICIAL_50, 4) == [5, 5, 5, 5]


@pytest.mark.parametrize(
    ("trained", "num_steps", "match"),
    [([], 4, "empty"), ([-1, 3], 4, ">= 0"), ([1, 3], 0, ">= 1"), ([1.0, 3], 4, "integer"), ([True], 4, "bool")],
)
def test_table_validation(trained: list, num_steps: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        step_index_table(trained, num_steps)


def test_same_length_uses_the_table() -> None:
    table = step_index_table(OFFICIAL_50, 50)
    assert [classifier_step_index(i, 50, OFFICIAL_50, 50) for i in range(50)] == table
    assert [classifier_step_index(i, 4, [1, 3], 4) for i in range(4)] == [1, 1, 3, 3]


def test_twenty_steps_on_fifty_step_classifier_by_hand() -> None:
    # i' = round(step * 49 / 19), then table[i'].
    assert classifier_step_index(0, 20, OFFICIAL_50, 50) == 5  # i' = 0
    assert classifier_step_index(2, 20, OFFICIAL_50, 50) == 5  # 98/19 = 5.16 -> 5
    assert classifier_step_index(3, 20, OFFICIAL_50, 50) == 10  # 147/19 = 7.74 -> 8
    assert classifier_step_index(9, 20, OFFICIAL_50, 50) == 25  # 441/19 = 23.2 -> 23
    assert classifier_step_index(10, 20, OFFICIAL_50, 50) == 49  # 490/19 = 25.8 -> 26
    assert classifier_step_index(19, 20, OFFICIAL_50, 50) == 49  # i' = 49


@pytest.mark.parametrize(("trained", "trained_n"), [(OFFICIAL_50, 50), ([1, 3], 4)])
def test_relative_mapping_for_1_to_100_steps(trained: list[int], trained_n: int) -> None:
    for n in range(1, 101):
        values = [classifier_step_index(i, n, trained, trained_n) for i in range(n)]
        assert all(v in trained for v in values), (n, values)
        assert all(a <= b for a, b in pairwise(values)), (n, values)  # monotone
        assert values[0] == trained[0]  # first step -> first trained bucket
        if n > 1:
            assert values[-1] == trained[-1]  # last step -> last trained bucket


def test_relative_mapping_ties_round_up() -> None:
    # step 1 of 3 on a 10-step schedule: 1 * 9 / 2 = 4.5 -> 5 (half up), table[5] = 9; round-half-even would give 4.
    assert step_index_table([4, 9], 10)[4:6] == [4, 9]
    assert classifier_step_index(1, 3, [4, 9], 10) == 9


def test_relative_mapping_keeps_zero_after_last_trained_index() -> None:
    # Trained list ending before the end of its schedule: the tail reads 0, as the official table does.
    assert classifier_step_index(9, 10, [5, 10, 15, 20, 25], 50) == 0
    assert classifier_step_index(0, 10, [5, 10, 15, 20, 25], 50) == 5


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((4, 4, [1, 3], 4), "outside the schedule"),
        ((-1, 4, [1, 3], 4), "outside the schedule"),
        ((0, 0, [1, 3], 4), ">= 1"),
        ((0, 4, [1, 3], 0), ">= 1"),
        ((0, 4, [], 4), "empty"),
        ((0, 4, [1, 4], 4), "do not fit"),
        ((0, 8, [1, 4], 4), "do not fit"),
        ((0.0, 4, [1, 3], 4), "integer"),
    ],
)
def test_classifier_step_index_validation(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classifier_step_index(*args)


@pytest.mark.parametrize(
    ("num_steps", "official_last", "official_n", "expected"),
    [
        (50, 25, 50, 25),  # official dev / SD
        (20, 25, 50, 10),  # half the schedule
        (30, 25, 50, 15),
        (100, 25, 50, 50),
        (3, 25, 50, 2),  # 1.5 -> 2 (ties up)
        (1, 25, 50, 1),  # 0.5 -> 1
        (4, 1, 4, 1),  # official schnell
        (8, 1, 4, 2),
        (1, 1, 4, 1),  # 0.25 -> 0, but at least 1
        (2, 4, 4, 2),  # at most num_steps
    ],
)
def test_default_last_steered_step(num_steps: int, official_last: int, official_n: int, expected: int) -> None:
    assert default_last_steered_step(num_steps, official_last, official_n) == expected


@pytest.mark.parametrize(("args", "match"), [((0, 25, 50), ">= 1"), ((20, 0, 50), "1..50"), ((20, 51, 50), "1..50")])
def test_default_last_steered_step_validation(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        default_last_steered_step(*args)


@pytest.mark.parametrize(
    ("index", "from_steps", "to_steps", "expected"),
    [(49, 50, 25, 24), (5, 50, 25, 2), (0, 50, 20, 0), (49, 50, 20, 19), (1, 4, 8, 2), (3, 4, 8, 7), (25, 50, 50, 25),
     (0, 1, 10, 0)],
)
def test_scale_step_index_keeps_relative_position(index: int, from_steps: int, to_steps: int, expected: int) -> None:
    assert scale_step_index(index, from_steps, to_steps) == expected


def test_scale_step_index_rejects_a_step_outside_its_schedule() -> None:
    with pytest.raises(ValueError, match="step 50 of a 50-step schedule"):
        scale_step_index(50, 50, 20)
