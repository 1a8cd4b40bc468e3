"""ComfyUI MODEL / CLIP / VAE objects built from a toy-world bundle (:mod:`l2s_core.toy_bundle`), with ComfyUI's classes.

This module owns the translation of the bundle into what a checkpoint loader returns:

* MODEL: ``comfy.supported_models.SD15`` with the bundle's ``comfy_unet_config`` (the head settings SD15 overwrites are
  put back), SD1's latent format with the bundle's scale factor (:class:`ToyLatentFormat`), fp32 weights converted from
  diffusers names with ComfyUI's own map (``comfy.utils.unet_to_diffusers``), in a ``ModelPatcher``. The bundle's
  noise schedule must be the one ComfyUI samples SD1-type models with (checked against the built model's sigmas).
* CLIP: ComfyUI's stock SD1 tokenizer and ``SD1ClipModel`` at the bundle's text-encoder size
  (``clip_l_model_config``), loaded from the ``transformers`` ``CLIPTextModel`` weights.
* VAE: ``comfy.sd.VAE(sd=...)`` on the TAESD-named autoencoder weights.

Every weight of the bundle must be used and every weight of the built networks filled; anything else raises
:class:`~l2s_core.toy_bundle.BundleError` naming the file and what does not fit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import comfy.clip_model
import comfy.latent_formats
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.utils
import torch

from ..l2s_core.toy_bundle import BundleError, ToyBundle, load_bundle

logger = logging.getLogger(__name__)

SCHEDULE_FIELDS: dict[str, Any] = {
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
}
"""The schedule ComfyUI's discrete model sampling uses for SD1-type (epsilon) models, in diffusers' words."""

UNET_CONFIG_KEYS = ("model_channels", "channel_mult", "num_res_blocks", "transformer_depth", "transformer_depth_output",
                    "transformer_depth_middle", "context_dim", "num_heads", "num_head_channels", "in_channels",
                    "out_channels")
"""``comfy_unet_config`` entries the conversion needs (the rest are passed to ComfyUI's UNetModel as they are)."""

TEXT_ENCODER_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act",
                     "max_position_embeddings", "eos_token_id")
"""``text_encoder_config`` entries ComfyUI's CLIP text model reads (``clip_l_model_config``)."""

TEXT_ENCODER_FIXED: dict[str, Any] = {"vocab_size": 49408, "max_position_embeddings": 77, "bos_token_id": 49406,
                                      "eos_token_id": 49407, "layer_norm_eps": 1e-5}
"""Values ComfyUI's SD1 tokenizer and text model hard-code; the bundle's text encoder must agree."""

TEXT_PROJECTION_KEY = "text_projection.weight"
"""In ComfyUI's CLIP text model but not in ``CLIPTextModel`` (unused by SD1 models): filled with the identity."""

VAE_LATENT_CHANNELS = 4


class ToyLatentFormat(comfy.latent_formats.SD15):
    """SD1's latent format with the toy world's scale factor.

    SD1's RGB preview factors and TAESD preview decoder do not fit the toy autoencoder's latents, so this format has
    none (samplers show no live preview, as for any format without them).
    """

    def __init__(self, scale_factor: float) -> None:
        super().__init__(scale_factor=scale_factor)
        self.latent_rgb_factors = None
        self.latent_rgb_factors_bias = None
        self.taesd_decoder_name = None


@dataclass(frozen=True)
class ToyWorldModels:
    """What Load Toy World returns, plus the bundle metadata for its summary."""

    model: Any  # comfy.model_patcher.ModelPatcher
    clip: Any  # comfy.sd.CLIP
    vae: Any  # comfy.sd.VAE
    meta: dict[str, Any]


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def _meta_dict(bundle: ToyBundle, key: str) -> dict[str, Any]:
    value = bundle.meta.get(key)
    if not isinstance(value, dict):
        raise BundleError(f"{bundle.path}: the bundle metadata has no '{key}' object (got {value!r}); the file was not "
                          "written by `python -m training toy model`, or is damaged.")
    return value


