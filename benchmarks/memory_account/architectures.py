"""The full-size architectures the account covers, the rows of its table, and the weight formats.

Each :class:`Architecture` is a ComfyUI supported-model class plus the detect-style ``unet_config`` of the released
model (what ``comfy.model_detection`` reads from its checkpoint), the length of the text axis the denoiser sees and
how ComfyUI batches a sampling step: cond and uncond together (CFG, batch 2) for the SD families, one forward for
FLUX.1-dev (guidance-distilled, run at CFG 1, where ComfyUI drops the uncond). The configs match
``benchmarks/steering_bench/models.py`` (kept separate so that each benchmark can change on its own).

Weight formats (:data:`WEIGHT_FORMATS`): the model's own half precision (fp16 for the SD families, bf16 for
FLUX.1-dev; SD3-medium in fp16), or ``fp8``: weights stored as ``float8_e4m3fn`` and cast to the compute dtype at
run time by ComfyUI's ``manual_cast`` operations (``cast_bias_weight``), as ``UNETLoader`` with ``weight_dtype``
``fp8_e4m3fn`` sets up. ``fp32`` is for the CPU checks only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from steering_bench.models import MODELS  # benchmarks/ is on sys.path (the entry points' folder)

_CONFIGS = {key: choice.full_config for key, choice in MODELS.items()}
"""Detect-style configs of the released models, shared with the steering benchmark."""


@dataclass(frozen=True)
class Architecture:
    """A full-size denoiser as ComfyUI builds it.

    Attributes:
        key: command-line name ("sd15", "sd21", "sdxl", "sd3", "flux_dev").
        label: name in the table.
        supported_model: ``comfy.supported_models`` class.
        unet_config: detect-style config of the released model.
        text_tokens: length of the denoiser's text axis (CLIP: 77; SD3: 77 CLIP + 77 T5; FLUX: the pack's 512 T5).
        half: the model's own half-precision dtype (fp16 or bf16): weights and compute.
        cfg_batch: forwards batched in one plain sampling step (2: cond + uncond; 1: FLUX.1-dev).
        classifier_family: the published classifier settings used for the steering classifier.
        note: how the config was chosen, for the report.
    """

    key: str
    label: str
    supported_model: str
    unet_config: dict[str, Any]
    text_tokens: int
    half: torch.dtype
    cfg_batch: int
    classifier_family: str
    note: str = ""
    heads: dict[str, Any] = field(default_factory=dict)


ARCHITECTURES: dict[str, Architecture] = {a.key: a for a in (
    Architecture("sd15", "SD1.5", "SD15", _CONFIGS["sd15"],
                 77, torch.float16, 2, "sd14"),
    Architecture("sd21", "SD2.1", "SD20", _CONFIGS["sd21"],
                 77, torch.float16, 2, "sd2",
                 note="SD2.1 768-v and 512-base are the same network (ComfyUI's SD20: 64-dim heads); run at 512 px"),
    Architecture("sdxl", "SDXL", "SDXL", _CONFIGS["sdxl"], 77, torch.float16, 2, "sd2", note="SDXL base"),
    Architecture("sd3", "SD3-medium", "SD3", _CONFIGS["sd3"], 154, torch.float16, 2, "sd2",
        note="text axis 77 CLIP + 77 T5 tokens (ComfyUI's SD3 tokenizer minimum)"),
    Architecture("flux_dev", "FLUX.1-dev", "Flux", _CONFIGS["flux_dev"], 512, torch.bfloat16, 1, "flux_dev",
        note="T5 padded to 512 tokens (the pack's FLUX text length); guidance-distilled, CFG 1: batch 1"),
)}

WEIGHT_FORMATS: tuple[str, ...] = ("half", "fp8", "fp32")
"""``half``: the architecture's own fp16/bf16; ``fp8``: float8_e4m3fn storage cast at run time; ``fp32``: CPU."""


@dataclass(frozen=True)
class Row:
    """One row of the table: an architecture at a resolution with a weight format."""

    arch: str
    resolution: int
    weights: str


TABLE_ROWS: tuple[Row, ...] = tuple(
    Row(arch, resolution, weights)
    for arch, resolution in (("sd15", 512), ("sd21", 512), ("sdxl", 1024), ("sd3", 1024), ("flux_dev", 512),
                             ("flux_dev", 1024))
    for weights in ("half", "fp8")
)


def dtypes(arch: Architecture, weights: str) -> tuple[torch.dtype, torch.dtype | None]:
    """(storage dtype, manual-cast compute dtype or None) of ``weights`` for ``arch``, as ComfyUI sets them."""
    if weights == "half":
        return arch.half, None
    if weights == "fp8":
        return torch.float8_e4m3fn, arch.half
    if weights == "fp32":
        return torch.float32, None
    raise ValueError(f"weights must be one of {WEIGHT_FORMATS}; got {weights!r}.")


def weights_label(arch: Architecture, weights: str) -> str:
    """"fp16", "bf16", "fp8 (e4m3fn, bf16 compute)", "fp32"."""
    storage, compute = dtypes(arch, weights)
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float8_e4m3fn: "fp8"}
    if compute is None:
        return names[storage]
    return f"fp8 e4m3fn ({names[compute]} compute)"


TINY_CLASSIFIER_FAMILY: dict[str, str] = {"sd1": "sd14", "sd2": "sd2", "sdxl": "sd2", "sd3": "sd2", "flux": "flux_dev"}


def tiny_architecture(family: str, spec: dict[str, Any]) -> Architecture:
    """The integration tests' tiny model of ``family`` (``tests/comfy_test_pack/tiny_specs.py``) as an Architecture.

    Its weights are fp32 only (CPU checks); tiny SD2 needs the test pack's GroupNorm operations and is not offered.
    """
    if spec.get("gcd_group_norm", False):
        raise ValueError(f"The tiny {family} model needs the test pack's own operations; use another family.")
    batch = 1 if spec["supported_model"] == "Flux" else 2
    return Architecture(f"tiny_{family}", f"tiny {family}", spec["supported_model"], dict(spec["unet_config"]),
                        int(spec["text_tokens"]), torch.float32, batch, TINY_CLASSIFIER_FAMILY[family],
                        heads=dict(spec["heads"]))
