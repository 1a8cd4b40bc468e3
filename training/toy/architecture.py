"""The three networks of the toy world and their names in ComfyUI's formats.

* Autoencoder: diffusers ``AutoencoderTiny`` with TAESD's exact layout (64 channels, 8x down-sampling, 4 latent
  channels). :func:`taesd_state_dict` renames it to the ``taesd_encoder.*`` / ``taesd_decoder.*`` keys ComfyUI's VAE
  loader recognises (the decoder's leading Clamp is module 0 in TAESD, so decoder indices shift by one).
* Denoiser: diffusers ``UNet2DConditionModel`` with the SD1 block structure at toy size (two levels, one res block
  each, one cross-attention transformer per block, conv projections, fixed head count). :func:`comfy_unet_config`
  gives the equivalent ComfyUI ``unet_config``; ComfyUI's own key map converts the weights.
* Text encoder: ``transformers`` ``CLIPTextModel`` (CLIP-L architecture at toy width) over the full 49,408-token
  CLIP vocabulary, so it consumes ComfyUI's standard token ids.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .vocabulary import CONTEXT_LENGTH, END_ID, START_ID, VOCAB_SIZE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyArchitecture:
    """Sizes of the toy networks (stored in the bundle metadata; everything else is fixed by the formats).

    Attributes:
        image_size: Image side in pixels (a multiple of 16: 8x VAE times the UNet's one down-sampling).
        unet_channels: Width of the UNet's first level (the second is twice that); a multiple of 32 (GroupNorm 32).
        unet_heads: Attention heads of every UNet transformer (SD1 style: fixed count).
        text_width: Hidden size of the text encoder, also the UNet's context dimension.
        text_layers: Transformer layers of the text encoder.
        text_heads: Attention heads of the text encoder.
    """

    image_size: int = 128
    unet_channels: int = 32
    unet_heads: int = 4
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    channel_mult: tuple[int, ...] = field(default=(1, 2))

    def __post_init__(self) -> None:
        if self.image_size % 16 != 0 or self.image_size < 32:
            raise ValueError(f"image_size must be a multiple of 16 and >= 32, got {self.image_size}.")
        if self.unet_channels % 32 != 0:
            raise ValueError(f"unet_channels must be a multiple of 32 (ComfyUI's GroupNorm), got {self.unet_channels}.")
        if self.text_width % self.text_heads != 0:
            raise ValueError(f"text_width {self.text_width} is not divisible by text_heads {self.text_heads}.")

    @property
    def latent_size(self) -> int:
        """Latent side (the VAE down-samples 8x)."""
        return self.image_size // 8

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        data = asdict(self)
        data["channel_mult"] = list(self.channel_mult)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyArchitecture:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown or badly typed fields.
        """
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown toy architecture fields {unknown}; expected some of {sorted(known)}.")
        values = dict(data)
        if "channel_mult" in values:
            values["channel_mult"] = tuple(int(m) for m in values["channel_mult"])
        return cls(**values)


def build_autoencoder() -> torch.nn.Module:
    """A randomly initialised ``AutoencoderTiny`` with TAESD's layout."""
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(
        in_channels=3,
        out_channels=3,
        encoder_block_out_channels=(64, 64, 64, 64),
        decoder_block_out_channels=(64, 64, 64, 64),
        act_fn="relu",
        latent_channels=4,
        upsampling_scaling_factor=2,
        num_encoder_blocks=(1, 3, 3, 3),
        num_decoder_blocks=(3, 3, 3, 1),
        latent_magnitude=3,
        latent_shift=0.5,
        force_upcast=False,
        scaling_factor=1.0,
    )


def comfy_unet_config(arch: ToyArchitecture) -> dict[str, Any]:
    """The ComfyUI ``unet_config`` (``openaimodel.UNetModel`` arguments) of the toy UNet."""
    levels = len(arch.channel_mult)
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": 4,
        "model_channels": arch.unet_channels,
        "num_res_blocks": [1] * levels,
        "transformer_depth": [1] * levels,
        "transformer_depth_output": [1] * (2 * levels),
        "transformer_depth_middle": 1,
        "channel_mult": list(arch.channel_mult),
        "use_linear_in_transformer": False,
        "context_dim": arch.text_width,
        "num_heads": arch.unet_heads,
        "num_head_channels": -1,
    }


