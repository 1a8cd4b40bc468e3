"""Configurations of the tiny random-weight models the integration-test pack builds, as plain data.

This module owns the numbers both sides of the integration tests need: the test pack (running inside ComfyUI) builds
its models from these dicts, and the test process (which cannot import ComfyUI or need torch) reads the same dicts to
know how many cross-attention channels each tiny model produces in the Learn-to-Steer layout, how long the
denoiser's text axis is and how many latent channels a family uses. Pure Python: no torch, no comfy.

Channel counting follows the published layouts: a UNet family contributes one channel per head of every cross-attention
(``attn2``) layer, i.e. every transformer block of every SpatialTransformer (input blocks, middle block, output
blocks); an MMDiT (SD3) contributes ``depth x heads`` (every joint block attends over image and text tokens); FLUX
contributes ``(depth + depth_single_blocks) x heads``.

The tiny SD1, SD2 and FLUX models keep the attention layout of the real models (layers and heads; only the widths
are tiny), so they produce the channel counts of the official Learn-to-Steer classifiers: 128, 195 and 1368.
"""

from __future__ import annotations

import copy
from typing import Any

FAMILIES: tuple[str, ...] = ("sd1", "sd2", "sdxl", "sd3", "flux")

UNET = "unet"
JOINT = "joint"

# Tiny text encoders (merged by ComfyUI's SDClipModel into the bundled JSON configs via
# model_options["<model_name>_model_config"]). Three layers so that "penultimate" (layer -2) is valid.
_CLIP_L: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_hidden_layers": 3,
    "projection_dim": 64,
}
_CLIP_H: dict[str, Any] = {
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_attention_heads": 2,
    "num_hidden_layers": 3,
    "projection_dim": 96,
}
_CLIP_G: dict[str, Any] = {
    "hidden_size": 96,
    "intermediate_size": 192,
    "num_attention_heads": 2,
    "num_hidden_layers": 3,
    "projection_dim": 96,
}
# FLUX: the T5 output is the denoiser context as is, so d_model can be tiny.
_T5_FLUX: dict[str, Any] = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 1}
# SD3: ComfyUI zero-pads the CLIP-L||CLIP-G features to 4096 and concatenates the T5 output along the token axis,
# so the T5 width must be exactly 4096 (any other d_model makes torch.cat fail). Everything else stays tiny.
_T5_SD3: dict[str, Any] = {"d_model": 4096, "d_ff": 32, "d_kv": 16, "num_heads": 2, "num_layers": 1}

# SDXL's ADM input: pooled CLIP-G output + 6 size/crop embeddings of 256 each (ComfyUI's SDXL.encode_adm).
_SDXL_SIZE_EMBEDDINGS = 6 * 256

_UNET_COMMON: dict[str, Any] = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}

