"""Build tiny random-weight MODEL / CLIP / VAE triples from ComfyUI's own classes (runs inside ComfyUI only).

This module owns the construction: a supported-model config (``comfy.supported_models.SD15`` / ``SD20`` / ``SDXL``
/ ``SD3`` / ``Flux``) with the tiny ``unet_config`` of :mod:`.tiny_specs`, the matching text encoder built through
``comfy.sd.CLIP`` with ComfyUI's bundled tokenizers and tiny ``<name>_model_config`` overrides, and a TAESD-layout
VAE through ``comfy.sd.VAE(sd=...)``. The tiny SD2 UNet (widths 40/80/160) is built with :class:`GcdGroupNormOps`,
because ComfyUI's 32-group GroupNorms need widths divisible by 32. ComfyUI's ops skip weight initialisation, so every
parameter is filled here from one ``torch.Generator`` seeded by the node's seed: the same seed gives bit-identical
weights in any process.

Initialisation: norm weights/scales 1 and norm biases 0; other 1-D parameters N(0, 0.02); weights with 2+ dims
N(0, 1/fan_in) so that activations (and attention logits) stay O(1) and attention maps are not uniform. 0-dim
parameters keep the value ComfyUI constructed them with (e.g. CLIP's ``logit_scale``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.sd
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.taesd.taesd
import comfy.text_encoders.flux
import comfy.text_encoders.sd2_clip
import comfy.text_encoders.sd3_clip
import torch

from .tiny_specs import JOINT, UNET, cross_attention_channels, get_spec, unet_attention_layers

logger = logging.getLogger(__name__)

# Embedding tables larger than this many elements are filled through a strided view of a small random buffer
# (see _hankel_embedding_): only SD3's 32128 x 4096 T5 table (526 MB in fp32) is that large.
_LARGE_EMBEDDING_NUMEL = 8_000_000

# A fixed offset per part, so that the UNet, text encoder and VAE of one seed do not share random streams.
_PART_SEED_OFFSET = {"model": 0, "clip": 1_000_003, "vae": 2_000_003}


@dataclass(frozen=True)
class TinyModels:
    """The three objects a checkpoint loader would return, plus facts the node logs.

    Attributes:
        model: ModelPatcher around the tiny denoiser.
        clip: ``comfy.sd.CLIP`` around the tiny text encoder(s).
        vae: ``comfy.sd.VAE`` around a random TAESD.
        channels: Cross-attention channels the denoiser produces in the Learn-to-Steer layout.
        parameters: Total parameter count (denoiser + text encoders + VAE).
        seconds: Wall time of the build.
    """

    model: Any
    clip: Any
    vae: Any
    channels: int
    parameters: int
    seconds: float


def _generator(seed: int, part: str) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed) + _PART_SEED_OFFSET[part])


def _is_norm(module: torch.nn.Module) -> bool:
    return "Norm" in type(module).__name__


def _hankel_embedding_(module: torch.nn.Module, name: str, std: float, gen: torch.Generator) -> None:
    """Replace a huge embedding table by a strided view of a small random buffer (row i = buf[i : i + dim]).

    Rows stay distinct random vectors, memory and fill time drop from O(rows x dim) to O(rows + dim).
    """
    weight = getattr(module, name)
    rows, dim = weight.shape
    buf = torch.empty(rows + dim - 1, dtype=torch.float32).normal_(0.0, std, generator=gen)
    buf = buf.to(device=weight.device, dtype=weight.dtype)
    view = buf.as_strided((rows, dim), (1, 1))  # (rows, dim), overlapping windows of buf
    setattr(module, name, torch.nn.Parameter(view, requires_grad=False))


@torch.no_grad()
def randomize_parameters_(root: torch.nn.Module, gen: torch.Generator) -> int:
    """Fill every parameter of ``root`` deterministically from ``gen`` (see the module docstring for the rule).

    Args:
        root: Module whose parameters to overwrite in place.
        gen: CPU generator; consumed in ``named_parameters`` order.

    Returns:
        Number of parameter elements initialised.
    """
    count = 0
    modules = dict(root.named_modules())
    for full_name, param in list(root.named_parameters()):
        owner_name, _, leaf = full_name.rpartition(".")
        owner = modules[owner_name]
        if param.ndim == 0:
            continue
        if _is_norm(owner):
            if leaf in ("weight", "scale"):
                param.fill_(1.0)
            else:
                param.zero_()
        elif param.ndim == 1:
            param.copy_(torch.empty(param.shape, dtype=torch.float32).normal_(0.0, 0.02, generator=gen))
        else:
            fan_in = param[0].numel()
            std = fan_in**-0.5
            if param.ndim == 2 and param.numel() > _LARGE_EMBEDDING_NUMEL:
                _hankel_embedding_(owner, leaf, std, gen)
            else:
                param.copy_(torch.empty(param.shape, dtype=torch.float32).normal_(0.0, std, generator=gen))
        count += param.numel()
    return count


class GcdGroupNormOps(comfy.ops.disable_weight_init):
    """ComfyUI's fp32 operations, but GroupNorm(gcd(groups, channels)): for tiny UNets with widths like 40 or 80.

    ComfyUI's UNet asks for 32 groups everywhere; a width like 40 cannot be split into 32 groups. Only the group count
    changes (8 groups at 40 channels, 16 at 80, 32 at 160); weights, shapes and the attention layers stay as built.
    """

    class GroupNorm(comfy.ops.disable_weight_init.GroupNorm):
        """GroupNorm with ``gcd(num_groups, num_channels)`` groups (the most groups that divide both)."""

        def __init__(self, num_groups: int, num_channels: int, *args: Any, **kwargs: Any) -> None:
            super().__init__(math.gcd(num_groups, num_channels), num_channels, *args, **kwargs)


def _count_channels(diffusion_model: torch.nn.Module, layout: str) -> int:
    """Count the cross-attention channels of a built denoiser (independently of tiny_specs)."""
    if layout == UNET:
        return sum(m.heads for n, m in diffusion_model.named_modules() if n.endswith(".attn2"))
    if hasattr(diffusion_model, "joint_blocks"):  # MMDiT
        return sum(b.x_block.attn.num_heads for b in diffusion_model.joint_blocks)
    return sum(b.num_heads for b in diffusion_model.double_blocks) + sum(
        b.num_heads for b in diffusion_model.single_blocks
    )


def _unet_attention_heads(diffusion_model: torch.nn.Module) -> list[tuple[str, int, int]]:
    """(block, block index, heads) of every attn2 layer of a built UNet, in module order (the call order)."""
    found: list[tuple[str, int, int]] = []
    for name, module in diffusion_model.named_modules():
        if name.endswith(".attn2"):
            parts = name.split(".")  # e.g. input_blocks.4.1.transformer_blocks.0.attn2 / middle_block.1.transformer...
            if parts[0] == "middle_block":
                found.append(("middle", 0, module.heads))
            else:
                found.append((parts[0].removesuffix("_blocks"), int(parts[1]), module.heads))
    return found


def tiny_model_config(family: str) -> Any:
    """The supported-model config (``comfy.supported_models.*``) of a family's tiny denoiser, fp32 inference.

    Used to build the tiny models here and by :mod:`.tiny_files` to load tiny diffusion-model files through ComfyUI's
    own loaders (whose detection assumes full-size widths for most families).
    """
    spec = get_spec(family)
    config_class = getattr(comfy.supported_models, spec["supported_model"])
    model_config = config_class(spec["unet_config"])
    # The supported-model class overwrote the head settings with the full-size ones: put the tiny ones back.
    model_config.unet_config.update(spec["heads"])
    model_config.set_inference_dtype(torch.float32, None)
    if spec.get("gcd_group_norm", False):
        model_config.custom_operations = GcdGroupNormOps
    return model_config


def _build_model(family: str, seed: int) -> tuple[Any, int]:
    model = tiny_model_config(family).get_model({})
    gen = _generator(seed, "model")
    n = randomize_parameters_(model, gen)
    if getattr(model.diffusion_model, "pos_embed", None) is not None:  # MMDiT: a buffer, allocated with torch.empty
        pos = model.diffusion_model.pos_embed
        pos.copy_(torch.empty(pos.shape, dtype=torch.float32).normal_(0.0, 0.02, generator=gen))
    model.eval()
    patcher = comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )
    return patcher, n


def build_tiny_denoiser(family: str, seed: int) -> Any:
    """The ModelPatcher of :func:`build_tiny_models` alone (same weights for the same seed), without CLIP and VAE."""
    return _build_model(family, seed)[0]


def _clip_target(family: str) -> Any:
    base = comfy.supported_models_base
    if family == "sd1":
        return base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    if family == "sd2":
        return base.ClipTarget(comfy.text_encoders.sd2_clip.SD2Tokenizer, comfy.text_encoders.sd2_clip.SD2ClipModel)
    if family == "sdxl":
        return base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
    if family == "sd3":
        return base.ClipTarget(
            comfy.text_encoders.sd3_clip.SD3Tokenizer,
            comfy.text_encoders.sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=True, dtype_t5=torch.float32),
        )
    if family == "flux":
        return base.ClipTarget(
            comfy.text_encoders.flux.FluxTokenizer, comfy.text_encoders.flux.flux_clip(dtype_t5=torch.float32)
        )
    raise ValueError(f"no text encoder for family {family!r}")


def _build_clip(family: str, spec: dict[str, Any], seed: int) -> tuple[Any, int]:
    options: dict[str, Any] = {"dtype": torch.float32}
    for name, cfg in spec["text_encoders"].items():
        options[f"{name}_model_config"] = dict(cfg)
    clip = comfy.sd.CLIP(_clip_target(family), model_options=options)
    n = randomize_parameters_(clip.cond_stage_model, _generator(seed, "clip"))
    return clip, n


def _build_vae(latent_channels: int, seed: int) -> tuple[Any, int]:
    template = comfy.taesd.taesd.TAESD(latent_channels=latent_channels)  # only for key names and shapes
    gen = _generator(seed, "vae")
    sd: dict[str, torch.Tensor] = {}
    n = 0
    for key, value in template.state_dict().items():
        if key == "vae_scale":
            sd[key] = torch.tensor(1.0)
        elif key == "vae_shift":
            sd[key] = torch.tensor(0.0)
        elif value.ndim == 1:  # conv biases
            sd[key] = torch.empty(value.shape, dtype=torch.float32).normal_(0.0, 0.02, generator=gen)
        else:
            fan_in = value[0].numel()
            sd[key] = torch.empty(value.shape, dtype=torch.float32).normal_(0.0, fan_in**-0.5, generator=gen)
        n += sd[key].numel()
    return comfy.sd.VAE(sd=sd), n


def build_tiny_models(family: str, seed: int) -> TinyModels:
    """Build the tiny MODEL, CLIP and VAE of one family with weights drawn from ``seed``.

    Args:
        family: One of ``tiny_specs.FAMILIES``.
        seed: Seed of the weight generator (same seed: bit-identical weights).

    Returns:
        The built models and build facts.

    Raises:
        ValueError: If the family is unknown.
        RuntimeError: If the built denoiser's channel count disagrees with tiny_specs (an internal bug).
    """
    spec = get_spec(family)
    start = time.perf_counter()
    model, n_model = _build_model(family, seed)
    clip, n_clip = _build_clip(family, spec, seed)
    vae, n_vae = _build_vae(spec["latent_channels"], seed)
    seconds = time.perf_counter() - start

    expected = cross_attention_channels(family)
    produced = _count_channels(model.model.diffusion_model, spec["layout"])
    if produced != expected:
        raise RuntimeError(
            f"tiny {family} model has {produced} cross-attention channels but tiny_specs says {expected}: "
            "fix tiny_specs.cross_attention_channels or the tiny config"
        )
    if spec["layout"] == UNET:
        built_layers = _unet_attention_heads(model.model.diffusion_model)
        spec_layers = [(x["block"], x["index"], x["heads"]) for x in unet_attention_layers(family)]
        if built_layers != spec_layers:
            raise RuntimeError(
                f"tiny {family} model has attn2 layers (block, index, heads) {built_layers} but tiny_specs lists "
                f"{spec_layers}: fix tiny_specs.unet_attention_layers or the tiny config"
            )
    assert spec["layout"] in (UNET, JOINT)
    return TinyModels(
        model=model, clip=clip, vae=vae, channels=produced, parameters=n_model + n_clip + n_vae, seconds=seconds
    )
