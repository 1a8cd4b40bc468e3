"""Which positive conditioning entry a steering forward runs, at which steps, with which tokens and area.

Users combine the Spatial Prompt Encode output with other conditionings (ConditioningCombine, regional prompts with
ConditioningSetArea/SetMask, ConditioningSetTimestepRange). ComfyUI runs every active positive entry in the
conditional forward, batched where it can, each with its own tokens and area. Steering runs only the entry that
carries the relation (:data:`.spatial_prompt.SPEC_KEY`), on its own: its tokens are the ones the classifier's token
positions refer to, and its area is the part of the latent its attention maps cover. The other entries shape the
normal sampling steps as usual.

An entry limited in time (ConditioningSetTimestepRange, scheduled CLIP hooks) is steered only at the steps where
ComfyUI runs it. The plan for the whole steered range is made before the first step, so a graph that cannot be
steered fails before any sampling work, with the node to change named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import comfy.samplers
import torch

from .spatial_prompt import SPEC_KEY, SpatialSpec

NO_SPATIAL_ENTRY = (
    "The positive conditioning carries no spatial relation. Encode the prompt with the 'Spatial Prompt Encode' "
    "node (it works like CLIP Text Encode and records which tokens name the two objects). ConditioningConcat and "
    "ConditioningAverage keep only the relation of their 'conditioning_to' input: connect Spatial Prompt Encode there."
)


@dataclass(frozen=True)
class SteeredEntry:
    """The spatial conditioning entry one steered step runs.

    Attributes:
        entry: ComfyUI's processed conditioning dict (passed alone to ``calc_cond_batch``).
        index: its position in the positive conditioning list (for messages).
        spec: the relations and token positions recorded by Spatial Prompt Encode.
        text_length: length of the entry's own text axis (what its attention keys span).
        latent_size: (h, w) of the latent its forward sees: the whole latent, or its area.
    """

    entry: dict[str, Any]
    index: int
    spec: SpatialSpec
    text_length: int
    latent_size: tuple[int, int]


def spatial_entries(positive: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, Any], SpatialSpec]]:
    """(index, entry, spec) of every positive entry that carries a relation; a clear error when there is none."""
    found = [(i, c, c[SPEC_KEY]) for i, c in enumerate(positive) if isinstance(c.get(SPEC_KEY), SpatialSpec)]
    if not found:
        raise ValueError(NO_SPATIAL_ENTRY)
    return found


def _text_length(entry: dict[str, Any]) -> int:
    """Tokens on the entry's own text axis: the context its forward really gets (c_crossattn), else cross_attn."""
    model_cond = entry.get("model_conds", {}).get("c_crossattn")
    context = getattr(model_cond, "cond", None)
    if not isinstance(context, torch.Tensor):
        context = entry.get("cross_attn")
    if not isinstance(context, torch.Tensor) or context.ndim != 3:
        raise ValueError(
            "The Spatial Prompt Encode conditioning holds no text embedding (cross_attn) any more; a node between "
            "it and the sampler removed it. Connect Spatial Prompt Encode to the sampler's positive input directly."
        )
    return int(context.shape[1])  # (B, T, D)


def _describe(entry: dict[str, Any], spec: SpatialSpec) -> str:
    parts = [f"prompt {spec.prompt!r}"]
    if "start_percent" in entry or "end_percent" in entry:
        parts.append(f"timestep range {entry.get('start_percent', 0.0):g}-{entry.get('end_percent', 1.0):g}")
    if "area" in entry:
        parts.append(f"area {list(entry['area'])} (latent units)")
    if "mask" in entry:
        parts.append("mask")
    return ", ".join(parts)


def active_entry(positive: Sequence[dict[str, Any]], x: torch.Tensor, sigma: torch.Tensor,
                 step: int) -> SteeredEntry | None:
    """The spatial entry ComfyUI runs at ``sigma``, or None when none is active there.

    Uses ComfyUI's own decision (``get_area_and_mult``: timestep range and area), so a steered step sees exactly
    the entry, tokens and area the normal conditional forward would.

    Args:
        positive: the guider's processed positive conditioning list.
        x: the sampler's latent (B, C, H, W).
        sigma: (B,) the step's noise level.
        step: the step index (for messages).

    Raises:
        ValueError: no entry carries a relation, or two spatial entries are active at the same step.
    """
    active: list[SteeredEntry] = []
    for index, entry, spec in spatial_entries(positive):
        if "default" in entry:
            size = (int(x.shape[-2]), int(x.shape[-1]))
        else:
            prepared = comfy.samplers.get_area_and_mult(entry, x, sigma)
            if prepared is None:
                continue
            size = (int(prepared.input_x.shape[-2]), int(prepared.input_x.shape[-1]))  # (B, C, h, w) of its area
        active.append(SteeredEntry(entry, index, spec, _text_length(entry), size))
    if len(active) > 1:
        listed = "; ".join(f"entry {a.index}: {_describe(a.entry, a.spec)}" for a in active)
        raise ValueError(
            f"At step {step} the positive conditioning has {len(active)} active Spatial Prompt Encode entries "
            f"({listed}). Steering runs one relation prompt's own forward. Keep one Spatial Prompt Encode in the "
            "positive conditioning and encode the other prompts with CLIP Text Encode (ConditioningCombine, "
            "ConditioningSetArea and ConditioningSetTimestepRange on those are fine), or give the Spatial Prompt "
            "Encode outputs non-overlapping ConditioningSetTimestepRange ranges."
        )
    return active[0] if active else None


def plan_steered_steps(positive: Sequence[dict[str, Any]], x: torch.Tensor, sigmas: torch.Tensor,
                       steps: Sequence[int]) -> dict[int, SteeredEntry]:
    """The spatial entry of every step in ``steps`` where one is active; checked before sampling starts.

    Args:
        positive: the guider's processed positive conditioning list.
        x: the sampler's starting latent (B, C, H, W).
        sigmas: the schedule (N + 1,).
        steps: the candidate steered steps (the settings' range).

    Returns:
        step -> entry, for the steps where a spatial entry is active (others are sampled without steering).

    Raises:
        ValueError: no spatial entry, several active at once, or none active at any of ``steps``.
    """
    entries = spatial_entries(positive)
    plan: dict[int, SteeredEntry] = {}
    for step in steps:
        sigma = sigmas[step].reshape(1).expand(x.shape[0]).to(x.device)  # (B,)
        found = active_entry(positive, x, sigma, step)
        if found is not None:
            plan[step] = found
    if steps and not plan:
        ranges = "; ".join(_describe(entry, spec) for _, entry, spec in entries)
        raise ValueError(
            f"The Spatial Prompt Encode conditioning is not active at any steered step (steps {steps[0]}.."
            f"{steps[-1]}, sigma {float(sigmas[steps[0]]):.4g} down to {float(sigmas[steps[-1]]):.4g}; {ranges}). "
            "Steering acts on the early, noisy steps, where the layout forms. Change the ConditioningSetTimestepRange "
            "on the Spatial Prompt Encode output so that it starts at 0.0 (the start of sampling), or use custom "
            "mode with enough steered steps to reach the steps where it is active."
        )
    return plan
