"""Find a Chromium and Playwright, and open a headless page with a fresh profile."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
"""Headless flags for a sandboxed CI box that reaches nothing but the local ComfyUI."""
VIEWPORT = (1920, 1080)
"""A common desktop screen: what a first-time user sees at the canvas's default zoom."""


def find_chromium() -> str | None:
    """``L2S_CHROMIUM``, else the first Chromium or Chrome on ``PATH``; None when there is none."""
    chosen = os.environ.get("L2S_CHROMIUM", "").strip()
    if chosen:
        return chosen if os.path.isfile(chosen) else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def missing_requirement() -> str | None:
    """One line naming what the browser checks lack (Playwright, Chromium), or None when both are there."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install playwright): skipping the browser checks"
    if find_chromium() is None:
        return ("no Chromium found (apt-get install chromium, or set L2S_CHROMIUM to a Chrome/Chromium binary): "
                "skipping the browser checks")
    return None


@contextmanager
def chromium_page(viewport: tuple[int, int] = VIEWPORT) -> Iterator[Any]:
    """A Playwright page in headless Chromium with a throw-away profile; closed on exit.

    Raises:
        RuntimeError: Playwright or Chromium is missing (the message says which).
    """
    reason = missing_requirement()
    if reason is not None:
        raise RuntimeError(reason)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="l2s-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=find_chromium(), headless=True, args=list(CHROMIUM_ARGS),
            viewport={"width": viewport[0], "height": viewport[1]},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()
