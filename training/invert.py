"""The ``invert`` command: dual inversion of triplet images into classifier training maps.

This module owns data creation phase 2 as a resumable command:

* input: a ``triplets`` folder (``items.jsonl`` + ``mapping.json``); relative image paths start at ``--image-root``,
  else at ``summary.json``'s ``image_root``, else at the current directory (as ``triplets`` wrote them); all items,
  relation names, image files and (after loading the tokenizers) phrase positions are checked before any inversion;
* per item, two prompts: the positive "A {subject} {relation} a {object}" and a negative with a wrong relation
  drawn uniformly (seeded per item) from the other spatial relations of mapping.json; both are labelled with the
  image's **true** relation. ``--no-negatives`` keeps positives only;
* per prompt, the image is inverted and reconstructed with that prompt (:mod:`.inversion`: fixed-point DDIM for
  UNet families, the closed-form RF-inversion path for FLUX/SD3) and the subject's and object's attention maps are
  recorded at the record steps (:mod:`.recorder`, through :mod:`l2s_core.layout`, as the ComfyUI nodes do);
* PSNR filter: a reconstruction below ``--psnr-threshold`` drops that prompt; a failed positive drops the
  item's negative too. UNets: PSNR of the decoded reconstruction; flow models: of the VAE round trip (the RF path
  ends exactly at the image latent);
* output (``--out``): ``meta.json``, ``index.jsonl`` (one record per item x prompt x step), ``shards/
  shard_NNNNN.safetensors`` with float16 ``(2, C, S, S)`` maps, and ``done.jsonl`` (finished items with their shard).
  Shards are written to a temporary file and renamed; index lines are appended only after their shard is on disk,
  and items are marked done only after that. A restarted run keeps what ``done.jsonl`` covers, drops index lines of
  unfinished items and continues with the same shard numbering, so an interrupted run followed by a resume produces
  the same index and tensors as an uninterrupted run.

Randomness is seeded per item from ``--seed`` and the item id (negative relation, FLUX noise, optional VAE sampling),
so results do not depend on the order or on interruptions. The VAE latent is the posterior **mean** by default
(deterministic; the official code samples it: ``--sample-latent``).

The folder format and its crash-safe writer are :mod:`.maps_folder`.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from l2s_core.attention import MapRequest
from l2s_core.families import JOINT, ModelFamily, describe_channel_count
from l2s_core.prompts import explicit_triplet
from l2s_core.steps import scale_step_index

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
from .maps_folder import MapsFolderError, MapsFolderWriter
from .models import FLUX, SD3, Conditioning, LoadedModel, PipelineAdapter, load_model
from .recorder import AttentionRecorder
from .triplet_folder import Item, TripletFolderError, read_items, read_relations, resolve_image_root

logger = logging.getLogger(__name__)

PSNR_THRESHOLD_UNET = 19.5
PSNR_THRESHOLD_FLOW = 20.0
PSNR_CAP = 99.0
"""PSNR written for identical images (infinite PSNR is not valid JSON)."""



class InvertInputError(ValueError):
    """A bad input file, field or option of ``invert``; the message names the file/line/field."""


# --------------------------------------------------------------------------------------------------------------------
# Command line.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``invert`` options to ``parser``."""
    parser.add_argument("--triplets", required=True, help="Folder written by `triplets` (items.jsonl, mapping.json).")
    parser.add_argument("--out", required=True, help="Output folder; an existing one is resumed.")
    parser.add_argument("--model", required=True, help="Local diffusers folder, or a single checkpoint file.")
    parser.add_argument("--config", default=None, help="Local diffusers config folder for a single-file --model.")
    parser.add_argument(
        "--family",
        default=None,
        help="Model family (sd14, sd2, sdxl, sd3, flux_schnell, flux_dev); detected from the pipeline if omitted.",
    )
    parser.add_argument(
        "--image-root",
        default=None,
        help="Folder relative image paths start from (default: summary.json's image_root, else the current folder).",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="Sampling steps N (default: the family's official count)."
    )
    parser.add_argument(
        "--record-steps",
        type=int,
        nargs="+",
        default=None,
        help="Step indices to record (0 = noisiest). Default: 5 10 15 20 25 49 (schnell: 1 3), scaled when --steps "
        "differs from the official count.",
    )
    parser.add_argument("--resolution", type=int, default=None, help="Square image side in pixels (default: family's).")
    parser.add_argument("--map-size", type=int, default=None, help="Classifier map side S (default: family's, 16).")
    parser.add_argument("--split", nargs="+", default=None, help="Only items of these splits (default: all).")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N selected items.")
    parser.add_argument("--seed", type=int, default=0, help="Base seed; every item derives its own from it.")
    parser.add_argument(
        "--psnr-threshold",
        type=float,
        default=None,
        help=f"Drop reconstructions below this PSNR in dB (default: {PSNR_THRESHOLD_UNET} UNet, "
        f"{PSNR_THRESHOLD_FLOW} flow).",
    )
    parser.add_argument("--no-negatives", action="store_true", help="Positive prompts only (no dual inversion).")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu).")
    parser.add_argument("--dtype", default="auto", help="float32 | float16 | bfloat16 | auto.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice). On a busy CPU, 1 can be many times faster for small models.",
    )
    parser.add_argument("--fixed-point-iterations", type=int, default=5, help="Per DDIM inversion step (UNet).")
    parser.add_argument("--shard-size", type=int, default=256, help="Items per shard file.")
    parser.add_argument(
        "--max-sequence-length",
        type=int,
        default=None,
        help="T5 tokens (FLUX default 512, SD3 default 77, i.e. 154 text tokens as in ComfyUI).",
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        help="FLUX guidance-embedding value during reconstruction (official data creation: 0).",
    )
    parser.add_argument(
        "--sample-latent", action="store_true", help="Sample the VAE posterior (seeded) instead of its mean."
    )


