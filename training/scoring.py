"""Scoring a relation classifier on a data split: predictions, accuracy tables, confusion matrix, JSON.

Loss, accuracy overall, per relation, per step and per prompt type, and the confusion matrix with its PNG. :mod:`.train`
scores the validation split with these every epoch, and the ``eval`` command (:mod:`.evaluate`) a saved classifier.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .dataset import MapDataset


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