SPECS: dict[str, dict[str, Any]] = {
    "sd1": {
        "display": "SD1.x (tiny)",
        "layout": UNET,
        "supported_model": "SD15",
        # The block structure of SD1.x (the official SD1.4 classifier's 128-channel layout): 4 levels, 2 res blocks
        # each, one transformer per block at the first three levels and in the middle -> 16 attn2 layers.
        "unet_config": {
            **_UNET_COMMON,
            "adm_in_channels": None,
            "num_res_blocks": [2, 2, 2, 2],
            "channel_mult": [1, 2, 4, 4],
            "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
            "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            "transformer_depth_middle": 1,
            "use_linear_in_transformer": False,
            "context_dim": _CLIP_L["hidden_size"],
        },
        # Applied after the supported-model class merged its own unet_extra_config: like SD1.x, 8 heads everywhere
        # (head dim 4 / 8 / 16 at 32 / 64 / 128 channels) -> 16 x 8 = 128 channels.
        "heads": {"num_heads": 8, "num_head_channels": -1},
        "text_encoders": {"clip_l": _CLIP_L},
        "latent_channels": 4,
        "text_tokens": 77,
    },
    "sd2": {
        "display": "SD2.x (tiny)",
        "layout": UNET,
        "supported_model": "SD20",
        # The block structure of SD2.x (the official SD2.1 classifier's 195-channel layout), see "sd1".
        "unet_config": {
            **_UNET_COMMON,
            "model_channels": 40,
            "adm_in_channels": None,
            "num_res_blocks": [2, 2, 2, 2],
            "channel_mult": [1, 2, 4, 4],
            "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
            "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            "transformer_depth_middle": 1,
            "use_linear_in_transformer": True,
            "context_dim": _CLIP_H["hidden_size"],
        },
        # Like real SD2 (320 channels, head dim 64): a fixed head width, so the heads are 5 / 10 / 20 at 40 / 80 / 160
        # channels (middle 20) -> 195 channels.
        "heads": {"num_heads": -1, "num_head_channels": 8},
        # 40 and 80 channels are not divisible by the 32 groups of ComfyUI's GroupNorms: build the UNet with
        # GroupNorm(gcd(32, channels)) (8 / 16 / 32 groups). Norms only; the attention layout is unchanged.
        "gcd_group_norm": True,
        "text_encoders": {"clip_h": _CLIP_H},
        "latent_channels": 4,
        "text_tokens": 77,
    },
    "sdxl": {
        "display": "SDXL (tiny)",
        "layout": UNET,
        "supported_model": "SDXL",
        "unet_config": {
            **_UNET_COMMON,
            "num_classes": "sequential",
            "adm_in_channels": _CLIP_G["hidden_size"] + _SDXL_SIZE_EMBEDDINGS,
            "num_res_blocks": [1, 1, 1],
            "channel_mult": [1, 2, 4],
            # Like real SDXL ([0, 0, 2, 2, 10, 10]): no attention at the highest resolution, deeper transformers
            # further down, so one SpatialTransformer can hold several attn2 layers.
            "transformer_depth": [0, 1, 2],
            "transformer_depth_output": [0, 0, 1, 1, 2, 2],
            "transformer_depth_middle": 2,
            "use_linear_in_transformer": True,
            "context_dim": _CLIP_L["hidden_size"] + _CLIP_G["hidden_size"],
        },
        "heads": {"num_heads": -1, "num_head_channels": 16},
        "text_encoders": {"clip_l": _CLIP_L, "clip_g": _CLIP_G},
        "latent_channels": 4,
        "text_tokens": 77,
    },
    "sd3": {
        "display": "SD3 (tiny)",
        "layout": JOINT,
        "supported_model": "SD3",
        "unet_config": {
            "in_channels": 16,
            "out_channels": 16,
            "patch_size": 2,
            "depth": 2,  # MMDiT fixes hidden = 64 * depth and heads = depth
            "input_size": None,
            # pooled = CLIP-L pooled (unprojected) || CLIP-G pooled (projected)
            "adm_in_channels": _CLIP_L["hidden_size"] + _CLIP_G["hidden_size"],
            "context_embedder_config": {
                "target": "torch.nn.Linear",
                "params": {"in_features": 4096, "out_features": 64 * 2},
            },
            "num_patches": 16 * 16,
            "pos_embed_max_size": 16,
            "pos_embed_scaling_factor": None,
            "x_block_self_attn_layers": [],
        },
        "heads": {},
        "text_encoders": {"clip_l": _CLIP_L, "clip_g": _CLIP_G, "t5xxl": _T5_SD3},
        "latent_channels": 16,
        # 77 CLIP positions followed by the T5 tokens, which ComfyUI's SD3 tokenizer pads to at least 77.
        "text_tokens": 77 + 77,
    },
    "flux": {
        "display": "FLUX.1 (tiny)",
        "layout": JOINT,
        "supported_model": "Flux",
        "unet_config": {
            "image_model": "flux",
            "in_channels": 16,
            "out_channels": 16,
            "patch_size": 2,
            "vec_in_dim": _CLIP_L["hidden_size"],
            "context_in_dim": _T5_FLUX["d_model"],
            # The attention layout of FLUX.1 (the official classifier's 1368 channels): 19 double + 38 single blocks,
            # 24 heads each. Head dim 6, the smallest ComfyUI accepts: RoPE needs an even, non-zero width per axis.
            "hidden_size": 24 * 6,
            "mlp_ratio": 1.0,
            "num_heads": 24,
            "depth": 19,
            "depth_single_blocks": 38,
            "axes_dim": [2, 2, 2],  # must sum to hidden_size / num_heads
            "theta": 10000,
            "qkv_bias": True,
            "guidance_embed": True,
        },
        "heads": {},
        "text_encoders": {"clip_l": _CLIP_L, "t5xxl": _T5_FLUX},
        "latent_channels": 16,
        # ComfyUI's FLUX T5 tokenizer pads to min_length 256 (the official pipelines use 512).
        "text_tokens": 256,
    },
}


def get_spec(family: str) -> dict[str, Any]:
    """Return a deep copy of one family's spec.

    Args:
        family: One of :data:`FAMILIES`.

    Returns:
        The spec dict (safe to mutate).

    Raises:
        ValueError: If the family is unknown.
    """
    if family not in SPECS:
        raise ValueError(f"unknown tiny-model family {family!r}: expected one of {', '.join(FAMILIES)}")
    return copy.deepcopy(SPECS[family])