# --------------------------------------------------------------------------------------------------------------------
# Per-item randomness and prompts.


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


def load_image(item: Item, resolution: int, crop: bool) -> torch.Tensor:
    """Load an item's image as ``(1, 3, R, R)`` float32 in [0, 1].

    UNet families centre-crop to a square first; flow families resize without cropping.

    Raises:
        InvertInputError: the file cannot be read as an image (names the line and the path).
    """
    import numpy as np
    from PIL import Image

    try:
        with Image.open(item.image) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise InvertInputError(
            f"items.jsonl line {item.line}: field 'image' {item.image} cannot be read as an image ({exc})."
        ) from exc
    if crop:
        w, h = rgb.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        rgb = rgb.crop((left, top, left + side, top + side))
    rgb = rgb.resize((resolution, resolution), Image.Resampling.BICUBIC)
    array = np.asarray(rgb, dtype=np.float32) / 255.0  # (R, R, 3)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, R, R)


# --------------------------------------------------------------------------------------------------------------------
# Settings.


def default_record_steps(family: ModelFamily, num_steps: int) -> list[int]:
    """The family's trained record steps (its training recipe), scaled by relative position to ``num_steps``.

    UNet families, SD3 and FLUX-dev: [5, 10, 15, 20, 25, 49] of 50; FLUX-schnell: [1, 3] of 4. For another length
    each index moves with :func:`l2s_core.steps.scale_step_index` (duplicates removed).
    """
    recipe = family.training_recipe()
    if num_steps == recipe.num_steps:
        return list(recipe.record_steps)
    return sorted({scale_step_index(s, recipe.num_steps, num_steps) for s in recipe.record_steps})


@dataclass(frozen=True)
class Settings:
    """Resolved options of one run (what meta.json records)."""

    num_steps: int
    record_steps: tuple[int, ...]
    resolution: int
    map_size: int
    psnr_threshold: float
    negatives: bool
    seed: int
    fixed_point_iterations: int
    max_sequence_length: int
    guidance: float
    sample_latent: bool
    shard_size: int


