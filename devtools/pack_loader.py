"""Import modules of this node pack the way ComfyUI does: as submodules of the repo-root package.

The repo root is itself a Python package (its ``__init__.py``), which ComfyUI imports under a path-derived name, and
``nodes/*.py`` use relative imports such as ``from ..l2s_core.layout import ...``. Tests therefore register the root
once under the package name :data:`PACK_NAME` and import ``nodes.capture`` and friends below it. Only modules that do
not import ComfyUI (``nodes.capture``, ``nodes.autograd``) can be loaded this way without a ComfyUI checkout.

This is the one place that knows how: the tests import it as ``devtools.pack_loader`` (the repo root is on
``sys.path`` under pytest); the check scripts that run under ComfyUI's Python (``tests/comfy_checks/``) and the
benchmark append the repo root to ``sys.path`` (after ComfyUI's folder, so ``nodes`` stays ComfyUI's) and import it
too.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType

from devtools import REPO_ROOT

PACK_NAME = "l2s_pack"
"""Package name the repo root is registered under in :data:`sys.modules`."""


def register_pack() -> ModuleType:
    """Register the repo root as package :data:`PACK_NAME` (once) and return it."""
    existing = sys.modules.get(PACK_NAME)
    if existing is not None:
        return existing
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot build an import spec for the pack root {REPO_ROOT / '__init__.py'}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK_NAME]
        raise
    return module


def load_pack_module(dotted: str) -> ModuleType:
    """Import ``dotted`` (e.g. ``"nodes.capture"``) as a submodule of the pack package.

    Args:
        dotted: Module path relative to the repo root, dot-separated.

    Returns:
        The imported module, ``l2s_pack.<dotted>``.
    """
    register_pack()
    return importlib.import_module(f"{PACK_NAME}.{dotted}")
