"""Learn-to-Steer for ComfyUI: learned spatial-relation steering of text-to-image sampling.

ComfyUI imports this file as a package under a path-derived name. Everything that needs ComfyUI is imported lazily
inside :func:`comfy_entrypoint`, so this file stays importable without ComfyUI (pytest imports it while collecting).
``WEB_DIRECTORY`` names the folder of the pack's frontend extension, which ComfyUI serves under ``/extensions/``.
"""

from __future__ import annotations

from typing import Any

WEB_DIRECTORY = "./web"
"""The frontend extension (``web/learn_to_steer.js``): report panels on the nodes, widgets shown only where they act."""


async def comfy_entrypoint() -> Any:
    """Return the pack's ``ComfyExtension`` (the V3 registration hook ComfyUI calls)."""
    from .nodes.extension import LearnToSteerExtension

    return LearnToSteerExtension()
