"""Gradients inside ComfyUI: the one place that deals with its global inference mode.

ComfyUI executes every prompt under ``torch.inference_mode()``, and loader nodes create the model weights there, so
every parameter is an *inference tensor*. Autograd cannot save those for backward, so a gradient through the
denoiser fails. :func:`autograd_weights` swaps each inference parameter and buffer for a normal copy with the same
values (and class: ComfyUI-GGUF's quantised ``GGMLTensor`` stays one) for the duration of steering, and puts
inference copies back afterwards (same values again), one tensor at a time, so peak memory grows by one tensor only.
:func:`gradient_mode` leaves inference mode and tolerates the in-place updates FLUX blocks perform on tensors autograd
saved.

That tolerance (``torch.autograd.graph.allow_mutation_on_saved_tensors``) is a Python dispatch mode, and under a
dispatch mode torch re-wraps every op's result into the Python tensor subclass of its input. Weight formats that
live in such a subclass then break: ComfyUI-GGUF keeps its weights as ``GGMLTensor`` and turns results back into
plain tensors with ``torch.Tensor(result)``, which under the mode builds a ``GGMLTensor`` without its required
arguments (``TypeError: GGMLTensor.__init__() missing 2 required keyword-only arguments``). For such models
:class:`_PlainResults` runs each op of the steering pass without that re-wrapping, so every op returns what it
returns outside the mode.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

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


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` made in the current mode, of the same class and with the same Python attributes.

    ``detach().clone()`` does that for plain tensors and most subclasses; ComfyUI-GGUF's ``GGMLTensor`` returns itself
    from both (still an inference tensor, which autograd then cannot save), so such a tensor's data is copied as a
    plain tensor and given the subclass and attributes (quantisation type, logical shape, LoRA patches) back.
    """
    copy = tensor.detach().clone()
    if copy is not tensor and copy.is_inference() == torch.is_inference_mode_enabled():
        return copy
    copy = tensor.as_subclass(torch.Tensor).detach().clone().as_subclass(type(tensor))
    copy.__dict__.update(tensor.__dict__)
    return copy


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
                copy = _copy(current)
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


class _PlainResults(TorchDispatchMode):
    """Run every op as it runs outside a dispatch mode: results are not re-wrapped into Python tensor subclasses.

    Pushed inside ``allow_mutation_on_saved_tensors``, so that mode's own calls run under the same guard.
    """

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def _holds_tensor_subclasses(module: torch.nn.Module) -> bool:
    """Whether any weight of ``module`` is of a Python tensor subclass (other than ``Parameter``), e.g. GGUF's."""
    return any(type(t) not in (torch.Tensor, torch.nn.Parameter) for t in [*module.parameters(), *module.buffers()])


@contextlib.contextmanager
def gradient_mode(model: torch.nn.Module | None = None) -> Iterator[None]:
    """Leave ComfyUI's inference mode and enable autograd, tolerating in-place updates of saved tensors.

    When ``model`` holds weights of a Python tensor subclass (ComfyUI-GGUF's), its ops also run under
    :class:`_PlainResults`; other models do without that extra Python dispatch per op.
    """
    plain = _PlainResults() if model is not None and _holds_tensor_subclasses(model) else contextlib.nullcontext()
    with (torch.inference_mode(False), torch.enable_grad(), torch.autograd.graph.allow_mutation_on_saved_tensors(),
          plain):
        yield
