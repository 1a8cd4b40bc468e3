"""The toy world end to end at tiny size: build a bundle from seeds, load it in diffusers, sample plain and steered,
train a classifier on it with the real pipeline; and the shipped bundle's smoke benchmark (steered beats plain)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from l2s_core.toy_bundle import load_bundle  # noqa: E402
from training.toy.build import BuildConfig, build_toy_world, pooling_init_  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED_WORLD = REPO / "toy_world" / "models" / "toy_world.safetensors"
SHIPPED_CLASSIFIER = REPO / "toy_world" / "classifiers" / "toy_relation_classifier.safetensors"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "tiny.safetensors"
    build_toy_world(path, BuildConfig(num_images=48, ae_steps=2, ae_batch=4, unet_steps=3, unet_batch=8))
    return path


def test_pooling_init_is_an_exact_colour_codec_on_flat_blocks() -> None:
    from training.toy.architecture import build_autoencoder

    model = build_autoencoder().eval()
    pooling_init_(model)
    image = torch.full((1, 3, 32, 32), 0.6)
    image[:, 0, 8:16, 16:24] = -0.8  # one 8x8-aligned block of another colour
    with torch.no_grad():
        latent = model.encode(image).latents  # (1, 4, 4, 4): the block averages
        recon = model.decode(latent).sample
    assert latent.shape == (1, 4, 4, 4)
    # colour c = (x + 1) / 2 is coded as 2 (c - 0.75): the block's -0.8 -> 2 (0.1 - 0.75) = -1.3
    assert torch.allclose(latent[0, 0, 1, 2], torch.tensor(-1.3), atol=1e-5)
    assert torch.allclose(latent[0, 1, 1, 2], torch.tensor(2 * (0.8 - 0.75)), atol=1e-5)
    # the decoder only squashes latents with 3 tanh(x / 3): -1.3 comes back as -1.22, i.e. the block's -0.8 as -0.72
    assert (recon - image).abs().max() < 0.1
    assert torch.allclose(recon[0, 0, 8:16, 16:24], torch.tensor(2 * (1.5 * math.tanh(-1.3 / 3) + 0.75) - 1),
                          atol=1e-4)


def test_build_writes_a_loadable_bundle_with_its_configuration(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    meta = bundle.meta
    assert meta["architecture"]["image_size"] == 64 and meta["comfy_unet_config"]["num_heads"] == 4
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


def test_tiny_world_samples_plain_and_steered(tiny_bundle: Path, tmp_path: Path) -> None:
    from l2s_core.checkpoint import load_classifier
    from l2s_core.settings import SteeringSettings
    from training.__main__ import main as training_main
    from training.toy.sampling import ToySampler

    work = tmp_path / "clf"
    status = training_main(["toy", "classifier", "--world", str(tiny_bundle), "--work", str(work), "--out",
                            str(work / "clf.safetensors"), "--per-relation", "5", "--steps", "4", "--epochs", "1",
                            "--psnr-threshold", "0", "--threads", "1"])
    assert status == 0
    classifier = load_classifier(work / "clf.safetensors")
    assert classifier.family == "toy" and classifier.channels == 28 and classifier.trained_num_steps == 4
    sampler = ToySampler(tiny_bundle)
    plain = sampler.sample("a red square above a blue circle", [1, 2], steps=4)
    assert plain.images.shape == (2, 64, 64, 3) and plain.images.dtype == np.uint8
    assert plain.steering_passes == (0, 0)
    again = sampler.sample("a red square above a blue circle", [2], steps=4)
    # a seed gives the same noise in any batch; batched CPU kernels may differ in the last bits only
    assert np.abs(again.images[0].astype(int) - plain.images[1].astype(int)).max() <= 2
    steered = sampler.sample("a red square above a blue circle", [1, 2], steps=4, subject="red square",
                             relation="above", obj="blue circle", classifier=classifier,
                             steer=SteeringSettings(last_step=2, step_size=5.0, iterations=3))
    assert steered.steering_passes == (6, 6)
    assert not np.array_equal(steered.images, plain.images)
