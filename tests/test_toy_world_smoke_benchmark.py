"""Smoke benchmark of the shipped toy world (runs in CI): on a handful of prompts, steering with the shipped
classifier must beat plain sampling by a margin. The full table is ``python -m training toy bench`` (README, "The toy
world").

Measured with the shipped files (torch 2.13 CPU, 2 threads): plain 0.375, steered 0.500 on these 16 images (2 ordered
pairs x 4 relations x seeds 11, 12); the full 48-image table gives 0.479 -> 0.667. Sampling is deterministic on the
same torch build, so the margin below is a fixed expectation, not a statistical test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]
WORLD = REPO / "toy_world" / "models" / "toy_world.safetensors"
CLASSIFIER = REPO / "toy_world" / "classifiers" / "toy_relation_classifier.safetensors"
MARGIN = 0.1


def test_shipped_files_exist_and_are_small() -> None:
    assert WORLD.is_file() and CLASSIFIER.is_file(), "the toy world and its classifier are part of the pack"
    assert WORLD.stat().st_size <= 20e6


def test_steering_beats_plain_sampling_on_a_few_prompts() -> None:
    import torch

    from l2s_core.checkpoint import load_classifier
    from l2s_core.settings import SteeringSettings
    from training.toy.benchmark import Condition, prompt_grid, run_benchmark
    from training.toy.sampling import ToySampler

    torch.set_num_threads(2)
    sampler = ToySampler(WORLD)
    classifier = load_classifier(CLASSIFIER)
    steer = SteeringSettings(last_step=10, step_size=5.0, iterations=16, early_stop_probability=0.9)
    grid = prompt_grid(sampler.bundle.meta["world"]["kinds"], 2)  # 2 ordered pairs x 4 relations
    plain, steered = run_benchmark(sampler, [Condition("plain"), Condition("steered", classifier, steer)], grid,
                                   [11, 12], steps=20, cfg=8.0, out=None)
    assert plain.images == steered.images == 16
    assert steered.accuracy >= plain.accuracy + MARGIN, (plain, steered)
