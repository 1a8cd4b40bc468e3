"""Build the pack's example workflows (UI graphs, API twins, thumbnails) from one Python definition per graph.

The generator is :mod:`devtools.workflows` (usage in :mod:`devtools.workflows.cli`); this file only makes the repo
root importable and runs it::

    python scripts/build_example_workflows.py               # rewrite JSON + thumbnails from the snapshot
    python scripts/build_example_workflows.py --check       # exit 1 if the committed JSON is out of date
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.workflows.cli import main  # noqa: E402  (after the repo root is on sys.path)

if __name__ == "__main__":
    sys.exit(main())
