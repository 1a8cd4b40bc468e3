"""Walk through the pack in ComfyUI's real frontend (headless Chromium) and save screenshots.

The tool is :mod:`devtools.browser` (usage in :mod:`devtools.browser.cli`); this file only makes the repo root
importable and runs it::

    COMFYUI_PATH=... COMFYUI_PYTHON=... python scripts/browser_check.py [--out DIR] [--url URL] [--no-run]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.browser.cli import main  # noqa: E402  (after the repo root is on sys.path)

if __name__ == "__main__":
    sys.exit(main())
