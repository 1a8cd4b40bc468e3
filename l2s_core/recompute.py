"""Memory of a steering pass: per-block recomputation, and what a pass without it would keep for its backward.

A steering iteration runs the denoiser forward with gradients and then backward. Without help, autograd keeps every
intermediate tensor of every layer until the backward (and, wherever weights are cast at run time, e.g. fp8 storage
or weights streamed layer by layer, a compute-dtype copy of every weight it used). :func:`recomputed_blocks` wraps
chosen blocks (transformer blocks, UNet residual and transformer blocks) in non-reentrant activation checkpointing:
a block keeps only its inputs, and its inside is run again during the backward, one block at a time. Values and
gradients are unchanged; one extra forward per iteration is the price.

:func:`saved_tensor_bytes` measures what a pass without recomputation would keep (a forward whose saved tensors are
counted and dropped), which is how the ``auto`` memory mode decides (:func:`needs_recomputation`).

Side channels: a block may record things outside its return value (the pack's attention capture records maps). The
recomputation must run exactly the same operations as the original forward, so the caller passes ``replay``: called
at each block's forward, it returns a context manager factory that, during the backward, puts the side channel back
into the state it had then (and discards what it records). Dict arguments (ComfyUI's ``transformer_options``, which
callers mutate between blocks) are copied at the forward and the copies are what the recomputation sees.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

logger = logging.getLogger(__name__)

MEMORY_MODES: tuple[str, ...] = ("auto", "fast", "low")
"""``auto``: recompute when a pass without it would not fit in free memory; ``fast``: never; ``low``: always."""

HEADROOM = 0.8
"""Share of the free memory a pass without recomputation may use before ``auto`` turns recomputation on (the rest
is left for the forward's own transient tensors and the allocator's fragmentation)."""

ReplayFactory = Callable[[], Callable[[], contextlib.AbstractContextManager[Any]]]
"""Called at a block's forward; returns what to enter around that block's recomputation during the backward."""


def _snapshot(value: Any) -> Any:
    """A shallow copy of dict arguments (callers mutate them after the block), everything else as it is."""
    return dict(value) if isinstance(value, dict) else value


class _RebindingUpdates(torch.Tensor):
    """A tensor whose augmented assignments (``x += y``) make a new tensor instead of updating ``x`` in place.

    Only the backward's recomputation of a block runs on these (its arguments are wrapped; every tensor computed
    from them is one too). A recomputation keeps, for the backward, the very tensors its operations save, so an
    in-place update of one of them afterwards (FLUX's double-stream block normalises its text stream, then does
    ``txt += ...``, then normalises it again) would corrupt what the backward reads. ``x += y`` rebinds ``x`` to
    the new value in Python, so the block computes the same values without touching what was saved. Explicit
    in-place methods (``x.add_(y)``, whose result callers may ignore) stay in place.

    Other tensor subclasses may take part in the same operations (ComfyUI-GGUF keeps weights as ``GGMLTensor``):
    torch's default handler refuses an operation whose tensors are of subclasses unrelated to each other (each
    returns NotImplemented), so this class runs such an operation on their data as if they were plain tensors, and
    its result is one of these, like any other result computed from the recomputation's arguments.
    """

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        return super().__torch_function__(func, (cls,), args, kwargs)

    def __iadd__(self, other: Any) -> torch.Tensor:
        return self + other

    def __isub__(self, other: Any) -> torch.Tensor:
        return self - other

    def __imul__(self, other: Any) -> torch.Tensor:
        return self * other

    def __itruediv__(self, other: Any) -> torch.Tensor:
        return self / other


def _rebinding(value: Any) -> Any:
    """``value`` viewed as :class:`_RebindingUpdates` where it is a floating-point tensor."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.as_subclass(_RebindingUpdates)
    return value


def _plain(value: Any) -> Any:
    """Outputs of a recomputation back as plain tensors (tuples and lists of them too)."""
    if isinstance(value, _RebindingUpdates):
        return value.as_subclass(torch.Tensor)
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value


