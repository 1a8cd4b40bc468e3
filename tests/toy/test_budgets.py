"""Steering variants of the toy benchmark, written as specs."""

from __future__ import annotations

import pytest

from l2s_core.update_rule import OFFICIAL_UPDATE, UpdateRule
from training.toy.budgets import parse_budget


def test_official_changes_nothing() -> None:
    budget = parse_budget("official")
    assert budget.label == "steered: official schedule"
    resolved = budget.options.resolve(20, "sd1")
    assert resolved.iterations == 16 and resolved.early_stop_probability is None
    assert resolved.update_rule == OFFICIAL_UPDATE


def test_terms_combine() -> None:
    budget = parse_budget("early:0.8+steps:4+iters:6+rel:0.03+keep")
    resolved = budget.options.resolve(20, "sd1")
    assert (resolved.early_stop_probability, resolved.last_step, resolved.iterations) == (0.8, 4, 6)
    assert resolved.update_rule == UpdateRule(relative_step=0.03, keep_statistics=True)
    assert budget.label == ("steered: early stop p>=0.8, first 4 steps, 6 iterations, steps of 0.03 std, "
                            "statistics kept")


def test_old_names_keep_their_meaning() -> None:
    assert parse_budget("early").options.early_stop_probability == 0.9
    assert parse_budget("short").options.last_step == 3


@pytest.mark.parametrize("bad", ["fastest", "early:2", "steps:0", "iters:x", "keep:1", "rel:-1"])
def test_bad_specs_are_refused_with_the_grammar(bad: str) -> None:
    with pytest.raises(ValueError, match="Budget term|Unknown budget term"):
        parse_budget(bad)


def test_presets_are_terms_that_later_terms_change() -> None:
    from l2s_core.presets import PRESETS

    assert parse_budget("fast").options == PRESETS["fast"]
    assert parse_budget("quality").options == PRESETS["quality"]
    changed = parse_budget("fast+iters:2").options
    assert changed.iterations == 2 and changed.early_stop_probability == PRESETS["fast"].early_stop_probability


def test_share_keeps_the_first_part_of_the_official_range() -> None:
    assert parse_budget("share:0.5").options.resolve(20, "toy").last_step == 5
    assert parse_budget("share:0.01").options.resolve(20, "toy").last_step == 1  # at least one step
    with pytest.raises(ValueError, match="at most 1"):
        parse_budget("share:1.5")


def test_overlap_term_sets_the_weight() -> None:
    budget = parse_budget("fast+overlap:2")
    assert budget.options.overlap_weight == 2.0 and budget.options.early_stop_probability == 0.9  # fast's stop kept
    assert budget.options.resolve(20, "toy").overlap_weight == 2.0
    assert "overlap term x2" in budget.label
    with pytest.raises(ValueError, match="must be > 0"):
        parse_budget("overlap:0")
