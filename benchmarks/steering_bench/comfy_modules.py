"""ComfyUI imported as a library from ``COMFYUI_PATH``, and the pack's modules imported as a package beside it."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parents[2]


VRAM_MODES = ("normal", "lowvram", "novram")
"""ComfyUI's VRAM state: its default, or what its ``--lowvram`` / ``--novram`` flags select."""


def import_comfy(device: str, vram: str = "normal") -> SimpleNamespace:
    """Put COMFYUI_PATH on sys.path, select the device, and import the ComfyUI and pack modules the benchmark uses.

    ``vram`` sets ComfyUI's ``--lowvram`` / ``--novram`` flag in its parsed arguments before ``comfy.model_management``
    is imported, which is when ComfyUI reads them (its VRAM state is fixed at import).
    """
    if vram not in VRAM_MODES:
        raise ValueError(f"vram must be one of {VRAM_MODES}; got {vram!r}.")
    comfy_path = os.environ.get("COMFYUI_PATH", "").strip()
    if not comfy_path or not (Path(comfy_path) / "comfy").is_dir():
        raise SystemExit(
            f"COMFYUI_PATH must name a ComfyUI checkout (a folder containing comfy/); got {comfy_path!r}. "
            "Example: COMFYUI_PATH=~/ComfyUI python benchmarks/steering_cost.py ..."
        )
    comfy_path = str(Path(comfy_path).expanduser().resolve())
    if comfy_path not in sys.path:
        sys.path.insert(0, comfy_path)
    import comfy.cli_args

    if device == "cpu":
        comfy.cli_args.args.cpu = True
    comfy.cli_args.args.lowvram = vram == "lowvram"
    comfy.cli_args.args.novram = vram == "novram"
    import comfy.ldm.modules.attention
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops
    import comfy.sampler_helpers
    import comfy.samplers
    import comfy.supported_models

    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))  # last, after COMFYUI_PATH, so that `nodes` stays ComfyUI's
    from devtools.pack_loader import PACK_NAME, register_pack  # the one pack loader: the repo root as a package

    register_pack()
    pack = f"{PACK_NAME}.nodes"
    core = f"{PACK_NAME}.l2s_core"
    return SimpleNamespace(
        attention=comfy.ldm.modules.attention,
        model_management=comfy.model_management,
        model_patcher=comfy.model_patcher,
        ops=comfy.ops,
        sampler_helpers=comfy.sampler_helpers,
        samplers=comfy.samplers,
        supported_models=comfy.supported_models,
        steering=importlib.import_module(f"{pack}.steering"),
        capture=importlib.import_module(f"{pack}.capture"),
        autograd=importlib.import_module(f"{pack}.autograd"),
        spatial_prompt=importlib.import_module(f"{pack}.spatial_prompt"),
        steered_conditioning=importlib.import_module(f"{pack}.steered_conditioning"),
        classifier=importlib.import_module(f"{core}.classifier"),
        checkpoint=importlib.import_module(f"{core}.checkpoint"),
        layout=importlib.import_module(f"{core}.layout"),
        prompts=importlib.import_module(f"{core}.prompts"),
        relations=importlib.import_module(f"{core}.relations"),
        steps=importlib.import_module(f"{core}.steps"),
        tiny_specs=importlib.import_module(f"{PACK_NAME}.tests.comfy_test_pack.tiny_specs"),
    )
