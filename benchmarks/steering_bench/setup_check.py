"""``--check-setup``: whether this Python can run the benchmark (torch and the device, ComfyUI, the pack).

A lent GPU machine has no network, so nothing can be installed there: this says at once, in one line each, what is
missing, instead of failing minutes into a run.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

import torch

from .comfy_modules import import_comfy

MISSING_HINT = (
    "ComfyUI's Python requirements are missing in {python}: install them with "
    "`{python} -m pip install -r $COMFYUI_PATH/requirements.txt` (the benchmark needs torch, torchsde, einops, "
    "safetensors, transformers, scipy, psutil, pyyaml, pillow, tqdm); on a machine without network, bring them as "
    "wheels (pip download on a machine with network, pip install --no-index there)."
)


def _comfy_version(comfy_path: str) -> str:
    version_file = Path(comfy_path).expanduser() / "comfyui_version.py"
    if not version_file.is_file():
        return "unknown version"
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text())
    return found.group(1) if found else "unknown version"


def check_setup(device: str, vram: str = "normal") -> int:
    """Print what this Python has and whether the benchmark can run on ``device``; returns the exit status."""
    print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__}, "
          f"CUDA build {torch.version.cuda}", flush=True)
    if device == "cuda":
        if not torch.cuda.is_available():
            print("SETUP MISSING: this torch sees no CUDA device (a CPU-only build, or no driver).", flush=True)
            return 1
        free, total = torch.cuda.mem_get_info()
        print(f"GPU {torch.cuda.get_device_name()}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free; "
              f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}", flush=True)
    comfy_path = os.environ.get("COMFYUI_PATH", "").strip()
    if not comfy_path or not (Path(comfy_path).expanduser() / "comfy").is_dir():
        print("SETUP MISSING: COMFYUI_PATH must name a ComfyUI checkout (a folder holding comfy/); "
              f"got {comfy_path!r}.", flush=True)
        return 1
    try:
        m = import_comfy(device, vram)
    except ModuleNotFoundError as error:
        print(f"SETUP MISSING: module {error.name!r} cannot be imported. "
              + MISSING_HINT.format(python=sys.executable), flush=True)
        return 1
    attention = getattr(m.attention, "attention_pytorch", None)
    if attention is None:
        print("SETUP MISSING: this ComfyUI has no attention_pytorch; the benchmark needs ComfyUI >= 0.3.60.",
              flush=True)
        return 1
    print(f"ComfyUI {_comfy_version(comfy_path)} at {comfy_path}: imports fine; VRAM state "
          f"{m.model_management.vram_state.name}; the pack imports fine", flush=True)
    return 0
