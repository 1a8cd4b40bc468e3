"""Turning a training run (or a classifier file) into the final shareable checkpoint: the ``export`` command.

Usage::

    python -m training export RUN_OR_CKPT OUT.safetensors [--family F] [--which best|last]

``RUN_OR_CKPT`` is a ``train`` run folder (its ``best.safetensors`` is exported unless ``--which last``) or any
classifier file :func:`l2s_core.checkpoint.load_classifier` reads. The output is this pack's ``.safetensors`` format
with full metadata: family, channels, layout, relations, trained steps (the data's ``record_steps``), trained number
of steps (``num_steps``), map size, original map size (the data's token grid, or the map size for multi-resolution
maps) and provenance, including a summary of the run's ``metrics.json`` when there is one. For a run folder the
metadata is cross-checked against the data ``meta.json`` recorded in ``metrics.json``. The written file is loaded
back with ``load_classifier`` and compared with what was meant to be written before the command reports success.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from l2s_core.checkpoint import LoadedClassifier, load_classifier, save_classifier
from l2s_core.families import get_family

logger = logging.getLogger(__name__)

EXPORTER_NAME = "training.export"
EXPORTER_VERSION = 1


def _metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    final = metrics.get("final") or {}

    def acc(split: str) -> Any:
        s = final.get(split)
        return None if not s else s.get("accuracy")

    return {
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": metrics.get("epochs_run"),
        "best_val_loss": metrics.get("best_val_loss"),
        "val_accuracy": acc("val"),
        "test_accuracy": acc("test"),
        "test_per_relation": {
            k: v.get("accuracy") for k, v in ((final.get("test") or {}).get("per_relation") or {}).items()
        },
        "samples": metrics.get("samples"),
    }


def _check_against_data(fname: str, c: LoadedClassifier, data_meta: dict[str, Any]) -> None:
    """Raise if the checkpoint's metadata disagrees with the data it was trained on."""
    grid = data_meta.get("grid")
    expected = {
        "family": get_family(str(data_meta["family"])).name,
        "channels": data_meta["channels"],
        "layout": data_meta["layout"],
        "trained_num_steps": data_meta["num_steps"],
        "map_size": data_meta["map_size"],
        "orig_map_size": grid if grid is not None else data_meta["map_size"],
        "relations": tuple(sorted(data_meta["relations"])),
    }
    found = {
        "family": c.family,
        "channels": c.channels,
        "layout": c.layout,
        "trained_num_steps": c.trained_num_steps,
        "map_size": c.map_size,
        "orig_map_size": c.orig_map_size,
        "relations": c.relations,
    }
    wrong = {k: (expected[k], found[k]) for k in expected if expected[k] != found[k]}
    if not set(c.trained_steps) <= set(data_meta["record_steps"]):
        wrong["trained_steps"] = (data_meta["record_steps"], list(c.trained_steps))
    if wrong:
        details = "; ".join(f"{k}: data says {e!r}, checkpoint has {f!r}" for k, (e, f) in wrong.items())
        raise ValueError(f"{fname} does not match the data meta.json recorded in metrics.json: {details}.")


def export_classifier(
    source: str | Path,
    out: str | Path,
    *,
    family: str | None = None,
    which: str = "best",
) -> LoadedClassifier:
    """Write the final checkpoint for a run folder or classifier file, and verify it by loading it back.

    Args:
        source: a ``train`` run folder, or a classifier file.
        out: destination ``.safetensors``.
        family: family to record (default: the one the classifier was trained for). A different family must have
            the same layout and, when it has a fixed channel count, the same channels.
        which: "best" or "last" weights of a run folder.

    Returns:
        The classifier as loaded back from ``out``.

    Raises:
        FileNotFoundError: no checkpoint in the run folder, or no such file.
        ValueError: invalid checkpoint, incompatible family, metadata that contradicts the run's data, or a file
            that does not load back identically.
    """
    src = Path(source)
    out_path = Path(out)
    metrics: dict[str, Any] | None = None
    if src.is_dir():
        if which not in ("best", "last"):
            raise ValueError(f"--which must be 'best' or 'last', found {which!r}.")
        ckpt = src / f"{which}.safetensors"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt}: not found; expected a run folder written by `python -m training train`.")
        metrics_path = src / "metrics.json"
        if metrics_path.is_file():
            try:
                metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{metrics_path}: not valid JSON ({exc}).") from exc
        else:
            logger.warning("%s has no metrics.json; the export carries no training summary.", src)
    else:
        ckpt = src
    if out_path.resolve() == ckpt.resolve():
        raise ValueError(f"Refusing to overwrite the source checkpoint {ckpt}; choose another output path.")
    loaded = load_classifier(ckpt)
    if metrics is not None and isinstance(metrics.get("data_meta"), dict):
        _check_against_data(ckpt.name, loaded, metrics["data_meta"])

    provenance: dict[str, Any] = {
        **dict(loaded.provenance),
        "exporter": EXPORTER_NAME,
        "exporter_version": EXPORTER_VERSION,
        "exported_from": ckpt.name if not src.is_dir() else f"{src.name}/{ckpt.name}",
    }
    if metrics is not None:
        provenance["metrics"] = _metrics_summary(metrics)
    if family is not None:
        spec = get_family(family)
        if spec.name != loaded.family:
            if spec.layout != loaded.layout or (spec.channels is not None and spec.channels != loaded.channels):
                raise ValueError(
                    f"Cannot export a {loaded.family} classifier ({loaded.channels} channels, {loaded.layout} layout) "
                    f"as family {spec.name!r} ({spec.channels or 'any'} channels, {spec.layout} layout)."
                )
            provenance["family_relabelled_from"] = loaded.family
        loaded = replace(loaded, family=spec.name)
    final = replace(loaded, provenance=provenance, source_path="")
    save_classifier(final, out_path)

    back = load_classifier(out_path)
    mismatches = [
        name
        for name in (
            "relations", "trained_steps", "trained_num_steps", "map_size", "orig_map_size", "family", "channels",
            "layout",
        )
        if getattr(back, name) != getattr(final, name)
    ]  # fmt: skip
    if dict(back.provenance) != json.loads(json.dumps(provenance)):
        mismatches.append("provenance")
    want, got = final.model.state_dict(), back.model.state_dict()
    if set(want) != set(got) or any(not torch.equal(want[k].float(), got[k]) for k in want):
        mismatches.append("weights")
    if mismatches:
        raise ValueError(f"{out_path}: the written file does not load back identically ({mismatches}).")
    logger.info(
        "Exported %s -> %s: family %s, %d channels, relations %s, trained steps %s of %d.",
        ckpt,
        out_path,
        back.family,
        back.channels,
        list(back.relations),
        list(back.trained_steps),
        back.trained_num_steps,
    )
    return back


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``export`` arguments to a (sub)parser."""
    parser.add_argument("source", metavar="RUN_OR_CKPT", help="run folder written by `train`, or a classifier file")
    parser.add_argument("out", metavar="OUT.safetensors", help="final checkpoint to write")
    parser.add_argument("--family", default=None, help="family to record (default: the trained one)")
    parser.add_argument(
        "--which", default="best", choices=("best", "last"), help="weights of a run folder (default best)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the ``export`` command.

    Returns:
        0 on success, 1 on invalid input (the reason is logged).
    """
    try:
        export_classifier(args.source, args.out, family=args.family, which=args.which)
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    return 0
