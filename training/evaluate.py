"""Scoring relation classifiers and user-supplied detections: the ``eval`` command.

This module owns the ``eval`` command (how a classifier is scored on a data split, the same way :mod:`.train` scores
it every epoch, is :mod:`.scoring`). It has two modes:

* ``eval --checkpoint X.safetensors --data FOLDER --split test``: the classifier's accuracy on one split of an
  ``invert`` folder. Data steps are mapped to classifier step indices exactly as at inference
  (:func:`l2s_core.steps.classifier_step_index`), and data relations to classifier classes by name.
* ``eval --boxes FILE.jsonl``: the GenEval position rule applied to detections the user
  supplies, one JSON object per line::

      {"image": id, "prompt": optional, "subject": name, "object": name, "relation": requested,
       "detections": [{"name": ..., "box": [x0, y0, x1, y1], "score": ...}, ...]}

  Each image is judged on its own requested relation only (no accumulation across checks, unlike the official
  evaluator); the rule itself lives in :mod:`.geometry`.

The result table is the command's output and is written to stdout; diagnostics go through logging. ``--out`` writes
the same numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from l2s_core.checkpoint import load_classifier
from l2s_core.steps import classifier_step_index

from .dataset import MapDataset
from .geometry import PositionRecord, parse_detection, parse_request, score_records
from .scoring import draw_confusion_png, format_table, predict, summarise_predictions, write_json

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``eval`` arguments to a (sub)parser."""
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--checkpoint", help="classifier to score (.safetensors of this pack, or an official .pth)")
    mode.add_argument(
        "--boxes",
        help="JSONL of user-supplied detections to score with the GenEval position rule (no classifier needed)",
    )
    parser.add_argument("--data", help="data folder written by `invert` (with --checkpoint)")
    parser.add_argument(
        "--split", default="test", choices=("train", "val", "test"), help="split to score (default test)"
    )
    parser.add_argument("--family", default=None, help="family of an official .pth checkpoint (see l2s_core.convert)")
    parser.add_argument("--no-negatives", action="store_true", help="score only the positive-prompt records")
    parser.add_argument("--batch-size", type=int, default=256, help="samples per forward pass (default 256)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--confusion", default=None, help="also draw the confusion matrix to this PNG (--checkpoint)")


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    split: str = "test",
    *,
    family: str | None = None,
    include_negatives: bool = True,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score a saved classifier on one split of a data folder.

    Args:
        checkpoint: classifier file.
        data: ``invert`` folder.
        split: "train", "val" or "test".
        family: family of an official ``.pth`` (ignored for our format unless it contradicts the file).
        include_negatives: keep the wrong-relation-prompt records.
        batch_size: samples per forward pass.
        device: torch device.

    Returns:
        The :func:`summarise` dict plus ``checkpoint``, ``data``, ``split`` and ``relations``.

    Raises:
        ValueError: the classifier does not fit the data (channels, map size, relations, steps) or the split is empty.
    """
    loaded = load_classifier(checkpoint, family)
    dataset = MapDataset(data, split, include_negatives=include_negatives)
    meta = dataset.meta
    name = Path(checkpoint).name
    if meta.channels != loaded.channels:
        raise ValueError(
            f"{name} was trained for {loaded.channels} channels ({loaded.family}), but {Path(data).name} has "
            f"{meta.channels} ({meta.family}). Evaluate on data recorded with the classifier's model family."
        )
    if meta.map_size != loaded.map_size:
        raise ValueError(f"{name} takes {loaded.map_size}x{loaded.map_size} maps, the data has {meta.map_size}.")
    if not len(dataset):
        raise ValueError(f"Split {split!r} of {data} has no samples to evaluate.")
    label_index = [loaded.relation_index(r) for r in dataset.relations]

    def step_index(step: int) -> int:
        return classifier_step_index(step, meta.num_steps, loaded.trained_steps, loaded.trained_num_steps)

    p = predict(
        loaded.model.to(device),
        dataset,
        batch_size=batch_size,
        device=device,
        step_index=step_index,
        label_index=label_index,
    )
    summary = summarise_predictions(p, dataset, loaded.relations)
    return {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "split": split,
        "relations": list(loaded.relations),
        "negatives": include_negatives,
        **summary,
    }


def read_boxes_file(path: str | Path) -> list[PositionRecord]:
    """Read user-supplied detections to score, one image per line.

    A line is ``{"image": id, "prompt": optional, "subject": name, "object": name, "relation": requested,
    "detections": [{"name", "box": [x0, y0, x1, y1], "score"?}, ...]}``. An image with several requested relations
    lists them as ``"relations": [{"subject", "relation", "object"}, ...]`` instead of the three single fields
    (the :func:`.geometry.read_position_jsonl` layout; ``image_id`` and ``prompt_id`` are accepted as spellings of
    ``image`` and ``prompt``). Images of the same prompt share the ``prompt`` value (GenEval's per-prompt score);
    without it each image is its own prompt.

    Args:
        path: the JSONL file.

    Returns:
        One :class:`~.geometry.PositionRecord` per line.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not valid JSON, lacks a field, repeats an image id, or has a bad box or relation;
            the message names the file, line and field.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Detections file not found: {p}")
    records: list[PositionRecord] = []
    seen: set[str] = set()
    with p.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{p.name} line {line_no}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg}).") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, found {type(rec).__name__}.")
            image = rec.get("image", rec.get("image_id"))
            if image is None or not str(image).strip():
                raise ValueError(f"{where}, field 'image': missing or empty; expected the image id.")
            image = str(image)
            if image in seen:
                raise ValueError(
                    f"{where}, field 'image': {image!r} appears twice; list several relations of one image in "
                    "one line under 'relations'."
                )
            seen.add(image)
            prompt = rec.get("prompt", rec.get("prompt_id"))
            dets = rec.get("detections")
            if not isinstance(dets, list):
                raise ValueError(f"{where}, field 'detections': expected a list of objects, found {dets!r}.")
            if "relations" in rec:
                rels = rec["relations"]
                if not isinstance(rels, list) or not rels:
                    raise ValueError(f"{where}, field 'relations': expected a non-empty list, found {rels!r}.")
                requests = tuple(parse_request(r, f"{where}, relations[{i}]") for i, r in enumerate(rels))
            else:
                missing = [k for k in ("subject", "object", "relation") if k not in rec]
                if missing:
                    raise ValueError(
                        f"{where}: missing keys {missing}; expected subject, object and relation (or a "
                        "'relations' list)."
                    )
                requests = (parse_request(rec, where),)
            records.append(
                PositionRecord(
                    image_id=image,
                    prompt_id=str(prompt) if prompt is not None else image,
                    detections=tuple(parse_detection(d, f"{where}, detections[{i}]") for i, d in enumerate(dets)),
                    requests=requests,
                )
            )
    if not records:
        raise ValueError(f"Detections file {p} has no records.")
    return records


