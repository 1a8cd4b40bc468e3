"""Tiny denoisers as diffusion-model files, for ComfyUI's own loaders (UNETLoader, city96's UnetLoaderGGUF).

This module owns the file side of the loader tests: writing a tiny model's denoiser weights as a ``.safetensors``
(what UNETLoader reads, with any ``weight_dtype``) or a ``.gguf`` file (what ComfyUI-GGUF's UnetLoaderGGUF reads:
Q8_0 linear weights, F16 and F32 elsewhere, see :func:`gguf_type_name`), and teaching ComfyUI's model detection the
tiny sizes.

Detection: ComfyUI reads most of a model's structure from its weights, but it asks a UNet to have full-size widths
before it names it SD1.x or SDXL, and it hard-codes FLUX.1's widths (hidden 3072, 24 heads). A tiny file of such a
family therefore carries one extra tensor, ``l2s_test_tiny_family.<family>`` (a single zero). :func:`install_detection`
wraps ``comfy.model_detection.model_config_from_unet`` so that a state dict holding that key is given the tiny
config of :func:`.tiny_models.tiny_model_config` (and the key is removed before the weights load); every other state
dict is detected by ComfyUI as before. The tiny SD3 needs no marker: ComfyUI detects its widths from the weights.
Everything after detection (dtype choice, fp8 storage, custom operations, weight loading, the ModelPatcher) is
ComfyUI's own loading code.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import comfy.model_detection
import torch
from safetensors.torch import save_file

from .tiny_models import build_tiny_denoiser, tiny_model_config

logger = logging.getLogger(__name__)

MARKER_PREFIX = "l2s_test_tiny_family."
"""State-dict key prefix of the marker tensor that names a tiny file's family."""

NATIVELY_DETECTED = frozenset({"sd3"})
"""Families whose tiny denoiser ComfyUI detects from its weights alone (no marker)."""

GGUF_FAMILIES = frozenset({"sd1", "sdxl", "sd3", "flux"})
"""Families written as GGUF, each under its own name as ``general.architecture`` (ComfyUI-GGUF accepts these). The
tiny SD2 UNet needs the test pack's GroupNorm operations, which a loader's own operations replace (ComfyUI-GGUF's
always; UNETLoader's for fp8 storage): use the other families with those loaders."""

Q8_0_BLOCK = 32
"""Values per Q8_0 block: a matrix is stored as Q8_0 when its last dimension is a multiple of this."""

F32_MAX_VALUES = 1024
"""ComfyUI-GGUF's converter keeps tensors of at most this many values in F32 (its QUANTIZATION_THRESHOLD)."""


def denoiser_state_dict(family: str, seed: int) -> dict[str, torch.Tensor]:
    """The tiny denoiser's weights (fp32, contiguous, plain tensors) in ComfyUI's key layout, plus the marker.

    The same family and seed give the weights of ``L2STest_TinyModel`` with that seed, bit for bit.
    """
    state = build_tiny_denoiser(family, seed).model.diffusion_model.state_dict()
    with torch.inference_mode(False):
        tensors = {key: value.detach().to(torch.float32).contiguous().clone() for key, value in state.items()}
        if family not in NATIVELY_DETECTED:
            tensors[MARKER_PREFIX + family] = torch.zeros(1)
    return tensors


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write a diffusion-model file in the format UNETLoader reads."""
    save_file(tensors, str(path))


def gguf_type_name(key: str, tensor: torch.Tensor) -> str:
    """The GGML type a tensor is written as (ComfyUI-GGUF's converter rules, with Q8_0 as the quantised type).

    ``F32`` for vectors and for tensors of at most :data:`F32_MAX_VALUES` values; ``Q8_0`` for linear-layer weights
    (2-D ``.weight``, which ComfyUI-GGUF dequantises per forward) whose rows are whole 32-value blocks; ``F16`` for
    everything else (convolution kernels, positional embeddings, rows that do not fit Q8_0 blocks).
    """
    if tensor.ndim <= 1 or tensor.numel() <= F32_MAX_VALUES:
        return "F32"
    if key.endswith(".weight") and tensor.ndim == 2 and tensor.shape[-1] % Q8_0_BLOCK == 0:
        return "Q8_0"
    return "F16"


def write_gguf(path: Path, tensors: dict[str, torch.Tensor], family: str) -> dict[str, int]:
    """Write a diffusion-model file in the format ComfyUI-GGUF's UnetLoaderGGUF reads.

    Returns:
        How many tensors were written per GGML type, e.g. ``{"Q8_0": 40, "F16": 12, "F32": 30}``.

    Raises:
        ModuleNotFoundError: When the ``gguf`` package is not installed in ComfyUI's environment.
        ValueError: For a family not in :data:`GGUF_FAMILIES`.
    """
    import gguf  # only the GGUF tests need it; ComfyUI-GGUF needs it too

    if family not in GGUF_FAMILIES:
        raise ValueError(f"no tiny GGUF file for family {family!r}: use one of {', '.join(sorted(GGUF_FAMILIES))}")
    writer = gguf.GGUFWriter(str(path), arch=family)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    counts: dict[str, int] = {}
    for key, tensor in tensors.items():
        name = gguf_type_name(key, tensor)
        qtype = getattr(gguf.GGMLQuantizationType, name)
        data = tensor.numpy()
        if name == "F16":
            data = data.astype("float16")
        quantized = gguf.quants.quantize(data, qtype)
        writer.add_tensor(key, quantized, raw_dtype=qtype)
        counts[name] = counts.get(name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def marked_family(state_dict: dict[str, Any]) -> str | None:
    """The family a tiny file's marker names, or None for any other state dict."""
    return next((key[len(MARKER_PREFIX):] for key in state_dict if key.startswith(MARKER_PREFIX)), None)


def install_detection() -> bool:
    """Wrap ComfyUI's ``model_config_from_unet`` so tiny marked files are detected (idempotent).

    Returns:
        True when the wrapper was installed now, False when it already was.
    """
    original = comfy.model_detection.model_config_from_unet
    if getattr(original, "l2s_tiny_detection", False):
        return False

    @functools.wraps(original)
    def model_config_from_unet(state_dict: dict[str, Any], unet_key_prefix: str, *args: Any, **kwargs: Any) -> Any:
        family = marked_family(state_dict)
        if family is None:
            return original(state_dict, unet_key_prefix, *args, **kwargs)
        for key in [k for k in state_dict if k.startswith(MARKER_PREFIX)]:
            state_dict.pop(key)
        logger.info("L2S test pack: detected a tiny %s diffusion model", family)
        return tiny_model_config(family)

    model_config_from_unet.l2s_tiny_detection = True  # type: ignore[attr-defined]
    comfy.model_detection.model_config_from_unet = model_config_from_unet
    return True