def unet_attention_layers(family: str) -> list[dict[str, Any]]:
    """List the cross-attention (attn2) layers of a tiny UNet in call order.

    Args:
        family: A UNet family (``"sd1"``, ``"sd2"``, ``"sdxl"``).

    Returns:
        One dict per attn2 layer with ``block`` (``"input"``, ``"middle"``, ``"output"``), ``index`` (position in
        ComfyUI's ``input_blocks`` / ``output_blocks``; 0 for the middle block), ``level`` (0 = full latent
        resolution; the token grid side is ``latent_side / 2**level``), ``channels`` and ``heads``. A transformer of
        depth d contributes d equal entries.

    Raises:
        ValueError: If the family is unknown or not a UNet family.
    """
    spec = get_spec(family)
    if spec["layout"] != UNET:
        raise ValueError(f"family {family!r} has layout {spec['layout']!r}, expected a UNet family")
    cfg = spec["unet_config"]
    heads_cfg = spec["heads"]
    mc = cfg["model_channels"]

    def heads_at(ch: int) -> int:
        if heads_cfg["num_head_channels"] == -1:
            return heads_cfg["num_heads"]
        return ch // heads_cfg["num_head_channels"]

    layers: list[dict[str, Any]] = []
    depth_in = list(cfg["transformer_depth"])
    depth_out = list(cfg["transformer_depth_output"])
    last = len(cfg["channel_mult"]) - 1
    index = 0  # input_blocks[0] is the input convolution
    for level, mult in enumerate(cfg["channel_mult"]):
        ch = mc * mult
        for _ in range(cfg["num_res_blocks"][level]):
            index += 1
            depth = depth_in.pop(0)
            layers += [
                {"block": "input", "index": index, "level": level, "channels": ch, "heads": heads_at(ch)}
            ] * depth
        if level != last:
            index += 1  # the downsampling block
    ch_mid = mc * cfg["channel_mult"][last]
    layers += [{"block": "middle", "index": 0, "level": last, "channels": ch_mid, "heads": heads_at(ch_mid)}] * max(
        cfg["transformer_depth_middle"], 0
    )
    index = 0
    for level in reversed(range(len(cfg["channel_mult"]))):
        ch = mc * cfg["channel_mult"][level]
        for _ in range(cfg["num_res_blocks"][level] + 1):
            depth = depth_out.pop()
            layers += [
                {"block": "output", "index": index, "level": level, "channels": ch, "heads": heads_at(ch)}
            ] * depth
            index += 1
    return [dict(x) for x in layers]


def joint_attention_layers(family: str) -> list[dict[str, Any]]:
    """List the joint (image+text) attention layers of a tiny SD3/FLUX model in call order.

    Args:
        family: ``"sd3"`` or ``"flux"``.

    Returns:
        One dict per layer with ``block`` (``"joint"`` for MMDiT, ``"double"``/``"single"`` for FLUX), ``index``
        and ``heads``.

    Raises:
        ValueError: If the family is unknown or not a joint-attention family.
    """
    spec = get_spec(family)
    if spec["layout"] != JOINT:
        raise ValueError(f"family {family!r} has layout {spec['layout']!r}, expected 'sd3' or 'flux'")
    cfg = spec["unet_config"]
    if family == "sd3":
        return [{"block": "joint", "index": i, "heads": cfg["depth"]} for i in range(cfg["depth"])]
    heads = cfg["num_heads"]
    return [{"block": "double", "index": i, "heads": heads} for i in range(cfg["depth"])] + [
        {"block": "single", "index": i, "heads": heads} for i in range(cfg["depth_single_blocks"])
    ]


def cross_attention_channels(family: str) -> int:
    """Number of attention channels (layers x heads) the tiny model of a family produces in the L2S layout.

    Args:
        family: One of :data:`FAMILIES`.

    Returns:
        The channel count a classifier for this tiny model must take.
    """
    spec = get_spec(family)
    layers = unet_attention_layers(family) if spec["layout"] == UNET else joint_attention_layers(family)
    return sum(layer["heads"] for layer in layers)


def text_tokens(family: str) -> int:
    """Length of the denoiser's text axis for a short prompt (77 CLIP; SD3 77 CLIP + 77 T5; FLUX 256 T5)."""
    return int(get_spec(family)["text_tokens"])


def latent_channels(family: str) -> int:
    """Latent channels of the family (4 for SD1/SD2/SDXL, 16 for SD3/FLUX)."""
    return int(get_spec(family)["latent_channels"])
