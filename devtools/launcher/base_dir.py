"""Step 3 of the launcher: ComfyUI's ``--base-directory``, wired to this repo without touching the checkout.

``custom_nodes/learn_to_steer`` links to this repo (an entry of that name that points elsewhere stops the run:
nothing of the user's is removed), the checkout's own custom node packs are not loaded, and its ``models/`` folders
stay visible through ``extra_model_paths.yaml``. The database goes to ``user/comfyui.db`` in the base directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from devtools import REPO_ROOT
from devtools.launcher.errors import LauncherError

PACK_LINK_NAME = "learn_to_steer"

# Model folders of the ComfyUI checkout made visible to the server that runs in our base directory.
CHECKOUT_MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("models/checkpoints",),
    "configs": ("models/configs",),
    "loras": ("models/loras",),
    "vae": ("models/vae",),
    "text_encoders": ("models/text_encoders", "models/clip"),
    "diffusion_models": ("models/diffusion_models", "models/unet"),
    "clip_vision": ("models/clip_vision",),
    "style_models": ("models/style_models",),
    "embeddings": ("models/embeddings",),
    "vae_approx": ("models/vae_approx",),
    "controlnet": ("models/controlnet", "models/t2i_adapter"),
    "upscale_models": ("models/upscale_models",),
    "l2s_classifiers": ("models/l2s_classifiers",),
    "l2s_toy_worlds": ("models/l2s_toy_worlds",),
}


def link_pack(custom_nodes: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Symlink ``custom_nodes/learn_to_steer`` to this repo (once).

    Raises:
        LauncherError: If an entry of that name exists and is not a link to this repo (it is left alone).
    """
    link = custom_nodes / PACK_LINK_NAME
    if link.is_symlink():
        if link.resolve() == repo_root.resolve():
            return link
        raise LauncherError(
            f"{link} links to {os.readlink(link)}, another copy of the pack, not this repo ({repo_root}): remove "
            "that link, or set COMFYUI_WORKSPACE to another folder"
        )
    if link.exists():
        raise LauncherError(
            f"{link} already holds a different pack of the same name (not a link to {repo_root}): move it away, or "
            "set COMFYUI_WORKSPACE to another folder"
        )
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link.symlink_to(repo_root.resolve(), target_is_directory=True)
    return link


def extra_model_paths_yaml(comfy_path: Path) -> str:
    """``extra_model_paths.yaml`` text that registers the model folders of the ComfyUI checkout."""
    lines = ["l2s_checkout_models:", f"  base_path: {json.dumps(str(comfy_path))}"]
    for key, folders in CHECKOUT_MODEL_FOLDERS.items():
        lines.append(f"  {key}: |")
        lines += [f"    {folder}" for folder in folders]
    return "\n".join(lines) + "\n"


def prepare_base_dir(base: Path, comfy_path: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Lay out ComfyUI's base directory: the pack link, the folders and ``extra_model_paths.yaml``."""
    for sub in ("custom_nodes", "input", "output", "user", "models"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link_pack(base / "custom_nodes", repo_root)
    (base / "extra_model_paths.yaml").write_text(extra_model_paths_yaml(comfy_path), encoding="utf-8")
    return base


def server_arguments(base: Path) -> list[str]:
    """``main.py`` arguments after ``--listen``/``--port``: CPU, our base directory, no browser, no API nodes."""
    return [
        "--cpu",
        "--base-directory",
        str(base),
        "--extra-model-paths-config",
        str(base / "extra_model_paths.yaml"),
        "--database-url",
        f"sqlite:///{base / 'user' / 'comfyui.db'}",
        "--disable-auto-launch",
        "--disable-api-nodes",
    ]