def score_boxes_file(path: str | Path) -> dict[str, Any]:
    """Score user-supplied detections with the GenEval position rule, each check on its own.

    Args:
        path: JSONL file (see :func:`read_boxes_file`).

    Returns:
        A JSON-ready dict: ``n`` (images), ``correct``, ``accuracy`` (share of images whose checks all pass),
        ``prompts`` (n, correct, accuracy: any image of the prompt correct), ``per_relation`` (n, correct,
        accuracy per requested relation, over checks) and ``images`` (per-image checks with reasons).

    Raises:
        FileNotFoundError, ValueError: as :func:`read_boxes_file`.
    """
    score = score_records(read_boxes_file(path))
    images = [
        {
            "image": r.image_id,
            "prompt": r.prompt_id,
            "correct": r.correct,
            "checks": [
                {
                    "subject": c.request.subject,
                    "relation": c.request.relation,
                    "object": c.request.object,
                    "passed": c.passed,
                    "found": list(c.found),
                    "reason": c.reason,
                }
                for c in r.checks
            ],
        }
        for r in score.images
    ]
    correct = sum(r.correct for r in score.images)
    prompts_ok: dict[str, bool] = {}
    for r in score.images:
        prompts_ok[r.prompt_id] = prompts_ok.get(r.prompt_id, False) or r.correct
    per_relation: dict[str, dict[str, float | int]] = {}
    for rel in score.relation_counts:  # canonical order; counts over checks, so multi-relation images count per check
        checks = [c for r in score.images for c in r.checks if c.request.relation == rel]
        passed = sum(c.passed for c in checks)
        per_relation[rel] = {"n": len(checks), "correct": passed, "accuracy": passed / len(checks)}
    return {
        "n": score.num_images,
        "correct": correct,
        "accuracy": score.image_accuracy,
        "prompts": {"n": score.num_prompts, "correct": sum(prompts_ok.values()), "accuracy": score.prompt_accuracy},
        "per_relation": per_relation,
        "images": images,
    }


def run(args: argparse.Namespace) -> int:
    """Run the ``eval`` command.

    Returns:
        0 on success, 1 on invalid input (the reason is logged).
    """
    try:
        if args.boxes:
            result = score_boxes_file(args.boxes)
            table = format_table(f"GenEval position rule (threshold 0.1) on {args.boxes}: images", result)
            prompts = result["prompts"]
            table += f"prompts correct (any image correct): {prompts['correct']}/{prompts['n']}\n"
        else:
            if not args.data:
                raise ValueError("--checkpoint needs --data FOLDER (a folder written by `invert`).")
            result = evaluate_checkpoint(
                args.checkpoint,
                args.data,
                args.split,
                family=args.family,
                include_negatives=not args.no_negatives,
                batch_size=args.batch_size,
                device=args.device,
            )
            table = format_table(f"{Path(args.checkpoint).name} on {args.data} ({args.split})", result)
            if args.confusion:
                draw_confusion_png(
                    result["confusion"],
                    result["relations"],
                    args.confusion,
                    f"{args.split}: {Path(args.checkpoint).name}",
                )
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    sys.stdout.write(table)
    if args.out:
        write_json(args.out, result)
        logger.info("Wrote %s", args.out)
    return 0