def _scale_factor(bundle: ToyBundle) -> float:
    try:
        scale = float(bundle.meta["latent_scale_factor"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{bundle.path}: the metadata needs a numeric 'latent_scale_factor' ({exc!r}).") from exc
    if not math.isfinite(scale) or scale <= 0:
        raise BundleError(f"{bundle.path}: latent_scale_factor must be a positive number, got {scale}.")
    return scale


def check_schedule(bundle: ToyBundle, sigmas: torch.Tensor) -> None:
    """The bundle's noise schedule must be the one ComfyUI samples this model with.

    Args:
        bundle: The bundle (its ``schedule`` metadata).
        sigmas: ``model_sampling.sigmas`` of the built ComfyUI model.

    Raises:
        BundleError: a schedule field differs from :data:`SCHEDULE_FIELDS`, or ComfyUI's sigmas differ from the
            schedule's.
    """
    schedule = _meta_dict(bundle, "schedule")
    wrong = []
    for key, expected in SCHEDULE_FIELDS.items():
        value = schedule.get(key)
        same = (isinstance(value, (int, float)) and math.isclose(float(value), float(expected), rel_tol=1e-9)
                if isinstance(expected, (int, float)) else value == expected)
        if not same:
            wrong.append(f"{key} = {value!r} (ComfyUI: {expected!r})")
    if wrong:
        raise BundleError(
            f"{bundle.path}: the toy world was trained with a noise schedule ComfyUI does not sample SD1-type models "
            f"with: {'; '.join(wrong)}. Rebuild the bundle with the SD1 schedule (training/toy/build.py SCHEDULE)."
        )
    steps = int(schedule["num_train_timesteps"])
    betas = torch.linspace(float(schedule["beta_start"]) ** 0.5, float(schedule["beta_end"]) ** 0.5, steps,
                           dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    expected_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5  # (T,)
    comfy_sigmas = sigmas.detach().double().cpu()
    if comfy_sigmas.shape != expected_sigmas.shape or not torch.allclose(comfy_sigmas, expected_sigmas, rtol=1e-4):
        raise BundleError(
            f"{bundle.path}: ComfyUI's model sampling for this model does not follow the bundle's schedule "
            f"({SCHEDULE_FIELDS['beta_schedule']} {schedule['beta_start']}..{schedule['beta_end']}, {steps} steps): "
            f"sigmas {tuple(comfy_sigmas.shape)} vs {tuple(expected_sigmas.shape)}. This ComfyUI version samples SD1 "
            "differently; the toy world cannot be used with it."
        )


def _unet_config(bundle: ToyBundle) -> dict[str, Any]:
    config = dict(_meta_dict(bundle, "comfy_unet_config"))
    missing = [k for k in UNET_CONFIG_KEYS if k not in config]
    if missing:
        raise BundleError(f"{bundle.path}: comfy_unet_config lacks {missing}.")
    if config["num_head_channels"] != -1 or config.get("adm_in_channels") is not None:
        raise BundleError(f"{bundle.path}: comfy_unet_config is not SD1-style (fixed head count, no ADM input): "
                          f"num_head_channels {config['num_head_channels']}, adm_in_channels "
                          f"{config.get('adm_in_channels')}.")
    if config["in_channels"] != VAE_LATENT_CHANNELS or config["out_channels"] != VAE_LATENT_CHANNELS:
        raise BundleError(f"{bundle.path}: the UNet must take and give {VAE_LATENT_CHANNELS} latent channels, got "
                          f"in {config['in_channels']}, out {config['out_channels']}.")
    return config


def convert_unet_weights(bundle: ToyBundle, unet_config: dict[str, Any],
                         wanted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bundle's diffusers-named UNet weights under ComfyUI's names (``comfy.utils.unet_to_diffusers``).

    Args:
        bundle: The bundle (its ``unet`` part).
        unet_config: The ComfyUI unet_config the map is made for.
        wanted: State dict of the built ComfyUI UNet (names and shapes to fill).

    Raises:
        BundleError: a bundle weight has no ComfyUI name, a ComfyUI weight is not filled, or shapes differ.
    """
    key_map = comfy.utils.unet_to_diffusers(unet_config)  # diffusers key -> ComfyUI key
    converted: dict[str, torch.Tensor] = {}
    unused = sorted(k for k in bundle.parts["unet"] if k not in key_map)
    for dkey, value in bundle.parts["unet"].items():
        if dkey in key_map:
            converted[key_map[dkey]] = value
    missing = sorted(set(wanted) - set(converted))
    extra = sorted(set(converted) - set(wanted))
    shapes = sorted(f"{k} {tuple(v.shape)} vs {tuple(wanted[k].shape)}" for k, v in converted.items()
                    if k in wanted and tuple(v.shape) != tuple(wanted[k].shape))
    if unused or missing or extra or shapes:
        problems = [f"{label}: {_listing(keys)}" for label, keys in (
            ("bundle weights with no ComfyUI name", unused), ("ComfyUI UNet weights not in the bundle", missing),
            ("converted names the ComfyUI UNet does not have", extra), ("shape mismatches", shapes)) if keys]
        raise BundleError(f"{bundle.path}: the unet weights do not fit the UNet of its comfy_unet_config: "
                          + "; ".join(problems) + ".")
    return converted


def build_model(bundle: ToyBundle) -> Any:
    """The MODEL: an fp32 SD1-type ComfyUI model of the bundle's UNet in a ModelPatcher.

    Raises:
        BundleError: see :func:`check_schedule` and :func:`convert_unet_weights`, or an unusable unet config.
    """
    unet_config = _unet_config(bundle)
    model_config = comfy.supported_models.SD15(unet_config)
    # SD15 overwrites the head settings with SD1's (8 heads): put the bundle's back.
    model_config.unet_config["num_heads"] = unet_config["num_heads"]
    model_config.unet_config["num_head_channels"] = unet_config["num_head_channels"]
    model_config.latent_format = ToyLatentFormat(_scale_factor(bundle))
    model_config.set_inference_dtype(torch.float32, None)
    offload_device = comfy.model_management.unet_offload_device()
    try:
        model = model_config.get_model({}, device=offload_device)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise BundleError(f"{bundle.path}: ComfyUI cannot build a UNet from comfy_unet_config ({exc!r}).") from exc
    check_schedule(bundle, model.model_sampling.sigmas)
    diffusion_model = model.diffusion_model
    weights = convert_unet_weights(bundle, model_config.unet_config, diffusion_model.state_dict())
    diffusion_model.load_state_dict(weights, strict=True)
    model.eval()
    return comfy.model_patcher.ModelPatcher(
        model, load_device=comfy.model_management.get_torch_device(), offload_device=offload_device
    )


def text_encoder_model_config(bundle: ToyBundle) -> dict[str, Any]:
    """The ``clip_l_model_config`` overrides of the bundle's text encoder.

    Raises:
        BundleError: a field is missing, or differs from what ComfyUI's SD1 tokenizer and CLIP model hard-code.
    """
    config = _meta_dict(bundle, "text_encoder_config")
    missing = [k for k in TEXT_ENCODER_KEYS if k not in config]
    if missing:
        raise BundleError(f"{bundle.path}: text_encoder_config lacks {missing}.")
    wrong = [f"{k} = {config[k]!r} (needs {v!r})" for k, v in TEXT_ENCODER_FIXED.items()
             if k in config and config[k] != v]
    if config["hidden_act"] not in comfy.clip_model.ACTIVATIONS:
        wrong.append(f"hidden_act = {config['hidden_act']!r} (ComfyUI has {sorted(comfy.clip_model.ACTIVATIONS)})")
    if wrong:
        raise BundleError(f"{bundle.path}: ComfyUI's SD1 text encoder cannot run this text encoder: "
                          f"{'; '.join(wrong)}.")
    context_dim = _meta_dict(bundle, "comfy_unet_config").get("context_dim")
    if config["hidden_size"] != context_dim:
        raise BundleError(f"{bundle.path}: the text encoder width {config['hidden_size']} is not the UNet's "
                          f"context_dim {context_dim}.")
    return {k: config[k] for k in TEXT_ENCODER_KEYS}


def comfy_text_encoder_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CLIPTextModel`` weights under the names of ComfyUI's CLIP text model.

    transformers 5 names them from the embeddings down (``embeddings.*``, ``encoder.*``, ``final_layer_norm.*``),
    earlier versions and ComfyUI under ``text_model.``; both spellings are accepted. The ``position_ids`` buffer of
    old transformers versions is dropped (ComfyUI has none).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        if key.endswith("embeddings.position_ids"):
            continue
        name = key if key.startswith("text_model.") or key == TEXT_PROJECTION_KEY else f"text_model.{key}"
        out[name] = value
    return out


def build_clip(bundle: ToyBundle) -> Any:
    """The CLIP: ComfyUI's SD1 tokenizer and text encoder at the bundle's size, fp32.

    Raises:
        BundleError: see :func:`text_encoder_model_config`, or the weights do not fit.
    """
    config = text_encoder_model_config(bundle)
    weights = comfy_text_encoder_names(bundle.parts["text_encoder"])
    if TEXT_PROJECTION_KEY not in weights:
        width = int(config["hidden_size"])
        weights[TEXT_PROJECTION_KEY] = torch.eye(width)
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(target, embedding_directory=None,
                         parameters=sum(v.numel() for v in weights.values()),
                         model_options={"dtype": torch.float32, "clip_l_model_config": config})
    try:
        missing, unexpected = clip.load_sd(weights)
    except RuntimeError as exc:  # shape mismatches
        raise BundleError(f"{bundle.path}: the text_encoder weights do not fit ComfyUI's CLIP model of its "
                          f"text_encoder_config ({exc}).") from exc
    if missing or unexpected:
        problems = [f"{label}: {_listing(sorted(keys))}" for label, keys in (
            ("missing", missing), ("unexpected", unexpected)) if keys]
        raise BundleError(f"{bundle.path}: the text_encoder weights do not fit ComfyUI's CLIP model: "
                          + "; ".join(problems) + ".")
    return clip


def build_vae(bundle: ToyBundle) -> Any:
    """The VAE: ComfyUI's TAESD from the bundle's ``vae.*`` weights, fp32.

    Raises:
        BundleError: the weights are not a 4-channel TAESD, or keys are missing or left over.
    """
    weights = dict(bundle.parts["vae"])
    decoder_in = weights.get("taesd_decoder.1.weight")
    if decoder_in is None or decoder_in.ndim != 4:
        raise BundleError(f"{bundle.path}: the vae weights are not in TAESD layout (no 'taesd_decoder.1.weight').")
    if decoder_in.shape[1] != VAE_LATENT_CHANNELS:
        raise BundleError(f"{bundle.path}: the TAESD decoder takes {decoder_in.shape[1]} latent channels, the UNet "
                          f"{VAE_LATENT_CHANNELS}.")
    try:
        vae = comfy.sd.VAE(sd=weights, dtype=torch.float32)
    except RuntimeError as exc:  # shape mismatches
        raise BundleError(f"{bundle.path}: the vae weights do not fit ComfyUI's TAESD ({exc}).") from exc
    built = set(vae.first_stage_model.state_dict())
    missing, unexpected = sorted(built - set(weights)), sorted(set(weights) - built)
    if missing or unexpected:
        problems = [f"{label}: {_listing(keys)}" for label, keys in (
            ("missing", missing), ("unexpected", unexpected)) if keys]
        raise BundleError(f"{bundle.path}: the vae weights do not fit ComfyUI's TAESD: " + "; ".join(problems) + ".")
    return vae


def load_toy_world(path: str | Path) -> ToyWorldModels:
    """Read a bundle and build its MODEL, CLIP and VAE.

    Raises:
        BundleError: the file is not a usable toy-world bundle (the message names it and what is wrong).
    """
    bundle = load_bundle(Path(path))
    models = ToyWorldModels(model=build_model(bundle), clip=build_clip(bundle), vae=build_vae(bundle),
                            meta=bundle.meta)
    logger.info("Loaded toy world %s (image size %s, latent scale %.4f).", bundle.path,
                bundle.meta.get("world", {}).get("image_size"), bundle.scale_factor)
    return models
