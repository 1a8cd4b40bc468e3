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

The folder format and its crash-safe writer are :mod:`.maps_folder`; the resolved options are
:mod:`.invert_options`, the inversion of one item :mod:`.dual_inverter`.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch

from l2s_core.families import JOINT

from .dual_inverter import DualInverter
from .invert_options import (
    PSNR_THRESHOLD_FLOW,
    PSNR_THRESHOLD_UNET,
    InvertInputError,
    check_channels,
    resolve_settings,
)
from .maps_folder import MapsFolderError, MapsFolderWriter
from .models import FLUX, load_model
from .triplet_folder import Item, TripletFolderError, read_items, read_relations, resolve_image_root

__all__ = ["InvertInputError", "add_arguments", "load_image", "run"]

logger = logging.getLogger(__name__)

PSNR_CAP = 99.0
"""PSNR written for identical images (infinite PSNR is not valid JSON)."""


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