def resolve_settings(args: argparse.Namespace, model: LoadedModel) -> Settings:
    """Fill the family defaults into the options and check them.

    Raises:
        InvertInputError: an option out of range, naming the option.
    """
    family = model.family
    num_steps = args.steps if args.steps is not None else family.training_recipe().num_steps
    if num_steps < 1:
        raise InvertInputError(f"--steps must be >= 1, got {num_steps}.")
    if args.record_steps is not None:
        record = sorted(set(args.record_steps))
        bad = [s for s in record if not 0 <= s < num_steps]
        if bad:
            raise InvertInputError(
                f"--record-steps {bad} are outside the {num_steps}-step schedule (valid: 0..{num_steps - 1})."
            )
    else:
        record = default_record_steps(family, num_steps)
    resolution = args.resolution if args.resolution is not None else family.default_resolution
    if resolution is None:
        raise InvertInputError(f"--resolution is required for the {family.display} family (it has no default).")
    map_size = args.map_size if args.map_size is not None else family.map_size
    if map_size < 1:
        raise InvertInputError(f"--map-size must be >= 1, got {map_size}.")
    flow = model.layout == JOINT
    threshold = args.psnr_threshold
    if threshold is None:
        threshold = PSNR_THRESHOLD_FLOW if flow else PSNR_THRESHOLD_UNET
    if args.fixed_point_iterations < 1:
        raise InvertInputError(f"--fixed-point-iterations must be >= 1, got {args.fixed_point_iterations}.")
    if args.shard_size < 1:
        raise InvertInputError(f"--shard-size must be >= 1, got {args.shard_size}.")
    if args.max_sequence_length is not None:
        max_len = args.max_sequence_length
    elif model.kind == FLUX:
        max_len = family.text_tokens
    elif model.kind == SD3:
        max_len = max(family.text_tokens - 77, 1)
    else:
        max_len = 77
    if max_len < 1:
        raise InvertInputError(f"--max-sequence-length must be >= 1, got {max_len}.")
    return Settings(
        num_steps=num_steps,
        record_steps=tuple(record),
        resolution=int(resolution),
        map_size=int(map_size),
        psnr_threshold=float(threshold),
        negatives=not args.no_negatives,
        seed=int(args.seed),
        fixed_point_iterations=int(args.fixed_point_iterations),
        max_sequence_length=int(max_len),
        guidance=float(args.guidance),
        sample_latent=bool(args.sample_latent),
        shard_size=int(args.shard_size),
    )


def check_channels(model: LoadedModel, channels: int) -> None:
    """Check the recorded channel count against the official family's classifiers.

    A family with a fixed count (SD1.x 128, SD2.x 195, FLUX.1 1368) always gets it: data recorded with another count
    could not train or load as that family (:mod:`l2s_core.checkpoint` and :mod:`training.dataset` check it too).
    Families whose count depends on the model (SDXL, SD3) accept any.

    Raises:
        InvertInputError: the family has a fixed count and the model differs.
    """
    expected = model.family.channels
    if expected is None or expected == channels:
        return
    raise InvertInputError(
        f"--family {model.family.name}: {model.name} has {channels} attention channels "
        f"({describe_channel_count(channels)}), but the official {model.family.display} classifiers take {expected}. "
        "Check --family and the model: a model of this family with another attention layout cannot use its "
        "classifiers."
    )


# --------------------------------------------------------------------------------------------------------------------
# Dual inversion of one item.


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


# --------------------------------------------------------------------------------------------------------------------
# Driver.


