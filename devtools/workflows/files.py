"""The files the generator writes: UI graphs in ``example_workflows/``, API twins in ``example_workflows/api/``.

A UI graph is named after its template title (``Workflow.file_name``), its API twin after the short id
(``Workflow.name``), which scripts and the demo launcher use.

The schema they are built with is the committed ``/object_info`` snapshot next to this module, or a fresh one read
from a file or a running server (then trimmed and saved as the new snapshot).
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

from devtools import REPO_ROOT
from devtools.workflows.catalogue import build_workflows, used_classes
from devtools.workflows.formats import to_api, to_ui, ui_to_api
from devtools.workflows.schema import trim_object_info

logger = logging.getLogger(__name__)

OUT_DIR = REPO_ROOT / "example_workflows"
API_DIR = OUT_DIR / "api"
SNAPSHOT = Path(__file__).resolve().parent / "object_info_snapshot.json"
"""The trimmed ``/object_info`` the examples are built with (committed, so the generator needs no server)."""


def dump(data: Any) -> str:
    """JSON as the generator writes it: indented by 2, UTF-8 as is, a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_files(info: dict[str, Any]) -> dict[Path, str]:
    """Every JSON file this script writes (UI graphs and API twins), by path."""
    files: dict[Path, str] = {}
    for workflow in build_workflows():
        ui = to_ui(workflow, info)
        api = to_api(workflow, info)
        if ui_to_api(ui, info) != api:  # the UI graph must round-trip to the API twin
            raise AssertionError(f"{workflow.name}: UI graph does not convert back to its API twin")
        files[OUT_DIR / f"{workflow.file_name}.json"] = dump(ui)
        files[API_DIR / f"{workflow.name}.api.json"] = dump(api)
    return files


def stale_files(written: set[Path]) -> list[Path]:
    """Files in the generator's folders that it no longer writes (a renamed or removed example)."""
    owned = [*OUT_DIR.glob("*.json"), *OUT_DIR.glob("*.jpg"), *API_DIR.glob("*.api.json")]
    return sorted(p for p in owned if p not in written)


def load_object_info(args: argparse.Namespace) -> dict[str, Any]:
    """The schema to build with: a fresh /object_info (trimmed and saved as the snapshot) or the snapshot."""
    full: dict[str, Any] | None = None
    if args.server:
        with urllib.request.urlopen(args.server.rstrip("/") + "/object_info", timeout=60) as response:
            full = json.loads(response.read())
    elif args.object_info:
        full = json.loads(Path(args.object_info).read_text(encoding="utf-8"))
    if full is None:
        return json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    trimmed = trim_object_info(full, used_classes(build_workflows()))
    SNAPSHOT.write_text(dump(trimmed), encoding="utf-8")
    logger.info("wrote %s", SNAPSHOT.relative_to(REPO_ROOT))
    return trimmed
