"""Memory of the steering forwards inside ComfyUI: which blocks are recomputed, and what ``auto`` decides.

The core (:mod:`l2s_core.recompute`) does the recomputation and the counting; this module knows ComfyUI's models:
the blocks worth recomputing are the UNet's residual blocks and transformer layers (SD1.x, SD2.x, SDXL), FLUX's
double- and single-stream blocks and SD3's joint blocks, each called as a module by its parent. ``auto`` compares what a pass
without recomputation would keep for its backward (counted once per run on the real model and latent) with the free
memory ComfyUI reports for the device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import torch

from ..l2s_core.recompute import needs_recomputation, saved_tensor_bytes

logger = logging.getLogger(__name__)

RECOMPUTED_BLOCKS = frozenset({"ResBlock", "SpatialTransformer", "BasicTransformerBlock", "DoubleStreamBlock",
                               "SingleStreamBlock", "JointBlock"})
"""Class names (or base class names) of the blocks whose inside is recomputed in the backward."""

LAYER_STACKS = frozenset({"SpatialTransformer"})
"""Blocks recomputed whole when they hold one transformer layer, and layer by layer when they hold several: SDXL
stacks up to 10 layers in one, and recomputing them as one unit keeps all their activations (and cast weights) alive
together during its backward (SDXL 1024 px fp8: 1.42x the plain peak instead of 1.18x), while for a single layer
the whole block also recomputes its projections in and out (SD1.5 512 px fp8: 1.20x instead of 1.30x)."""

GIB = 1024 ** 3


def recomputable_blocks(diffusion_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost :data:`RECOMPUTED_BLOCKS` of a ComfyUI diffusion model, in module order; a
    :data:`LAYER_STACKS` block of several layers gives its layers instead."""
    found: list[torch.nn.Module] = []

    def visit(module: torch.nn.Module) -> None:
        for child in module.children():
            lineage = {cls.__name__ for cls in type(child).__mro__}
            layers = getattr(child, "transformer_blocks", ())
            if lineage & LAYER_STACKS and len(layers) > 1:
                visit(child)  # layer by layer
            elif lineage & RECOMPUTED_BLOCKS:
                found.append(child)
            else:
                visit(child)

    visit(diffusion_model)
    return found


@dataclass(frozen=True)
class MemoryChoice:
    """What the ``memory`` input resolved to for a run.

    Attributes:
        mode: the ``memory`` input ("auto", "fast" or "low").
        recompute: whether the steering forwards recompute each block in the backward.
        kept_bytes: what a pass without recomputation keeps for its backward (counted; None when not counted).
        free_bytes: the device's free memory as ComfyUI reports it (None when not asked).
    """

    mode: str
    recompute: bool
    kept_bytes: int | None = None
    free_bytes: int | None = None

    def describe(self) -> str:
        """E.g. "memory auto: recomputing blocks (a pass without would keep 23.1 GiB; 14.2 GiB free)"."""
        what = "recomputing blocks" if self.recompute else "keeping activations (no recomputation)"
        if self.kept_bytes is None or self.free_bytes is None:
            return f"memory {self.mode}: {what}"
        return (f"memory {self.mode}: {what} (a pass without recomputation keeps {self.kept_bytes / GIB:.2f} GiB; "
                f"{self.free_bytes / GIB:.2f} GiB free)")


def choose_memory(mode: str, diffusion_model: torch.nn.Module, device: torch.device,
                  steering_pass: Callable[[], Any]) -> MemoryChoice:
    """Resolve ``mode`` for a run; ``auto`` runs ``steering_pass`` once, counting what it would keep.

    Args:
        mode: "auto", "fast" or "low".
        diffusion_model: the model whose weights do not count (they exist anyway).
        device: where the pass runs.
        steering_pass: one steering forward with gradients (its saved tensors are counted and dropped).
    """
    if mode != "auto":
        return MemoryChoice(mode, needs_recomputation(mode, None, None))
    weights = [*diffusion_model.parameters(), *diffusion_model.buffers()]
    kept = saved_tensor_bytes(steering_pass, weights)
    free = int(comfy.model_management.get_free_memory(device))
    return MemoryChoice(mode, needs_recomputation(mode, kept, free), kept, free)
