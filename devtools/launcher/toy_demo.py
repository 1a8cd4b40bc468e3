"""Step 5 of the launcher, for the toy-world demo graph: tell its plain and steered images apart and judge them.

The report itself is ``python -m training.toy.demo``, run with ComfyUI's Python (numpy, Pillow) from this repo: it
prints what the colour-geometry judge reads in each panel and saves one grid image in the output folder.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devtools import REPO_ROOT
from devtools.launcher.errors import LauncherError

DEFAULT_TOY_SEEDS = 4
PLAIN_PREFIX = "l2s_toy_unsteered"
STEERED_PREFIX = "l2s_toy_steered"
GRID_NAME = "l2s_toy_demo_grid.png"
REPORT_TIMEOUT_S = 300.0


def toy_demo_prompt(prompt: dict[str, Any]) -> str | None:
    """The text of the toy demo's Spatial Prompt Encode, when ``prompt`` is the toy-world demo graph, else None.

    The demo graph loads a toy world and saves its plain and steered images under the demo's file prefixes.
    """
    classes = {node.get("class_type") for node in prompt.values()}
    prefixes = {node.get("inputs", {}).get("filename_prefix") for node in prompt.values()
                if node.get("class_type") == "SaveImage"}
    if "L2S_LoadToyWorld" not in classes or not {PLAIN_PREFIX, STEERED_PREFIX} <= prefixes:
        return None
    texts = [node["inputs"].get("text") for node in prompt.values() if node.get("class_type") == "L2S_SpatialPromptEncode"]
    return texts[0] if texts and isinstance(texts[0], str) else None


def toy_demo_world(prompt: dict[str, Any]) -> Path | None:
    """The bundle the demo graph's Load Toy World names, when it is one of the pack's own (``toy_world/models``).

    The report then judges with that world's colours and backgrounds; a bundle elsewhere (an extra model path) is
    judged with every toy colour.
    """
    names = [node.get("inputs", {}).get("world") for node in prompt.values() if node.get("class_type") == "L2S_LoadToyWorld"]
    if not names or not isinstance(names[0], str):
        return None
    path = REPO_ROOT / "toy_world" / "models" / names[0]
    return path if path.is_file() else None


def demo_pair(images: Sequence[Path]) -> tuple[Path, Path] | None:
    """The (plain, steered) images of one demo run, told apart by their file prefixes; None when one is missing."""
    plain = [p for p in images if p.name.startswith(PLAIN_PREFIX + "_")]
    steered = [p for p in images if p.name.startswith(STEERED_PREFIX + "_")]
    return (plain[0], steered[0]) if plain and steered else None


def demo_report_command(python: str, text: str, pairs: Sequence[tuple[int, Path, Path]], out: Path,
                        world: Path | None = None) -> list[str]:
    """The ``python -m training.toy.demo`` call that judges the pairs and writes the grid."""
    command = [python, "-m", "training.toy.demo", "--prompt", text, "--out", str(out)]
    if world is not None:
        command += ["--world", str(world)]
    for seed, plain, steered in pairs:
        command += ["--pair", str(seed), str(plain), str(steered)]
    return command


def run_demo_report(python: str, text: str, pairs: Sequence[tuple[int, Path, Path]], out: Path,
                    world: Path | None = None) -> str:
    """Run the report with ComfyUI's Python (numpy, Pillow) from this repo; return what it printed.

    Raises:
        LauncherError: the report failed.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        done = subprocess.run(demo_report_command(python, text, pairs, out, world), cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=REPORT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LauncherError(f"the demo report could not run with {python}: {exc}") from exc
    if done.returncode != 0:
        raise LauncherError(f"the demo report failed ({python} -m training.toy.demo):\n{done.stderr.strip()}")
    return done.stdout
