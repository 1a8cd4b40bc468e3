"""The toy world end to end at tiny size: build a bundle from seeds, load it in diffusers, sample plain and steered,
train a classifier on it with the real pipeline; and the shipped bundle's smoke benchmark (steered beats plain)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from l2s_core.toy_bundle import load_bundle  # noqa: E402
from training.toy.build import BuildConfig, build_toy_world, pooling_init_  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHIPPED_WORLD = REPO / "toy_world" / "models" / "toy_world.safetensors"
SHIPPED_CLASSIFIER = REPO / "toy_world" / "classifiers" / "toy_relation_classifier.safetensors"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "tiny.safetensors"
    build_toy_world(path, BuildConfig(num_images=48, ae_steps=2, ae_batch=4, unet_steps=3, unet_batch=8))
    return path


def test_pooling_init_is_an_exact_colour_codec_on_flat_regions() -> None:
    from training.toy.architecture import build_autoencoder
    from training.toy.build import LATENT_CENTRE, pooled_latents

    model = build_autoencoder().eval()
    pooling_init_(model)
    pixels = torch.full((1, 3, 64, 64), 204, dtype=torch.uint8)  # colour 0.8
    pixels[:, 0, 16:40, 16:40] = 25  # a 3x3-cell block whose red is 25 / 255
    image = pixels.float() / 127.5 - 1.0  # [-1, 1], as the VAE sees images
    with torch.no_grad():
        latent = model.encode(image).latents  # (1, 4, 8, 8): the cells' mean colours
        recon = model.decode(latent).sample
    assert latent.shape == (1, 4, 8, 8)
    assert torch.allclose(latent[0, 0, 3, 3], torch.tensor(2 * (25 / 255 - LATENT_CENTRE)), atol=1e-5)
    assert torch.allclose(latent[0, 1, 3, 3], torch.tensor(2 * (0.8 - LATENT_CENTRE)), atol=1e-5)
    assert torch.allclose(latent, pooled_latents(pixels), atol=1e-5)  # the build's shortcut computes the same
    # The decoder squashes latents with 3 tanh(x / 3) and smooths edges (and, untrained, darkens the image border:
    # its blurs pad with zeros); well inside a flat region it is exact.
    expected = 2 * (1.5 * math.tanh(2 * (25 / 255 - LATENT_CENTRE) / 3) + LATENT_CENTRE) - 1
    assert torch.allclose(recon[0, 0, 26:30, 26:30], torch.tensor(expected), atol=1e-3)
    green = 2 * (1.5 * math.tanh(2 * (0.8 - LATENT_CENTRE) / 3) + LATENT_CENTRE) - 1  # flat everywhere
    assert torch.allclose(recon[0, 1, 12:52, 12:52], torch.tensor(green), atol=1e-3)


def test_build_writes_a_loadable_bundle_with_its_configuration(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    meta = bundle.meta
    assert meta["architecture"]["image_size"] == 128 and meta["comfy_unet_config"]["num_heads"] == 4
    assert meta["world"]["backgrounds"] == [[236, 236, 236]]
    assert meta["training"]["num_images"] == 48 and meta["training"]["seed"] == 0
    assert set(meta["training"]["timings"]) == {"scenes_s", "autoencoder_s", "latents_s", "unet_s"}
    assert bundle.scale_factor > 0
    assert any(k.startswith("taesd_decoder.") for k in bundle.parts["vae"])
    assert tiny_bundle.stat().st_size < 20e6


def test_same_seed_same_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.safetensors"
    build_toy_world(again, BuildConfig(num_images=48, ae_steps=2, ae_batch=4, unet_steps=3, unet_batch=8))
    a, b = load_bundle(tiny_bundle), load_bundle(again)
    for part in a.parts:
        for key, value in a.parts[part].items():
            assert torch.equal(value, b.parts[part][key]), (part, key)


def test_same_seed_same_bundle_at_the_shipped_batch_on_two_threads(tmp_path: Path) -> None:
    """The shipped build's UNet batch (64) on two threads. Indexing the prompt embeddings with ``embeddings[which]``
    made their gradient a parallel scatter of floats whose order depends on thread timing: two builds of the same
    seeds then differed in most UNet tensors after 3 steps."""
    before = torch.get_num_threads()
    config = BuildConfig(num_images=48, ae_steps=1, ae_batch=2, unet_steps=3, unet_batch=64, threads=2)
    try:
        paths = [tmp_path / "first.safetensors", tmp_path / "second.safetensors"]
        for path in paths:
            build_toy_world(path, config)
    finally:
        torch.set_num_threads(before)
    a, b = (load_bundle(path) for path in paths)
    differing = [(part, key) for part in a.parts for key, value in a.parts[part].items()
                 if not torch.equal(value, b.parts[part][key])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"


def _initial_text_encoder(seed: int) -> dict[str, torch.Tensor]:
    from training.toy.architecture import ToyArchitecture, build_text_encoder

    torch.manual_seed(seed + 5)  # the build's seeding of the text encoder
    state = build_text_encoder(ToyArchitecture()).state_dict()
    return {k.removeprefix("text_model."): v.half().float() for k, v in state.items()}  # bundle names, fp16 storage


def test_text_encoder_trains_with_the_unet_unless_its_rate_is_zero(tiny_bundle: Path, tmp_path: Path) -> None:
    from training.toy.vocabulary import CLIP_TOKEN_IDS

    start = _initial_text_encoder(0)
    key = "embeddings.token_embedding.weight"
    purple = CLIP_TOKEN_IDS["purple"]
    trained = load_bundle(tiny_bundle).parts["text_encoder"][key]
    assert not torch.allclose(trained[purple], start[key][purple]), "the prompts' word embeddings must move"
    frozen_path = tmp_path / "frozen.safetensors"
    build_toy_world(frozen_path, BuildConfig(num_images=48, ae_steps=2, ae_batch=4, unet_steps=3, unet_batch=8,
                                             text_lr=0.0))
    frozen = load_bundle(frozen_path).parts["text_encoder"]
    assert [k for k in frozen if not torch.equal(frozen[k], start[k])] == []


def test_tiny_world_samples_plain_and_steered(tiny_bundle: Path, tmp_path: Path) -> None:
    from l2s_core.checkpoint import load_classifier
    from l2s_core.settings import SteeringSettings
    from training.__main__ import main as training_main
    from training.toy.sampling import ToySampler

    work = tmp_path / "clf"
    status = training_main(["toy", "classifier", "--world", str(tiny_bundle), "--work", str(work), "--out",
                            str(work / "clf.safetensors"), "--per-relation", "5", "--steps", "4", "--epochs", "1",
                            "--lr", "2e-4", "--patience", "3", "--psnr-threshold", "0", "--threads", "1"])
    assert status == 0
    trained_with = json.loads((work / "run" / "metrics.json").read_text())["config"]
    assert (trained_with["lr"], trained_with["early_stopping_patience"]) == (2e-4, 3)
    classifier = load_classifier(work / "clf.safetensors")
    assert classifier.family == "toy" and classifier.channels == 28 and classifier.trained_num_steps == 4
    sampler = ToySampler(tiny_bundle)
    plain = sampler.sample("a red square above a blue circle", [1, 2], steps=4)
    assert plain.images.shape == (2, 128, 128, 3) and plain.images.dtype == np.uint8
    assert plain.steering_passes == (0, 0)
    again = sampler.sample("a red square above a blue circle", [2], steps=4)
    # a seed gives the same noise in any batch; batched CPU kernels may differ in the last bits only
    assert np.abs(again.images[0].astype(int) - plain.images[1].astype(int)).max() <= 2
    observed: list[tuple[int, float]] = []  # (steered step, largest latent change it made)
    steered = sampler.sample("a red square above a blue circle", [1, 2], steps=4, subject="red square",
                             relation="above", obj="blue circle", classifier=classifier,
                             steer=SteeringSettings(last_step=2, step_size=5.0, iterations=3),
                             on_steer=lambda step, before, result: observed.append(
                                 (step, float((result.latent - before).abs().max()))))
    assert steered.steering_passes == (6, 6)
    assert [step for step, _ in observed] == [0, 1] and all(change > 0 for _, change in observed)
    assert not np.array_equal(steered.images, plain.images)
    # A batch of different prompts: every sample gets what it gets alone (its own prompt and seed's noise).
    mixed = sampler.sample(["a red square above a blue circle", "a green triangle above a yellow star"], [2, 3],
                           steps=4, subject=["red square", "green triangle"], relation="above",
                           obj=["blue circle", "yellow star"], classifier=classifier,
                           steer=SteeringSettings(last_step=2, step_size=5.0, iterations=3))
    alone = sampler.sample("a green triangle above a yellow star", [3], steps=4, subject="green triangle",
                           relation="above", obj="yellow star", classifier=classifier,
                           steer=SteeringSettings(last_step=2, step_size=5.0, iterations=3))
    assert np.abs(mixed.images[0].astype(int) - steered.images[1].astype(int)).max() <= 2
    assert np.abs(mixed.images[1].astype(int) - alone.images[0].astype(int)).max() <= 2
    with pytest.raises(ValueError, match="same token positions"):
        sampler.sample(["a red square above a blue circle", "a red square to the left of a blue circle"], [1, 2],
                       steps=4, subject="red square", relation=["above", "to the left of"], obj="blue circle",
                       classifier=classifier, steer=SteeringSettings(last_step=2, step_size=5.0, iterations=3))


def test_cli_kinds_option_builds_that_vocabulary(tmp_path: Path) -> None:
    from training.__main__ import main

    out = tmp_path / "black.safetensors"
    kinds = "red square,blue circle,black diamond"
    code = main(["toy", "model", "--out", str(out), "--images", "24", "--ae-steps", "1", "--unet-steps", "1",
                 "--kinds", kinds, "--bias", "0.99", "--solo-images", "3", "--binding-weight", "0.1",
                 "--relation-captions", "0.5"])
    assert code == 0
    meta = load_bundle(out).meta
    assert meta["world"]["kinds"] == kinds.split(",") and meta["world"]["bias"] == 0.99
    assert meta["training"]["solo_images"] == 3 and meta["training"]["num_images"] == 24
    assert meta["training"]["binding_weight"] == 0.1 and meta["training"]["relation_captions"] == 0.5


@pytest.mark.parametrize(("kinds", "message"), [
    (("red square", "cyan diamond"), "'cyan'"),  # a colour the toy world does not have
    (("red square", "red square"), "repeat"),
    (("red square",), "at least two"),
])
def test_build_config_rejects_a_bad_vocabulary_before_any_stage(kinds: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BuildConfig(kinds=kinds)


def test_build_config_names_a_kind_word_the_prompt_vocabulary_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import MappingProxyType

    from training.toy import vocabulary

    without_teal = {word: i for word, i in vocabulary.CLIP_TOKEN_IDS.items() if word != "teal"}
    monkeypatch.setattr(vocabulary, "CLIP_TOKEN_IDS", MappingProxyType(without_teal))
    with pytest.raises(ValueError, match="'teal'"):  # a drawable colour with no prompt word: caught before any stage
        BuildConfig(kinds=("red square", "teal diamond"))