class _Pristine:
    """Copies of a block's keyword tensor arguments as they were before its forward, kept for those it changed in place.

    Some blocks update an input in place (FLUX's double-stream block does ``txt += ...`` on its ``txt`` keyword
    argument), and callers may rely on seeing that (the forward runs on their own tensors, as without
    recomputation). The recomputation must start from the values before the update, so a copy is taken before the
    forward and kept only if the tensor's version changed. Which arguments a block updates is a property of its
    code: ``only`` limits the copies to those, once known.

    Positional tensors need no copy: the checkpoint saves them for the backward like any saved tensor, and under
    ``torch.autograd.graph.allow_mutation_on_saved_tensors`` (which a block updating a saved tensor needs anyway,
    with or without recomputation) the saved value is the one from before the update.
    """

    def __init__(self, kwargs: dict[str, Any], only: set[str] | None = None) -> None:
        # key -> (the caller's tensor, its version before the forward, a copy of its value and requires_grad then)
        self.copies: dict[str, tuple[torch.Tensor, int, torch.Tensor]] = {}
        for key, value in kwargs.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and (only is None or key in only):
                self.copies[key] = (value, value._version, value.detach().clone().requires_grad_(value.requires_grad))

    def keep_changed(self) -> None:
        """Drop the copies of the tensors the forward did not change."""
        self.copies = {k: c for k, c in self.copies.items() if c[0]._version != c[1]}

    def restored(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments with each changed tensor replaced by a fresh copy of its value before the forward."""
        def pick(key: str, value: Any) -> Any:
            kept = self.copies.get(key)
            if kept is None:
                return value
            # an update in place can make a tensor require grad (a constant stream plus a term that depends on
            # the latent); the recomputation must start from the tensor as it was, constant, as the forward did
            copy = kept[2]
            return copy.detach().clone().requires_grad_(copy.requires_grad)

        return {k: pick(k, v) for k, v in kwargs.items()}


def _recomputing(forward: Callable[..., Any], replay: ReplayFactory | None) -> Callable[..., Any]:
    """``forward`` run under non-reentrant checkpointing whenever gradients are being recorded."""
    updated: set[str] | None = None  # the keyword arguments the block updates in place (known after its first forward)

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        restore = replay() if replay is not None else contextlib.nullcontext
        frozen_args = tuple(_snapshot(a) for a in args)
        frozen_kwargs = {k: _snapshot(v) for k, v in kwargs.items()}
        pristine = _Pristine(kwargs, updated)
        wants_grad = tuple(isinstance(a, torch.Tensor) and a.requires_grad for a in args)  # before any update
        calls = 0

        def body(*a: Any, **k: Any) -> Any:
            nonlocal calls, updated
            calls += 1
            if calls == 1:  # the forward itself, on the caller's own (mutable) arguments
                out = forward(*a, **k)
                pristine.keep_changed()
                if updated is None:
                    updated = set(pristine.copies)
                return out
            # the backward's recomputation: the block's arguments and side channels as they were at the forward
            # positional tensors: what the checkpoint saved (their values before any update in place)
            again_args = tuple(x.detach().requires_grad_(grad) if isinstance(x, torch.Tensor) and x.is_floating_point()
                               else _snapshot(frozen) for x, frozen, grad in zip(a, frozen_args, wants_grad, strict=True))
            again_kwargs = pristine.restored({n: _snapshot(v) for n, v in frozen_kwargs.items()})
            with restore():
                out = forward(*(_rebinding(a) for a in again_args),
                              **{n: _rebinding(v) for n, v in again_kwargs.items()})
            return _plain(out)

        return checkpoint(body, *args, use_reentrant=False, **kwargs)

    return run


@contextlib.contextmanager
def recomputed_blocks(blocks: Sequence[torch.nn.Module], replay: ReplayFactory | None = None) -> Iterator[int]:
    """Recompute each of ``blocks`` in the backward instead of keeping its inside; undone on exit.

    The blocks' ``forward`` is replaced on the instances for the duration of the block (the classes and any other
    instance are untouched) and put back exactly as it was, also when the body raises. Yields the number of blocks
    wrapped. Blocks nested in another wrapped block are fine (the inner checkpoint runs inside the outer's
    recomputation) but wasteful; pass the outermost blocks.
    """
    patched: list[tuple[torch.nn.Module, Any]] = []
    try:
        for block in blocks:
            own = block.__dict__.get("forward")  # an instance-level forward another pack installed, or None
            patched.append((block, own))
            block.forward = _recomputing(block.forward, replay)
        yield len(patched)
    finally:
        for block, own in reversed(patched):
            if own is None:
                del block.__dict__["forward"]
            else:
                block.forward = own


def saved_tensor_bytes(forward: Callable[[], Any], exclude: Sequence[torch.Tensor] = ()) -> int:
    """Bytes autograd would keep for the backward of ``forward()`` (run once, its saved tensors dropped as counted).

    Each storage counts once (views of one tensor share it); storages of ``exclude`` (the model's own weights, which
    exist anyway) do not count. Works on the meta device too (a model built there is accounted without memory). The result of ``forward`` is
    discarded; call it with gradients enabled and an input that requires grad, as the real pass would run.
    """
    skip = {_storage_key(t) for t in exclude}
    seen: dict[int, weakref.ref[torch.Tensor]] = {}
    total = 0

    def pack(tensor: torch.Tensor) -> None:
        nonlocal total
        key = _storage_key(tensor)
        earlier = seen.get(key)
        # An address is the same storage only while the tensor first seen there lives: dropped tensors free their
        # memory, and the allocator hands the address to the next one.
        if key in skip or (earlier is not None and earlier() is not None):
            return None
        seen[key] = weakref.ref(tensor)
        total += _storage_bytes(tensor)
        return None

    def unpack(_: None) -> torch.Tensor:
        raise RuntimeError("saved_tensor_bytes: the counted pass has no backward.")

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        forward()
    return total


def _storage_key(tensor: torch.Tensor) -> int:
    """The identity of the tensor's storage (its C++ storage object, shared by every view; meta tensors too)."""
    return int(tensor.untyped_storage()._cdata)


def _storage_bytes(tensor: torch.Tensor) -> int:
    return int(tensor.untyped_storage().nbytes())


def needs_recomputation(mode: str, kept_bytes: int | None, free_bytes: int | None) -> bool:
    """Whether to recompute: ``fast`` never, ``low`` always, ``auto`` when ``kept_bytes`` exceeds
    :data:`HEADROOM` of ``free_bytes`` (unknown sizes: recompute, the safe choice)."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}; got {mode!r}.")
    if mode != "auto":
        return mode == "low"
    if kept_bytes is None or free_bytes is None:
        return True
    return kept_bytes > HEADROOM * free_bytes
