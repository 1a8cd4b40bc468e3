"""The ``invert`` command: dual inversion of triplet images into classifier training maps.

This module owns data creation phase 2 (method.md §7.3 - §7.6) as a resumable command:

* input: a ``triplets`` folder (``items.jsonl`` + ``mapping.json``); relative image paths start at ``--image-root``,
  else at ``summary.json``'s ``image_root``, else at the current directory (as ``triplets`` wrote them); all items,
  relation names, image files and (after loading the tokenizers) phrase positions are checked before any inversion;
* per item, two prompts (§7.3): the positive "A {subject} {relation} a {object}" and a negative with a wrong relation
  drawn uniformly (seeded per item) from the other spatial relations of mapping.json; both are labelled with the
  image's **true** relation. ``--no-negatives`` keeps positives only;
* per prompt, the image is inverted and reconstructed with that prompt (:mod:`.inversion`: fixed-point DDIM for
  UNet families, the closed-form RF-inversion path for FLUX/SD3) and the subject's and object's attention maps are
  recorded at the record steps (:mod:`.recorder`, through :mod:`l2s_core.layout`, as the ComfyUI nodes do);
* PSNR filter (§7.3): a reconstruction below ``--psnr-threshold`` drops that prompt; a failed positive drops the
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

Test hook: the environment variable ``L2S_INVERT_EXIT_AFTER_ITEMS=K`` makes the process exit abruptly
(``os._exit``, no cleanup, like a kill) after K items of this run; the resume tests use it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from l2s_core.families import JOINT, ModelFamily, describe_channel_count
from l2s_core.prompts import explicit_triplet
from l2s_core.relations import SPATIAL_RELATIONS, canonical_relation

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
from .models import FLUX, SD3, Conditioning, LoadedModel, PipelineAdapter, load_model
from .recorder import AttentionRecorder, RecordTarget

logger = logging.getLogger(__name__)

EXIT_AFTER_ENV = "L2S_INVERT_EXIT_AFTER_ITEMS"
"""Test hook: exit abruptly (os._exit) after this many items of the current run."""

EXIT_AFTER_CODE = 75

OFFICIAL_STEPS_50 = (5, 10, 15, 20, 25, 49)
OFFICIAL_STEPS_SCHNELL = (1, 3)
PSNR_THRESHOLD_UNET = 19.5
PSNR_THRESHOLD_FLOW = 20.0
FORMAT_VERSION = 1
PSNR_CAP = 99.0
"""PSNR written for identical images (infinite PSNR is not valid JSON)."""

_REQUIRED_ITEM_FIELDS = ("id", "image", "subject", "object", "relation")


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
# Inputs.


@dataclass(frozen=True)
class Item:
    """One triplet of items.jsonl (``line`` is 1-based)."""

    line: int
    id: str
    image: Path
    subject: str
    object: str
    relation: str
    split: str


def read_relations(triplets: Path) -> list[str]:
    """The relation names of ``mapping.json`` (must all be spatial relations, canonical spelling).

    Raises:
        InvertInputError: missing/unreadable file, missing field, or a name that is not a spatial relation.
    """
    path = triplets / "mapping.json"
    if not path.is_file():
        raise InvertInputError(f"--triplets: {path} does not exist; run `triplets` first or fix --triplets.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvertInputError(f"{path}: cannot read it as JSON: {exc}") from exc
    relations = data.get("relations") if isinstance(data, dict) else None
    if relations is None and isinstance(data, dict) and isinstance(data.get("rel_name_to_idx"), dict):
        relations = sorted(data["rel_name_to_idx"])
    if not isinstance(relations, list) or not relations or not all(isinstance(r, str) for r in relations):
        raise InvertInputError(
            f"{path}: field 'relations' must be a non-empty list of relation names, got {relations!r}."
        )
    for name in relations:
        try:
            canonical = canonical_relation(name)
        except ValueError:
            raise InvertInputError(
                f"{path}: field 'relations' has {name!r}, which is not a spatial relation; `invert` handles only "
                f"{list(SPATIAL_RELATIONS)} (the attribute class 'is' is not trained)."
            ) from None
        if canonical != name:
            raise InvertInputError(f"{path}: field 'relations' has {name!r}; write the canonical name {canonical!r}.")
    return list(relations)


def resolve_image_root(triplets: Path, option: str | None) -> Path | None:
    """The folder relative item images start from.

    ``--image-root`` when given; otherwise ``summary.json``'s ``image_root`` written by ``triplets`` (the toy source
    sets it to the triplets folder); otherwise None: relative paths are taken from the current directory, as
    ``triplets`` took them.

    Raises:
        InvertInputError: the folder does not exist (naming the option or the summary.json field).
    """
    if option:
        root = Path(option).expanduser()
        if not root.is_dir():
            raise InvertInputError(f"--image-root: no such folder: {root}.")
        return root
    summary = triplets / "summary.json"
    if not summary.is_file():
        return None
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvertInputError(f"{summary}: cannot read it as JSON: {exc}") from exc
    value = data.get("image_root") if isinstance(data, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvertInputError(f"{summary}: field 'image_root' must be a folder path or null, got {value!r}.")
    root = Path(value).expanduser()
    if not root.is_absolute():
        root = triplets / root
    if not root.is_dir():
        raise InvertInputError(
            f"{summary}: field 'image_root' names {root}, which does not exist; pass --image-root to point at the "
            "folder that holds the images."
        )
    return root


def read_items(
    triplets: Path,
    image_root: Path | None,
    relations: Sequence[str],
    splits: Sequence[str] | None,
    limit: int | None,
) -> list[Item]:
    """Read, validate and select the items of ``items.jsonl``.

    Every line is checked (fields, relation name, image file), also those a split filter or limit leaves out, so a
    broken file fails before any model is loaded.

    Raises:
        InvertInputError: naming the file, the line and the field: bad JSON, a missing field, a relation not in
            mapping.json, a missing image file, or a duplicate id.
    """
    path = triplets / "items.jsonl"
    if not path.is_file():
        raise InvertInputError(f"--triplets: {path} does not exist; run `triplets` first or fix --triplets.")
    if limit is not None and limit < 1:
        raise InvertInputError(f"--limit must be >= 1, got {limit}.")
    items: list[Item] = []
    missing: list[str] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InvertInputError(f"{path} line {number}: not valid JSON ({exc}).") from exc
            if not isinstance(record, dict):
                raise InvertInputError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}.")
            for key in _REQUIRED_ITEM_FIELDS:
                value = record.get(key)
                if not isinstance(value, str) or not value.strip():
                    raise InvertInputError(
                        f"{path} line {number}: field {key!r} must be a non-empty string, got {value!r}."
                    )
            relation = record["relation"]
            if relation not in relations:
                raise InvertInputError(
                    f"{path} line {number}: field 'relation' is {relation!r}, which is not one of the relations of "
                    f"mapping.json {list(relations)}. Fix the item or regenerate the folder with `triplets`."
                )
            item_id = record["id"]
            if item_id in seen:
                raise InvertInputError(
                    f"{path} line {number}: field 'id' {item_id!r} repeats line {seen[item_id]}; ids must be unique."
                )
            seen[item_id] = number
            image = Path(record["image"]).expanduser()
            if not image.is_absolute() and image_root is not None:
                image = image_root / image
            if not image.is_file():
                missing.append(f"line {number}: {image}")
            split = record.get("split", "")
            items.append(
                Item(
                    number,
                    item_id,
                    image,
                    record["subject"].strip(),
                    record["object"].strip(),
                    relation,
                    split if isinstance(split, str) else str(split),
                )
            )
    if missing:
        shown = "; ".join(missing[:5]) + (f"; ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise InvertInputError(
            f"{path}: field 'image' names files that do not exist ({shown}). Relative paths start at "
            + (
                f"{image_root} (--image-root or summary.json's image_root)."
                if image_root is not None
                else "the current directory (no --image-root and no image_root in summary.json); pass --image-root."
            )
        )
    if splits:
        wanted = set(splits)
        present = {it.split for it in items}
        unknown = sorted(wanted - present)
        if unknown:
            logger.warning("--split %s: no items of split(s) %s in %s.", list(splits), unknown, path)
        items = [it for it in items if it.split in wanted]
    if limit is not None:
        items = items[:limit]
    return items


def item_seed(seed: int, item_id: str, purpose: str) -> int:
    """A 63-bit seed for one item and purpose, independent of order and of other items."""
    digest = hashlib.sha256(f"{seed}\x00{item_id}\x00{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def negative_relation(item: Item, relations: Sequence[str], seed: int) -> str:
    """A wrong relation for the negative prompt: uniform over the other relations, seeded per item (§7.3)."""
    others = sorted(r for r in relations if r != item.relation)
    if not others:
        raise InvertInputError(
            "mapping.json lists only one relation, so there is no wrong relation for the negative prompt; "
            "use --no-negatives or a triplets folder with several relations."
        )
    return random.Random(item_seed(seed, item.id, "negative")).choice(others)


def spatial_prompt(subject: str, relation: str, obj: str) -> str:
    """The training prompt of method.md §7.3: "A {subject} {relation} a {object}"."""
    return f"A {subject} {relation} a {obj}"


def load_image(item: Item, resolution: int, crop: bool) -> torch.Tensor:
    """Load an item's image as ``(1, 3, R, R)`` float32 in [0, 1].

    UNet families centre-crop to a square first (§7.4); flow families resize without cropping (§7.5).

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
    """Official record steps of the family, scaled by relative position when ``num_steps`` differs.

    UNet families, SD3 and FLUX-dev: [5, 10, 15, 20, 25, 49] of 50; FLUX-schnell: [1, 3] of 4. For another N each
    index ``s`` of the official schedule ``N0`` becomes ``round(s * (N - 1) / (N0 - 1))`` (duplicates removed).
    """
    if family.name == "flux_schnell":
        base, base_n = OFFICIAL_STEPS_SCHNELL, 4
    else:
        base, base_n = OFFICIAL_STEPS_50, 50
    if num_steps == base_n:
        return list(base)
    scaled = {(2 * s * (num_steps - 1) + (base_n - 1)) // (2 * (base_n - 1)) for s in base}
    return sorted(scaled)


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
    num_steps = args.steps if args.steps is not None else (family.official_num_steps or 50)
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

    def _target(self, cond: Conditioning, subject: str, relation: str, obj: str) -> RecordTarget:
        triplet = explicit_triplet(cond.prompt, subject, relation, obj)
        subj_pos = self.adapter.token_positions(cond.prompt, triplet.subject_span)
        obj_pos = self.adapter.token_positions(cond.prompt, triplet.object_span)
        return RecordTarget(
            subject_positions=tuple(subj_pos),
            object_positions=tuple(obj_pos),
            text_length=cond.text_length,
            latent_size=self.adapter.latent_hw,
            grid=self.adapter.token_grid,
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
        """Invert one item under its positive (and negative) prompt, applying the PSNR break rule (§7.3).

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
        target: RecordTarget,
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
        self, item: Item, prompt_type: str, clean: torch.Tensor, cond: Conditioning, target: RecordTarget
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
# Output folder: meta, shards, index, done list, resume.


def _fsync_append(path: Path, lines: Sequence[str]) -> None:
    if not lines:
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; an unparsable line (a write cut off by a kill) ends the list."""
    if not path.is_file():
        return []
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                logger.warning(
                    "%s line %d is incomplete (interrupted write); it and later lines are ignored.", path, number
                )
                break
            if isinstance(record, dict):
                records.append(record)
    return records


class OutputFolder:
    """The ``--out`` folder: meta check, resume bookkeeping and shard/index/done writing.

    Args:
        root: The folder (created if needed).
        meta: This run's meta.json content; an existing meta.json must match it.
        shard_size: Items per shard.

    Raises:
        InvertInputError: the folder holds a run with other settings.
    """

    def __init__(self, root: Path, meta: dict[str, Any], shard_size: int) -> None:
        self.root = root
        self.shards = root / "shards"
        self.index_path = root / "index.jsonl"
        self.done_path = root / "done.jsonl"
        self.shard_size = shard_size
        self.shards.mkdir(parents=True, exist_ok=True)
        meta_path = root / "meta.json"
        if meta_path.is_file():
            try:
                old = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise InvertInputError(f"--out: {meta_path} is unreadable ({exc}); use a new --out folder.") from exc
            diffs = [
                f"{k}: {old.get(k)!r} -> {meta.get(k)!r}"
                for k in sorted(set(old) | set(meta))
                if old.get(k) != meta.get(k)
            ]
            if diffs:
                raise InvertInputError(
                    f"--out: {root} holds an `invert` run with other settings ({'; '.join(diffs)}). Resume it with "
                    "the same options, or write to a new --out folder."
                )
        else:
            _atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        for tmp in self.shards.glob("*.tmp"):
            tmp.unlink()
        done_records = _read_jsonl(self.done_path)
        self.done: dict[str, int] = {}
        for record in done_records:
            if isinstance(record.get("item"), str) and isinstance(record.get("shard"), int):
                self.done[record["item"]] = record["shard"]
        _atomic_write_text(self.done_path, "".join(json.dumps(r) + "\n" for r in done_records))
        index = _read_jsonl(self.index_path)
        kept = [r for r in index if r.get("item") in self.done]
        if len(kept) != len(index):
            logger.info("Resume: dropping %d index records of unfinished items.", len(index) - len(kept))
        _atomic_write_text(self.index_path, "".join(json.dumps(r) + "\n" for r in kept))
        self.next_shard = max(self.done.values()) + 1 if self.done else 0
        self._buffer: list[tuple[str, list[dict[str, Any]], dict[str, torch.Tensor]]] = []
        if self.done:
            logger.info("Resuming %s: %d items done, next shard %05d.", root, len(self.done), self.next_shard)

    def add(self, item_id: str, records: list[dict[str, Any]], tensors: dict[str, torch.Tensor]) -> None:
        """Buffer one finished item; a full shard is written out."""
        self._buffer.append((item_id, records, tensors))
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered items: shard (tmp + rename), then index lines, then done lines."""
        if not self._buffer:
            return
        from safetensors.torch import save_file

        number = self.next_shard
        rel = f"shards/shard_{number:05d}.safetensors"
        tensors: dict[str, torch.Tensor] = {}
        index_lines: list[str] = []
        for _item_id, records, item_tensors in self._buffer:
            tensors.update(item_tensors)
            for record in records:
                index_lines.append(json.dumps({**record, "shard": rel}))
        if tensors:
            final = self.root / rel
            tmp = final.with_name(final.name + ".tmp")
            save_file(tensors, str(tmp), metadata={"format": "l2s-invert", "version": str(FORMAT_VERSION)})
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        _fsync_append(self.index_path, index_lines)
        _fsync_append(
            self.done_path, [json.dumps({"item": item_id, "shard": number}) for item_id, _, _ in self._buffer]
        )
        for item_id, _, _ in self._buffer:
            self.done[item_id] = number
        self.next_shard = number + 1
        self._buffer = []


# --------------------------------------------------------------------------------------------------------------------
# Driver.


def _exit_after() -> int | None:
    value = os.environ.get(EXIT_AFTER_ENV)
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise InvertInputError(f"{EXIT_AFTER_ENV} must be an integer, got {value!r}.") from None


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
    image_root = resolve_image_root(triplets, args.image_root)
    relations = read_relations(triplets)
    if not args.no_negatives and len(relations) < 2:
        raise InvertInputError(
            f"{triplets / 'mapping.json'}: field 'relations' has only {relations}; negative prompts need a second "
            "relation. Use --no-negatives or more relations."
        )
    items = read_items(triplets, image_root, relations, args.split, args.limit)
    exit_after = _exit_after()
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
        "format_version": FORMAT_VERSION,
        **inverter.meta_extra(),
    }
    out = OutputFolder(Path(args.out).expanduser(), meta, settings.shard_size)
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
        for count, item in enumerate(tqdm(pending, desc="invert", unit="item", dynamic_ncols=True), start=1):
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
            if exit_after is not None and count >= exit_after:
                logger.warning("%s=%d: exiting abruptly after %d items (test hook).", EXIT_AFTER_ENV, exit_after, count)
                os._exit(EXIT_AFTER_CODE)
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
