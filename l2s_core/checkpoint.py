"""Relation-classifier checkpoints: loading, validating, saving and converting.

Two formats are understood:

* **ours**: ``.safetensors`` weights plus one JSON document under the metadata key ``"l2s"`` (format name and version,
  official-layout model config, relation mapping, trained step indices, map sizes, target family, channel count,
  layout and provenance);
* **official**: the ``.pth`` dicts of the Learn-to-Steer repository, read with ``torch.load(weights_only=True)``
  only. A file that needs arbitrary code to unpickle is refused, never executed (:mod:`.official_checkpoint`).

This module owns our format and the entry points (:func:`load_classifier` picks the reader by extension,
:func:`convert_official` writes an official file in our format). Every load checks each metadata field for its type
and range (a message names the file, the field, what was found and what is expected), checks that the relation names
are the canonical ones the steering nodes ask for, rebuilds :class:`~.classifier.RelationClassifier` from the stored
config and checks the weights key by key and shape by shape before loading them (:mod:`.loaded_classifier`), so a
wrong file fails at load time, not later in the sampler.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .families import LAYOUTS
from .fields import require_int, require_int_list, require_mapping, require_str
from .loaded_classifier import (
    LoadedClassifier,
    assemble,
    build_model,
    classifier_config,
    family_facts,
    relations_from_mapping,
)
from .official_checkpoint import load_official

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "METADATA_KEY", "LoadedClassifier", "convert_official", "load_classifier",
           "save_classifier"]

logger = logging.getLogger(__name__)

FORMAT_NAME = "l2s-classifier"
FORMAT_VERSION = 1
METADATA_KEY = "l2s"
CONVERTER_NAME = "l2s_core.convert"
CONVERTER_VERSION = 1


def load_classifier(path: str | os.PathLike[str], family: str | None = None) -> LoadedClassifier:
    """Load a relation classifier from our ``.safetensors`` format or an official ``.pth``/``.pt`` dict.

    Args:
        path: checkpoint file.
        family: target model family. For official files it may be left out when the file stem is one of the
            published names (sd14, sd2, flux_schnell, flux_dev) or the checkpoint's own configs match exactly one
            published family's recipe (FLUX files always; SD files when they record their epochs). For our files it is optional and, if given, must match the
            stored family.

    Returns:
        The classifier in eval mode with frozen float32 parameters, plus its metadata.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported extension, unsafe or unreadable file, bad metadata, unknown family, or weights that
            do not match the stored config (missing/unexpected keys, wrong shapes).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Classifier checkpoint not found: {p}")
    suffix = p.suffix.lower()
    if suffix in (".safetensors", ".pth", ".pt") and p.stat().st_size == 0:
        raise ValueError(
            f"{p.name}: empty file (0 bytes); expected a relation classifier checkpoint. The download or copy did "
            "not finish: copy the file again."
        )
    if suffix == ".safetensors":
        return _load_ours(p, family)
    if suffix in (".pth", ".pt"):
        return load_official(p, family)
    raise ValueError(f"{p.name}: unsupported classifier file type {suffix!r}; expected .safetensors, .pth or .pt.")


def save_classifier(classifier: LoadedClassifier, path: str | os.PathLike[str]) -> None:
    """Write a classifier in our format: ``.safetensors`` weights plus JSON metadata under the key ``"l2s"``.

    Args:
        classifier: the classifier and its metadata.
        path: destination, must end in ``.safetensors``; an existing file is replaced.

    Raises:
        ValueError: wrong extension or provenance that is not JSON-serialisable.
    """
    p = Path(path)
    if p.suffix.lower() != ".safetensors":
        raise ValueError(f"{p.name}: classifiers are saved as .safetensors; found extension {p.suffix!r}.")
    c = classifier
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": c.config.to_official(),
        "input_channels": c.config.input_channels,
        "rel_name_to_idx": {name: i for i, name in enumerate(c.relations)},
        "trained_steps": list(c.trained_steps),
        "trained_num_steps": c.trained_num_steps,
        "map_size": c.map_size,
        "orig_map_size": c.orig_map_size,
        "family": c.family,
        "channels": c.channels,
        "layout": c.layout,
        "provenance": dict(c.provenance),
    }
    try:
        text = json.dumps(meta, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"{p.name}: classifier metadata must be JSON-serialisable ({exc}); check provenance.") from exc
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in c.model.state_dict().items()}
    save_file(tensors, str(p), metadata={METADATA_KEY: text})
    logger.info("Saved %s classifier (%d relations) to %s", c.family, len(c.relations), p)


