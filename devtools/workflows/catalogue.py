"""Every example workflow, in the order the README lists them, and the node classes they use."""

from __future__ import annotations

from collections.abc import Iterable

from devtools.workflows.formats import VIRTUAL_NODES
from devtools.workflows.graph import Workflow
from devtools.workflows.model_examples import (
    workflow_compare_on_off,
    workflow_flux_dev,
    workflow_flux_schnell,
    workflow_sampler_custom,
    workflow_sd3,
    workflow_sd15,
    workflow_sd21,
    workflow_sdxl,
)
from devtools.workflows.toy_example import workflow_toy_world


def build_workflows() -> list[Workflow]:
    """Every example workflow, in the order the README lists them (the toy world, which needs no download, first;
    the file names start with the same numbers, so the template browser lists them in this order too)."""
    return [workflow_toy_world(), workflow_sd15(), workflow_sd21(), workflow_sdxl(), workflow_sd3(),
            workflow_flux_schnell(), workflow_flux_dev(), workflow_compare_on_off(), workflow_sampler_custom()]


def used_classes(workflows: Iterable[Workflow]) -> set[str]:
    """The node classes of ``workflows``, frontend-only notes left out."""
    return {n.class_type for w in workflows for n in w.nodes if n.class_type not in VIRTUAL_NODES}
