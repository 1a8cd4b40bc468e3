"""Tests for nodes/preview_figure.py: the Attention Preview figure (plot, map grid, colour scale).

No ComfyUI is needed: the figure is drawn from a trace-shaped object (relations, steps with records and maps).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from devtools.pack_loader import load_pack_module

figure = load_pack_module("nodes.preview_figure")

S = 16  # map side


def _maps(batch: int, row: int, col: int) -> torch.Tensor:
    """(B, 2, S, S): the subject peaks at (row, col), the object at the mirrored row."""
    maps = torch.zeros(batch, 2, S, S)
    maps[:, 0, row, col] = 1.0
    maps[:, 1, S - 1 - row, col] = 1.0
    return maps


def _trace(steps: int, batch: int = 1) -> SimpleNamespace:
    records = [SimpleNamespace(target_probabilities=tuple(0.1 + 0.05 * i for _ in range(batch))) for i in range(4)]
    return SimpleNamespace(relations=["blue circle above red square"], steps=[
        SimpleNamespace(step=k, records=records, maps_before=_maps(batch, 4, 8), maps_after=_maps(batch, 3, 8))
        for k in range(steps)])


def _red_image(batch: int = 1, side: int = 64) -> torch.Tensor:
    image = torch.zeros(batch, side, side, 3)
    image[..., 0] = 1.0  # pure red: the toy world's square
    return image


def test_render_gives_one_rgb_figure_per_sample() -> None:
    out = figure.render(_trace(3, batch=2), _red_image(2), every_step=False)
    assert out.ndim == 4 and out.shape[0] == 2 and out.shape[-1] == 3
    assert out.shape[2] == figure.FIGURE_WIDTH
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_more_steps_shown_make_a_taller_figure_and_the_grid_wraps() -> None:
    trace = _trace(10)
    first_last = figure.render(trace, None, every_step=False)
    every = figure.render(trace, None, every_step=True)
    assert every.shape[1] > first_last.shape[1]
    assert every.shape[2] == first_last.shape[2] == figure.FIGURE_WIDTH  # wraps instead of growing sideways


def test_every_step_is_capped_evenly_with_first_and_last() -> None:
    steps = _trace(25).steps
    chosen = figure.chosen_steps(steps, every_step=True)
    assert len(chosen) == figure.MAX_MAP_STEPS
    assert chosen[0] is steps[0] and chosen[-1] is steps[-1]
    assert [s.step for s in figure.chosen_steps(steps[:5], every_step=True)] == [0, 1, 2, 3, 4]
    assert [s.step for s in figure.chosen_steps(steps, every_step=False)] == [0, 24]
    assert [s.step for s in figure.chosen_steps(steps[:1], every_step=False)] == [0]


def test_maps_are_a_colour_scale_over_a_grey_image() -> None:
    base = figure.greyed(_red_image(), 0, 32)
    assert np.allclose(base[..., 0], base[..., 1]) and np.allclose(base[..., 1], base[..., 2]), "base is not grey"
    map_2d = torch.zeros(S, S)
    map_2d[6:10, 6:10] = 1.0  # a block: its centre stays at the maximum after resizing
    out = figure.heat(map_2d, base)
    corner, peak = out[0, 0], out[16, 16]
    assert np.allclose(corner, base[0, 0]), "no attention must leave the grey image as it is"
    yellow = figure.viridis(np.array(1.0))
    assert np.allclose(peak, 0.85 * yellow + 0.15 * base[16, 16], atol=0.05)
    assert peak[1] > peak[2] and peak[1] > 0.6, "the peak is viridis yellow-green, not the toy's red or blue"


def test_viridis_runs_from_dark_purple_to_yellow() -> None:
    ends = figure.viridis(np.array([0.0, 1.0]))
    assert ends[0, 2] > ends[0, 1] and ends[0].sum() < 0.8
    assert ends[1, 0] > 0.9 and ends[1, 1] > 0.85 and ends[1, 2] < 0.2


def test_relations_split_into_subject_word_object() -> None:
    assert figure.split_relation("a dog to the left of a cat") == ("a dog", "to the left of", "a cat")
    assert figure.split_relation("something else") == ("something else", "", "")


def test_an_empty_trace_is_refused_and_the_message_figure_shows_the_image() -> None:
    with pytest.raises(ValueError, match="at least one steered step"):
        figure.render(SimpleNamespace(relations=[], steps=[]), None, every_step=False)
    out = figure.nothing_steered("steering was off", _red_image())
    assert out.shape[0] == 1 and out.shape[2] == figure.FIGURE_WIDTH
    assert torch.allclose(out[0, 40, 40], torch.tensor([1.0, 0.0, 0.0]), atol=0.02), "the image is pasted top left"
