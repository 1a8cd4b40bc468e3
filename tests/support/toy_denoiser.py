"""A tiny deterministic, differentiable stand-in for a diffusion denoiser's cross-attention (a test helper).

This module owns :class:`ToyAttentionDenoiser`. It has no image model inside: each "layer" maps the latent to
queries with a fixed 1x1 convolution, and the queries attend over ``T`` fixed text-token keys. The resulting
text-softmax probabilities are a smooth, per-pixel function of the latent, so gradients of anything computed from
the maps flow back to the latent, and samples in a batch never interact. Layer 0 works at the latent resolution,
layer 1 at half of it (2x2 average pool), like the multi-resolution UNet layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ToyAttentionDenoiser(nn.Module):
    """Two cross-attention "layers" (resolutions H and H/2) over fixed text-token keys; buffers only, no parameters.

    Args:
        seed: integer seed, or a ``torch.Generator``, for the fixed random weights.
        latent_channels: channels of the latent (4 like SD).
        text_tokens: number of text tokens ``T``.
        heads: attention heads per layer; the classifier sees ``C = 2 * heads`` channels.
        dim: query/key width per head.
    """

    num_layers = 2

    def __init__(
        self,
        seed: int | torch.Generator = 0,
        *,
        latent_channels: int = 4,
        text_tokens: int = 8,
        heads: int = 2,
        dim: int = 8,
    ) -> None:
        super().__init__()
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
        self.latent_channels, self.text_tokens, self.heads, self.dim = latent_channels, text_tokens, heads, dim
        scale = 1.0 / math.sqrt(latent_channels)
        # query projections, one per layer: (layers, heads * dim, latent_channels), i.e. 1x1 convolutions
        self.register_buffer("query_weight", torch.randn(2, heads * dim, latent_channels, generator=gen) * scale)
        # fixed text-token keys: (heads, T, dim)
        self.register_buffer("keys", torch.randn(heads, text_tokens, dim, generator=gen))

    @property
    def channels(self) -> int:
        """Classifier channels ``C = layers * heads``."""
        return self.num_layers * self.heads

    def forward(self, latent: Tensor) -> list[tuple[tuple[int, int], Tensor]]:
        """Return per-layer text-softmax probabilities.

        Args:
            latent: (B, latent_channels, H, W) with even H and W.

        Returns:
            One ``((h, w), probs)`` per layer, ``probs`` of shape (B, heads, h*w, T), rows summing to 1 over T.
        """
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels or latent.shape[2] % 2 or latent.shape[3] % 2:
            raise ValueError(
                f"ToyAttentionDenoiser expects a latent (B, {self.latent_channels}, H, W) with even H and W; "
                f"got shape {tuple(latent.shape)}. Pass a 4-D latent with matching channels and even sides."
            )
        out: list[tuple[tuple[int, int], Tensor]] = []
        for layer in range(self.num_layers):
            x = latent if layer == 0 else F.avg_pool2d(latent, 2)  # (B, Cl, h, w)
            b, _, h, w = x.shape
            weight = self.query_weight[layer].to(x.dtype)
            q = torch.einsum("oc,bchw->bohw", weight, x)  # (B, heads*dim, h, w)
            q = q.reshape(b, self.heads, self.dim, h * w).transpose(2, 3)  # (B, heads, h*w, dim)
            logits = q @ self.keys.to(x.dtype).transpose(1, 2) / math.sqrt(self.dim)  # (B, heads, h*w, T)
            out.append(((h, w), logits.softmax(dim=-1)))
        return out

    def object_maps(
        self,
        latent: Tensor,
        subject_positions: Sequence[int],
        object_positions: Sequence[int],
        map_size: int,
    ) -> Tensor:
        """Return classifier input maps for a subject and an object word.

        Per object: mean over its token positions, resize every layer bilinearly to ``map_size`` (ascending
        resolution order), divide each map by its spatial sum + 1e-8, concatenate layers along channels.

        Args:
            latent: (B, latent_channels, H, W).
            subject_positions: token indices of the subject word (non-empty, each in ``0 .. T-1``).
            object_positions: token indices of the object word.
            map_size: side ``S`` of the output maps.

        Returns:
            (B, 2, C, S, S) with ``C = layers * heads``; index 0 on dim 1 is the subject, 1 the object.
        """
        for label, positions in (("subject", subject_positions), ("object", object_positions)):
            if not positions or any(not 0 <= p < self.text_tokens for p in positions):
                raise ValueError(
                    f"{label}_positions must be a non-empty list of token indices in 0..{self.text_tokens - 1}; "
                    f"got {list(positions)}. Pass the positions of the word's tokens in the toy prompt."
                )
        layers = sorted(self.forward(latent), key=lambda item: item[0][0] * item[0][1])  # ascending resolution
        per_object: list[Tensor] = []
        for positions in (subject_positions, object_positions):
            channels: list[Tensor] = []
            for (h, w), probs in layers:
                avg = probs[..., list(positions)].mean(dim=-1)  # (B, heads, h*w)
                grid = avg.reshape(avg.shape[0], self.heads, h, w)  # (B, heads, h, w)
                resized = F.interpolate(grid, size=(map_size, map_size), mode="bilinear", align_corners=False)
                channels.append(resized / (resized.sum(dim=(-2, -1), keepdim=True) + 1e-8))
            per_object.append(torch.cat(channels, dim=1))  # (B, C, S, S)
        return torch.stack(per_object, dim=1)  # (B, 2, C, S, S)
