"""Smoke benchmark of the shipped toy world (runs in CI): on a handful of prompts, plain sampling must draw both
objects and steering with the shipped classifier must beat it by a margin. The full table is
``python -m training toy bench`` (README, "The toy world").

Measured with the shipped files (the world built with the binding term and relation words in a quarter of its
prompts, and its classifier; torch 2.13 CPU, 2 threads) on these 64 images (8 ordered pairs x 4 relations x seeds 11,
12): plain 0.156 with both objects present in every image; steered with the `fast` mode 0.516 (+0.36). The issue
that set these checks asks for a margin of 0.25. The test steers with `fast`, the mode the demo shows: on the
README's 240-image grids it is the most accurate mode on this world (0.929 and 0.875 on seeds 1000 and 2000, against
plain 0.254 and 0.254; `quality` 0.875 on seeds 1000) at a tenth of the passes. Sampling is
deterministic on the same torch build and thread count (the test sets 2), so the margin is a fixed expectation, not
a statistical test.
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
    steer = mode_options("fast").resolve(20, classifier.family)  # the mode the demo shows
    grid = prompt_grid(sampler.bundle.meta["world"]["kinds"], 8)  # 8 ordered pairs x 4 relations
    plain, steered = run_benchmark(sampler, [Condition("plain"), Condition("steered", classifier, steer)], grid,
                                   [11, 12], steps=20, cfg=8.0, out=None)
    assert plain.images == steered.images == 64
    print(f"smoke: plain {plain.accuracy:.3f} (presence {plain.presence:.3f}), steered {steered.accuracy:.3f}")
    assert plain.presence >= PLAIN_PRESENCE, plain
    lacking = round(plain.images * (1 - plain.presence))  # images missing one object or both
    assert lacking <= sum(plain.missing.values()) <= 2 * lacking, plain.missing
    assert steered.accuracy >= plain.accuracy + MARGIN, (plain, steered)
