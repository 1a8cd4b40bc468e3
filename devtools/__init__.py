"""Development tools of this repository: nothing here is part of the node pack ComfyUI loads.

Modules, one concept each:

* ``pack_loader``  — import the repo root as a package, as ComfyUI imports a custom node pack (tests, check scripts
                     under ComfyUI's Python, the benchmark).
* ``comfy_server`` — drive a headless ComfyUI server process over its HTTP API (the demo launcher and the
                     integration-test harness).
* ``launcher``     — the demo launcher behind ``scripts/run_toy_world.py``: find or install ComfyUI, pick its Python,
                     wire the pack into a base directory, run a workflow, report.
* ``workflows``    — the example-workflow generator behind ``scripts/build_example_workflows.py``: one definition
                     per graph, written as a UI graph, an API twin and a thumbnail.
* ``browser``      — the pack in ComfyUI's real frontend (headless Chromium + Playwright): the browser test and
                     ``scripts/browser_check.py`` (templates open cleanly, the toy world runs and shows its reports).

``pack_loader``, ``comfy_server`` and ``launcher`` use the standard library only: ``bash scripts/demo.sh`` runs the
launcher with a bare ``python3``. The entry points in ``scripts/`` put the repo root on ``sys.path`` themselves;
under pytest it is there already (``pythonpath`` in ``pyproject.toml``).
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository root: the node pack's folder."""
