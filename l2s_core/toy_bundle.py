"""The toy-world bundle: one safetensors file with the autoencoder, UNet and text encoder, and its configuration.

Layout of the file:

* ``vae.*``: TAESD-named autoencoder weights (what ComfyUI's VAE loader recognises);
* ``unet.*``: diffusers ``UNet2DConditionModel`` weights (converted to ComfyUI's names with ComfyUI's own key map);
* ``text_encoder.*``: ``transformers`` ``CLIPTextModel`` weights (the names ComfyUI's CLIP-L loader uses).

The safetensors metadata key ``l2s_toy_world`` holds JSON: format version, the network sizes (``architecture``), the ComfyUI
``unet_config``, the text encoder config, the latent scale factor, the noise schedule, the world (object kinds, image
size, object sizes, co-occurrence bias) and how the bundle was trained (seeds, steps, wall time).

This module reads and writes with safetensors and torch only (the nodes use it inside ComfyUI); the diffusers side
is :func:`training.toy.bundle.load_pipeline`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

METADATA_KEY = "l2s_toy_world"
FORMAT_VERSION = 1
PARTS: tuple[str, ...] = ("vae", "unet", "text_encoder")


class BundleError(ValueError):
    """A file is not a readable toy-world bundle."""


@dataclass(frozen=True)
class ToyBundle:
    """A loaded bundle: per-part float32 state dicts and the parsed metadata."""

    path: Path
    parts: dict[str, dict[str, torch.Tensor]]
    meta: dict[str, Any]

    @property
    def scale_factor(self) -> float:
        """Latent scale: model latents = scale_factor x autoencoder latents (like SD1's 0.18215)."""
        return float(self.meta["latent_scale_factor"])


def save_bundle(path: Path, parts: dict[str, dict[str, torch.Tensor]], meta: dict[str, Any],
                dtype: torch.dtype = torch.float16) -> int:
    """Write the bundle (weights cast to ``dtype``, scalars kept float32). Returns the file size in bytes."""
    missing = [p for p in PARTS if p not in parts]
    if missing:
        raise ValueError(f"save_bundle needs the parts {list(PARTS)}, missing {missing}.")
    tensors: dict[str, torch.Tensor] = {}
    for part in PARTS:
        for key, value in parts[part].items():
            value = value.detach().cpu()
            if value.is_floating_point() and value.ndim > 0:
                value = value.to(dtype)
            tensors[f"{part}.{key}"] = value.contiguous()
    full_meta = {"format": "l2s-toy-world", "version": FORMAT_VERSION, **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(full_meta, sort_keys=True)})
    size = path.stat().st_size
    logger.info("Wrote toy-world bundle %s (%.1f MB).", path, size / 1e6)
    return size


def read_bundle_metadata(path: Path) -> dict[str, Any]:
    """Parse only the metadata of a bundle.

    Raises:
        BundleError: missing file, not safetensors, or no/invalid toy-world metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"No toy-world bundle at {path}.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise BundleError(f"{path} is not a safetensors file ({exc}).") from exc
    if raw is None:
        raise BundleError(
            f"{path} has no '{METADATA_KEY}' metadata, so it is not a toy-world bundle. Use the file written by "
            "`python -m training toy model` (the pack ships toy_world/models/toy_world.safetensors)."
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: the '{METADATA_KEY}' metadata is not JSON ({exc}).") from exc
    if meta.get("format") != "l2s-toy-world" or meta.get("version") != FORMAT_VERSION:
        raise BundleError(
            f"{path}: toy-world format {meta.get('format')!r} version {meta.get('version')!r} is not supported "
            f"(this pack reads version {FORMAT_VERSION})."
        )
    return meta


def load_bundle(path: Path) -> ToyBundle:
    """Read a bundle: float32 tensors split by part, and its metadata.

    Raises:
        BundleError: see :func:`read_bundle_metadata`, or a part is missing.
    """
    path = Path(path)
    meta = read_bundle_metadata(path)
    parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in PARTS}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            part, _, name = key.partition(".")
            if part not in parts:
                raise BundleError(f"{path}: unexpected tensor {key!r} (parts are {list(PARTS)}).")
            parts[part][name] = handle.get_tensor(key).float()
    empty = [p for p, sd in parts.items() if not sd]
    if empty:
        raise BundleError(f"{path}: the bundle has no weights for {empty}.")
    return ToyBundle(path=path, parts=parts, meta=meta)
