"""Capture the two objects' text-token attention maps inside a ComfyUI denoiser forward.

This module owns the ComfyUI hook only: ComfyUI's attention-function override
(``transformer_options["optimized_attention_override"]``), which every UNet, SD3 and FLUX attention call passes
through, tells which calls are text attention and hands their q and k to the map functions of
:mod:`l2s_core.attention` (the same ones data creation uses):

* UNet (SD1.x, SD2.x, SDXL): cross-attention (attn2) calls, :func:`~l2s_core.attention.cross_attention_maps`.
* Joint attention (FLUX.1, SD3): the sequence holds the text first, then the image tokens; image queries and text
  keys go to :func:`~l2s_core.attention.joint_attention_maps`, so the full joint attention matrix is never formed.

Only the maps of the subject and object tokens are kept, already averaged over each phrase's tokens, in fp32:
``(B, heads, h, w)`` per layer and object. The module imports torch and l2s_core only, so its logic is testable
without ComfyUI; the ComfyUI objects it needs (a backward-capable attention function) are passed in.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..l2s_core.attention import (
    MapRequest,
    cross_attention_maps,
    joint_attention_maps,
    unet_layer_grid,
    without_saved_scores,
)
from ..l2s_core.layout import LayerMaps

AttentionFn = Callable[..., torch.Tensor]


@dataclass
class AttentionCapture:
    """Records subject/object maps per attention layer while a :class:`MapRequest` is active.

    The same object must be reachable from every copy of ``model_options`` ComfyUI makes, so ``deepcopy`` returns it
    unchanged.

    Args:
        grad_attention: attention function used for the layer output while gradients are being taken (fused
            kernels without a backward, such as sage attention, would break the steering gradient). None keeps the
            function ComfyUI chose.
        previous_override: an attention override that was already installed (another pack's); it stays in the chain.
    """

    grad_attention: AttentionFn | None = None
    previous_override: Callable[..., torch.Tensor] | None = None
    request: MapRequest | None = None
    subject: list[LayerMaps] = field(default_factory=list)
    object: list[LayerMaps] = field(default_factory=list)
    _calls_per_block: dict[Any, int] = field(default_factory=dict)

    def __deepcopy__(self, memo: dict[int, Any]) -> AttentionCapture:
        return self

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def begin(self, request: MapRequest) -> None:
        """Start recording one forward pass for ``request`` (clears what an earlier pass left)."""
        self.request = request
        self.subject = []
        self.object = []
        self._calls_per_block = {}

    def end(self) -> tuple[list[LayerMaps], list[LayerMaps]]:
        """Stop recording and return the (subject, object) layers of the pass."""
        layers = (self.subject, self.object)
        self.request = None
        self.subject, self.object = [], []
        self._calls_per_block = {}
        return layers

    def replay(self) -> Callable[[], contextlib.AbstractContextManager[None]]:
        """The capture's state now (at a block's forward), to put back around that block's recomputation.

        Per-block recomputation (:func:`l2s_core.recompute.recomputed_blocks`) runs a block again during the backward,
        after :meth:`end`; the maps must then be computed exactly as in the forward (the same operations), and what is
        recorded again is discarded.
        """
        request, calls = self.request, dict(self._calls_per_block)

        @contextlib.contextmanager
        def restore() -> Iterator[None]:
            saved = (self.request, self.subject, self.object, self._calls_per_block)
            self.request, self.subject, self.object, self._calls_per_block = request, [], [], dict(calls)
            try:
                yield
            finally:
                self.request, self.subject, self.object, self._calls_per_block = saved

        return restore

    # -- hooks -----------------------------------------------------------------------------------------------------

    def override(self, func: AttentionFn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        """``optimized_attention_override`` hook: record maps, then compute the layer output as usual."""
        request = self.request
        if request is not None:
            transformer_options = kwargs.get("transformer_options") or {}
            skip_reshape = bool(kwargs.get("skip_reshape", False))
            if request.layout == "unet":
                self._record_cross_attention(q, k, heads, skip_reshape, transformer_options, request)
            else:
                self._record_joint_attention(q, k, heads, skip_reshape, request)
            if self.grad_attention is not None and torch.is_grad_enabled():
                func = self.grad_attention
        if self.previous_override is not None:
            return self.previous_override(func, q, k, v, heads, *args, **kwargs)
        return func(q, k, v, heads, *args, **kwargs)

    # -- recording -------------------------------------------------------------------------------------------------

    def _record_cross_attention(self, q: torch.Tensor, k: torch.Tensor, heads: int, skip_reshape: bool,
                                transformer_options: dict[str, Any], request: MapRequest) -> None:
        q4, k4 = heads_first(q, heads, skip_reshape), heads_first(k, heads, skip_reshape)  # (B, H, L, D)
        n, t = q4.shape[2], k4.shape[2]
        if not self._is_cross_attention(n, t, transformer_options, request):
            return
        compute = functools.partial(cross_attention_maps, subject=request.subject_positions,
                                    obj=request.object_positions)
        subject, obj = without_saved_scores(compute, q4, k4)  # (B, H, N) each
        grid = unet_layer_grid(n, request.latent_size, transformer_options.get("activations_shape"))
        self._store(grid, subject, obj)

    def _is_cross_attention(self, n: int, t: int, transformer_options: dict[str, Any],
                            request: MapRequest) -> bool:
        """attn1 and attn2 of a transformer block look alike when N == T; the block then calls attn1 first."""
        key = (str(transformer_options.get("block")), transformer_options.get("block_index"))
        calls = self._calls_per_block.get(key, 0) + 1
        self._calls_per_block[key] = calls
        if t != request.text_length:
            return False
        if n != t:
            return True
        return calls % 2 == 0

    def _record_joint_attention(self, q: torch.Tensor, k: torch.Tensor, heads: int, skip_reshape: bool,
                                request: MapRequest) -> None:
        q4, k4 = heads_first(q, heads, skip_reshape), heads_first(k, heads, skip_reshape)  # (B, H, L, D)
        grid = request.image_grid
        n_img, n_txt = grid[0] * grid[1], request.text_length
        if q4.shape[2] < n_txt + n_img or k4.shape[2] < n_txt + n_img:
            return  # an image-only attention (SD3.5 extra self-attention), not joint text-image attention
        q_img = q4[:, :, n_txt:n_txt + n_img]  # (B, H, N_img, D)
        k_txt = k4[:, :, :n_txt]  # (B, H, T, D)
        compute = functools.partial(joint_attention_maps, subject=request.subject_positions,
                                    obj=request.object_positions)
        subject, obj = without_saved_scores(compute, q_img, k_txt)  # (B, H, N_img) each
        self._store(grid, subject, obj)

    def _store(self, grid: tuple[int, int], subject: torch.Tensor, obj: torch.Tensor) -> None:
        """subject, obj: (B, H, h*w) token-averaged maps of one layer."""
        index = len(self.subject)
        self.subject.append(LayerMaps.from_flat(index, grid, subject))
        self.object.append(LayerMaps.from_flat(index, grid, obj))



def heads_first(x: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    """(B, L, H*D) -> (B, H, L, D); tensors passed with skip_reshape are already (B, H, L, D)."""
    if skip_reshape:
        return x
    b, length, inner = x.shape
    return x.view(b, length, heads, inner // heads).transpose(1, 2)  # (B, H, L, D)
