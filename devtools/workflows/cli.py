"""Build the pack's example workflows from one Python definition per graph (a dev tool, not part of the pack).

Each graph is defined ONCE (:mod:`.model_examples`, :mod:`.toy_example`: API-format inputs plus node positions) and
written twice:

- ``example_workflows/<file name>.json``: UI format (what the frontend's Save/Export writes and what ComfyUI lists in
  its template browser: ``GET /workflow_templates`` globs ``example_workflows/*.json``), with ``<file name>.jpg`` as
  thumbnail. The browser shows the file name as the template's title (and, ``-``/``_`` read as spaces, as its
  description): it is descriptive and starts with a number, the toy world first;
- ``example_workflows/api/<name>.api.json``: API format (what ``POST /prompt`` executes, "Export (API)"), under the
  short id (``l2s_toy_world``...). The API twins live in a sub-folder because ComfyUI would otherwise list them as
  templates too (the glob is not recursive).

Files in those folders that the generator no longer writes (a renamed example) are removed (``--check`` reports
them).

A trimmed snapshot of ``/object_info`` for the node classes used is committed next to the generator
(``devtools/workflows/object_info_snapshot.json``), so it runs without a server.

Usage (from the repository root)::

    python scripts/build_example_workflows.py               # rewrite JSON + thumbnails from the snapshot
    python scripts/build_example_workflows.py --check       # exit 1 if the committed JSON is out of date
    python scripts/build_example_workflows.py --no-thumbnails

Refreshing the snapshot (after a ComfyUI update or a change of this pack's node inputs): start ComfyUI with this
pack installed, then either::

    python scripts/build_example_workflows.py --server http://127.0.0.1:8188
    # or: curl -s http://127.0.0.1:8188/object_info > object_info.json
    python scripts/build_example_workflows.py --object-info object_info.json

Both trim the schema to the node classes used, drop tooltips and the contents of model-file dropdowns, rewrite the
snapshot and regenerate everything. Thumbnails need Pillow (``pip install pillow``); the pack itself does not.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
from collections.abc import Sequence

from devtools import REPO_ROOT
from devtools.workflows.catalogue import build_workflows
from devtools.workflows.files import API_DIR, OUT_DIR, load_object_info, render_files, stale_files
from devtools.workflows.thumbnails import draw_thumbnail

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--object-info", metavar="FILE", help="a saved GET /object_info (refreshes the snapshot)")
    source.add_argument("--server", metavar="URL", help="read /object_info from a running ComfyUI (refreshes the "
                        "snapshot)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a JSON file is out of date")
    parser.add_argument("--no-thumbnails", action="store_true", help="do not (re)draw the .jpg thumbnails")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    info = load_object_info(args)
    files = render_files(info)
    thumbnails = {OUT_DIR / f"{w.file_name}.jpg": w for w in build_workflows()}
    leftovers = stale_files(set(files) | set(thumbnails))
    if args.check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            logger.error("out of date: %s", path.relative_to(REPO_ROOT))
        for path in leftovers:
            logger.error("no longer generated: %s", path.relative_to(REPO_ROOT))
        return 1 if stale or leftovers else 0
    API_DIR.mkdir(parents=True, exist_ok=True)
    for path in leftovers:
        path.unlink()
        logger.info("removed %s (no longer generated)", path.relative_to(REPO_ROOT))
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        logger.info("wrote %s", path.relative_to(REPO_ROOT))
    if not args.no_thumbnails:
        if importlib.util.find_spec("PIL") is None:
            logger.error("thumbnails need Pillow: pip install pillow (or pass --no-thumbnails)")
            return 1
        for path, workflow in thumbnails.items():
            draw_thumbnail(workflow, path)
            logger.info("wrote %s (%d bytes)", path.relative_to(REPO_ROOT), path.stat().st_size)
    return 0
