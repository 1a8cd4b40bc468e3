"""What meta tensors cannot answer, answered for the account: values (``.item()``) and addresses (``data_ptr()``).

A meta tensor has a shape and a storage but no values and no memory. Two things the accounted code asks of tensors
need an answer there:

* **Values.** ``Tensor.item()`` (aten ``_local_scalar_dense``) raises on meta. The code the account runs asks only in
  input checks that raise on a problem (the relation classifier's step-index range check,
  ``bool(((idx < 0) | (idx >= n)).any())``); zero / False means "no problem found", which is what real values give
  there. :class:`ZeroMetaScalars` answers every such question on a meta tensor with zero and counts them. Memory does
  not depend on the answers (no branch the account runs allocates differently on them).
* **Addresses.** ``torch.autograd.graph.allow_mutation_on_saved_tensors`` (the pack's ``gradient_mode``: FLUX blocks
  update tensors autograd saved) identifies saved tensors by ``(id, data_ptr, version)`` and aliases by
  ``(data_ptr, version)``. Every meta tensor's ``data_ptr()`` is 0, so all of them would alias one another (every
  in-place op would clone every saved tensor) and a recycled ``id`` would hand the backward another tensor.
  :func:`meta_addresses` gives meta tensors the address a real device would: their storage's identity plus their
  byte offset in it.

:func:`meta_answers` enters both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
import torch.autograd.graph as autograd_graph
from torch.utils._python_dispatch import TorchDispatchMode

logger = logging.getLogger(__name__)


class ZeroMetaScalars(TorchDispatchMode):
    """``_local_scalar_dense`` of a meta tensor returns 0 (False, 0.0) instead of raising; :attr:`answered` counts."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default and args[0].device.type == "meta":
            self.answered += 1
            dtype = args[0].dtype
            if dtype == torch.bool:
                return False
            return 0.0 if dtype.is_floating_point or dtype.is_complex else 0
        return func(*args, **(kwargs or {}))


def _address(tensor: torch.Tensor) -> Any:
    """``data_ptr()`` on a real device; on meta, (storage identity, byte offset): the same aliasing relation."""
    if tensor.device.type != "meta":
        return tensor.data_ptr()
    return (int(tensor.untyped_storage()._cdata), tensor.storage_offset() * tensor.element_size())


@contextlib.contextmanager
def meta_addresses() -> Iterator[None]:
    """Make ``allow_mutation_on_saved_tensors`` tell meta tensors apart (see the module docstring)."""
    names = ("_get_tid", "_get_sid")
    if not all(hasattr(autograd_graph, n) for n in names):
        raise RuntimeError("torch.autograd.graph has no _get_tid/_get_sid: this torch identifies saved tensors "
                           "differently; the account's meta-device support must be updated for it.")
    originals = {n: getattr(autograd_graph, n) for n in names}
    autograd_graph._get_tid = lambda t: (id(t), _address(t), t._version)  # type: ignore[attr-defined]
    autograd_graph._get_sid = lambda t: (_address(t), t._version)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(autograd_graph, name, original)


@contextlib.contextmanager
def meta_answers() -> Iterator[ZeroMetaScalars]:
    """Both answers inside the block; yields the scalar answerer (its ``answered`` count)."""
    scalars = ZeroMetaScalars()
    with meta_addresses(), scalars:
        yield scalars
