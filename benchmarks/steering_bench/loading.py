"""How the built model gets its weight dtype and its place on the device, the ways ComfyUI's loaders do it.

Weight dtype: ``UNETLoader``'s ``weight_dtype`` (e.g. ``fp8_e4m3fn``) reaches
``comfy.sd.load_diffusion_model_state_dict`` as ``model_options["dtype"]``; the weights are stored in that dtype,
and where the device does not compute in it, ``model_management.unet_manual_cast`` picks a compute dtype (bf16 for
FLUX on an H100, fp32 on a CPU) and the layers cast each weight at run time (``comfy.ops.manual_cast``).
:func:`configure_dtypes` does the same to the model config.

Placement (``--vram``):

* ``normal``: the model is built on the device and stays there, as a model that fits is after ``load_models_gpu``.
* ``lowvram`` / ``novram``: ComfyUI's ``--lowvram`` / ``--novram`` flag is set before ``comfy.model_management`` is
  imported (:func:`~.comfy_modules.import_comfy`); the model is moved to the CPU (ComfyUI's offload device) and loaded
  by ComfyUI's own sampling preparation, ``sampler_helpers.prepare_sampling`` (what ``CFGGuider`` calls before
  sampling: it estimates the sampling memory and calls ``load_models_gpu``). ComfyUI loads the weights that fit and
  marks the other layers for run-time casting: their weights stay on the CPU and are copied to the GPU at each use.
  Under ``--lowvram`` ComfyUI loads everything that fits in the free memory, i.e. the whole model on an 80 GB card;
  ``--card-gib N`` sets ComfyUI's reserve (what ``--reserve-vram`` sets, ``model_management.EXTRA_RESERVED_VRAM``) to
  the free memory less N GiB, so ComfyUI decides as on a card with N GiB free. On a CPU ComfyUI never loads
  partially (its VRAM state there is ``DISABLED``), so the benchmark calls ComfyUI's partial loader
  (``ModelPatcher.partially_load``) itself with half the weights, which exercises the same run-time cast path.
"""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any

import torch

logger = logging.getLogger(__name__)

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the weights are after loading.

    Attributes:
        vram: ComfyUI's VRAM flag ("normal", "lowvram" or "novram").
        weight_bytes: all the denoiser's weights (ComfyUI's ``model_size``).
        loaded_bytes: the weights ComfyUI put on the device (all of them unless partially loaded).
        partial: whether some layers stream their weights at run time (ComfyUI's ``model_lowvram``).
        card_gib: the card size ComfyUI was made to see (None: the real one).
    """

    vram: str
    weight_bytes: int
    loaded_bytes: int
    partial: bool
    card_gib: float | None = None

    def describe(self) -> str:
        """E.g. "lowvram (as a 12 GiB card): 6.10 of 11.90 GiB of weights on the device, the rest streamed"."""
        card = f" (as a {self.card_gib:g} GiB card)" if self.card_gib is not None else ""
        if not self.partial:
            return f"{self.vram}{card}: all {self.weight_bytes / GIB:.2f} GiB of weights on the device"
        return (f"{self.vram}{card}: {self.loaded_bytes / GIB:.2f} of {self.weight_bytes / GIB:.2f} GiB of weights on "
                "the device, the rest streamed at run time")


def configure_dtypes(m: SimpleNamespace, model_config: Any, weight_dtype: torch.dtype,
                     device: torch.device) -> torch.dtype:
    """Store the weights in ``weight_dtype`` and compute in ComfyUI's choice for it; returns the compute dtype."""
    manual_cast = m.model_management.unet_manual_cast(weight_dtype, device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(weight_dtype, manual_cast)
    return manual_cast if manual_cast is not None else weight_dtype


def place_weights(m: SimpleNamespace, base: Any, device: torch.device, vram: str, card_gib: float | None,
                  noise_shape: tuple[int, ...], conds: dict[str, Any]) -> tuple[Any, Placement]:
    """A ModelPatcher of ``base`` with its weights placed as ``vram`` says (see the module docstring).

    Args:
        m: the imported ComfyUI and pack modules.
        base: the built BaseModel, its weights on ``device``.
        device: the device the model runs on.
        vram: "normal", "lowvram" or "novram" (the flag :func:`~.comfy_modules.import_comfy` set).
        card_gib: the card size ComfyUI should see (lowvram/novram on CUDA only; None: the real card).
        noise_shape: the latent's shape, for ComfyUI's estimate of the sampling memory.
        conds: the conditioning as the sampler has it before processing (``{"positive": convert_cond(...)}``).
    """
    patcher_class = m.model_patcher.ModelPatcher
    if vram == "normal":
        patcher = patcher_class(base, load_device=device, offload_device=device)
        size = patcher.model_size()
        return patcher, Placement(vram, size, size, False)
    if device.type == "cpu":
        patcher = patcher_class(base, load_device=device, offload_device=device)
        size = patcher.model_size()
        budget = 0.1 if vram == "novram" else size // 2  # ComfyUI's own NO_VRAM budget is 0.1 bytes
        patcher.partially_load(device, budget)
        return patcher, Placement(vram, size, patcher.loaded_size(), bool(base.model_lowvram))
    offload = m.model_management.unet_offload_device()
    with torch.inference_mode():
        base.to(offload)
    torch.cuda.empty_cache()
    patcher = patcher_class(base, load_device=device, offload_device=offload)
    if card_gib is not None:
        free = m.model_management.get_free_memory(device)
        m.model_management.EXTRA_RESERVED_VRAM = max(0, int(free - card_gib * GIB))
        logger.info("ComfyUI's reserve set to %.2f GiB: it sees %.2f GiB free",
                    m.model_management.EXTRA_RESERVED_VRAM / GIB, card_gib)
    m.sampler_helpers.prepare_sampling(patcher, noise_shape, conds, patcher.model_options)
    placement = Placement(vram, patcher.model_size(), patcher.loaded_size(), bool(base.model_lowvram), card_gib)
    logger.info("weights: %s", placement.describe())
    return patcher, placement
