"""The architectures the benchmark builds: the tiny test configs' families and the real full-size configs."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
"""Weight dtypes. The compute dtype is ComfyUI's choice for that weight dtype on the device (fp8 and, on CPU, fp16 and
bf16 weights are cast at run time), as when UNETLoader's ``weight_dtype`` names it (see :mod:`.loading`)."""


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """A benchmarkable architecture.

    Attributes:
        tiny_family: family name of the tiny config in tests/comfy_test_pack/tiny_specs.py.
        supported_model: ``comfy.supported_models`` class of the full-size model.
        full_config: detect-style ``unet_config`` of the full-size model.
        classifier_family: family whose published classifier settings are used (``FAMILY_CLASSIFIER_DEFAULTS``).
        text_tokens: default length of the denoiser's text axis.
        encoder: text encoder key the token positions refer to (only recorded in the SpatialSpec).
    """

    tiny_family: str
    supported_model: str
    full_config: dict[str, Any]
    classifier_family: str
    text_tokens: int
    encoder: str


_SD_UNET: dict[str, Any] = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}

MODELS: dict[str, ModelChoice] = {
    "sd15": ModelChoice("sd1", "SD15", {**_SD_UNET, "use_linear_in_transformer": False, "context_dim": 768},
                        "sd14", 77, "l"),
    # SD2.1-base: 64-dim heads (the SD20 class adds num_head_channels 64 and fp32 attention precision).
    "sd21": ModelChoice("sd2", "SD20", {**_SD_UNET, "use_linear_in_transformer": True, "context_dim": 1024,
                                        "num_head_channels": 64}, "sd2", 77, "h"),
    "sdxl": ModelChoice("sdxl", "SDXL", {
        **_SD_UNET, "num_classes": "sequential", "adm_in_channels": 2816, "num_res_blocks": [2, 2, 2],
        "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_linear_in_transformer": True,
        "context_dim": 2048}, "sd2", 77, "l"),
    # SD3-medium.
    "sd3": ModelChoice("sd3", "SD3", {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 24, "input_size": None,
        "adm_in_channels": 2048,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 1536}},
        "num_patches": 36864, "pos_embed_max_size": 192, "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": []}, "sd2", 154, "l"),
    # FLUX.1-dev; the pack pads T5 to 512 tokens for FLUX (nodes/spatial_prompt.py FLUX_T5_LENGTH).
    "flux_dev": ModelChoice("flux", "Flux", {
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 768,
        "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19,
        "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
        "guidance_embed": True}, "flux_dev", 512, "t5xxl"),
}
