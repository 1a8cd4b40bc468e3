"""Capture the two objects' text-token attention maps inside a ComfyUI denoiser forward.

One capture layer serves every supported architecture through ComfyUI's attention-function override
(``transformer_options["optimized_attention_override"]``, ComfyUI >= 0.3.60), which every UNet, SD3 and FLUX
attention call passes through:

* UNet (SD1.x, SD2.x, SDXL): cross-attention (attn2) calls; the probabilities are the softmax over all text tokens,
  exactly as the model computes them (method.md §4.2).
* Joint attention (FLUX.1, SD3): image queries x text keys, softmax over the text keys only (method.md §4.3). The
  sequence holds the text first, then the image tokens. Only the logits against the text keys are formed, never the
  full joint attention matrix, and only the object tokens' columns are kept after the log-sum-exp.

For ComfyUI versions without the override, UNets are captured through attn2 replace patches
(:meth:`AttentionCapture.attn2_replace`), which compute the attention explicitly.

Only the maps of the subject and object tokens are kept, already averaged over each phrase's tokens, in fp32:
``(B, heads, h, w)`` per layer and object. The module imports torch and l2s_core only, so its logic is testable
without ComfyUI; the ComfyUI objects it needs (a backward-capable attention function) are passed in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils.checkpoint

from ..l2s_core.layout import LayerMaps, token_average

AttentionFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class CaptureRequest:
    """What to record during one steering forward.

    Attributes:
        layout: "unet" (cross-attention layers) or "joint" (text-first joint attention: FLUX, SD3).
        text_length: number of text tokens the denoiser attends to (77 per CLIP chunk; FLUX: T5 length; SD3: CLIP 77 +
            T5 length).
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
        if self.layout not in ("unet", "joint"):
            raise ValueError(f"Unknown attention layout {self.layout!r}; expected 'unet' or 'joint'.")
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


@dataclass
class AttentionCapture:
    """Records subject/object maps per attention layer while a :class:`CaptureRequest` is active.

    The same object must be reachable from every copy of ``model_options`` ComfyUI makes, so ``deepcopy`` returns it
    unchanged (comfyui.md §1.1).

    Args:
        grad_attention: attention function used for the layer output while gradients are being taken (fused
            kernels without a backward, such as sage attention, would break the steering gradient). None keeps the
            function ComfyUI chose.
        previous_override: an attention override that was already installed (another pack's); it stays in the chain.
    """

    grad_attention: AttentionFn | None = None
    previous_override: Callable[..., torch.Tensor] | None = None
    request: CaptureRequest | None = None
    subject: list[LayerMaps] = field(default_factory=list)
    object: list[LayerMaps] = field(default_factory=list)
    _calls_per_block: dict[Any, int] = field(default_factory=dict)

    def __deepcopy__(self, memo: dict[int, Any]) -> AttentionCapture:
        return self

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def begin(self, request: CaptureRequest) -> None:
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

    def attn2_replace(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      extra_options: dict[str, Any]) -> torch.Tensor:
        """UNet attn2 replace patch for ComfyUI versions without the attention override.

        q: (B, N, heads*D) projected queries; k, v: (B, T, heads*D). Returns (B, N, heads*D) like ComfyUI's
        attention functions, computed explicitly so the probabilities are recorded and differentiable.
        """
        heads = int(extra_options["n_heads"])
        b, n, inner = q.shape
        d = inner // heads
        q4 = q.view(b, n, heads, d).transpose(1, 2)  # (B, H, N, D)
        k4 = k.view(b, k.shape[1], heads, d).transpose(1, 2)  # (B, H, T, D)
        v4 = v.view(b, v.shape[1], heads, d).transpose(1, 2)  # (B, H, T, D)
        probs = torch.softmax((q4.float() @ k4.float().transpose(-1, -2)) * d**-0.5, dim=-1)  # (B, H, N, T)
        if self.request is not None and self.request.layout == "unet" and k.shape[1] == self.request.text_length:
            self._append(probs, _unet_grid(n, extra_options, self.request))
        out = probs.to(v4.dtype) @ v4  # (B, H, N, D)
        return out.transpose(1, 2).reshape(b, n, inner)  # (B, N, H*D)

    # -- recording -------------------------------------------------------------------------------------------------

    def _record_cross_attention(self, q: torch.Tensor, k: torch.Tensor, heads: int, skip_reshape: bool,
                                transformer_options: dict[str, Any], request: CaptureRequest) -> None:
        q4, k4 = _heads_first(q, heads, skip_reshape), _heads_first(k, heads, skip_reshape)  # (B, H, L, D)
        n, t = q4.shape[2], k4.shape[2]
        if not self._is_cross_attention(n, t, transformer_options, request):
            return
        compute = functools.partial(_cross_maps, subject=request.subject_positions, obj=request.object_positions)
        subject, obj = _recomputed_in_backward(compute, q4, k4)  # (B, H, N) each
        self._store(_unet_grid(n, transformer_options, request), subject, obj)

    def _is_cross_attention(self, n: int, t: int, transformer_options: dict[str, Any],
                            request: CaptureRequest) -> bool:
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
                                request: CaptureRequest) -> None:
        q4, k4 = _heads_first(q, heads, skip_reshape), _heads_first(k, heads, skip_reshape)  # (B, H, L, D)
        grid = request.image_grid
        n_img, n_txt = grid[0] * grid[1], request.text_length
        if q4.shape[2] < n_txt + n_img or k4.shape[2] < n_txt + n_img:
            return  # an image-only attention (SD3.5 extra self-attention), not joint text-image attention
        q_img = q4[:, :, n_txt:n_txt + n_img]  # (B, H, N_img, D)
        k_txt = k4[:, :, :n_txt]  # (B, H, T, D)
        compute = functools.partial(_joint_maps, subject=request.subject_positions, obj=request.object_positions)
        subject, obj = _recomputed_in_backward(compute, q_img, k_txt)  # (B, H, N_img) each
        self._store(grid, subject, obj)

    def _store(self, grid: tuple[int, int], subject: torch.Tensor, obj: torch.Tensor) -> None:
        """subject, obj: (B, H, h*w) token-averaged maps of one layer."""
        index = len(self.subject)
        self.subject.append(LayerMaps.from_flat(index, grid, subject))
        self.object.append(LayerMaps.from_flat(index, grid, obj))

    def _append(self, probs: torch.Tensor, grid: tuple[int, int]) -> None:
        """probs: (B, H, N, T) text-softmax probabilities of one layer."""
        assert self.request is not None
        index = len(self.subject)
        self.subject.append(LayerMaps.from_flat(index, grid, token_average(probs, self.request.subject_positions)))
        self.object.append(LayerMaps.from_flat(index, grid, token_average(probs, self.request.object_positions)))


