"""Run a workflow (default: the toy world) in a real, headless ComfyUI and print where the images are.

The README's first command (``bash scripts/demo.sh`` runs it). The launcher is :mod:`devtools.launcher` (standard
library only); this file only makes the repo root importable, so that a bare ``python3`` runs it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.launcher.cli import main  # noqa: E402  (after the repo root is on sys.path)

if __name__ == "__main__":
    sys.exit(main())
