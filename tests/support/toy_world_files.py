"""Toy-world files for the tests: the bundle and classifier the pack ships, or small stand-ins when it has none yet.

The bundle is, in order: the file named by ``L2S_TOY_BUNDLE``; the shipped ``toy_world/models/toy_world.safetensors``; a
tiny bundle built with :func:`training.toy.build.build_toy_world` (64 scenes, 2 autoencoder and 2 UNet steps: same
format and architecture, untrained weights), cached under pytest's cache directory by a hash of the code that
builds it, so it is built once (about 20-60 s on CPU) until that code changes. The classifier is the shipped
``toy_world/classifiers/toy_relation_classifier.safetensors`` or a random one of family ``toy`` with the bundle's channel count.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIR = REPO_ROOT / "toy_world"
SHIPPED_BUNDLE = SHIPPED_DIR / "models" / "toy_world.safetensors"
SHIPPED_CLASSIFIER = SHIPPED_DIR / "classifiers" / "toy_relation_classifier.safetensors"
BUNDLE_ENV = "L2S_TOY_BUNDLE"
TOY_WORLD_FOLDER_KEY = "l2s_toy_worlds"

TINY_BUILD: dict[str, Any] = {"num_images": 64, "ae_steps": 2, "unet_steps": 2}
# The code a tiny bundle depends on: a change invalidates the cached build.
BUILD_SOURCES = ("training/toy/architecture.py", "training/toy/build.py", "training/toy/vocabulary.py",
                 "training/toy/scenes.py", "l2s_core/toy_bundle.py")


def toy_world_dir(server: Any) -> Path:
    """The server's ``models/l2s_toy_worlds`` folder (registered by the pack), created if needed."""
    folder = server.classifier_dir.parent / TOY_WORLD_FOLDER_KEY
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _build_key() -> str:
    import torch

    digest = hashlib.sha256(repr(sorted(TINY_BUILD.items())).encode())
    digest.update(torch.__version__.encode())
    for name in BUILD_SOURCES:
        digest.update((REPO_ROOT / name).read_bytes())
    return digest.hexdigest()[:16]


def build_tiny_bundle(cache_dir: Path) -> Path:
    """A tiny toy-world bundle in ``cache_dir`` (built on first use, then reused while its code is unchanged)."""
    pytest.importorskip("diffusers", reason="building a toy-world bundle needs diffusers (pip install .[train])")
    pytest.importorskip("transformers", reason="building a toy-world bundle needs transformers")
    from training.toy.build import BuildConfig, build_toy_world

    path = cache_dir / f"tiny_toy_world_{_build_key()}.safetensors"
    if not path.is_file():
        partial = path.with_suffix(".partial")
        config = BuildConfig(**TINY_BUILD)
        logger.info("Building a tiny toy world %s (%s).", path, asdict(config))
        build_toy_world(partial, config)
        os.replace(partial, path)
    return path


def toy_bundle(cache_dir: Path) -> Path:
    """The bundle the tests use (see the module docstring for the order)."""
    named = os.environ.get(BUNDLE_ENV, "").strip()
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            pytest.fail(f"{BUNDLE_ENV}={named} is not a file: point it at a toy-world bundle or unset it")
        return path
    if SHIPPED_BUNDLE.is_file():
        return SHIPPED_BUNDLE
    return build_tiny_bundle(cache_dir)


def attention_channels(bundle_path: Path) -> int:
    """Cross-attention channels of a bundle's UNet: attn2 layers x heads (28 for the default architecture)."""
    from safetensors import safe_open

    from l2s_core.toy_bundle import read_bundle_metadata

    heads = int(read_bundle_metadata(bundle_path)["comfy_unet_config"]["num_heads"])
    with safe_open(str(bundle_path), framework="pt") as handle:
        layers = sum(1 for k in handle.keys() if k.startswith("unet.") and k.endswith(".attn2.to_q.weight"))
    return layers * heads


def write_random_classifier(folder: Path, name: str, channels: int, seed: int = 0) -> Path:
    """A random relation classifier of family ``toy`` for ``channels`` attention channels (a stand-in)."""
    from test_nodes_integration import RELATIONS, TRAINED_STEPS, _random_classifier

    from l2s_core.checkpoint import LoadedClassifier, save_classifier

    path = folder / name
    model = _random_classifier(channels, "toy", seed)
    save_classifier(LoadedClassifier(
        model=model, relations=RELATIONS, trained_steps=TRAINED_STEPS, trained_num_steps=50, map_size=16,
        orig_map_size=16, family="toy", channels=channels, layout="unet",
        provenance={"source": "random test classifier"}, source_path=str(path),
    ), path)
    return path
