"""Smoke benchmark of the shipped toy world (runs in CI): on a handful of prompts, plain sampling must draw both
objects and steering with the shipped classifier must beat it by a margin. The full table is
``python -m training toy bench`` (README, "The toy world").

Measured with the shipped files (the teal-diamond world and its 160-scenes-per-relation classifier, torch 2.13 CPU,
2 threads) on these 64 images (8 ordered pairs x 4 relations x seeds 11, 12): plain 0.328 with both objects present
in 0.906; steered with the `quality` mode 0.828 (+0.50). The issue that set these checks asks for a margin of 0.25.
The test steers with `quality`, the mode the demo shows, which earns +0.43 and +0.39 on the README's 240-image grids
(seeds 1000 and 2000); `fast` earns +0.35 and +0.27 there but only +0.23 on these 64 images, so it is not the mode
tested. Sampling is deterministic on the same torch build and thread count (the test sets 2), so the margin is a
fixed expectation, not a statistical test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
WORLD = REPO / "toy_world" / "models" / "toy_world.safetensors"
CLASSIFIER = REPO / "toy_world" / "classifiers" / "toy_relation_classifier.safetensors"
MARGIN = 0.25
PLAIN_PRESENCE = 0.9


def test_shipped_files_exist_and_are_small() -> None:
    assert WORLD.is_file() and CLASSIFIER.is_file(), "the toy world and its classifier are part of the pack"
    assert WORLD.stat().st_size + CLASSIFIER.stat().st_size <= 25e6


def test_steering_beats_plain_sampling_on_a_few_prompts() -> None:
    import torch

    from l2s_core.checkpoint import load_classifier
    from l2s_core.presets import mode_options
    from training.toy.benchmark import Condition, prompt_grid, run_benchmark
    from training.toy.sampling import ToySampler

    torch.set_num_threads(2)
    sampler = ToySampler(WORLD)
    classifier = load_classifier(CLASSIFIER)
    steer = mode_options("quality").resolve(20, classifier.family)  # the mode the demo shows
    grid = prompt_grid(sampler.bundle.meta["world"]["kinds"], 8)  # 8 ordered pairs x 4 relations
    plain, steered = run_benchmark(sampler, [Condition("plain"), Condition("steered", classifier, steer)], grid,
                                   [11, 12], steps=20, cfg=8.0, out=None)
    assert plain.images == steered.images == 64
    print(f"smoke: plain {plain.accuracy:.3f} (presence {plain.presence:.3f}), steered {steered.accuracy:.3f}")
    assert plain.presence >= PLAIN_PRESENCE, plain
    lacking = round(plain.images * (1 - plain.presence))  # images missing one object or both
    assert lacking <= sum(plain.missing.values()) <= 2 * lacking, plain.missing
    assert steered.accuracy >= plain.accuracy + MARGIN, (plain, steered)
