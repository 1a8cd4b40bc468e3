"""Learn-to-Steer for ComfyUI: learned spatial-relation steering of text-to-image sampling.

ComfyUI imports this file as a package under a path-derived name. Everything that needs ComfyUI is imported lazily
inside :func:`comfy_entrypoint`, so this file stays importable without ComfyUI (pytest imports it while collecting).
"""

from __future__ import annotations

from typing import Any


async def comfy_entrypoint() -> Any:
    """Return the pack's ``ComfyExtension`` (the V3 registration hook ComfyUI calls)."""
    from .nodes.extension import LearnToSteerExtension

    return LearnToSteerExtension()
