"""l2s_core must stay framework-agnostic: torch, numpy, safetensors and the standard library only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "l2s_core"
FORBIDDEN = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "diffusers", "transformers"}


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_sources_import_no_framework() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 5, f"expected the l2s_core modules under {CORE}"
    offenders = {f.name: sorted(_imported_top_levels(f) & FORBIDDEN) for f in files}
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"l2s_core imports frameworks it must not: {offenders}"


def test_importing_every_core_module_loads_no_framework() -> None:
    modules = [f"l2s_core.{f.stem}" for f in sorted(CORE.glob("*.py")) if f.stem != "__main__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=CORE.parent, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing l2s_core pulled in: {out}"


def test_root_package_imports_without_comfyui() -> None:
    """The pack root is imported by pytest and by ComfyUI; without ComfyUI it must import and expose the entrypoint."""
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('l2s_pack', '__init__.py', submodule_search_locations=['.'])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['l2s_pack'] = mod; spec.loader.exec_module(mod)\n"
        "import inspect; print(inspect.iscoroutinefunction(mod.comfy_entrypoint), 'comfy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=CORE.parent, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "True False"
