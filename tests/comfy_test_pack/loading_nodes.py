"""Test-pack nodes for the model-loading tests: tiny diffusion-model files, forced partial loading, a weight probe.

* ``L2STest_WriteTinyDiffusionModel`` writes a tiny family's denoiser into ComfyUI's ``diffusion_models`` folder as
  ``.safetensors`` or ``.gguf`` (:mod:`.tiny_files`), so a later prompt can load it with UNETLoader or UnetLoaderGGUF.
* ``L2STest_PartialLoad`` gives back a clone of a MODEL that ComfyUI loads partially: of its weights, only
  ``loaded_share`` of the bytes are loaded "regularly", the other modules run through ComfyUI's low-VRAM path
  (``comfy_cast_weights``: weights cast per forward; ``weight_function``: patches such as a LoRA applied per forward,
  ``LowVramPatch``). On a GPU ComfyUI does this by itself when the model does not fit; on a CPU it never does
  (``load_models_gpu`` treats a CPU load device as "no VRAM needed" and loads fully), so the test caps the budget that
  ``ModelPatcher.partially_load`` receives. Share 0 is what ``--novram`` asks for on a GPU (a budget of 0.1 bytes).
* ``L2STest_Probe`` gives back a clone of a MODEL with an APPLY_MODEL wrapper that logs, at every denoiser call, one
  line ``L2STEST-PROBE {json}`` saying how the weights are held at that moment: whether gradients are on (a steering
  forward), how many of ComfyUI's weight-holding ops layers cast their weights at run time or carry weight
  functions, the weights' dtypes and tensor classes, and how many are inference tensors. The tag makes each probe
  (and so the prompt's cache key) distinct.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import comfy.patcher_extension
import folder_paths
import torch
from comfy_api.latest import io, ui

from .tiny_files import denoiser_state_dict, write_gguf, write_safetensors
from .tiny_specs import FAMILIES

logger = logging.getLogger(__name__)

PROBE_PREFIX = "L2STEST-PROBE "
PROBE_KEY = "l2s_test_probe"
FORMATS = ("safetensors", "gguf")


class WriteTinyDiffusionModel(io.ComfyNode):
    """Write a tiny denoiser as a diffusion-model file for UNETLoader (.safetensors) or UnetLoaderGGUF (.gguf)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Declare the node: family, seed and file format in, the file name out (and shown as text)."""
        return io.Schema(
            node_id="L2STest_WriteTinyDiffusionModel",
            display_name="L2S Test: Write Tiny Diffusion Model",
            category="testing/l2s",
            description="Writes a tiny random denoiser into the diffusion-model folder, for integration tests only.",
            inputs=[
                io.Combo.Input("family", options=list(FAMILIES), default=FAMILIES[0]),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False),
                io.Combo.Input("format", options=list(FORMATS), default=FORMATS[0]),
            ],
            outputs=[io.String.Output(display_name="unet_name")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, family: str, seed: int, format: str) -> io.NodeOutput:
        """Write ``l2s_tiny_<family>_<seed>.<format>`` (same family and seed: same weights); show name, path, types."""
        folder = Path(folder_paths.get_folder_paths("diffusion_models")[0])
        folder.mkdir(parents=True, exist_ok=True)
        name = f"l2s_tiny_{family}_{seed}.{format}"
        tensors = denoiser_state_dict(family, seed)
        types: dict[str, int] = {}
        if format == "gguf":
            types = write_gguf(folder / name, tensors, family)
        else:
            write_safetensors(folder / name, tensors)
        logger.info("L2S test pack: wrote %s %s", folder / name, types)
        described = json.dumps({"name": name, "path": str(folder / name), "types": types})
        return io.NodeOutput(name, ui=ui.PreviewText(described))


def partially_loading(model: Any, loaded_share: float) -> Any:
    """A clone of ``model`` whose loads keep at most ``loaded_share`` of its weight bytes loaded regularly.

    The clone's class derives from the model's own patcher class (so GGUF's or any pack's patcher keeps working) and
    caps the memory ComfyUI's ``partially_load`` may use; ``ModelPatcher.load`` then puts the rest of the modules on
    the low-VRAM path exactly as it does on a GPU that is short of memory. Clones of the clone keep the class, except
    where a patcher's ``clone`` sets its own class (ComfyUI-GGUF's does): put this node after any cloning node.
    """
    base: type = type(model)

    def partially_load(self: Any, device_to: Any, extra_memory: float = 0, force_patch_weights: bool = False) -> Any:
        budget = self.model_size() * loaded_share
        room = max(budget - self.model.model_loaded_weight_memory, 0.1)  # 0.1 bytes: ComfyUI's own NO_VRAM budget
        return base.partially_load(self, device_to, min(extra_memory, room), force_patch_weights=force_patch_weights)

    clone = model.clone()
    clone.__class__ = type(f"PartiallyLoaded{base.__name__}", (base,), {"partially_load": partially_load})
    return clone


class PartialLoad(io.ComfyNode):
    """Make ComfyUI load a MODEL partially (its low-VRAM path), also on a CPU."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Declare the node: MODEL and the share of weight bytes loaded regularly in, MODEL out."""
        return io.Schema(
            node_id="L2STest_PartialLoad",
            display_name="L2S Test: Partial Load",
            category="testing/l2s",
            description="A clone of the model that ComfyUI loads partially (low-VRAM path), for integration tests.",
            inputs=[
                io.Model.Input("model"),
                io.Float.Input("loaded_share", default=0.5, min=0.0, max=1.0, step=0.01),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model: Any, loaded_share: float) -> io.NodeOutput:
        """Return the partially loading clone."""
        return io.NodeOutput(partially_loading(model, loaded_share))


def weight_state(base_model: Any) -> dict[str, Any]:
    """How the denoiser's weights are held right now (JSON-friendly)."""
    diffusion_model = base_model.diffusion_model
    capable = [m for m in diffusion_model.modules()  # ComfyUI's ops layers that hold weights
               if hasattr(m, "comfy_cast_weights") and next(m.parameters(recurse=False), None) is not None]
    weights = [*diffusion_model.parameters(), *diffusion_model.buffers()]
    return {
        "grad": torch.is_grad_enabled(),
        "lowvram": bool(getattr(base_model, "model_lowvram", False)),
        "cast_capable": len(capable),
        "cast": sum(1 for m in capable if m.comfy_cast_weights),
        "weight_functions": sum(1 for m in capable if len(getattr(m, "weight_function", [])) > 0),
        "weight_dtypes": sorted({str(w.dtype).removeprefix("torch.") for w in weights}),
        "tensor_classes": sorted({type(w).__name__ for w in weights}),
        "inference_weights": sum(1 for w in weights if w.is_inference()),
        "weights": len(weights),
    }


def probe_wrapper(tag: str) -> Callable[..., Any]:
    """An APPLY_MODEL wrapper that logs :func:`weight_state` (with ``tag``) and then runs the model."""

    def wrapper(executor: Any, *args: Any, **kwargs: Any) -> Any:
        logger.info("%s%s", PROBE_PREFIX, json.dumps({"tag": tag, **weight_state(executor.class_obj)}))
        return executor(*args, **kwargs)

    return wrapper


class Probe(io.ComfyNode):
    """Log how the model's weights are held at every denoiser call (for assertions on the server log)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Declare the node: MODEL and a tag in, MODEL out."""
        return io.Schema(
            node_id="L2STest_Probe",
            display_name="L2S Test: Weight Probe",
            category="testing/l2s",
            description="A clone of the model that logs how its weights are held at every call, for tests.",
            inputs=[io.Model.Input("model"), io.String.Input("tag", default="probe")],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model: Any, tag: str) -> io.NodeOutput:
        """Return the probing clone."""
        clone = model.clone()
        clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, PROBE_KEY, probe_wrapper(tag))
        return io.NodeOutput(clone)


LOADING_NODES: tuple[type[io.ComfyNode], ...] = (WriteTinyDiffusionModel, PartialLoad, Probe)
