"""The full-probability reference: an attention capture that keeps every attention call's probabilities in the graph."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch


def full_probability_capture_class(capture_mod: ModuleType) -> type:
    """An AttentionCapture whose every attention call computes softmax(q k^T / sqrt(d)) over ALL keys explicitly.

    The layer output is ``P @ v``, so P stays in the autograd graph (UNet: attn1 (N x N) and attn2 (N x T); FLUX/SD3:
    the full (L_txt + L_img)^2 joint matrix); the maps are read from P. P is kept in the model's compute dtype, as an
    eager attention processor does (a float32 upcast would double the reference in bf16/fp16 runs).
    """

    class FullProbabilityCapture(capture_mod.AttentionCapture):
        def override(self, func: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     heads: int, *args: Any, **kwargs: Any) -> torch.Tensor:
            request = self.request
            if request is None:
                return super().override(func, q, k, v, heads, *args, **kwargs)
            skip_reshape = bool(kwargs.get("skip_reshape", False))
            q4, k4, v4 = (capture_mod.heads_first(t, heads, skip_reshape) for t in (q, k, v))  # (B, H, L, D)
            logits = (q4 @ k4.transpose(-1, -2)) * q4.shape[-1] ** -0.5  # (B, H, Lq, Lk)
            mask = kwargs.get("mask")
            if mask is not None:
                logits = logits.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else logits + mask
            probs = torch.softmax(logits, dim=-1)  # (B, H, Lq, Lk), all keys
            n, t = q4.shape[2], k4.shape[2]
            if request.layout == "unet":
                options = kwargs.get("transformer_options") or {}
                if self._is_cross_attention(n, t, options, request):
                    grid = capture_mod.unet_layer_grid(n, request.latent_size, options.get("activations_shape"))
                    self._keep_token_maps(probs, grid)
            else:
                grid = request.image_grid
                n_img, n_txt = grid[0] * grid[1], request.text_length
                if n >= n_txt + n_img:
                    self._keep_token_maps(probs[:, :, n_txt:n_txt + n_img], grid)  # (B, H, N_img, Lk)
            out = probs.to(v4.dtype) @ v4  # (B, H, Lq, D)
            if kwargs.get("skip_output_reshape", False):
                return out
            return out.transpose(1, 2).reshape(out.shape[0], n, -1)  # (B, Lq, H*D)

        def _keep_token_maps(self, rows: torch.Tensor, grid: tuple[int, int]) -> None:
            """rows: (B, H, N, Lk) probabilities of the image queries; keeps each object's token-averaged map."""
            request = self.request
            assert request is not None
            index = len(self.subject)
            for store, positions in ((self.subject, request.subject_positions),
                                     (self.object, request.object_positions)):
                maps = rows[..., list(positions)].float().mean(dim=-1)  # (B, H, N)
                store.append(capture_mod.LayerMaps.from_flat(index, grid, maps))

    return FullProbabilityCapture
