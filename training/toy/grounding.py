"""Token grounding for the toy UNet: a training loss that ties each object's text tokens to its place in the image.

Large text-to-image models learn from billions of images that the pixels of a dog attend to the word "dog"; their
cross-attention maps localise objects, and Learn-to-Steer reads and steers exactly those maps. A toy UNet trained
for minutes on CPU does not get there on its own: its pixels read the whole prompt from the end/padding tokens and its
object-token maps stay flat (measured: subject and object maps nearly identical), so no classifier can read a
relation from them. Following grounding objectives for text-to-image training (TokenCompose, Wang et al., CVPR
2024: a token loss on cross-attention maps against object masks), the toy build adds

    L_ground = mean over layers, heads and object tokens of  -log( sum_pixels  m_tok(p) * mask(p) )

where ``m_tok`` is the token's cross-attention map normalised over pixels (the map the classifier reads) and ``mask``
the fraction of each latent cell covered by the object's exact box. Only the *spatial distribution* of each object
token's attention is constrained, not how much attention it gets, so the layers stay free to read the relation words
and the end tokens. Nothing of this exists at sampling time: the saved UNet is a plain SD1-structure UNet.

:class:`GroundingCapture` installs an explicit-softmax processor on every ``attn2`` only inside its context and
restores the originals in ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from l2s_core.attention import text_attention_probs

from ..recorder import unet_cross_qk
from .vocabulary import words_of

EPS = 1e-6


def object_token_positions(prompt: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Token positions (start token = 0) of the subject's and the object's two words in ``"a X <relation> a Y"``
    (for a single-object prompt ``"a X"``, X's positions twice).

    Raises:
        ValueError: the prompt is not of that form.
    """
    words = words_of(prompt)
    if len(words) == 3 and words[0] == "a":  # a single object ("a red square"): its words stand for both
        return (2, 3), (2, 3)
    if len(words) < 7 or words[0] != "a" or words[-3] != "a":
        raise ValueError(f"Not a toy relation prompt ('a <colour> <shape> <relation> a <colour> <shape>', or "
                         f"'a <colour> <shape>' alone): {prompt!r}")
    n = len(words)
    return (2, 3), (n - 1, n)  # position = word index + 1 (the start token is position 0)


def box_masks(boxes: torch.Tensor, image_size: int, grid: int) -> torch.Tensor:
    """Fraction of each cell of a ``grid`` x ``grid`` partition of the image covered by each box.

    Args:
        boxes: ``(B, 4)`` pixel boxes ``(x0, y0, x1, y1)``, x1/y1 exclusive.
        image_size: image side in pixels.
        grid: cells per side.

    Returns:
        ``(B, grid*grid)`` float32 in [0, 1], row-major (the UNet's query order).
    """
    edges = torch.arange(grid + 1, dtype=torch.float32) * (image_size / grid)  # (grid+1,)
    lo, hi = edges[:-1], edges[1:]  # (grid,)
    b = boxes.float()

    def overlap(a0: torch.Tensor, a1: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, grid)
        return (torch.minimum(hi, a1[:, None]) - torch.maximum(lo, a0[:, None])).clamp_min(0) / (image_size / grid)

    ox, oy = overlap(b[:, 0], b[:, 2]), overlap(b[:, 1], b[:, 3])  # (B, grid) each
    return (oy[:, :, None] * ox[:, None, :]).reshape(b.shape[0], grid * grid)  # (B, grid, grid) -> (B, grid*grid)


class _ExplicitCrossAttention:
    """An ``attn2`` processor that computes the probabilities explicitly (as the recorder does) and keeps them."""

    def __init__(self, capture: GroundingCapture) -> None:
        self.capture = capture

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        if encoder_hidden_states is None or attention_mask is not None or hidden_states.ndim != 3:
            raise ValueError("grounding expects SD1 cross-attention: (B, N, C) queries, a context, no mask")
        batch = hidden_states.shape[0]
        probs = text_attention_probs(*unet_cross_qk(attn, hidden_states, encoder_hidden_states, None))  # (B,h,N,T)
        value = attn.to_v(encoder_hidden_states)
        head_dim = value.shape[-1] // attn.heads
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (B, T, h*D) -> (B, h, T, D)
        self.capture.probs.append(probs)
        out = (probs @ value).transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)  # (B, h, N, D) -> (B, N, h*D)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


