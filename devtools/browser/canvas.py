"""A ComfyUI page in the browser: load templates, read what the canvas shows, run the graph, take screenshots.

Everything goes through the frontend's own objects (``window.comfyAPI.app.app``: the graph, the canvas, the API
client) and the DOM, the way a person's clicks would end up; nothing here knows the pack's Python side.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.workflows.layout import Box

logger = logging.getLogger(__name__)

APP = "window.comfyAPI.app.app"
READY_TIMEOUT_MS = 90_000
SETTLE_S = 1.5
"""Time for the canvas to lay out and draw after a change (DOM widgets follow on the next frames)."""

_LOAD_TEMPLATE = """async ([pack, name]) => {
  const app = __APP__;
  const response = await fetch(`/api/workflow_templates/${encodeURIComponent(pack)}/${encodeURIComponent(name)}.json`);
  if (!response.ok) return {error: `HTTP ${response.status} for template ${name}`};
  await app.loadGraphData(await response.json(), true, true, name);
  return {error: null};
}""".replace("__APP__", APP)

_STATE = """() => {
  const app = __APP__;
  const LG = window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
  const titleHeight = LG?.NODE_TITLE_HEIGHT ?? 30;
  const nodes = app.graph.nodes.map((n) => ({
    id: n.id, type: n.type, title: n.title ?? n.type,
    x: n.pos[0], y: n.pos[1] - titleHeight, width: n.size[0],
    height: (n.flags?.collapsed ? 0 : n.size[1]) + titleHeight,
    registered: !!LG?.registered_node_types?.[n.type], errors: !!n.has_errors,
    hidden: (n.widgets ?? []).filter((w) => w.hidden).map((w) => w.name),
    widgets: (n.widgets ?? []).filter((w) => !w.hidden).map((w) => w.label ?? w.name),
  }));
  const dialogs = [...document.querySelectorAll('.p-dialog')]
    .filter((d) => d.offsetParent !== null).map((d) => d.innerText.trim());
  return {nodes, dialogs, scale: app.canvas.ds.scale, offset: Array.from(app.canvas.ds.offset)};
}""".replace("__APP__", APP)

_DIALOG_OPEN = "[...document.querySelectorAll('.p-dialog')].some((d) => d.offsetParent !== null)"

_ARM_RUN = """() => {
  const api = window.comfyAPI.api.api;
  window.__l2sRun = null;
  const done = (kind) => (event) => { if (!window.__l2sRun) window.__l2sRun = {kind, detail: event.detail ?? null}; };
  api.addEventListener('execution_success', done('success'));
  api.addEventListener('execution_error', done('error'));
  api.addEventListener('execution_interrupted', done('interrupted'));
}"""

_REPORTS = """() => [...document.querySelectorAll('.l2s-report')].filter((el) => el.isConnected).map((el) => {
  const r = el.getBoundingClientRect();
  return {node: el.l2sNode?.id ?? -1, type: el.dataset.l2sType ?? null, text: el.dataset.text ?? '',
          shown: el.innerText, left: r.left, top: r.top, width: r.width, height: r.height,
          fontPx: parseFloat(getComputedStyle(el).fontSize) * (__APP__.canvas.ds.scale ?? 1),
          display: getComputedStyle(el).display, visibility: getComputedStyle(el).visibility};
})""".replace("__APP__", APP)

_SCREEN_RECT = """([x, y, w, h]) => {
  const app = __APP__;
  const canvas = app.canvas.canvas.getBoundingClientRect();
  const [sx, sy] = app.canvas.ds.convertOffsetToCanvas([x, y]);
  const scale = app.canvas.ds.scale;
  return {x: canvas.left + sx, y: canvas.top + sy, width: w * scale, height: h * scale};
}""".replace("__APP__", APP)


@dataclass(frozen=True)
class CanvasState:
    """What the canvas holds right now."""

    boxes: list[Box]
    """Every node's outline (title bar included), with the size the frontend gave it."""
    nodes: list[dict[str, Any]]
    """Per node: id, type, title, registered (the frontend knows the type), errors, hidden widget names."""
    dialogs: list[str]
    """The text of each open dialog (missing nodes, missing models, errors)."""
    scale: float
    """The canvas zoom (1.0 = one graph unit per CSS pixel)."""


