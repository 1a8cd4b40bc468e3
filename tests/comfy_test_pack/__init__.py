"""Learn-to-Steer integration-test pack: tiny random-weight models as a ComfyUI V3 node pack.

Loaded by a ComfyUI server only when the integration tests start one (tests/support/comfy_harness.py links this folder into
the server's custom_nodes). Never shipped to users. Everything that needs ComfyUI or torch is imported lazily inside
:func:`comfy_entrypoint`, so the test process can import :mod:`.tiny_specs` without either.
"""

from __future__ import annotations

from typing import Any


async def comfy_entrypoint() -> Any:
    """Return the test pack's ``ComfyExtension`` (the V3 registration hook ComfyUI calls)."""
    from .pack_nodes import L2STestPackExtension

    return L2STestPackExtension()
