"""Live tensor bytes while code runs, and their peak: a dispatch mode that sees every allocation on any device.

:class:`LiveBytes` is a ``TorchDispatchMode``: every aten op that runs while it is active (forward, autograd's
backward, checkpoint recomputation, factory functions) passes through it. Each storage an op's outputs hold that did
not exist before the op (not one of its inputs' storages, not already tracked) is a new allocation: its bytes are
added to the live total, and a ``weakref.finalize`` on the storage subtracts them when the last tensor using it dies
(a storage's Python object lives exactly as long as its C++ storage). Views share their storage and count once;
in-place ops allocate nothing; a tensor autograd keeps for the backward stays live until the backward frees it.
Composite ops (CompositeImplicitAutograd: ``linear``, ``matmul``, ``scaled_dot_product_attention``...), which reach
the mode whole when autograd is off, are run as their decomposition under the mode, so the temporaries they
allocate inside are counted in inference mode too.

The device does not matter: on the meta device (no memory, no values) the same ops allocate the same storages, so a
full-size model built there is accounted without any memory. What this cannot see: memory an op uses inside its
kernel and frees before returning (cuBLAS / cuDNN workspaces, a fused kernel's tiles), and the allocator's rounding
and fragmentation. Storages are rounded up to :attr:`LiveBytes.granularity` bytes (512: the CUDA caching allocator's
smallest block size).

Each allocation has a category (by default ``"activations"``; a ``classify`` callback may say otherwise, e.g. weight
copies made by a cast at run time); the live bytes per category at the peak tell what dominates it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

logger = logging.getLogger(__name__)

DEFAULT_CATEGORY = "activations"

Classifier = Callable[[Any, tuple[Any, ...], dict[str, Any]], str | None]
"""``(op, args, kwargs) -> category or None``: how to label the storages an op allocates (None: the default)."""


def storage_key(tensor: torch.Tensor) -> int:
    """The identity of a tensor's storage (its C++ storage object, shared by every view; meta tensors too)."""
    return int(tensor.untyped_storage()._cdata)


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages of ``tensors`` (e.g. a model's parameters and buffers; tied weights once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        seen[storage_key(tensor)] = int(tensor.untyped_storage().nbytes())
    return sum(seen.values())


@dataclass(frozen=True)
class Peak:
    """The highest live total and what it was made of.

    Attributes:
        total: live bytes at the peak.
        by_category: live bytes per category at the peak.
        op: the op whose outputs reached the peak (e.g. ``"aten.mm.default"``).
        phase: the phase label set with :meth:`LiveBytes.phase` when the peak was reached.
    """

    total: int = 0
    by_category: dict[str, int] = field(default_factory=dict)
    op: str = ""
    phase: str = ""


class LiveBytes(TorchDispatchMode):
    """Tracks the bytes of the storages allocated while active, and their peak.

    Use as a context manager; read :attr:`current` and :attr:`peak` inside or after. Storages that existed before
    (model weights, inputs) are never counted, even when an op returns a view of them. Counting stops on exit: what
    is still live then keeps its bytes in :attr:`current` (nothing is released after exit).

    Args:
        granularity: each storage's bytes are rounded up to a multiple of this.
        classify: labels the storages an op allocates (:data:`Classifier`); None labels all ``"activations"``.
    """

    def __init__(self, granularity: int = 512, classify: Classifier | None = None) -> None:
        super().__init__()
        self.granularity = max(1, int(granularity))
        self.classify = classify
        self.current = 0
        self.by_category: dict[str, int] = {}
        self.peak = Peak()
        self.allocations = 0
        self._live: dict[int, tuple[int, str, weakref.finalize]] = {}
        self._phase = ""
        self._closed = False
        self._depth = 0

    # -- reading -----------------------------------------------------------------------------------------------------

    @property
    def live_storages(self) -> int:
        """Number of tracked storages still alive."""
        return len(self._live)

    def phase(self, label: str) -> None:
        """Name what runs from now on (recorded with the peak: e.g. "forward", "backward")."""
        self._phase = label

    def reset_peak(self) -> None:
        """Start a new peak from the current live total (e.g. to measure one phase after another)."""
        self.peak = Peak(self.current, dict(self.by_category), "", self._phase)

    # -- the mode ----------------------------------------------------------------------------------------------------

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if _is_composite(func):
            # Without autograd (inference mode), composite ops reach the mode whole; run their decomposition under
            # the mode, so that the temporaries they allocate inside are seen as on a pass with gradients.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        flat_in, _ = tree_flatten((args, kwargs))
        inputs = {storage_key(t) for t in flat_in if isinstance(t, torch.Tensor) and _has_storage(t)}
        out = func(*args, **kwargs)
        flat_out, _ = tree_flatten(out)
        category: str | None = None
        for tensor in flat_out:
            if not isinstance(tensor, torch.Tensor) or not _has_storage(tensor):
                continue
            key = storage_key(tensor)
            if key in self._live:
                self._resized(key, tensor)
                continue
            if key in inputs:
                continue  # a view of (or an in-place result on) a storage that existed before the op
            if category is None:
                category = (self.classify(func, args, kwargs) if self.classify is not None else None) \
                    or DEFAULT_CATEGORY
            self._add(key, tensor, category, str(func))
        return out

    def __enter__(self) -> LiveBytes:
        self._depth += 1
        return super().__enter__()

    def __exit__(self, *exc: Any) -> Any:
        self._depth -= 1
        if self._depth == 0:  # the outermost exit (the mode re-enters itself to run decompositions)
            self._closed = True
            for _, _, finalizer in self._live.values():
                finalizer.detach()
        return super().__exit__(*exc)

    # -- bookkeeping -------------------------------------------------------------------------------------------------

    def _rounded(self, nbytes: int) -> int:
        return -(-nbytes // self.granularity) * self.granularity

    def _add(self, key: int, tensor: torch.Tensor, category: str, op: str) -> None:
        nbytes = self._rounded(int(tensor.untyped_storage().nbytes()))
        finalizer = weakref.finalize(tensor.untyped_storage(), self._release, key)
        self._live[key] = (nbytes, category, finalizer)
        self.allocations += 1
        self._grow(nbytes, category, op)

    def _resized(self, key: int, tensor: torch.Tensor) -> None:
        """An op grew a tracked storage in place (``resize_``, ``out=`` arguments)."""
        old, category, finalizer = self._live[key]
        new = self._rounded(int(tensor.untyped_storage().nbytes()))
        if new != old:
            self._live[key] = (new, category, finalizer)
            self._grow(new - old, category, "resize")

    def _grow(self, nbytes: int, category: str, op: str) -> None:
        self.current += nbytes
        self.by_category[category] = self.by_category.get(category, 0) + nbytes
        if self.current > self.peak.total:
            self.peak = Peak(self.current, {k: v for k, v in self.by_category.items() if v}, op, self._phase)

    def _release(self, key: int) -> None:
        if self._closed:
            return
        entry = self._live.pop(key, None)
        if entry is None:
            return
        nbytes, category, _ = entry
        self.current -= nbytes
        self.by_category[category] -= nbytes


def _is_composite(func: Any) -> bool:
    """Whether ``func`` is implemented by decomposition into other aten ops (CompositeImplicitAutograd)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), torch._C.DispatchKey.CompositeImplicitAutograd)


def _has_storage(tensor: torch.Tensor) -> bool:
    """Dense tensors have one storage; sparse or nested ones (not used by the models here) are skipped."""
    return tensor.layout == torch.strided
