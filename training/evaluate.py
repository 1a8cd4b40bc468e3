"""Scoring relation classifiers and user-supplied detections: the ``eval`` command.

This module owns how a classifier is scored on a data split (loss, accuracy overall, per relation, per step and per
prompt type, confusion matrix and its PNG) — :mod:`.train` uses the same functions every epoch — and the ``eval``
command, which has two modes:

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
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torch.utils.data import DataLoader

from l2s_core.checkpoint import load_classifier
from l2s_core.steps import classifier_step_index

from .dataset import MapDataset
from .geometry import PositionRecord, parse_detection, parse_request, score_records

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictions:
    """A classifier's outputs on every sample of a split, in dataset record order.

    Attributes:
        logits: (N, R) logits.
        labels: (N,) true class indices (in the classifier's class order).
        steps: (N,) data step indices of the samples (not the classifier step index).
        losses: (N,) per-sample cross-entropy.
    """

    logits: Tensor
    labels: Tensor
    steps: Tensor
    losses: Tensor

    @property
    def predicted(self) -> Tensor:
        """(N,) argmax class indices."""
        return self.logits.argmax(dim=1)


def predict(
    model: nn.Module,
    dataset: MapDataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    input_scale: float = 1.0,
    step_index: Callable[[int], int] | None = None,
    label_index: Sequence[int] | None = None,
) -> Predictions:
    """Run a classifier over a whole split in record order (eval mode, no gradients).

    Args:
        model: a :class:`~l2s_core.classifier.RelationClassifier` (or anything with the same call signature).
        dataset: the split.
        batch_size: samples per forward pass.
        device: where to run.
        input_scale: multiply the maps by this before the forward pass (see ``train --input-scale``).
        step_index: maps a data step to the classifier step index (default: identity, as in training).
        label_index: maps a data label index to the classifier's class index (default: identity).

    Returns:
        The :class:`Predictions`, on the CPU.
    """
    was_training = model.training
    model.eval()
    step_table = {s: (step_index(s) if step_index else s) for s in dataset.steps}
    label_table = torch.tensor(list(label_index) if label_index is not None else range(len(dataset.relations)))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    logits_all, labels_all, steps_all, losses_all = [], [], [], []
    with torch.no_grad():
        for maps, steps, labels in loader:
            idx = torch.tensor([step_table[int(s)] for s in steps], dtype=torch.long)
            target = label_table[labels]
            logits = model(maps.to(device) * input_scale, idx.to(device)).float().cpu()  # (B, R)
            logits_all.append(logits)
            labels_all.append(target)
            steps_all.append(steps)
            losses_all.append(F.cross_entropy(logits, target, reduction="none"))
    model.train(was_training)
    if not logits_all:
        r = len(dataset.relations)
        empty = torch.zeros(0, dtype=torch.long)
        return Predictions(torch.zeros(0, r), empty, empty, torch.zeros(0))
    return Predictions(torch.cat(logits_all), torch.cat(labels_all), torch.cat(steps_all), torch.cat(losses_all))


def _group(keys: Sequence[Any], correct: Tensor) -> dict[str, dict[str, float | int]]:
    out: dict[str, dict[str, float | int]] = {}
    for key in sorted(set(keys), key=lambda k: (str(type(k)), k)):
        mask = torch.tensor([k == key for k in keys], dtype=torch.bool)
        n = int(mask.sum())
        c = int(correct[mask].sum())
        out[str(key)] = {"n": n, "correct": c, "accuracy": c / n}
    return out


def confusion_matrix(labels: Tensor, predicted: Tensor, num_classes: int) -> list[list[int]]:
    """Counts ``m[true][predicted]``.

    Args:
        labels: (N,) true class indices.
        predicted: (N,) predicted class indices.
        num_classes: R.

    Returns:
        An R x R nested list of ints (rows: true class, columns: predicted class).
    """
    flat = labels.long() * num_classes + predicted.long()  # (N,) index into the row-major R*R matrix
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).tolist()  # (R, R)


def summarise(
    predicted: Tensor,
    labels: Tensor,
    steps: Tensor,
    relations: Sequence[str],
    losses: Tensor | None = None,
    prompt_types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy overall, per relation (by true label), per step and per prompt type, plus the confusion matrix.

    Args:
        predicted: (N,) predicted class indices.
        labels: (N,) true class indices.
        steps: (N,) data step indices.
        relations: class names in index order.
        losses: (N,) per-sample losses, or None to leave ``loss`` out.
        prompt_types: per-sample prompt types ("pos"/"neg"), or None to leave ``per_prompt_type`` out.

    Returns:
        A JSON-ready dict: ``n``, ``correct``, ``accuracy`` (NaN when n == 0), ``loss`` (mean), ``per_relation``,
        ``per_step``, ``per_step_accuracy`` (step -> accuracy), ``per_prompt_type``, ``confusion``.
    """
    n = int(labels.numel())
    correct = predicted.long() == labels.long()  # (N,)
    out: dict[str, Any] = {
        "n": n,
        "correct": int(correct.sum()),
        "accuracy": int(correct.sum()) / n if n else math.nan,
    }
    if losses is not None:
        out["loss"] = float(losses.double().mean()) if n else math.nan
    names = [relations[int(i)] for i in labels]
    per_relation = _group(names, correct)
    out["per_relation"] = {r: per_relation[r] for r in relations if r in per_relation}
    out["per_step"] = _group([int(s) for s in steps], correct)
    out["per_step_accuracy"] = {k: v["accuracy"] for k, v in out["per_step"].items()}
    if prompt_types is not None:
        out["per_prompt_type"] = _group(list(prompt_types), correct)
    out["confusion"] = confusion_matrix(labels, predicted, len(relations))
    return out


def summarise_predictions(p: Predictions, dataset: MapDataset, relations: Sequence[str]) -> dict[str, Any]:
    """:func:`summarise` for :func:`predict` output, with per-prompt-type numbers from the dataset records."""
    return summarise(p.predicted, p.labels, p.steps, relations, p.losses, [r.prompt_type for r in dataset.records])


def json_safe(value: Any) -> Any:
    """Replace NaN/inf floats by None (strict JSON) in nested dicts/lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented strict JSON (NaN -> null)."""
    Path(path).write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def draw_confusion_png(matrix: Sequence[Sequence[int]], relations: Sequence[str], path: str | Path, title: str) -> None:
    """Draw a confusion matrix (rows true, columns predicted) as a PNG with PIL.

    Cells are shaded by their share of the row (white 0 to dark blue 1) and show the count.

    Args:
        matrix: R x R counts.
        relations: class names in index order.
        path: output ``.png``.
        title: text at the top.
    """
    r = len(relations)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str) -> tuple[int, int]:
        x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=font)
        return int(x1 - x0), int(y1 - y0)

    cell = 56
    label_w = max([text_size(name)[0] for name in relations]) + 28  # names, then room for the row number
    line_h = text_size("Ag")[1] + 6
    legend = [title, "rows: true, columns: predicted"] + [f"col {j}: {name}" for j, name in enumerate(relations)]
    top = 4 + (len(legend) + 1) * line_h + 4  # legend lines, then one line of column numbers
    width = max(label_w + r * cell, max(text_size(t)[0] for t in legend) + 6) + 10
    height = top + r * cell + 10
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for k, text in enumerate(legend):
        draw.text((6, 4 + k * line_h), text, fill="black", font=font)
    for i, name in enumerate(relations):
        row_total = sum(matrix[i]) or 1
        y = top + i * cell
        draw.text((6, y + cell // 2 - line_h // 2), name, fill="black", font=font)
        for j in range(r):
            x = label_w + j * cell
            share = matrix[i][j] / row_total
            shade = (int(255 - 225 * share), int(255 - 185 * share), 255)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=shade, outline="gray")
            text = str(matrix[i][j])
            tw, th = text_size(text)
            draw.text(
                (x + (cell - tw) // 2, y + (cell - th) // 2),
                text,
                fill="white" if share > 0.5 else "black",
                font=font,
            )
        draw.text((label_w - 14, y + 4), str(i), fill="gray", font=font)
    for j in range(r):
        draw.text((label_w + j * cell + cell // 2 - 3, top - line_h), str(j), fill="gray", font=font)
    img.save(str(path), format="PNG")


def format_table(title: str, summary: Mapping[str, Any]) -> str:
    """Render a :func:`summarise` result as a plain-text table."""
    lines = [title, f"{'group':<34}{'n':>8}{'correct':>9}{'accuracy':>10}"]

    def row(name: str, g: Mapping[str, Any]) -> None:
        acc = g.get("accuracy")
        acc_s = "-" if acc is None or (isinstance(acc, float) and math.isnan(acc)) else f"{100 * acc:.1f}%"
        lines.append(f"{name:<34}{g['n']:>8}{g['correct']:>9}{acc_s:>10}")

    row("overall", summary)
    for section, label in (("per_relation", "relation"), ("per_step", "step"), ("per_prompt_type", "prompt")):
        for key, g in (summary.get(section) or {}).items():
            row(f"{label} {key}", g)
    if "loss" in summary and summary["loss"] is not None:
        lines.append(f"mean cross-entropy: {summary['loss']:.4f}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ eval command


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
