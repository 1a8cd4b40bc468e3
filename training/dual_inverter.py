"""Dual inversion of one item: its positive and seeded negative prompt inverted, reconstructed and recorded.

Per prompt, the image is inverted and reconstructed with that prompt (:mod:`.inversion`: fixed-point DDIM for UNet
families, the closed-form RF-inversion path for FLUX/SD3) and the subject's and object's attention maps are recorded
at the record steps (:mod:`.recorder`, through :mod:`l2s_core.layout`, as the ComfyUI nodes do). A reconstruction
below the PSNR threshold drops that prompt; a failed positive drops the item's negative too. Randomness is seeded
per item and purpose (:func:`item_seed`), so results do not depend on the order or on interruptions.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from l2s_core.attention import MapRequest
from l2s_core.families import JOINT
from l2s_core.prompts import explicit_triplet

from .inversion import (
    DDIMSchedule,
    FlowSchedule,
    ddim_invert_fixed_point,
    ddim_sample,
    flow_schedule,
    psnr,
    rf_inversion_y0_weight,
    rf_inverted_latent,
    rf_reconstruction_latent,
)
from .invert_options import InvertInputError, Settings
from .models import FLUX, LoadedModel
from .pipeline_adapter import Conditioning, PipelineAdapter
from .recorder import AttentionRecorder
from .triplet_folder import Item

logger = logging.getLogger(__name__)


def item_seed(seed: int, item_id: str, purpose: str) -> int:
    """A 63-bit seed for one item and purpose, independent of order and of other items."""
    digest = hashlib.sha256(f"{seed}\x00{item_id}\x00{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def negative_relation(item: Item, relations: Sequence[str], seed: int) -> str:
    """A wrong relation for the negative prompt: uniform over the other relations, seeded per item."""
    others = sorted(r for r in relations if r != item.relation)
    if not others:
        raise InvertInputError(
            "mapping.json lists only one relation, so there is no wrong relation for the negative prompt; "
            "use --no-negatives or a triplets folder with several relations."
        )
    return random.Random(item_seed(seed, item.id, "negative")).choice(others)


def spatial_prompt(subject: str, relation: str, obj: str) -> str:
    """The training prompt of the published data: "A {subject} {relation} a {object}"."""
    return f"A {subject} {relation} a {obj}"


@dataclass(frozen=True)
class PromptResult:
    """One prompt's outcome: PSNR and, per recorded step, the maps ``(2, C, S, S)`` float32."""

    prompt: str
    prompt_type: str
    prompt_relation: str
    psnr: float
    maps: dict[int, torch.Tensor] = field(default_factory=dict)


