"""ComfyUI imported as a library from ``COMFYUI_PATH`` (CPU mode), and the pack's modules beside it.

The account never needs a GPU: ComfyUI is put in CPU mode before ``comfy.model_management`` is imported, models are
built on the meta device (or on CPU for the checks), and the pack is imported as a package the way ComfyUI imports a
custom node pack (:mod:`devtools.pack_loader`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def import_comfy() -> SimpleNamespace:
    """Put ``COMFYUI_PATH`` on ``sys.path`` in CPU mode and import the ComfyUI and pack modules the account uses."""
    comfy_path = os.environ.get("COMFYUI_PATH", "").strip()
    if not comfy_path or not (Path(comfy_path).expanduser() / "comfy").is_dir():
        raise SystemExit(
            f"COMFYUI_PATH must name a ComfyUI checkout (a folder containing comfy/); got {comfy_path!r}. "
            "Example: COMFYUI_PATH=~/ComfyUI python benchmarks/memory_account.py"
        )
    comfy_path = str(Path(comfy_path).expanduser().resolve())
    if comfy_path not in sys.path:
        sys.path.insert(0, comfy_path)
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops
    import comfy.sampler_helpers
    import comfy.samplers
    import comfy.supported_models

    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))  # last, after COMFYUI_PATH, so that `nodes` stays ComfyUI's
    from devtools.pack_loader import PACK_NAME, register_pack

    register_pack()
    pack, core = f"{PACK_NAME}.nodes", f"{PACK_NAME}.l2s_core"
    return SimpleNamespace(
        model_management=comfy.model_management,
        model_patcher=comfy.model_patcher,
        ops=comfy.ops,
        sampler_helpers=comfy.sampler_helpers,
        samplers=comfy.samplers,
        supported_models=comfy.supported_models,
        steering=importlib.import_module(f"{pack}.steering"),
        autograd=importlib.import_module(f"{pack}.autograd"),
        memory=importlib.import_module(f"{pack}.memory"),
        spatial_prompt=importlib.import_module(f"{pack}.spatial_prompt"),
        steered_conditioning=importlib.import_module(f"{pack}.steered_conditioning"),
        attention=importlib.import_module(f"{core}.attention"),
        classifier=importlib.import_module(f"{core}.classifier"),
        checkpoint=importlib.import_module(f"{core}.checkpoint"),
        layout=importlib.import_module(f"{core}.layout"),
        prompts=importlib.import_module(f"{core}.prompts"),
        recompute=importlib.import_module(f"{core}.recompute"),
        relations=importlib.import_module(f"{core}.relations"),
        steps=importlib.import_module(f"{core}.steps"),
        tiny_specs=importlib.import_module(f"{PACK_NAME}.tests.comfy_test_pack.tiny_specs"),
    )
