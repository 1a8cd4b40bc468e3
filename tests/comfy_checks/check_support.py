"""Helpers shared by the check scripts that run under ComfyUI's Python (imported from the scripts' own folder)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def load_pack() -> None:
    """Import the repository root as package ``l2s_pack``, as ComfyUI imports a custom node pack."""
    spec = importlib.util.spec_from_file_location("l2s_pack", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["l2s_pack"] = module
    spec.loader.exec_module(module)


def relative(a: Any, b: Any) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())