def build_unet(arch: ToyArchitecture) -> torch.nn.Module:
    """A randomly initialised ``UNet2DConditionModel`` with the SD1 structure at toy size."""
    from diffusers import UNet2DConditionModel

    levels = len(arch.channel_mult)
    return UNet2DConditionModel(
        sample_size=arch.latent_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * levels,
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D",) * levels,
        block_out_channels=tuple(arch.unet_channels * m for m in arch.channel_mult),
        layers_per_block=1,
        cross_attention_dim=arch.text_width,
        attention_head_dim=arch.unet_heads,  # diffusers' legacy name for the SD1 head count
        use_linear_projection=False,
        norm_num_groups=32,
        norm_eps=1e-5,
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
        transformer_layers_per_block=1,
    )


def text_encoder_config(arch: ToyArchitecture) -> dict[str, Any]:
    """``CLIPTextConfig`` fields of the toy text encoder (the keys ComfyUI's ``clip_l_model_config`` also takes)."""
    return {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": arch.text_width,
        "intermediate_size": 4 * arch.text_width,
        "num_hidden_layers": arch.text_layers,
        "num_attention_heads": arch.text_heads,
        "max_position_embeddings": CONTEXT_LENGTH,
        "hidden_act": "quick_gelu",
        "projection_dim": arch.text_width,
        "bos_token_id": START_ID,
        "eos_token_id": END_ID,
        "pad_token_id": 1,
    }


def build_text_encoder(arch: ToyArchitecture) -> torch.nn.Module:
    """A randomly initialised ``transformers.CLIPTextModel`` of the toy size."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**text_encoder_config(arch)))


def taesd_state_dict(autoencoder: torch.nn.Module, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """``AutoencoderTiny`` weights under TAESD's names (``taesd_encoder.N.*``, ``taesd_decoder.N+1.*``).

    ``vae_scale``/``vae_shift`` are ComfyUI TAESD's input scaling of the decoder; they stay 1 and 0 (the latent
    scale of the toy world lives in the model's latent format, as for SD1's VAE).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in autoencoder.state_dict().items():
        part, _, rest = key.partition(".layers.")
        index, _, leaf = rest.partition(".")
        if part == "encoder":
            out[f"taesd_encoder.{int(index)}.{leaf}"] = value
        elif part == "decoder":
            out[f"taesd_decoder.{int(index) + 1}.{leaf}"] = value
        else:
            raise ValueError(f"unexpected AutoencoderTiny key {key!r}")
    out["vae_scale"] = torch.tensor(float(scale))
    out["vae_shift"] = torch.tensor(0.0)
    return out


def autoencoder_from_taesd(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Build an ``AutoencoderTiny`` from TAESD-named weights (inverse of :func:`taesd_state_dict`).

    Raises:
        ValueError: keys are missing or unexpected.
    """
    model = build_autoencoder()
    wanted = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in ("vae_scale", "vae_shift"):
            continue
        part, _, rest = key.partition(".")
        index, _, leaf = rest.partition(".")
        if part == "taesd_encoder":
            converted[f"encoder.layers.{int(index)}.{leaf}"] = value
        elif part == "taesd_decoder":
            converted[f"decoder.layers.{int(index) - 1}.{leaf}"] = value
        else:
            raise ValueError(f"unexpected TAESD key {key!r}")
    missing = sorted(set(wanted) - set(converted))
    extra = sorted(set(converted) - set(wanted))
    if missing or extra:
        raise ValueError(f"TAESD weights do not fit AutoencoderTiny: missing {missing[:4]}, unexpected {extra[:4]}.")
    model.load_state_dict({k: v.float() for k, v in converted.items()})
    return model