@dataclass(frozen=True)
class Report:
    """One of the pack's report panels as the page shows it."""

    node: int
    type: str | None
    text: str
    shown: str
    rect: tuple[float, float, float, float]
    font_px: float
    """The panel's font size on screen (CSS size times the canvas zoom)."""
    visible: bool


class ComfyCanvas:
    """A ComfyUI frontend page at ``url`` (a running server), in the given Playwright page."""

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url.rstrip("/")
        self.console_errors: list[str] = []
        page.on("console", lambda message: self.console_errors.append(message.text)
                if message.type == "error" else None)
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))

    def open(self) -> None:
        """Mark the first-run tour as done (it would cover the canvas), load the page, wait for the app."""
        request = urllib.request.Request(f"{self.url}/settings/Comfy.TutorialCompleted", data=b"true",
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30):
            pass
        self.page.goto(self.url)
        self.page.wait_for_function(f"() => {APP}?.graph && {APP}.canvas && window.comfyAPI.api?.api",
                                    timeout=READY_TIMEOUT_MS)
        time.sleep(SETTLE_S)
        self.close_dialogs()

    def templates(self) -> dict[str, list[str]]:
        """``GET /workflow_templates``: template names per custom-node pack, in the server's order."""
        with urllib.request.urlopen(f"{self.url}/workflow_templates", timeout=30) as response:
            return dict(json.loads(response.read()))

    def load_template(self, pack: str, name: str) -> CanvasState:
        """Load a pack's template the way the template browser does (``app.loadGraphData``) and read the canvas.

        Raises:
            RuntimeError: the server does not serve the template.
        """
        self.close_dialogs()
        result = self.page.evaluate(_LOAD_TEMPLATE, [pack, name])
        if result.get("error"):
            raise RuntimeError(result["error"])
        time.sleep(SETTLE_S)
        return self.state()

    def state(self) -> CanvasState:
        """The nodes, their boxes, the open dialogs and the zoom, as the frontend has them now."""
        raw = self.page.evaluate(_STATE)
        boxes = [Box(n["id"], n["title"], n["x"], n["y"], n["width"], n["height"]) for n in raw["nodes"]]
        return CanvasState(boxes, raw["nodes"], raw["dialogs"], float(raw["scale"]))

    def close_dialogs(self) -> None:
        """Close every open dialog (Escape, then the close buttons)."""
        for _ in range(3):
            if not self.page.evaluate(f"() => {_DIALOG_OPEN}"):
                return
            self.page.keyboard.press("Escape")
            time.sleep(0.3)
            for button in self.page.locator(".p-dialog .p-dialog-close-button").all():
                if button.is_visible():
                    button.click()
            time.sleep(0.3)

    def run(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """Press the Run button (the app's queue call when no button is found) and wait for the prompt to end.

        Returns:
            ``{"kind": "success" | "error" | "interrupted", "detail": ...}`` from the API's websocket events, or
            ``{"kind": "refused", "detail": [dialog texts]}`` when the frontend showed a dialog instead (a prompt
            the server rejected).
        """
        self.page.evaluate(_ARM_RUN)
        button = self.page.locator("button", has_text="Run").first
        if button.count() and button.is_visible():
            button.click()
        else:
            logger.info("no Run button found: queueing through app.queuePrompt")
            self.page.evaluate(f"() => {APP}.queuePrompt(0, 1)")
        self.page.wait_for_function(f"() => window.__l2sRun || {_DIALOG_OPEN}", timeout=timeout_s * 1000)
        time.sleep(SETTLE_S)
        outcome = self.page.evaluate("() => window.__l2sRun")
        if outcome is None:  # refused before it ran (e.g. validation): the frontend shows a dialog instead
            return {"kind": "refused", "detail": self.state().dialogs}
        return dict(outcome)

    def reports(self) -> list[Report]:
        """The pack's report panels on the page, with their text, screen rectangle and on-screen font size."""
        found = []
        viewport = self.page.viewport_size or {"width": 0, "height": 0}
        for raw in self.page.evaluate(_REPORTS):
            rect = (raw["left"], raw["top"], raw["width"], raw["height"])
            on_screen = (raw["width"] > 0 and raw["height"] > 0 and raw["left"] < viewport["width"]
                         and raw["top"] < viewport["height"] and raw["left"] + raw["width"] > 0
                         and raw["top"] + raw["height"] > 0)
            visible = on_screen and raw["display"] != "none" and raw["visibility"] != "hidden"
            found.append(Report(raw["node"], raw["type"], raw["text"], raw["shown"], rect, raw["fontPx"], visible))
        return found

    def screen_rect(self, box: Box, margin: float = 8.0) -> dict[str, float]:
        """Where a node's box is on the page, in CSS pixels (for clipped screenshots)."""
        return dict(self.page.evaluate(_SCREEN_RECT, [box.x - margin, box.y - margin, box.width + 2 * margin,
                                                      box.height + 2 * margin]))

    def screenshot(self, path: Path, box: Box | None = None) -> Path:
        """The whole page, or just one node (clipped to the page)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if box is None:
            self.page.screenshot(path=str(path))
        else:
            viewport = self.page.viewport_size or {"width": 1920, "height": 1080}
            rect = self.screen_rect(box)
            left, top = max(rect["x"], 0.0), max(rect["y"], 0.0)
            right = min(rect["x"] + rect["width"], float(viewport["width"]))
            bottom = min(rect["y"] + rect["height"], float(viewport["height"]))
            self.page.screenshot(path=str(path), clip={"x": left, "y": top, "width": max(right - left, 1.0),
                                                       "height": max(bottom - top, 1.0)})
        logger.info("screenshot: %s", path)
        return path

    def open_template_browser(self, pack: str) -> list[str]:
        """Open the template browser (the sidebar's Templates button), pick the pack's category, and return the
        names of the template cards it shows, in their order on the page."""
        self.close_dialogs()
        self.page.get_by_text("Templates", exact=True).first.click(timeout=30_000)
        self.page.get_by_text(pack, exact=True).first.click(timeout=30_000)
        time.sleep(SETTLE_S)
        prefix = "template-workflow-"
        return [str(t)[len(prefix):] for t in self.page.evaluate(
            f"() => [...document.querySelectorAll('[data-testid^=\"{prefix}\"]')].map((e) => e.dataset.testid)")]

    def widgets(self, node: int) -> dict[str, dict[str, Any]]:
        """A node's widgets by name: value, hidden (folded away by the pack's extension) and label."""
        return dict(self.page.evaluate(f"""(id) => Object.fromEntries(({APP}.graph.getNodeById(id)?.widgets ?? [])
            .map((w) => [w.name, {{value: w.value, hidden: !!w.hidden, label: w.label ?? w.name}}]))""", node))

    def choose(self, node: int, widget: str, value: Any) -> None:
        """Set a combo widget the way picking from its list does (value, then the widget's callback)."""
        self.page.evaluate(f"""([id, name, value]) => {{
            const w = {APP}.graph.getNodeById(id).widgets.find((w) => w.name === name);
            w.value = value; w.callback?.(value); {APP}.graph.setDirtyCanvas(true, true); }}""", [node, widget, value])
        time.sleep(SETTLE_S / 2)

    def node_images(self, node: int) -> list[tuple[int, int]]:
        """(width, height) of the images a node shows after a run (Save Image, Attention Preview)."""
        return [tuple(size) for size in self.page.evaluate(
            f"(id) => ({APP}.graph.getNodeById(id)?.imgs ?? []).map((i) => [i.naturalWidth, i.naturalHeight])", node)]
