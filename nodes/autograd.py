"""Gradients inside ComfyUI: the one place that deals with its global inference mode.

ComfyUI executes every prompt under ``torch.inference_mode()``, and loader nodes create the model weights there, so
every parameter is an *inference tensor*. Autograd cannot save those for backward, so a gradient through the
denoiser fails. :func:`autograd_weights` swaps each inference parameter and buffer for a normal copy with the same
values for the duration of steering, and puts inference copies back afterwards (same values again), one tensor at
a time, so peak memory grows by one tensor only. :func:`gradient_mode` leaves inference mode and tolerates the
in-place updates FLUX blocks perform on tensors autograd saved.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


def _owner(module: torch.nn.Module, dotted: str) -> tuple[torch.nn.Module, str]:
    *path, leaf = dotted.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    return owner, leaf


@dataclass(frozen=True)
class _Slot:
    """Where a weight lives: a parameter or buffer ``leaf`` of a submodule, and the parameter's requires_grad."""

    name: str
    is_parameter: bool
    requires_grad: bool


def _inference_slots(module: torch.nn.Module) -> list[_Slot]:
    slots = [_Slot(n, True, p.requires_grad)
             for n, p in module.named_parameters(remove_duplicate=False) if p.is_inference()]
    slots += [_Slot(n, False, False) for n, b in module.named_buffers(remove_duplicate=False) if b.is_inference()]
    return slots


def _convert(module: torch.nn.Module, slots: list[_Slot], inference: bool) -> None:
    """Replace every slot's tensor by a copy made in (or outside) inference mode; tied weights stay tied.

    Inside the block parameters do not require grad (only the latent does); outside, their own flag comes back.
    """
    copies: dict[int, torch.Tensor] = {}
    with torch.inference_mode(inference):
        for slot in slots:
            owner, leaf = _owner(module, slot.name)
            table = owner._parameters if slot.is_parameter else owner._buffers
            current = table[leaf]
            assert current is not None
            replacement = copies.get(id(current))
            if replacement is None:
                copy = current.detach().clone()
                replacement = (torch.nn.Parameter(copy, requires_grad=inference and slot.requires_grad)
                               if slot.is_parameter else copy)
                copies[id(current)] = replacement
            table[leaf] = replacement
            del current


@contextlib.contextmanager
def autograd_weights(module: torch.nn.Module) -> Iterator[int]:
    """Make ``module``'s inference-tensor weights usable by autograd inside the block; restore them afterwards.

    Yields the number of tensors converted (0 when the weights were already normal tensors, e.g. outside ComfyUI).
    Values never change, so sampling before, during and after gives identical results.
    """
    slots = _inference_slots(module)
    if slots:
        logger.debug("Copying %d inference-mode weight tensors for autograd", len(slots))
        _convert(module, slots, inference=False)
    try:
        yield len(slots)
    finally:
        if slots:
            _convert(module, slots, inference=True)


@contextlib.contextmanager
def gradient_mode() -> Iterator[None]:
    """Leave ComfyUI's inference mode and enable autograd, tolerating in-place updates of saved tensors."""
    with torch.inference_mode(False), torch.enable_grad(), torch.autograd.graph.allow_mutation_on_saved_tensors():
        yield
