"""Driving a loaded pipeline's components for inversion: VAE, text encoders and denoiser calls per pipeline kind.

:class:`PipelineAdapter` gives the few operations data creation needs (encode and decode an image, encode a prompt,
locate a phrase's tokens, call the denoiser once, pack a FLUX latent) the same signature for every kind (SD, SDXL:
UNet; FLUX, SD3: joint attention), so :mod:`.invert` never asks which pipeline it drives. Loading the pipeline is
:mod:`.models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .models import FLUX, LOAD_CLASS, SD, SD3, SDXL, LoadedModel


@dataclass(frozen=True)
class Conditioning:
    """One prompt's encoder outputs, ready for denoiser calls.

    Attributes:
        prompt: The prompt text.
        embeds: Text embeddings the denoiser attends to, ``(1, T, D)``.
        text_length: ``T``, the length of the attention maps' text axis.
        extra: Other denoiser inputs (pooled embeddings, SDXL time ids, FLUX text ids / guidance).
    """

    prompt: str
    embeds: torch.Tensor
    text_length: int
    extra: dict[str, Any]


class PipelineAdapter:
    """The few pipeline operations inversion needs, the same for every kind.

    Args:
        model: The loaded model.
        resolution: Square image side in pixels.
        max_sequence_length: T5 tokens (FLUX, SD3); ignored for UNets.
        guidance: FLUX guidance-embedding value (models with ``guidance_embeds``); ignored otherwise.

    Raises:
        ValueError: the resolution does not fit the model's latent/patch grid.
    """

    def __init__(self, model: LoadedModel, resolution: int, max_sequence_length: int, guidance: float) -> None:
        self.model = model
        self.pipe = model.pipe
        self.kind = model.kind
        self.resolution = int(resolution)
        self.max_sequence_length = int(max_sequence_length)
        self.guidance = float(guidance)
        vae_config = self.pipe.vae.config
        vae_blocks = getattr(vae_config, "block_out_channels", None) or vae_config.encoder_block_out_channels
        vae_scale = 2 ** (len(vae_blocks) - 1)  # AutoencoderKL and AutoencoderTiny (TAESD) both down-sample 8x
        self.vae_scale = vae_scale
        if self.kind in (SD, SDXL):
            multiple = vae_scale * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)
        elif self.kind == FLUX:
            multiple = vae_scale * 2
        else:
            multiple = vae_scale * int(self.pipe.transformer.config.patch_size)
        if self.resolution <= 0 or self.resolution % multiple != 0:
            raise ValueError(
                f"--resolution: {resolution} px does not fit {model.name} ({LOAD_CLASS[self.kind]}): it must be a "
                f"positive multiple of {multiple} (VAE factor {vae_scale} x the denoiser's down-sampling/patching)."
            )
        self.latent_hw = (self.resolution // vae_scale, self.resolution // vae_scale)

    # -- geometry -----------------------------------------------------------------------------------------------

    @property
    def patch_size(self) -> int:
        """Side of the latent patches that make one image token: 2 for FLUX, the config's for SD3, 1 for UNets."""
        if self.kind == FLUX:
            return 2
        if self.kind == SD3:
            return int(self.pipe.transformer.config.patch_size)
        return 1

    @property
    def token_grid(self) -> tuple[int, int] | None:
        """Image-token grid ``(h, w)`` of a joint-attention model, None for UNets."""
        if self.kind not in (FLUX, SD3):
            return None
        h, w = self.latent_hw
        return h // self.patch_size, w // self.patch_size

    # -- VAE ----------------------------------------------------------------------------------------------------

    def _vae_shift_scale(self) -> tuple[float, float]:
        config = self.pipe.vae.config
        shift = getattr(config, "shift_factor", None)
        shift = 0.0 if (shift is None or self.kind in (SD, SDXL)) else float(shift)
        return shift, float(config.scaling_factor)

    def encode_image(self, image01: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """VAE latent of an image in [0, 1], ``(1, 3, R, R)`` -> ``(1, c, h, w)`` float32, scaled (and shifted).

        ``generator`` None takes the posterior mean (deterministic); a generator samples the posterior.
        """
        vae = self.pipe.vae
        encoded = vae.encode(image01.to(self.model.device, torch.float32) * 2.0 - 1.0)
        if hasattr(encoded, "latent_dist"):
            dist = encoded.latent_dist
            latent = dist.mean if generator is None else dist.sample(generator=generator)
        else:  # AutoencoderTiny (TAESD): a deterministic encoder
            latent = encoded.latents
        shift, scale = self._vae_shift_scale()
        return ((latent - shift) * scale).float()

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode a scaled latent ``(1, c, h, w)`` to an image in [0, 1], ``(1, 3, R, R)`` float32."""
        shift, scale = self._vae_shift_scale()
        image = self.pipe.vae.decode(latent.float() / scale + shift, return_dict=False)[0]
        return ((image.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    # -- text ---------------------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> Conditioning:
        """Encode one prompt (batch 1, no classifier-free guidance)."""
        pipe, device = self.pipe, self.model.device
        extra: dict[str, Any] = {}
        if self.kind == SD:
            embeds, _ = pipe.encode_prompt(prompt, device, 1, False)
        elif self.kind == SDXL:
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            projection_dim = (
                int(pipe.text_encoder_2.config.projection_dim)
                if pipe.text_encoder_2 is not None
                else int(pooled.shape[-1])
            )
            size = (self.resolution, self.resolution)
            time_ids = pipe._get_add_time_ids(
                size, (0, 0), size, dtype=embeds.dtype, text_encoder_projection_dim=projection_dim
            )
            extra["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids.to(device)}
        elif self.kind == FLUX:
            embeds, pooled, text_ids = pipe.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                device=device,
                num_images_per_prompt=1,
                max_sequence_length=self.max_sequence_length,
            )
            extra.update(pooled_projections=pooled, txt_ids=text_ids)
            if bool(pipe.transformer.config.guidance_embeds):
                extra["guidance"] = torch.full([1], self.guidance, device=device, dtype=torch.float32)
            else:
                extra["guidance"] = None
        else:
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                prompt_3=None,
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
                max_sequence_length=self.max_sequence_length,
            )
            extra["pooled_projections"] = pooled
        embeds = embeds.to(device=device, dtype=self.model.dtype)
        return Conditioning(prompt=prompt, embeds=embeds, text_length=int(embeds.shape[1]), extra=extra)

    def token_positions(self, prompt: str, span: tuple[int, int]) -> list[int]:
        """Positions of ``prompt[span]``'s tokens on the attention's text axis.

        UNets and SD3: the CLIP tokenizer (start token at position 0, window 77; SD3's text axis opens with the CLIP
        chunk). FLUX: the T5 tokenizer (no start token, window = max_sequence_length).
        """
        from l2s_core.tokens import phrase_token_positions

        if self.kind == FLUX:
            tok = self.pipe.tokenizer_2
            offset, max_length = 0, self.max_sequence_length
            ignorable: set[int] = set()
            space_id = tok.convert_tokens_to_ids("▁")
            if isinstance(space_id, int) and space_id != tok.unk_token_id:
                ignorable.add(space_id)
        else:
            tok = self.pipe.tokenizer
            offset, max_length = 1, int(tok.model_max_length)
            ignorable = set()

        def encode(text: str) -> list[int]:
            return list(tok(text, add_special_tokens=False).input_ids)

        return phrase_token_positions(
            encode, prompt, span, offset=offset, max_length=max_length, ignorable_leading_ids=ignorable
        )

    # -- denoiser -----------------------------------------------------------------------------------------------

    def denoise(self, latent: torch.Tensor, timestep: float, cond: Conditioning) -> torch.Tensor:
        """One denoiser call (batch 1) at a model timestep; returns the raw model output.

        UNets take the ``(1, c, h, w)`` latent and the integer DDPM timestep; FLUX takes the packed latent
        ``(1, h/2 * w/2, 4c)`` and ``timestep / 1000`` (= sigma), SD3 the ``(1, c, h, w)`` latent and ``sigma * 1000``.
        """
        device, dtype = self.model.device, self.model.dtype
        x = latent.to(device=device, dtype=dtype)
        if self.kind in (SD, SDXL):
            t = torch.tensor(int(timestep), device=device)
            return self.pipe.unet(x, t, encoder_hidden_states=cond.embeds, return_dict=False, **cond.extra)[0]
        if self.kind == FLUX:
            h, w = self.latent_hw
            img_ids = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, device, dtype)
            t = torch.full([1], float(timestep) / 1000.0, device=device, dtype=dtype)
            return self.pipe.transformer(
                hidden_states=x,
                timestep=t,
                guidance=cond.extra["guidance"],
                pooled_projections=cond.extra["pooled_projections"],
                encoder_hidden_states=cond.embeds,
                txt_ids=cond.extra["txt_ids"],
                img_ids=img_ids,
                return_dict=False,
            )[0]
        t = torch.full([1], float(timestep), device=device, dtype=dtype)
        return self.pipe.transformer(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=cond.embeds,
            pooled_projections=cond.extra["pooled_projections"],
            return_dict=False,
        )[0]

    def pack(self, latent: torch.Tensor) -> torch.Tensor:
        """FLUX: ``(1, c, h, w)`` -> packed ``(1, h/2 * w/2, 4c)``; other kinds unchanged."""
        if self.kind != FLUX:
            return latent
        _, c, h, w = latent.shape
        return self.pipe._pack_latents(latent, 1, c, h, w)  # (1, h/2*w/2, 4c)
