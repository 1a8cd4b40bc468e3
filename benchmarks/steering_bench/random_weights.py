"""Random weights for a model built by direct construction (no checkpoint file)."""

from __future__ import annotations

import torch


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int) -> int:
    """Fill parameters in place on their device: norms 1/0, other 1-D N(0, 0.02), weights N(0, 1/fan_in).

    The rule of tests/comfy_test_pack/tiny_models.py (O(1) activations, non-uniform attention), without its strided
    embedding trick, so full-size weights stay ordinary contiguous tensors.
    """
    count = 0
    modules = dict(module.named_modules())
    generators: dict[torch.device, torch.Generator] = {}
    for full_name, param in module.named_parameters():
        if param.ndim == 0:
            continue
        gen = generators.setdefault(param.device, torch.Generator(device=param.device).manual_seed(seed))
        owner = modules[full_name.rpartition(".")[0]]
        if "Norm" in type(owner).__name__:
            param.fill_(1.0 if full_name.endswith(("weight", "scale")) else 0.0)
        elif param.ndim == 1:
            param.normal_(0.0, 0.02, generator=gen)
        else:
            param.normal_(0.0, param[0].numel() ** -0.5, generator=gen)
        count += param.numel()
    for name, buffer in module.named_buffers():
        if name.endswith("pos_embed"):  # MMDiT: allocated with torch.empty
            gen = generators.setdefault(buffer.device, torch.Generator(device=buffer.device).manual_seed(seed))
            buffer.normal_(0.0, 0.02, generator=gen)
        elif buffer.is_floating_point() and not bool(torch.isfinite(buffer).all()):
            raise RuntimeError(f"Buffer {name!r} of the random model is not initialised (non-finite values).")
    return count
