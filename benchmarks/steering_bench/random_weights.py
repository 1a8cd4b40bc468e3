"""Random weights for a model built by direct construction (no checkpoint file)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def _drawable(tensor: torch.Tensor) -> Iterator[torch.Tensor]:
    """``tensor`` itself, or for a 1-byte (fp8) tensor a float32 stand-in copied (rounded) into it on exit."""
    if tensor.dtype.itemsize > 1:
        yield tensor
        return
    stand_in = torch.empty(tensor.shape, device=tensor.device)
    yield stand_in
    tensor.copy_(stand_in)


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int) -> int:
    """Fill parameters in place on their device: norms 1/0, other 1-D N(0, 0.02), weights N(0, 1/fan_in).

    The rule of tests/comfy_test_pack/tiny_models.py (O(1) activations, non-uniform attention), without its strided
    embedding trick, so full-size weights stay ordinary contiguous tensors. fp8 weights (no random generator in that
    dtype) are drawn in float32 and rounded to fp8, as an fp8 checkpoint is a rounded copy of a wider one.
    """
    count = 0
    modules = dict(module.named_modules())
    generators: dict[torch.device, torch.Generator] = {}
    for full_name, param in module.named_parameters():
        if param.ndim == 0:
            continue
        gen = generators.setdefault(param.device, torch.Generator(device=param.device).manual_seed(seed))
        owner = modules[full_name.rpartition(".")[0]]
        with _drawable(param) as target:
            if "Norm" in type(owner).__name__:
                target.fill_(1.0 if full_name.endswith(("weight", "scale")) else 0.0)
            elif param.ndim == 1:
                target.normal_(0.0, 0.02, generator=gen)
            else:
                target.normal_(0.0, param[0].numel() ** -0.5, generator=gen)
        count += param.numel()
    for name, buffer in module.named_buffers():
        if name.endswith("pos_embed"):  # MMDiT: allocated with torch.empty
            gen = generators.setdefault(buffer.device, torch.Generator(device=buffer.device).manual_seed(seed))
            with _drawable(buffer) as target:
                target.normal_(0.0, 0.02, generator=gen)
        elif buffer.is_floating_point() and not bool(torch.isfinite(buffer).all()):
            raise RuntimeError(f"Buffer {name!r} of the random model is not initialised (non-finite values).")
    return count
