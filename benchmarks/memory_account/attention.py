"""How the account models the attention kernel: the math path as written, or a fused (flash-style) kernel.

ComfyUI computes attention with ``comfy.ops.scaled_dot_product_attention`` (PyTorch SDPA) on NVIDIA GPUs, and the
pack's steering forwards use the same function (``attention_pytorch``). What SDPA keeps depends on the kernel it picks:

* ``math``: SDPA's reference implementation (:func:`math_sdpa`, written out op by op). The forward materialises
  the (B, H, N, M) scores and probabilities; with gradients, autograd keeps the probabilities for the backward. The
  account checks itself against measured CPU memory with this model (the same ops on CPU and on meta).
* ``fused``: what CUDA runs for these models (flash attention, or the memory-efficient kernel when a mask is
  given): the scores live only in on-chip tiles. Modelled by :class:`FusedAttention`, an autograd function whose
  forward allocates the output (B, H, N, Dv) in the input dtype and an fp32 log-sum-exp (B, H, N), and keeps q, k,
  v, the output and the log-sum-exp for the backward (nothing else); whose backward allocates dq, dk, dv in the input
  dtype plus, while it runs, an fp32 dq accumulator (the size of q) and an fp32 row term (B, H, N) (flash-attention
  2's ``dq_accum`` and ``softmax_d``), and frees those two before returning. The kernel's tiles and workspaces are
  not counted. On real tensors the values are computed exactly (query blocks of at most :data:`BLOCK_ELEMENTS`
  scores, outside any dispatch mode, so a :class:`~.tracker.LiveBytes` sees the same allocations on a real device as
  on the meta device); on the meta device nothing is computed.

:func:`modelled_attention` installs one of them as ``comfy.ops.scaled_dot_product_attention`` (ComfyUI's attention)
and as ``torch.nn.functional.scaled_dot_product_attention`` (the relation classifier's ``nn.MultiheadAttention``)
for the duration of a ``with`` block (the ComfyUI module is passed in, so this file needs no ComfyUI).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes

logger = logging.getLogger(__name__)

ATTENTION_MODELS: tuple[str, ...] = ("math", "fused")

BLOCK_ELEMENTS = 1 << 20
"""Scores per query block when :class:`FusedAttention` computes real values (4 MiB in fp32). These blocks stand in
for the kernel's on-chip tiles: on CPU they are real memory the account does not count (a few blocks at a time)."""


