"""The workflow the launcher runs: an API-format graph read and checked, one copy per seed, its saved images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devtools import REPO_ROOT
from devtools.comfy_server import output_files
from devtools.launcher.errors import LauncherError

DEFAULT_WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "l2s_toy_world.api.json"
SEED_INPUTS = ("seed", "noise_seed")


def load_workflow(path: Path) -> dict[str, Any]:
    """Read an API-format workflow (``{node_id: {"class_type", "inputs"}}``).

    Raises:
        LauncherError: If the file is missing, not JSON, or a UI-format workflow.
    """
    if not path.is_file():
        hint = (
            " (the toy-world workflow is not in this checkout yet: pass --workflow PATH)"
            if path == DEFAULT_WORKFLOW
            else ""
        )
        raise LauncherError(f"workflow {path} does not exist{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LauncherError(f"workflow {path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        raise LauncherError(
            f"workflow {path} is in ComfyUI's UI format; this launcher needs the API format (ComfyUI: Export (API)), "
            "like the files in example_workflows/api/"
        )
    if not isinstance(data, dict) or not data:
        raise LauncherError(f"workflow {path} is not an API-format workflow (a JSON object of nodes)")
    for node_id, node in data.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs", {}), dict):
            raise LauncherError(
                f"workflow {path}: node {node_id!r} is not an API-format node ({{'class_type': ..., 'inputs': {{...}}}})"
            )
    return data


def image_paths(entry: dict[str, Any], base: Path) -> tuple[list[Path], int]:
    """The saved images a ``/history`` entry lists, as absolute paths, and the number of preview images.

    SaveImage files (type ``output``) are in ``base/output``; PreviewImage files (type ``temp``) are not reported:
    ComfyUI empties its temp folder when it starts and when it stops.
    """
    folders = {"output": base / "output", "temp": base / "temp", "input": base / "input"}
    saved: list[Path] = []
    previews = 0
    for node_output in (entry.get("outputs") or {}).values():
        for item in node_output.get("images") or []:
            if (item.get("type") or "output") == "output":
                saved += output_files({"outputs": {"0": {"images": [item]}}}, folders, "images")
            else:
                previews += 1
    return [path.resolve() for path in saved], previews


def with_seed(prompt: dict[str, Any], seed: int) -> tuple[dict[str, Any], int]:
    """A copy of ``prompt`` with every integer ``seed`` / ``noise_seed`` input set to ``seed``, and how many were set."""
    copy = json.loads(json.dumps(prompt))
    count = 0
    for node in copy.values():
        inputs = node.get("inputs", {})
        for name in SEED_INPUTS:
            if isinstance(inputs.get(name), int) and not isinstance(inputs.get(name), bool):
                inputs[name] = seed
                count += 1
    return copy, count
