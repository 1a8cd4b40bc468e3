"""The pack in ComfyUI's real frontend: headless Chromium driven by Playwright against the test suite's server.

What a first-time user does and must see: the template browser lists the pack's templates by descriptive names,
toy world first; every shipped workflow opens with no missing-node dialog, no unknown (red) node and no overlapping
nodes, widgets folded where they do not act, and (for the full-size models) the missing-models dialog offering the
base-model downloads; the toy template runs from the Run button and its nodes show the parsed relation and the
steering trace on the canvas, readable at the zoom it opens at, with the comparison image enlarged.

Needs ``COMFYUI_PATH`` (like every ``comfyui`` test), Playwright (``pip install playwright``) and a Chromium (Debian's
``chromium``, or ``L2S_CHROMIUM``); skipped with one line otherwise. Screenshots go to ``L2S_SCREENSHOTS`` when set,
else to pytest's temporary folder. ``scripts/browser_check.py`` runs the same walkthrough by hand.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from comfy_harness import ComfyServer

from devtools.browser.canvas import ComfyCanvas
from devtools.browser.check import (
    CUSTOM_ONLY,
    PACK_DIR_NAME,
    TOY_REPORTS,
    check_load,
    check_run,
    screenshot_nodes,
    widget_problems,
)
from devtools.browser.launch import chromium_page, missing_requirement
from devtools.workflows.catalogue import build_workflows

BROWSER_SKIP_REASON = missing_requirement()
if BROWSER_SKIP_REASON is not None:  # one line for the whole module
    pytest.skip(BROWSER_SKIP_REASON, allow_module_level=True)
pytestmark = pytest.mark.comfyui

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = build_workflows()
TOY = WORKFLOWS[0]
MODEL_WIDGETS = ("ckpt_name", "unet_name", "clip_name1", "clip_name2", "vae_name")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("L2S_SCREENSHOTS", "").strip()
    return Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def canvas(comfy_server: ComfyServer) -> Iterator[ComfyCanvas]:
    """One browser page on the session's ComfyUI, shared by this module's tests."""
    with chromium_page() as page:
        opened = ComfyCanvas(page, comfy_server.url)
        opened.open()
        yield opened


def _model_files(name: str) -> list[str]:
    prompt: dict[str, Any] = json.loads((REPO_ROOT / "example_workflows" / "api" / f"{name}.api.json").read_text())
    return [node["inputs"][key] for node in prompt.values() for key in MODEL_WIDGETS if key in node["inputs"]]


def test_the_template_browser_lists_the_pack_toy_world_first(canvas: ComfyCanvas, shots: Path) -> None:
    shown = canvas.open_template_browser(PACK_DIR_NAME)
    canvas.screenshot(shots / "00_template_browser.png")
    canvas.close_dialogs()
    assert shown == [w.file_name for w in WORKFLOWS]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=[w.name for w in WORKFLOWS])
def test_every_workflow_opens_without_missing_nodes_or_overlaps(canvas: ComfyCanvas, shots: Path,
                                                                workflow: Any) -> None:
    loaded = check_load(canvas, workflow.file_name)
    canvas.screenshot(shots / f"{WORKFLOWS.index(workflow) + 1:02d}_{workflow.name}_opened.png")
    assert loaded.problems == []
    assert widget_problems(canvas, loaded.state, workflow.file_name) == []
    files = _model_files(workflow.name)
    if files:  # the test server has none of the base models: the dialog must offer each one
        assert loaded.missing_models, "no missing-models dialog"
        for file in files:
            assert file in loaded.missing_models, (file, loaded.missing_models)
    else:
        assert loaded.missing_models == ""


def test_the_toy_template_runs_and_shows_its_parse_and_trace(canvas: ComfyCanvas, shots: Path) -> None:
    canvas.load_template(PACK_DIR_NAME, TOY.file_name)
    ran = check_run(canvas, TOY_REPORTS)
    canvas.screenshot(shots / "20_toy_after_run.png")
    screenshot_nodes(canvas, shots, "21_toy", ("Spatial Prompt Encode (positive)",
                                                "Learned Spatial Steer (steering on)", "Attention Preview",
                                                "Save Image (unsteered | steered)"))
    assert ran.problems == []
    steer = next(r for r in ran.reports if r.type == "L2S_LearnedSpatialSteer")
    steps = [line for line in steer.shown.splitlines() if line.startswith("step ")]
    step_line = re.compile(r"step \d+: [\d.]+ -> [\d.]+ \(\d+ it(, early stop)?\)")
    assert len(steps) >= 1 and all(step_line.fullmatch(line) for line in steps), steer.shown
    state = canvas.state()
    comparison = next(n for n in state.nodes if n["title"] == "Save Image (unsteered | steered)")
    preview = next(n for n in state.nodes if n["type"] == "L2S_AttentionPreview")
    assert canvas.node_images(comparison["id"]) == [(780, 384)], "plain | steered, enlarged 3x"
    assert canvas.node_images(preview["id"]), "Attention Preview shows no figure"


def test_custom_mode_shows_the_four_numbers_and_the_other_modes_fold_them(canvas: ComfyCanvas, shots: Path) -> None:
    state = canvas.load_template(PACK_DIR_NAME, TOY.file_name)
    steer = next(n for n in state.nodes if n["type"] == "L2S_LearnedSpatialSteer")
    height = next(b.height for b in state.boxes if b.node == steer["id"])
    assert all(canvas.widgets(steer["id"])[w]["hidden"] for w in CUSTOM_ONLY)
    canvas.choose(steer["id"], "mode", "custom")
    widgets = canvas.widgets(steer["id"])
    assert not any(widgets[w]["hidden"] for w in CUSTOM_ONLY)
    assert widgets["last_steered_step"]["label"] == "steered steps"
    after = canvas.state()
    assert next(b.height for b in after.boxes if b.node == steer["id"]) > height, "the node grows for the numbers"
    canvas.screenshot(shots / "22_toy_steer_custom_mode.png", next(b for b in after.boxes if b.node == steer["id"]))
    assert widget_problems(canvas, after, "custom mode") == []
    canvas.choose(steer["id"], "mode", "fast")
    assert all(canvas.widgets(steer["id"])[w]["hidden"] for w in CUSTOM_ONLY)
