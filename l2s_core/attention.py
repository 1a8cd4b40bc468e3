"""The attention maps the classifier reads: one definition for every place that computes them.

The ComfyUI capture (``nodes/capture.py``), the diffusers recorder of data creation (``training/recorder.py``) and
the toy world all turn an attention layer's projected queries and keys into the two objects' maps with the
functions here, so the maps the classifiers are trained on and the maps the steering nodes read agree by
construction. The framework modules only find the layers and project q and k the way their models do.

* :class:`MapRequest`: what one forward pass records (layout, text length, the two phrases' token positions, the
  latent size and, for joint attention, the patch size that gives the image-token grid).
* :func:`text_attention_probs`: the softmax of q k^T / sqrt(d) over text keys, in float32.
* :func:`cross_attention_maps`: UNet cross-attention (SD1.x, SD2.x, SDXL, toy): softmax over **all** text tokens,
  exactly as the model computes it, then each phrase's mean over its token columns.
* :func:`joint_attention_maps`: joint attention (FLUX.1, SD3): image queries x text keys with the softmax over the
  **text keys only**; computed with a log-sum-exp, so the full ``(N, T)`` probability matrix is never stored.
* :func:`unet_layer_grid`: the spatial size of a UNet layer from its number of queries.
* :func:`without_saved_scores`: run a map computation so autograd keeps none of its fp32 score tensors.

Maps are float32 ``(B, heads, h*w)`` per phrase; :class:`l2s_core.layout.LayerMaps` holds them per layer and
:func:`l2s_core.layout.classifier_input` orders and resizes them into the classifier input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.utils.checkpoint

from .families import JOINT, LAYOUTS
from .layout import token_average

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MapRequest:
    """What to record during one denoiser forward.

    Attributes:
        layout: "unet" (cross-attention layers) or "joint" (text-first joint attention: FLUX, SD3).
        text_length: number of text tokens the denoiser attends to (77 per CLIP chunk; FLUX: T5 length; SD3: CLIP 77
            + T5 length).
        subject_positions: token positions of the subject phrase on the text axis.
        object_positions: token positions of the object phrase on the text axis.
        latent_size: (H, W) of the latent the denoiser receives.
        patch_size: side of the image patches of a joint-attention model (2 for FLUX and SD3).
    """

    layout: str
    text_length: int
    subject_positions: tuple[int, ...]
    object_positions: tuple[int, ...]
    latent_size: tuple[int, int]
    patch_size: int = 2

    def __post_init__(self) -> None:
        """Check the layout and that both phrases have positions inside the text axis."""
        if self.layout not in LAYOUTS:
            raise ValueError(f"Unknown attention layout {self.layout!r}; expected one of {list(LAYOUTS)}.")
        for name, positions in (("subject", self.subject_positions), ("object", self.object_positions)):
            if not positions:
                raise ValueError(f"The {name} phrase has no token positions to capture.")
            if max(positions) >= self.text_length or min(positions) < 0:
                raise ValueError(
                    f"The {name} phrase's token positions {list(positions)} fall outside the denoiser's "
                    f"{self.text_length} text tokens."
                )

    @property
    def image_grid(self) -> tuple[int, int]:
        """Token grid (h, w) of a joint-attention model's image sequence."""
        h, w = self.latent_size
        return math.ceil(h / self.patch_size), math.ceil(w / self.patch_size)

    @property
    def is_joint(self) -> bool:
        """True for joint (text-first) attention."""
        return self.layout == JOINT


def unet_layer_grid(num_queries: int, latent_size: tuple[int, int],
                    activations_shape: Sequence[int] | None = None) -> tuple[int, int]:
    """Spatial size ``(h, w)`` of a UNet attention layer with ``num_queries`` image tokens.

    A 4-d ``activations_shape`` (ComfyUI passes the block's input shape) that fits ``num_queries`` decides. Otherwise
    the UNet halves the latent with stride-2 convolutions (``ceil``), so the grid is ``ceil(H / f), ceil(W / f)`` for
    the power of two ``f`` that gives ``num_queries`` tokens.

    Raises:
        ValueError: no power of two matches.
    """
    if activations_shape is not None and len(activations_shape) == 4:
        h, w = int(activations_shape[-2]), int(activations_shape[-1])
        if h * w == num_queries:
            return h, w
    height, width = latent_size
    factor = 1
    while math.ceil(height / factor) * math.ceil(width / factor) > num_queries:
        factor *= 2
    h, w = math.ceil(height / factor), math.ceil(width / factor)
    if h * w != num_queries:
        raise ValueError(
            f"Cannot tell the spatial size of an attention layer with {num_queries} query tokens for a "
            f"{height}x{width} latent."
        )
    return h, w


def _scores(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product scores in float32. queries: (B, H, N, D), keys: (B, H, T, D) -> (B, H, N, T)."""
    return (queries.float() @ keys.float().transpose(-1, -2)) * queries.shape[-1] ** -0.5


def text_attention_probs(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Attention probabilities over the text keys, in float32: (B, H, N, D) x (B, H, T, D) -> (B, H, N, T).

    For UNet cross-attention this is the layer's own attention; for joint attention (image queries x text keys) it
    is the softmax over the text keys only.
    """
    return torch.softmax(_scores(queries, keys), dim=-1)


def cross_attention_maps(queries: torch.Tensor, keys: torch.Tensor, subject: Sequence[int],
                         obj: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """UNet cross-attention maps: softmax over all text tokens, averaged over each phrase's tokens.

    Args:
        queries: (B, H, N, D) image queries of the layer (heads first).
        keys: (B, H, T, D) text keys.
        subject, obj: token positions of the two phrases.

    Returns:
        (subject, object) maps, float32 (B, H, N) each.
    """
    probs = text_attention_probs(queries, keys)  # (B, H, N, T)
    return token_average(probs, subject), token_average(probs, obj)


def joint_attention_maps(image_queries: torch.Tensor, text_keys: torch.Tensor, subject: Sequence[int],
                         obj: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint-attention maps: image queries x text keys, softmax over the text keys only, per phrase.

    Args:
        image_queries: (B, H, N_img, D) image-token queries (after the model's q norm and RoPE).
        text_keys: (B, H, T, D) text-token keys (after the model's k norm and RoPE).
        subject, obj: token positions of the two phrases.

    Returns:
        (subject, object) maps, float32 (B, H, N_img) each.
    """
    logits = _scores(image_queries, text_keys)  # (B, H, N_img, T)
    log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, H, N_img, 1)
    return (torch.exp(logits[..., list(subject)] - log_norm).mean(dim=-1),
            torch.exp(logits[..., list(obj)] - log_norm).mean(dim=-1))


def without_saved_scores(compute: Callable[..., tuple[torch.Tensor, torch.Tensor]],
                         *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``compute(*inputs)`` so that autograd keeps none of its fp32 intermediates (the (B, H, N, T) scores).

    When gradients are needed, the maps are recomputed from q and k during the backward pass (which the attention
    kernel keeps anyway): one extra small matmul per layer instead of holding every layer's score tensor, e.g.
    48 MiB per FLUX layer at 512 px, 2.7 GB over 57 layers. Values and gradients are unchanged.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return torch.utils.checkpoint.checkpoint(compute, *inputs, use_reentrant=False)
    return compute(*inputs)
