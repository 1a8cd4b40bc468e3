"""The browser checks of the shipped workflows, shared by the ComfyUI test suite and ``scripts/browser_check.py``.

Each check returns a list of problems in words (empty = passed) plus what it saw, so a test can assert on it and the
script can print it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devtools.browser.canvas import CanvasState, ComfyCanvas, Report
from devtools.workflows.layout import describe_overlaps, overlapping

logger = logging.getLogger(__name__)

PACK_DIR_NAME = "learn_to_steer"
"""The pack's folder name under custom_nodes (ComfyUI lists its templates under it)."""
MISSING_NODES_WORDS = ("missing", "not found")
MIN_FONT_PX = 11.0
"""Report text smaller than this on screen is not readable without zooming."""


@dataclass
class LoadCheck:
    """What loading one template showed."""

    name: str
    state: CanvasState
    problems: list[str] = field(default_factory=list)
    missing_models: str = ""
    """The missing-models dialog's text, when the template names model files the server does not have."""


def check_load(canvas: ComfyCanvas, name: str, pack: str = PACK_DIR_NAME) -> LoadCheck:
    """Load one template: no unknown node types, no node errors, no overlapping nodes, no dialog but missing models.

    The missing-models dialog is expected for templates whose model files the server lacks; its text is kept so
    callers can check which files it offers to download.
    """
    state = canvas.load_template(pack, name)
    result = LoadCheck(name, state)
    unknown = sorted({n["type"] for n in state.nodes if not n["registered"]})
    if unknown:
        result.problems.append(f"{name}: node types the frontend does not know (drawn red): {unknown}")
    broken = [n["title"] for n in state.nodes if n["errors"]]
    if broken:
        result.problems.append(f"{name}: nodes flagged with errors: {broken}")
    result.problems += [f"{name}: {line}" for line in describe_overlaps(overlapping(state.boxes))]
    for text in state.dialogs:
        if text.lower().startswith("missing models") or "missing models" in text.lower()[:80]:
            result.missing_models = text
        else:
            result.problems.append(f"{name}: a dialog opened on load: {text[:300]!r}")
    canvas.close_dialogs()
    return result


@dataclass
class RunCheck:
    """What running a template showed."""

    outcome: dict[str, object]
    reports: list[Report]
    problems: list[str] = field(default_factory=list)


def report_of(reports: Sequence[Report], node_type: str) -> Report | None:
    """The report panel of the first node of ``node_type``."""
    return next((r for r in reports if r.type == node_type), None)


def check_run(canvas: ComfyCanvas, expected: dict[str, Sequence[str]], timeout_s: float = 600.0) -> RunCheck:
    """Press Run, wait, and check that each node type's report panel is on screen, readable and says ``expected``.

    Args:
        expected: node type -> phrases its panel must show (e.g. the parsed relation, a trace line).
    """
    outcome = canvas.run(timeout_s)
    reports = canvas.reports()
    result = RunCheck(outcome, reports)
    if outcome.get("kind") != "success":
        result.problems.append(f"the run did not succeed: {outcome}")
    for node_type, phrases in expected.items():
        report = report_of(reports, node_type)
        if report is None:
            result.problems.append(f"{node_type}: no report panel on the page")
            continue
        if not report.visible:
            result.problems.append(f"{node_type}: the report panel is not on screen ({report.rect})")
        if report.font_px < MIN_FONT_PX:
            result.problems.append(f"{node_type}: report text is {report.font_px:.1f} px on screen (< {MIN_FONT_PX})")
        missing = [p for p in phrases if p not in report.shown]
        if missing:
            result.problems.append(f"{node_type}: the panel does not show {missing}; it shows {report.shown!r}")
    return result


def screenshot_nodes(canvas: ComfyCanvas, folder: Path, prefix: str, titles: Sequence[str]) -> list[Path]:
    """One clipped screenshot per node whose title is in ``titles`` (as the page shows it, at the canvas zoom)."""
    shots = []
    state = canvas.state()
    for box in state.boxes:
        if box.title in titles:
            slug = "".join(c if c.isalnum() else "_" for c in box.title.lower()).strip("_")
            shots.append(canvas.screenshot(folder / f"{prefix}_{slug}.png", box))
    return shots