def run(args: argparse.Namespace) -> int:
    """Run ``invert``; returns 0 on success.

    Raises:
        InvertInputError: bad inputs/options (names the file, line and field or the option).
        ModelLoadError: the model path is missing, a hub id, or not loadable offline.
    """
    from tqdm import tqdm

    triplets = Path(args.triplets).expanduser()
    if not triplets.is_dir():
        raise InvertInputError(f"--triplets: no such folder: {triplets}.")
    try:
        image_root = resolve_image_root(triplets, args.image_root)
        relations = read_relations(triplets)
        items = read_items(triplets, image_root, relations, args.split, args.limit)
    except TripletFolderError as exc:
        raise InvertInputError(str(exc)) from None
    if not args.no_negatives and len(relations) < 2:
        raise InvertInputError(
            f"{triplets / 'mapping.json'}: field 'relations' has only {relations}; negative prompts need a second "
            "relation. Use --no-negatives or more relations."
        )
    if args.threads is not None:
        if args.threads < 1:
            raise InvertInputError(f"--threads must be >= 1, got {args.threads}.")
        torch.set_num_threads(args.threads)

    model = load_model(args.model, config=args.config, family=args.family, device=args.device, dtype=args.dtype)
    settings = resolve_settings(args, model)
    inverter = DualInverter(model, settings, relations)
    channels = inverter.recorder.channels
    check_channels(model, channels)

    meta: dict[str, Any] = {
        "family": model.family.name,
        "channels": channels,
        "layout": model.layout,
        "map_size": settings.map_size,
        "grid": inverter.grid_side,
        "num_steps": settings.num_steps,
        "record_steps": list(settings.record_steps),
        "relations": relations,
        "model": model.name,
        "seed": settings.seed,
        "psnr_threshold": settings.psnr_threshold,
        "negatives": settings.negatives,
        "resolution": settings.resolution,
        "fixed_point_iterations": settings.fixed_point_iterations if model.layout != JOINT else None,
        "max_sequence_length": settings.max_sequence_length if model.layout == JOINT else None,
        "guidance": settings.guidance if model.kind == FLUX else None,
        "vae_latent": "sample" if settings.sample_latent else "mean",
        "dtype": str(model.dtype).replace("torch.", ""),
        **inverter.meta_extra(),
    }
    try:
        out = MapsFolderWriter(Path(args.out).expanduser(), meta, settings.shard_size)
    except MapsFolderError as exc:
        raise InvertInputError(str(exc)) from None
    pending = [it for it in items if it.id not in out.done]
    for item in pending:  # tokenizer-only check, so a bad phrase fails before hours of inversion
        inverter.check_item(item)
    logger.info(
        "invert: %d items selected, %d already done, %d to go; %s, %d steps, record %s, C=%d.",
        len(items),
        len(items) - len(pending),
        len(pending),
        model.family.name,
        settings.num_steps,
        list(settings.record_steps),
        channels,
    )
    stats = {"items": 0, "dropped_items": 0, "records": 0, "neg_dropped": 0}
    started = time.perf_counter()
    with inverter.recorder.installed(), torch.inference_mode():
        for item in tqdm(pending, desc="invert", unit="item", dynamic_ncols=True):
            image01 = load_image(item, settings.resolution, crop=model.layout != JOINT)
            results = inverter.run_item(item, image01)
            records: list[dict[str, Any]] = []
            tensors: dict[str, torch.Tensor] = {}
            for result in results:
                for step in settings.record_steps:
                    key = f"{item.id}/{result.prompt_type}/{step}"
                    tensors[key] = result.maps[step].to(torch.float16).cpu().contiguous()  # (2, C, S, S)
                    records.append(
                        {
                            "item": item.id,
                            "split": item.split,
                            "prompt": result.prompt,
                            "prompt_type": result.prompt_type,
                            "prompt_relation": result.prompt_relation,
                            "label": item.relation,
                            "step": step,
                            "key": key,
                            "psnr": round(min(result.psnr, PSNR_CAP), 4),
                        }
                    )
            out.add(item.id, records, tensors)
            stats["items"] += 1
            stats["records"] += len(records)
            stats["dropped_items"] += int(not results)
            stats["neg_dropped"] += int(settings.negatives and len(results) == 1)
        out.flush()
    elapsed = time.perf_counter() - started
    logger.info(
        "invert: %d items in %.1f s (%.3f items/s); %d index records; %d items dropped by PSNR, %d negatives dropped.",
        stats["items"],
        elapsed,
        stats["items"] / elapsed if elapsed > 0 else float("nan"),
        stats["records"],
        stats["dropped_items"],
        stats["neg_dropped"],
    )
    return 0
