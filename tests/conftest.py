"""Shared pytest fixtures: real-ComfyUI servers for the integration tests (tests marked ``comfyui``).

The servers come from :mod:`comfy_harness`. Without ``COMFYUI_PATH`` every test that asks for one is skipped with a
single reason line; the rest of the suite never needs ComfyUI.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from comfy_harness import ComfyServer, comfyui_path

COMFYUI_SKIP_REASON = "COMFYUI_PATH is not set: skipping real-ComfyUI integration tests (see README, Testing)"


def _require_comfyui() -> None:
    if comfyui_path() is None:
        pytest.skip(COMFYUI_SKIP_REASON)


@pytest.fixture(scope="session")
def comfy_server() -> Iterator[ComfyServer]:
    """One headless ComfyUI server shared by the whole test session (node outputs are cached across prompts)."""
    _require_comfyui()
    with ComfyServer() as server:
        yield server


@pytest.fixture
def fresh_comfy_server(request: pytest.FixtureRequest) -> Iterator[ComfyServer]:
    """A brand-new ComfyUI server for one test.

    Constructor arguments can be passed by indirect parametrisation, e.g.
    ``@pytest.mark.parametrize("fresh_comfy_server", [{"extra_args": ["--cache-none"]}], indirect=True)``.
    """
    _require_comfyui()
    kwargs = dict(getattr(request, "param", None) or {})
    with ComfyServer(**kwargs) as server:
        yield server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without COMFYUI_PATH, skip every ``comfyui``-marked test up front (even those without a server fixture)."""
    if comfyui_path() is not None:
        return
    skip = pytest.mark.skip(reason=COMFYUI_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("comfyui") is not None:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Report all COMFYUI_PATH skips at one location, so ``-ra`` folds them into a single summary line."""
    outcome = yield
    report = outcome.get_result()
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and len(longrepr) == 3 and COMFYUI_SKIP_REASON in longrepr[2]:
        report.longrepr = (__file__, None, longrepr[2])