TOY_REPORTS: dict[str, tuple[str, ...]] = {
    "L2S_SpatialPromptEncode": ("parsed: 'blue circle' above 'red square'", "relation: above",
                                "subject:  'blue circle' = tokens 2, 3", "object:   'red square' = tokens 6, 7"),
    "L2S_LearnedSpatialSteer": ("steering: blue circle above red square", "per step, p(above) before -> after:",
                                "step 0: "),
    "L2S_LoadToyWorld": ("objects: red square",),
    "L2S_LoadRelationClassifier": ("family: toy",),
}
"""What the toy template's report panels must show after Run (its prompt: 'a blue circle above a red square')."""
CUSTOM_ONLY = ("last_steered_step", "step_size", "iterations", "early_stop_probability")
"""The steer nodes' widgets that act only in custom mode (folded away in the other modes)."""
FLUX_CLIP_TYPES = ("flux",)


def widget_problems(canvas: ComfyCanvas, state: CanvasState, name: str) -> list[str]:
    """Folded widgets as the pack's extension should leave them: custom-only numbers hidden unless mode is custom,
    t5_length shown exactly when the CLIP comes from a FLUX loader."""
    problems = []
    flux = any(n["type"] in ("DualCLIPLoader", "CLIPLoader") and canvas.widgets(n["id"]).get("type", {}).get("value")
               in FLUX_CLIP_TYPES for n in state.nodes)
    for node in state.nodes:
        widgets = canvas.widgets(node["id"]) if node["type"].startswith("L2S_") else {}
        if "mode" in widgets:
            custom = widgets["mode"]["value"] == "custom"
            wrong = [w for w in CUSTOM_ONLY if w in widgets and widgets[w]["hidden"] == custom]
            if wrong:
                problems.append(f"{name}: {node['title']}: {wrong} should be {'shown' if custom else 'hidden'} in "
                                f"mode {widgets['mode']['value']}")
        if "t5_length" in widgets and widgets["t5_length"]["hidden"] == flux:
            problems.append(f"{name}: {node['title']}: t5_length should be {'shown' if flux else 'hidden'} "
                            f"({'a' if flux else 'no'} FLUX CLIP)")
    return problems


@dataclass
class Walkthrough:
    """Everything the walkthrough found wrong, and the screenshots it took."""

    problems: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)


def walkthrough(canvas: ComfyCanvas, folder: Path, run: bool = True) -> Walkthrough:
    """What a first-time user does: browse the pack's templates, open each one, run the toy world.

    Screenshots (in ``folder``): the template browser, every template as it opens, the toy world after Run (the
    whole screen and each result node as the screen shows it), and its steer node in custom mode.
    """
    from devtools.workflows.catalogue import build_workflows

    result = Walkthrough()
    workflows = build_workflows()
    shown = canvas.open_template_browser(PACK_DIR_NAME)
    result.shots.append(canvas.screenshot(folder / "00_template_browser.png"))
    titles = [w.file_name for w in workflows]
    if shown != titles:
        result.problems.append(f"the template browser lists {shown}, expected {titles} (toy world first)")
    canvas.close_dialogs()
    for index, workflow in enumerate(workflows, start=1):
        loaded = check_load(canvas, workflow.file_name)
        result.problems += loaded.problems + widget_problems(canvas, loaded.state, workflow.file_name)
        result.shots.append(canvas.screenshot(folder / f"{index:02d}_{workflow.name}_opened.png"))
    if not run:
        return result
    toy = workflows[0]
    canvas.load_template(PACK_DIR_NAME, toy.file_name)
    ran = check_run(canvas, TOY_REPORTS)
    result.problems += ran.problems
    result.shots.append(canvas.screenshot(folder / "20_toy_after_run.png"))
    result.shots += screenshot_nodes(canvas, folder, "21_toy", (
        "Spatial Prompt Encode (positive)", "Learned Spatial Steer (steering on)", "Save Image (unsteered | steered)",
        "Attention Preview", "Load Toy World", "Load Relation Classifier"))
    state = canvas.state()
    steer = next(n for n in state.nodes if n["type"] == "L2S_LearnedSpatialSteer")
    comparison = next(n for n in state.nodes if n["title"] == "Save Image (unsteered | steered)")
    sizes = canvas.node_images(comparison["id"])
    if not sizes or sizes[0][1] < 3 * 128:
        result.problems.append(f"the comparison image is {sizes}: not enlarged to be judged on the canvas")
    canvas.choose(steer["id"], "mode", "custom")
    result.problems += widget_problems(canvas, canvas.state(), "toy world, custom mode")
    box = next(b for b in canvas.state().boxes if b.node == steer["id"])
    result.shots.append(canvas.screenshot(folder / "22_toy_steer_custom_mode.png", box))
    canvas.choose(steer["id"], "mode", "official")
    result.problems += widget_problems(canvas, canvas.state(), "toy world, back to official mode")
    return result