class GroundingCapture:
    """Collects the cross-attention probabilities of every ``attn2`` of a diffusers UNet during one forward."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.modules = [m for name, m in unet.named_modules() if name.endswith("attn2")]
        if not self.modules:
            raise ValueError("The UNet has no attn2 (cross-attention) layers to ground.")
        self.probs: list[torch.Tensor] = []

    @contextmanager
    def installed(self) -> Iterator[GroundingCapture]:
        originals = [m.processor for m in self.modules]
        try:
            for m in self.modules:
                m.set_processor(_ExplicitCrossAttention(self))
            yield self
        finally:
            for m, p in zip(self.modules, originals, strict=True):
                m.set_processor(p)

    def take(self) -> list[torch.Tensor]:
        """The probabilities recorded since the last call, ``(B, heads, N, T)`` per layer, in call order."""
        probs, self.probs = self.probs, []
        return probs


def _token_maps_and_boxes(p: torch.Tensor, positions: torch.Tensor, boxes: torch.Tensor, image_size: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's attention at the given tokens ``(B, h, N, K)`` and each token's box coverage ``(B, 1, N, K)``."""
    b, k = positions.shape
    grid = int(round(p.shape[2] ** 0.5))
    index = positions[:, None, None, :].expand(b, p.shape[1], p.shape[2], k)  # (B, h, N, K)
    maps = torch.gather(p, 3, index)  # (B, h, N, K)
    masks = box_masks(boxes.reshape(b * k, 4), image_size, grid).reshape(b, k, grid * grid)  # (B*K, N) -> (B, K, N)
    return maps, masks.transpose(1, 2)[:, None]  # (B, K, N) -> (B, 1, N, K)


def grounding_loss(probs: Sequence[torch.Tensor], positions: torch.Tensor, boxes: torch.Tensor, image_size: int,
                   valid: torch.Tensor) -> torch.Tensor:
    """Mean ``-log`` of the share of each object token's (pixel-normalised) attention that falls inside its box.

    Args:
        probs: per layer ``(B, heads, N, T)`` attention probabilities, N a square grid.
        positions: ``(B, K)`` long token positions to ground (e.g. K = 4: two words per object).
        boxes: ``(B, K, 4)`` the pixel box each of those tokens must attend to.
        image_size: image side in pixels.
        valid: ``(B,)`` bool; samples whose prompt was dropped (empty prompt) carry no grounding.

    Returns:
        A scalar (0 when no sample is valid).
    """
    if not bool(valid.any()):
        return probs[0].sum() * 0.0
    losses = []
    for p in probs:
        maps, masks = _token_maps_and_boxes(p, positions, boxes, image_size)  # (B, h, N, K), (B, 1, N, K)
        maps = maps / (maps.sum(2, keepdim=True) + EPS)  # normalise over pixels
        inside = (maps * masks).sum(2)  # (B, h, K)
        losses.append(-torch.log(inside + EPS)[valid].mean())
    return torch.stack(losses).mean()


def binding_loss(probs: Sequence[torch.Tensor], positions: torch.Tensor, boxes: torch.Tensor, image_size: int,
                 valid: torch.Tensor) -> torch.Tensor:
    """Pixel-level binding: binary cross-entropy between the attention an object's words get at each pixel and the
    object's box (the pixel-level term of TokenCompose, with an object's two words counted together).

    :func:`grounding_loss` only says *where* an object's words attend. This term also asks the pixels inside an
    object's box to read mostly that object's words (and the pixels outside it to read them little), so that what a
    region draws comes from its own object rather than from tokens that summarise the whole prompt.

    Args:
        probs: per layer ``(B, heads, N, T)`` attention probabilities, N a square grid.
        positions: ``(B, 4)`` long token positions: the subject's two words, then the object's two words.
        boxes: ``(B, 4, 4)`` the pixel box of each of those tokens (the subject's box twice, then the object's).
        image_size: image side in pixels.
        valid: ``(B,)`` bool; samples whose prompt was dropped (empty prompt) carry no binding.

    Returns:
        A scalar (0 when no sample is valid).
    """
    if not bool(valid.any()):
        return probs[0].sum() * 0.0
    losses = []
    for p in probs:
        words, masks = _token_maps_and_boxes(p, positions, boxes, image_size)  # (B, h, N, 4), (B, 1, N, 4)
        share = words.unflatten(3, (2, 2)).sum(-1).clamp(EPS, 1 - EPS)  # (B, h, N, 4) -> (B, h, N, 2 objects)
        masks = masks[..., ::2]  # (B, 1, N, 4) -> (B, 1, N, 2): one box per object
        bce = -(masks * torch.log(share) + (1 - masks) * torch.log(1 - share))  # (B, h, N, 2)
        losses.append(bce.mean((1, 2, 3))[valid].mean())
    return torch.stack(losses).mean()


def object_boxes_loss_inputs(prompts: Sequence[str], subject_boxes: torch.Tensor, object_boxes: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token positions ``(P, 4)`` and their boxes ``(P, 4, 4)`` for prompts whose named subject/object have the
    given boxes (``(P, 4)`` each)."""
    positions = torch.tensor([[*s, *o] for s, o in map(object_token_positions, prompts)], dtype=torch.long)
    boxes = torch.stack([subject_boxes, subject_boxes, object_boxes, object_boxes], dim=1)  # (P, 4, 4)
    return positions, boxes


__all__ = ["GroundingCapture", "binding_loss", "box_masks", "grounding_loss", "object_boxes_loss_inputs",
           "object_token_positions"]
