"""Diffusers components of a toy-world bundle (:mod:`l2s_core.toy_bundle`), for training and the benchmark."""

from __future__ import annotations

import logging
from typing import Any

import torch

from l2s_core.toy_bundle import ToyBundle

from .architecture import ToyArchitecture

logger = logging.getLogger(__name__)


def bundle_architecture(bundle: ToyBundle) -> ToyArchitecture:
    """The network sizes recorded in the bundle."""
    return ToyArchitecture.from_dict(bundle.meta["architecture"])


def _match_text_prefix(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Add or strip ``text_model.``: transformers 5 names CLIPTextModel weights without it, ComfyUI and older
    transformers with it; the bundle may hold either."""
    wants_prefix = any(k.startswith("text_model.") for k in model.state_dict())
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        bare = key.removeprefix("text_model.")
        out[f"text_model.{bare}" if wants_prefix and not bare.startswith("text_projection") else bare] = value
    return out


def load_pipeline(bundle: ToyBundle, device: torch.device | str = "cpu") -> Any:
    """A diffusers ``StableDiffusionPipeline`` of the bundle (AutoencoderTiny VAE, DDIM scheduler, toy tokenizer)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .architecture import autoencoder_from_taesd, build_text_encoder, build_unet
    from .vocabulary import build_tokenizer

    arch = bundle_architecture(bundle)
    vae = autoencoder_from_taesd(bundle.parts["vae"])
    vae.register_to_config(scaling_factor=bundle.scale_factor)
    unet = build_unet(arch)
    unet.load_state_dict(bundle.parts["unet"])
    text_encoder = build_text_encoder(arch)
    text_encoder.load_state_dict(_match_text_prefix(bundle.parts["text_encoder"], text_encoder))
    schedule = bundle.meta["schedule"]
    scheduler = DDIMScheduler(
        num_train_timesteps=int(schedule["num_train_timesteps"]),
        beta_start=float(schedule["beta_start"]),
        beta_end=float(schedule["beta_end"]),
        beta_schedule=str(schedule["beta_schedule"]),
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for module in (vae, unet, text_encoder):
        module.eval().requires_grad_(False)
    return pipe