class DualInverter:
    """Runs the inversion + recording of one item's prompts for a loaded model.

    Args:
        model: The loaded pipeline.
        settings: Resolved options.
        relations: mapping.json's relations (negatives are drawn from them).
    """

    def __init__(self, model: LoadedModel, settings: Settings, relations: Sequence[str]) -> None:
        self.model = model
        self.settings = settings
        self.relations = list(relations)
        self.adapter = PipelineAdapter(model, settings.resolution, settings.max_sequence_length, settings.guidance)
        self.recorder = AttentionRecorder(model.denoiser, model.kind)
        self.flow = model.layout == JOINT
        if self.flow:
            grid = self.adapter.token_grid
            assert grid is not None
            self.flow_schedule: FlowSchedule | None = flow_schedule(
                model.pipe.scheduler, settings.num_steps, grid[0] * grid[1], flux_sigmas=model.kind == FLUX
            )
            self.ddim: DDIMSchedule | None = None
        else:
            self.flow_schedule = None
            self.ddim = DDIMSchedule.from_scheduler(model.pipe.scheduler, settings.num_steps)

    @property
    def grid_side(self) -> int | None:
        """Token-grid side of the recorded maps (joint models), None for multi-resolution UNets."""
        grid = self.adapter.token_grid
        if grid is None or grid[0] != grid[1]:
            return None
        return grid[0]

    def meta_extra(self) -> dict[str, Any]:
        """Inversion facts for meta.json."""
        extra: dict[str, Any] = {"kind": self.model.kind}
        if self.flow_schedule is not None:
            extra["sigmas"] = [round(s, 6) for s in self.flow_schedule.sigmas]
            extra["rf_inversion_y0_weight"] = round(rf_inversion_y0_weight(self.flow_schedule.sigmas), 6)
        if self.ddim is not None:
            extra["timesteps"] = list(self.ddim.timesteps)
        return extra

    def _target(self, cond: Conditioning, subject: str, relation: str, obj: str) -> MapRequest:
        triplet = explicit_triplet(cond.prompt, subject, relation, obj)
        subj_pos = self.adapter.token_positions(cond.prompt, triplet.subject_span)
        obj_pos = self.adapter.token_positions(cond.prompt, triplet.object_span)
        return MapRequest(
            layout=self.recorder.layout,
            text_length=cond.text_length,
            subject_positions=tuple(subj_pos),
            object_positions=tuple(obj_pos),
            latent_size=self.adapter.latent_hw,
            patch_size=self.adapter.patch_size,
        )

    def prompts_of(self, item: Item) -> list[tuple[str, str]]:
        """``(prompt_type, relation in the prompt)`` pairs of an item: the positive, then the seeded negative."""
        prompts = [("pos", item.relation)]
        if self.settings.negatives:
            prompts.append(("neg", negative_relation(item, self.relations, self.settings.seed)))
        return prompts

    def check_item(self, item: Item) -> None:
        """Check that the subject and object of every prompt of ``item`` are found in the tokenised prompt.

        Raises:
            InvertInputError: naming the items.jsonl line, the field and the tokenizer's reason (phrase not found,
                or cut off by the text encoder's window).
        """
        for _prompt_type, relation in self.prompts_of(item):
            prompt = spatial_prompt(item.subject, relation, item.object)
            triplet = explicit_triplet(prompt, item.subject, relation, item.object)
            for field_name, span in (("subject", triplet.subject_span), ("object", triplet.object_span)):
                try:
                    self.adapter.token_positions(prompt, span)
                except ValueError as exc:
                    raise InvertInputError(
                        f"items.jsonl line {item.line}: field {field_name!r} ({prompt[span[0] : span[1]]!r}) cannot be "
                        f"located in the prompt {prompt!r}: {exc}"
                    ) from exc

    def run_item(self, item: Item, image01: torch.Tensor) -> list[PromptResult]:
        """Invert one item under its positive (and negative) prompt, applying the PSNR break rule.

        Returns:
            The prompts that passed the PSNR filter, positive first.
        """
        s = self.settings
        generator = None
        if s.sample_latent:
            generator = torch.Generator("cpu").manual_seed(item_seed(s.seed, item.id, "vae"))
        clean = self.adapter.encode_image(image01, generator)  # (1, c, h, w)
        prompts = self.prompts_of(item)
        flow_psnr = psnr(image01, self.adapter.decode(clean).cpu()) if self.flow else None
        results: list[PromptResult] = []
        for prompt_type, relation in prompts:
            result = self.invert_prompt(item, prompt_type, relation, clean, image01, flow_psnr)
            if result.psnr < s.psnr_threshold:
                logger.debug(
                    "Item %s (%s, line %d): %s prompt PSNR %.2f dB < %.2f; %s.",
                    item.id,
                    item.image,
                    item.line,
                    prompt_type,
                    result.psnr,
                    s.psnr_threshold,
                    "dropping the item" if prompt_type == "pos" else "dropping the negative",
                )
                if prompt_type == "pos":
                    break  # a failed positive drops the negative too (official `break`)
                continue
            results.append(result)
        return results

    def invert_prompt(
        self,
        item: Item,
        prompt_type: str,
        relation: str,
        clean: torch.Tensor,
        image01: torch.Tensor,
        flow_psnr: float | None,
    ) -> PromptResult:
        """Invert and reconstruct one prompt, recording maps at the record steps.

        Args:
            item: The item (subject, object, seeds).
            prompt_type: ``"pos"`` or ``"neg"``.
            relation: The relation written in the prompt.
            clean: The image latent ``(1, c, h, w)``.
            image01: The preprocessed image in [0, 1] (PSNR reference).
            flow_psnr: Flow models: the item's VAE round-trip PSNR (maps are skipped below the threshold).

        Returns:
            The prompt's PSNR and maps.
        """
        prompt = spatial_prompt(item.subject, relation, item.object)
        cond = self.adapter.encode_prompt(prompt)
        target = self._target(cond, item.subject, relation, item.object)
        if self.flow:
            assert flow_psnr is not None
            maps: dict[int, torch.Tensor] = {}
            if flow_psnr >= self.settings.psnr_threshold:  # the RF path ends at the image latent: PSNR is known
                maps = self._flow_maps(item, prompt_type, clean, cond, target)
            return PromptResult(prompt, prompt_type, relation, flow_psnr, maps)
        return self._unet_prompt(prompt, prompt_type, relation, clean, image01, cond, target)

    def _unet_prompt(
        self,
        prompt: str,
        prompt_type: str,
        relation: str,
        clean: torch.Tensor,
        image01: torch.Tensor,
        cond: Conditioning,
        target: MapRequest,
    ) -> PromptResult:
        schedule = self.ddim
        assert schedule is not None
        record = set(self.settings.record_steps)
        maps: dict[int, torch.Tensor] = {}

        def plain(latent: torch.Tensor, step: int) -> torch.Tensor:
            return self.adapter.denoise(latent, schedule.timesteps[step], cond)

        def recording(latent: torch.Tensor, step: int) -> torch.Tensor:
            if step not in record:
                return plain(latent, step)
            with self.recorder.recording(target):
                out = plain(latent, step)
            maps[step] = self.recorder.classifier_maps(self.settings.map_size)
            return out

        inverted = ddim_invert_fixed_point(plain, clean, schedule, self.settings.fixed_point_iterations)
        final = ddim_sample(recording, inverted, schedule)
        value = psnr(image01, self.adapter.decode(final).cpu())
        return PromptResult(prompt, prompt_type, relation, value, maps)

    def _flow_maps(
        self, item: Item, prompt_type: str, clean: torch.Tensor, cond: Conditioning, target: MapRequest
    ) -> dict[int, torch.Tensor]:
        schedule = self.flow_schedule
        assert schedule is not None
        y0 = self.adapter.pack(clean)  # FLUX: (1, h/2*w/2, 4c); SD3: (1, c, h, w)
        generator = torch.Generator("cpu").manual_seed(item_seed(self.settings.seed, item.id, f"noise-{prompt_type}"))
        y1 = torch.randn(y0.shape, generator=generator, dtype=torch.float32).to(y0.device)
        inverted = rf_inverted_latent(y0, y1, schedule.sigmas)
        maps: dict[int, torch.Tensor] = {}
        for step in self.settings.record_steps:
            latent = rf_reconstruction_latent(y0, inverted, schedule.sigmas, step)
            with self.recorder.recording(target):
                self.adapter.denoise(latent, schedule.timesteps[step], cond)
            maps[step] = self.recorder.classifier_maps(self.settings.map_size)
        return maps