class FusedAttention(torch.autograd.Function):
    """Scaled dot-product attention with the memory behaviour of a fused kernel (see the module docstring).

    q: (B, H, N, D), k: (B, H, M, D), v: (B, H, M, Dv), mask: None or broadcastable to (B, H, N, M) (bool: True
    attends; float: added to the scores). Returns (B, H, N, Dv) in q's dtype.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        b, h, n, _ = q.shape
        out = q.new_empty((b, h, n, v.shape[-1]))
        lse = q.new_empty((b, h, n), dtype=torch.float32)
        if q.device.type != "meta":
            with _disable_current_modes(), torch.no_grad():
                _forward_into(q, k, v, mask, out, lse)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.mask = mask
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dq_accum = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        row_term = torch.empty(lse.shape, dtype=torch.float32, device=q.device)
        if q.device.type != "meta":
            with _disable_current_modes(), torch.no_grad():
                _backward_into(q, k, v, ctx.mask, out, lse, grad_out, dq_accum, row_term, dk, dv)
                dq.copy_(dq_accum)
        del dq_accum, row_term
        return dq, dk, dv, None


def _block_rows(k: torch.Tensor) -> int:
    per_row = k.shape[0] * k.shape[1] * k.shape[2]
    return max(1, BLOCK_ELEMENTS // max(1, per_row))


def _scores(q_block: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, rows: slice) -> torch.Tensor:
    """fp32 scaled scores of a block of queries against all keys, mask applied: (B, H, n, M)."""
    scores = (q_block.float() @ k.float().transpose(-1, -2)) * q_block.shape[-1] ** -0.5
    if mask is not None:
        m = mask[..., rows, :] if mask.shape[-2] > 1 else mask
        scores = scores.masked_fill(~m, -math.inf) if m.dtype == torch.bool else scores + m.float()
    return scores


def _forward_into(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                  out: torch.Tensor, lse: torch.Tensor) -> None:
    step = _block_rows(k)
    for start in range(0, q.shape[2], step):
        rows = slice(start, start + step)
        scores = _scores(q[:, :, rows], k, mask, rows)
        block_lse = torch.logsumexp(scores, dim=-1)  # (B, H, n)
        lse[:, :, rows] = block_lse
        out[:, :, rows] = (torch.exp(scores - block_lse[..., None]) @ v.float()).to(out.dtype)


def _backward_into(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                   out: torch.Tensor, lse: torch.Tensor, grad_out: torch.Tensor, dq: torch.Tensor,
                   row_term: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor) -> None:
    scale = q.shape[-1] ** -0.5
    dk_acc = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
    dv_acc = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
    row_term.copy_((grad_out.float() * out.float()).sum(dim=-1))  # (B, H, N)
    step = _block_rows(k)
    for start in range(0, q.shape[2], step):
        rows = slice(start, start + step)
        probs = torch.exp(_scores(q[:, :, rows], k, mask, rows) - lse[:, :, rows, None])  # (B, H, n, M)
        g = grad_out[:, :, rows].float()
        dv_acc += probs.transpose(-1, -2) @ g
        d_scores = probs * (g @ v.float().transpose(-1, -2) - row_term[:, :, rows, None])
        dq[:, :, rows] = (d_scores @ k.float()) * scale
        dk_acc += (d_scores.transpose(-1, -2) @ q[:, :, rows].float()) * scale
    dk.copy_(dk_acc)
    dv.copy_(dv_acc)


def fused_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, **kwargs: Any) -> torch.Tensor:
    """``scaled_dot_product_attention`` through :class:`FusedAttention` (no dropout, not causal, default scale)."""
    if dropout_p or is_causal or kwargs.get("scale") is not None:
        raise ValueError("The fused attention model covers what ComfyUI calls: no dropout, not causal, default scale.")
    return FusedAttention.apply(q, k, v, attn_mask)


def math_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
              dropout_p: float = 0.0, is_causal: bool = False, **kwargs: Any) -> torch.Tensor:
    """``scaled_dot_product_attention`` as its math path computes it, op by op (the same ops on every device).

    PyTorch's ``_scaled_dot_product_attention_math``: q and k each scaled by d^-1/4, the (B, H, N, M) scores, the
    mask added, softmax, then the product with v. Written out so that the same ops run on CPU and on the meta device
    (SDPA's own kernel choice differs between devices).
    """
    if dropout_p or is_causal or kwargs.get("scale") is not None:
        raise ValueError("The math attention model covers what ComfyUI calls: no dropout, not causal, default scale.")
    root_scale = q.shape[-1] ** -0.25
    scores = (q * root_scale) @ (k.transpose(-2, -1) * root_scale)  # (B, H, N, M)
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool
                  else scores + attn_mask)
    return torch.softmax(scores, dim=-1) @ v


@contextlib.contextmanager
def modelled_attention(comfy_ops: ModuleType, model: str) -> Iterator[None]:
    """Make SDPA the ``model`` ("math" or "fused") inside the block: ComfyUI's and PyTorch's.

    ``comfy_ops.scaled_dot_product_attention`` is what ComfyUI's attention calls; ``torch.nn.functional``'s is what
    ``nn.MultiheadAttention`` calls (the relation classifier's transformer layers).
    """
    if model not in ATTENTION_MODELS:
        raise ValueError(f"attention model must be one of {ATTENTION_MODELS}; got {model!r}.")
    function = fused_sdpa if model == "fused" else math_sdpa
    originals = (comfy_ops.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention)
    comfy_ops.scaled_dot_product_attention = function
    torch.nn.functional.scaled_dot_product_attention = function
    try:
        yield
    finally:
        comfy_ops.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention = originals
