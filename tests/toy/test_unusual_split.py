"""benchmarks/toy_unusual_split.py: opposite and crosswise requests told apart, drawn layouts named, on real scenes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from training.toy.architecture import ToyArchitecture
from training.toy.benchmark import prompt_grid, saved_image_name
from training.toy.build import BuildConfig
from training.toy.scenes import DEFAULT_KINDS, INVERSE, render_scene, usual_relation

ROOT = Path(__file__).resolve().parents[2]
WORLD = ROOT / "toy_world" / "models" / "toy_world.safetensors"


def _script():
    spec = importlib.util.spec_from_file_location("toy_unusual_split", ROOT / "benchmarks" / "toy_unusual_split.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_drawn_layout_names_what_the_boxes_show() -> None:
    layout = _script().drawn_layout
    assert layout(frozenset(), "left of", "above") == "none"
    assert layout(frozenset({"left of", "above"}), "left of", "above") == "both"
    assert layout(frozenset({"above"}), "left of", "above") == "request"
    assert layout(frozenset({"left of"}), "left of", "above") == "habit"
    assert layout(frozenset({"below"}), "left of", "above") == "reversed"
    assert layout(frozenset({"right of"}), "left of", "above") == "other"


def test_split_judges_saved_images_by_kind_of_request(tmp_path: Path) -> None:
    script = _script()
    kinds = DEFAULT_KINDS  # the shipped world's
    grid = prompt_grid(kinds)
    opposite = next(i for i, g in enumerate(grid)
                    if not g.usual and INVERSE[usual_relation(g.subject, g.object, kinds)] == g.relation)
    crosswise = next(i for i, g in enumerate(grid)
                     if not g.usual and INVERSE[usual_relation(g.subject, g.object, kinds)] != g.relation)
    usual = next(i for i, g in enumerate(grid) if g.usual)
    world = BuildConfig().world(ToyArchitecture())  # the shipped world's size, object sizes and background
    # the opposite request drawn in the pair's habit (wrong), the crosswise one drawn as asked (right)
    for index, relation, seed, correct in (
            (opposite, usual_relation(grid[opposite].subject, grid[opposite].object, kinds), 1, False),
            (crosswise, grid[crosswise].relation, 2, True),
            (usual, grid[usual].relation, 3, True)):
        item = grid[index]
        scene = render_scene(item.subject, item.object, relation, seed, world)
        scene.image.save(tmp_path / saved_image_name(index, seed, correct))
    verdicts, layouts = script.split(WORLD, [tmp_path])
    assert verdicts == {("opposite", False): 1, ("crosswise", True): 1}, "usual requests are left out"
    assert layouts == {("opposite", "habit"): 1, ("crosswise", "request"): 1}


def test_split_says_when_a_folder_holds_no_images(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--save-images"):
        _script().split(WORLD, [tmp_path])


def test_split_names_a_file_that_is_not_a_benchmark_image(tmp_path: Path) -> None:
    (tmp_path / "sheet.png").write_bytes(b"")
    with pytest.raises(ValueError, match="sheet.png is not an image of the benchmark"):
        _script().split(WORLD, [tmp_path])
