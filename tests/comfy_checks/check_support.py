"""Helpers shared by the check scripts that run under ComfyUI's Python (imported from the scripts' own folder)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO))  # last, so that ComfyUI's folder (inserted first later) keeps `nodes` ComfyUI's
from devtools.pack_loader import register_pack  # noqa: E402  (the one pack loader)


def load_pack() -> None:
    """Import the repository root as package ``l2s_pack``, as ComfyUI imports a custom node pack."""
    register_pack()


def relative(a: Any, b: Any) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())
