"""Walk through the pack in ComfyUI's real frontend and take screenshots (``scripts/browser_check.py``).

Usage (from the repository root; needs ``pip install playwright`` and a Chromium, e.g. Debian's ``chromium``)::

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python python scripts/browser_check.py
    python scripts/browser_check.py --url http://127.0.0.1:8188   # a running ComfyUI that has the pack
    python scripts/browser_check.py --out shots/ --no-run

Without ``--url`` a throw-away headless ComfyUI is started the way the test suite starts one
(``tests/support/comfy_harness.py``: this repo and the test pack in a temporary base directory, ``--cpu``). The
screenshots go to ``--out`` (default ``$L2S_SCREENSHOTS``, else ``out/browser_check/``); every problem found is
printed and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from devtools import REPO_ROOT
from devtools.browser.canvas import ComfyCanvas
from devtools.browser.check import walkthrough
from devtools.browser.launch import chromium_page, missing_requirement

logger = logging.getLogger(__name__)

DEFAULT_OUT = REPO_ROOT / "out" / "browser_check"


@contextmanager
def comfyui_url(url: str | None) -> Iterator[str]:
    """``url`` as it is, or a throw-away ComfyUI with this pack (needs ``COMFYUI_PATH``), stopped on exit."""
    if url:
        yield url
        return
    sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
    from comfy_harness import ComfyServer

    with ComfyServer() as server:
        logger.info("started ComfyUI at %s (log: %s)", server.url, server.log_path)
        yield server.url


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running ComfyUI with this pack (default: start one from COMFYUI_PATH)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("L2S_SCREENSHOTS") or DEFAULT_OUT),
                        help="folder for the screenshots (default: $L2S_SCREENSHOTS, else out/browser_check/)")
    parser.add_argument("--no-run", action="store_true", help="open the templates only; do not run the toy world")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    reason = missing_requirement()
    if reason is not None:
        logger.error("%s", reason)
        return 1
    if not args.url and not os.environ.get("COMFYUI_PATH"):
        logger.error("give --url of a running ComfyUI with this pack, or set COMFYUI_PATH (and COMFYUI_PYTHON)")
        return 1
    with comfyui_url(args.url) as url, chromium_page() as page:
        canvas = ComfyCanvas(page, url)
        canvas.open()
        found = walkthrough(canvas, args.out, run=not args.no_run)
    for path in found.shots:
        print(path)
    for problem in found.problems:
        print(f"problem: {problem}")
    print(f"{len(found.shots)} screenshots in {args.out}; {len(found.problems)} problems")
    return 1 if found.problems else 0