def _recomputed_in_backward(compute: Callable[..., tuple[torch.Tensor, torch.Tensor]],
                            *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``compute`` so that autograd keeps none of its fp32 intermediates (the (B, H, N, T) scores).

    When gradients are needed, the maps are recomputed from q and k during the backward pass (which the attention
    kernel keeps anyway): one extra small matmul per layer instead of holding every layer's score tensor, e.g.
    48 MiB per FLUX layer at 512 px, 2.7 GB over 57 layers. Values and gradients are unchanged.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return torch.utils.checkpoint.checkpoint(compute, *inputs, use_reentrant=False)
    return compute(*inputs)


def _cross_maps(q4: torch.Tensor, k4: torch.Tensor, subject: Sequence[int],
                obj: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """UNet cross-attention: softmax over all text tokens. q4: (B, H, N, D), k4: (B, H, T, D) -> 2 x (B, H, N)."""
    probs = torch.softmax((q4.float() @ k4.float().transpose(-1, -2)) * q4.shape[-1] ** -0.5, dim=-1)  # (B,H,N,T)
    return token_average(probs, subject), token_average(probs, obj)


def _joint_maps(q_img: torch.Tensor, k_txt: torch.Tensor, subject: Sequence[int],
                obj: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint attention: image queries x text keys, softmax over the text keys only. -> 2 x (B, H, N_img)."""
    logits = (q_img.float() @ k_txt.float().transpose(-1, -2)) * q_img.shape[-1] ** -0.5  # (B, H, N_img, T)
    log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # (B, H, N_img, 1)
    return _columns_probability(logits, log_norm, subject), _columns_probability(logits, log_norm, obj)


def _columns_probability(logits: torch.Tensor, log_norm: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """Mean text-softmax probability of the given token columns. logits: (B, H, N, T) -> (B, H, N)."""
    columns = logits[..., list(positions)]  # (B, H, N, P)
    return torch.exp(columns - log_norm).mean(dim=-1)


def _heads_first(x: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    """(B, L, H*D) -> (B, H, L, D); tensors passed with skip_reshape are already (B, H, L, D)."""
    if skip_reshape:
        return x
    b, length, inner = x.shape
    return x.view(b, length, heads, inner // heads).transpose(1, 2)  # (B, H, L, D)


def _unet_grid(n: int, transformer_options: dict[str, Any], request: CaptureRequest) -> tuple[int, int]:
    """Spatial size (h, w) of a UNet attention layer with n query tokens."""
    shape = transformer_options.get("activations_shape")
    if shape is not None and len(shape) == 4 and int(shape[-2]) * int(shape[-1]) == n:
        return int(shape[-2]), int(shape[-1])
    height, width = request.latent_size
    factor = 1
    while math.ceil(height / factor) * math.ceil(width / factor) > n:
        factor *= 2
    h, w = math.ceil(height / factor), math.ceil(width / factor)
    if h * w != n:
        raise ValueError(
            f"Cannot tell the spatial size of an attention layer with {n} query tokens for a {height}x{width} latent."
        )
    return h, w