def convert_official(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], family: str | None = None
) -> LoadedClassifier:
    """Convert an official ``.pth`` checkpoint into our ``.safetensors`` format.

    Args:
        src: official checkpoint (read with ``weights_only=True``).
        dst: destination ``.safetensors`` file.
        family: target family; may be omitted when the file stem is an official name.

    Returns:
        The loaded classifier, with the provenance that was written.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_classifier` and :func:`save_classifier`.
    """
    if Path(src).suffix.lower() not in (".pth", ".pt"):
        raise ValueError(f"{Path(src).name}: expected an official .pth/.pt checkpoint to convert.")
    loaded = load_classifier(src, family)
    provenance = {**loaded.provenance, "converter": CONVERTER_NAME, "converter_version": CONVERTER_VERSION}
    loaded = replace(loaded, provenance=provenance)
    save_classifier(loaded, dst)
    return loaded


# ----------------------------------------------------------------------------------------------------- our format


_REQUIRED_METADATA: tuple[str, ...] = (
    "config", "input_channels", "rel_name_to_idx", "trained_steps", "trained_num_steps", "map_size",
    "orig_map_size", "family", "channels", "layout",
)  # fmt: skip


def _read_metadata(fname: str, header: Mapping[str, str]) -> Mapping[str, Any]:
    """The ``"l2s"`` metadata document as a dict, with its format checked."""
    if METADATA_KEY not in header:
        raise ValueError(
            f"{fname}: no {METADATA_KEY!r} metadata; expected a classifier saved by this pack (format {FORMAT_NAME!r}). "
            "Convert official .pth files with `python -m l2s_core.convert`."
        )
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{fname}: the {METADATA_KEY!r} metadata is not valid JSON ({exc}).") from exc
    meta = require_mapping(meta, f"the {METADATA_KEY!r} metadata", fname,
                           expected=f"a JSON object with the fields {list(_REQUIRED_METADATA)}")
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{fname}: expected format {FORMAT_NAME!r} version {FORMAT_VERSION}, found "
            f"{meta.get('format')!r} version {meta.get('format_version')!r}."
        )
    missing = [k for k in _REQUIRED_METADATA if k not in meta]
    if missing:
        raise ValueError(f"{fname}: metadata lacks {missing}; expected all of {list(_REQUIRED_METADATA)}.")
    return meta


def _load_ours(path: Path, family: str | None) -> LoadedClassifier:
    fname = path.name
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # boundary: corrupt or truncated file
        raise ValueError(f"{fname}: could not read as safetensors ({type(exc).__name__}: {exc}).") from exc
    meta = _read_metadata(fname, header)
    stored_family = require_str(meta["family"], "'family'", fname)
    if family is not None and family != stored_family:
        raise ValueError(f"{fname}: this classifier is for family {stored_family!r}, but {family!r} was requested.")
    table_channels, table_layout = family_facts(fname, stored_family)
    channels = require_int(meta["channels"], "'channels'", fname, minimum=1)
    layout = require_str(meta["layout"], "'layout'", fname, choices=LAYOUTS)
    if table_channels is not None and channels != table_channels:
        raise ValueError(f"{fname}: family {stored_family!r} has {table_channels} channels, metadata says {channels}.")
    if layout != table_layout:
        raise ValueError(f"{fname}: expected layout {table_layout!r} for family {stored_family!r}, found {layout!r}.")
    input_channels = require_int(meta["input_channels"], "'input_channels'", fname, minimum=1)
    trained_steps = require_int_list(meta["trained_steps"], "'trained_steps'", fname, minimum=0)
    trained_num_steps = require_int(meta["trained_num_steps"], "'trained_num_steps'", fname, minimum=1)
    map_size = require_int(meta["map_size"], "'map_size'", fname, minimum=1)
    orig_map_size = require_int(meta["orig_map_size"], "'orig_map_size'", fname, minimum=1)
    provenance = meta.get("provenance")
    provenance = {} if provenance is None else require_mapping(provenance, "'provenance'", fname)
    fc8 = state.get("relation_classifier.fc.8.weight")
    num_classes = int(fc8.shape[0]) if fc8 is not None and fc8.ndim == 2 else len(
        require_mapping(meta["rel_name_to_idx"], "'rel_name_to_idx'", fname)
    )
    relations = relations_from_mapping(fname, meta["rel_name_to_idx"], num_classes)
    config = classifier_config(fname, meta["config"], input_channels, num_classes, None)
    model = build_model(fname, state, config)
    return assemble(
        fname, model, relations, trained_steps, trained_num_steps, orig_map_size, stored_family, channels, layout,
        dict(provenance), str(path), stored_map_size=map_size,
    )
