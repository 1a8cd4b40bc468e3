"""Relation-classifier checkpoints: loading, validating, saving and converting (method.md §3).

Two formats are understood:

* **ours**: ``.safetensors`` weights plus one JSON document under the metadata key ``"l2s"`` (format name and version,
  official-layout model config, relation mapping, trained step indices, map sizes, target family, channel count,
  layout and provenance);
* **official**: the ``.pth`` dicts of the Learn-to-Steer repository, read with ``torch.load(weights_only=True)``
  only. A file that needs arbitrary code to unpickle is refused, never executed.

Every load rebuilds :class:`~.classifier.RelationClassifier` from the stored config and checks the weights key by
key and shape by shape before loading them, so a wrong file fails with an expected-vs-found message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .classifier import OFFICIAL_INPUT_CHANNELS, ClassifierConfig, RelationClassifier
from .families import get_family
from .relations import canonical_relation

logger = logging.getLogger(__name__)

FORMAT_NAME = "l2s-classifier"
FORMAT_VERSION = 1
METADATA_KEY = "l2s"
CONVERTER_NAME = "l2s_core.convert"
CONVERTER_VERSION = 1
OFFICIAL_FAMILIES: tuple[str, ...] = ("sd14", "sd2", "flux_schnell", "flux_dev")



@dataclass(frozen=True)
class LoadedClassifier:
    """A ready-to-use relation classifier and what it was trained for.

    Attributes:
        model: the network, eval mode, float32, every parameter with requires_grad False.
        relations: relation names in class-index order.
        trained_steps: step indices the classifier was trained on, ascending (method.md §2.5).
        trained_num_steps: number of sampling steps those indices refer to.
        map_size: side of the square classifier input maps.
        orig_map_size: side of the attention grid the training maps were recorded at.
        family: target model family name (e.g. "sd2", "flux_dev").
        channels: channel count C (recorded layers x heads) the target model produces.
        layout: attention layout of the family ("unet" or "joint").
        provenance: where the weights came from (source file name, sha256, converter); JSON-serialisable.
        source_path: the file this was loaded from ("" when built in memory).
    """

    model: RelationClassifier
    relations: tuple[str, ...]
    trained_steps: tuple[int, ...]
    trained_num_steps: int
    map_size: int
    orig_map_size: int
    family: str
    channels: int
    layout: str
    provenance: Mapping[str, Any] = field(default_factory=dict)
    source_path: str = ""

    @property
    def config(self) -> ClassifierConfig:
        """The architecture config of :attr:`model`."""
        return self.model.config

    def relation_index(self, name: str) -> int:
        """Return the class index of a relation, accepting the exact stored name or any alias of a spatial relation.

        Raises:
            ValueError: the relation is not one of this classifier's classes.
        """
        if name in self.relations:
            return self.relations.index(name)
        try:
            canonical = canonical_relation(name)
        except ValueError:
            canonical = None
        if canonical in self.relations:
            return self.relations.index(canonical)
        raise ValueError(
            f"This classifier does not know the relation {name!r}; its classes are {list(self.relations)}."
        )


def load_classifier(path: str | os.PathLike[str], family: str | None = None) -> LoadedClassifier:
    """Load a relation classifier from our ``.safetensors`` format or an official ``.pth``/``.pt`` dict.

    Args:
        path: checkpoint file.
        family: target model family. For official files it is required unless the file stem is one of the official
            names (sd14, sd2, flux_schnell, flux_dev). For our files it is optional and, if given, must match the
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
    if suffix == ".safetensors":
        return _load_ours(p, family)
    if suffix in (".pth", ".pt"):
        return _load_official(p, family)
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


# ----------------------------------------------------------------------------------------------------- internals


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical_family(fname: str, family: str) -> str:
    try:
        return get_family(family).name
    except ValueError as error:
        raise ValueError(f"{fname}: {error}") from None


def _check_family(fname: str, family: str) -> tuple[int | None, str]:
    """(channel count or None, layout) of a family, or a ValueError naming the file."""
    try:
        spec = get_family(family)
    except ValueError as error:
        raise ValueError(f"{fname}: {error}") from None
    if spec.name != family:
        raise ValueError(f"{fname}: family must be stored by its canonical name {spec.name!r}, found {family!r}.")
    return spec.channels, spec.layout


def _relations(fname: str, mapping: Any, num_classes: int) -> tuple[str, ...]:
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(f"{fname}: 'rel_name_to_idx' must be a non-empty dict name -> index, found {mapping!r}.")
    try:
        by_index = {int(i): str(name) for name, i in mapping.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{fname}: 'rel_name_to_idx' values must be integers, found {mapping!r}.") from exc
    if sorted(by_index) != list(range(len(mapping))):
        raise ValueError(
            f"{fname}: 'rel_name_to_idx' must number the relations 0..{len(mapping) - 1} once each, found {mapping!r}."
        )
    if len(by_index) != num_classes:
        raise ValueError(
            f"{fname}: 'rel_name_to_idx' names {len(by_index)} relations but the output layer "
            f"relation_classifier.fc.8 has {num_classes} classes."
        )
    return tuple(by_index[i] for i in range(num_classes))


def _config(fname: str, official: Any, input_channels: int, num_classes: int, family: str | None) -> ClassifierConfig:
    try:
        return ClassifierConfig.from_official(official, input_channels, num_classes, family=family)
    except ValueError as exc:
        raise ValueError(f"{fname}: {exc}") from None


def _build(fname: str, state: Mapping[str, Any], config: ClassifierConfig) -> RelationClassifier:
    """Rebuild the model from ``config`` and load ``state`` after checking keys and shapes."""
    model = RelationClassifier(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    for key in sorted(set(expected) & set(state)):
        value = state[key]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            problems.append(f"{key}: expected a float tensor, found {type(value).__name__}")
        elif tuple(value.shape) != expected[key]:
            problems.append(f"{key}: expected shape {expected[key]}, found {tuple(value.shape)}")
    if problems:
        raise ValueError(
            f"{fname}: the weights do not match the classifier described by its config "
            f"(d_model={config.d_model}, map_size={config.map_size}, num_timesteps={config.num_timesteps}, "
            f"R={config.num_relations}): " + "; ".join(problems)
        )
    model.load_state_dict({k: state[k].to(torch.float32) for k in expected}, strict=True)
    model.eval().requires_grad_(False)
    return model


def _load_official(path: Path, family: str | None) -> LoadedClassifier:
    fname = path.name
    if family is None:
        if path.stem not in OFFICIAL_FAMILIES:
            raise ValueError(
                f"{fname}: cannot tell which model family this official checkpoint is for; expected the family "
                f"argument or a file named after one of {list(OFFICIAL_FAMILIES)} (e.g. sd2.pth), found stem "
                f"{path.stem!r}. Pass family=..."
            )
        family = path.stem
    family = _canonical_family(fname, family)
    channels, layout = _check_family(fname, family)
    if channels is None:
        raise ValueError(
            f"{fname}: official checkpoints exist only for {list(OFFICIAL_FAMILIES)}; found family {family!r}, whose "
            "channel count depends on the model. Train and save a classifier in our format for it instead."
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(_unpickling_refusal(fname, str(exc))) from None
    except Exception as exc:  # boundary: any other read failure becomes a clear ValueError
        raise ValueError(f"{fname}: could not read as a torch checkpoint ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{fname}: expected an official checkpoint dict, found {type(ckpt).__name__}.")
    for key in ("config", "model_state_dict", "rel_name_to_idx"):
        if key not in ckpt:
            raise ValueError(
                f"{fname}: the official checkpoint lacks {key!r}; expected keys model_state_dict, rel_name_to_idx, "
                f"config (and input_channels, training_config), found {sorted(map(str, ckpt))}."
            )
    state = ckpt["model_state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{fname}: 'model_state_dict' must be a dict of tensors, found {type(state).__name__}.")
    input_channels = ckpt.get("input_channels")
    if input_channels is None:
        pe = state.get("object_extractor.positional_encoding.pe")
        input_channels = int(pe.shape[1]) if isinstance(pe, torch.Tensor) and pe.ndim == 3 else OFFICIAL_INPUT_CHANNELS
    fc8 = state.get("relation_classifier.fc.8.weight")
    num_classes = int(fc8.shape[0]) if isinstance(fc8, torch.Tensor) else len(ckpt["rel_name_to_idx"])
    relations = _relations(fname, ckpt["rel_name_to_idx"], num_classes)
    _check_idx_to_rel(fname, ckpt.get("idx_to_rel_name"), relations)
    config = _config(fname, ckpt["config"], int(input_channels), num_classes, family)
    model = _build(fname, state, config)

    training = ckpt.get("training_config") or {}
    if not isinstance(training, Mapping):
        raise ValueError(f"{fname}: 'training_config' must be a dict or None, found {type(training).__name__}.")
    if "timesteps" in training:
        trained_steps = tuple(sorted(int(s) for s in training["timesteps"]))
    else:  # official behaviour without training_config: the raw step index is used
        logger.info("%s has no trained step list; the raw step index is used (identity table).", fname)
        trained_steps = tuple(range(config.num_timesteps))
    trained_num_steps = int(training.get("num_timesteps") or config.num_timesteps)
    provenance = {
        "source_file": fname,
        "source_sha256": _sha256(path),
        "source_format": "learn-to-steer official .pth",
    }
    return _assemble(
        fname,
        model,
        relations,
        trained_steps,
        trained_num_steps,
        int(training.get("orig_map_size", config.map_size)),
        family,
        channels,
        layout,
        provenance,
        str(path),
    )


def _unpickling_refusal(fname: str, torch_message: str) -> str:
    """Explain a ``weights_only`` refusal without relaying torch's advice to retry unsafely."""
    unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", torch_message)
    if unsafe:
        return (
            f"{fname} needs arbitrary code execution to unpickle; refusing (it references {unsafe.group(1)}; only "
            "plain dicts, lists, numbers, strings and tensors are accepted). Only if you trust its source, re-save "
            f"it elsewhere as such a plain dict and convert that with `python -m {CONVERTER_NAME}`."
        )
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", torch_message)
    return (
        f"{fname}: could not read as a torch checkpoint with weights_only=True "
        f"({detail.group(1).strip() if detail else 'unsupported pickle content'}); expected an official "
        "Learn-to-Steer .pth dict. The file is corrupt or not a classifier checkpoint; nothing in it was executed."
    )


def _check_idx_to_rel(fname: str, idx_to_rel: Any, relations: tuple[str, ...]) -> None:
    if idx_to_rel is None:
        return
    try:
        found = {int(i): str(n) for i, n in idx_to_rel.items()}
    except (AttributeError, TypeError, ValueError):
        found = None
    if found != dict(enumerate(relations)):
        raise ValueError(
            f"{fname}: 'idx_to_rel_name' {idx_to_rel!r} disagrees with 'rel_name_to_idx'; expected "
            f"{dict(enumerate(relations))}."
        )


def _load_ours(path: Path, family: str | None) -> LoadedClassifier:
    fname = path.name
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # boundary: corrupt or truncated file
        raise ValueError(f"{fname}: could not read as safetensors ({type(exc).__name__}: {exc}).") from exc
    if METADATA_KEY not in header:
        raise ValueError(
            f"{fname}: no {METADATA_KEY!r} metadata; expected a classifier saved by this pack (format {FORMAT_NAME!r}). "
            "Convert official .pth files with `python -m l2s_core.convert`."
        )
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{fname}: the {METADATA_KEY!r} metadata is not valid JSON ({exc}).") from exc
    if meta.get("format") != FORMAT_NAME or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{fname}: expected format {FORMAT_NAME!r} version {FORMAT_VERSION}, found "
            f"{meta.get('format')!r} version {meta.get('format_version')!r}."
        )
    required = (
        "config", "input_channels", "rel_name_to_idx", "trained_steps", "trained_num_steps", "map_size",
        "orig_map_size", "family", "channels", "layout",
    )  # fmt: skip
    missing = [k for k in required if k not in meta]
    if missing:
        raise ValueError(f"{fname}: metadata lacks {missing}; expected all of {list(required)}.")
    stored_family = str(meta["family"])
    if family is not None and family != stored_family:
        raise ValueError(f"{fname}: this classifier is for family {stored_family!r}, but {family!r} was requested.")
    table_channels, table_layout = _check_family(fname, stored_family)
    channels, layout = int(meta["channels"]), str(meta["layout"])
    if table_channels is not None and channels != table_channels:
        raise ValueError(f"{fname}: family {stored_family!r} has {table_channels} channels, metadata says {channels}.")
    if layout != table_layout:
        raise ValueError(f"{fname}: expected layout {table_layout!r} for family {stored_family!r}, found {layout!r}.")
    fc8 = state.get("relation_classifier.fc.8.weight")
    num_classes = int(fc8.shape[0]) if fc8 is not None else len(meta["rel_name_to_idx"])
    relations = _relations(fname, meta["rel_name_to_idx"], num_classes)
    config = _config(fname, meta["config"], int(meta["input_channels"]), num_classes, None)
    model = _build(fname, state, config)
    return _assemble(
        fname,
        model,
        relations,
        tuple(int(s) for s in meta["trained_steps"]),
        int(meta["trained_num_steps"]),
        int(meta["orig_map_size"]),
        stored_family,
        channels,
        layout,
        dict(meta.get("provenance") or {}),
        str(path),
        stored_map_size=int(meta["map_size"]),
    )


def _assemble(
    fname: str,
    model: RelationClassifier,
    relations: tuple[str, ...],
    trained_steps: tuple[int, ...],
    trained_num_steps: int,
    orig_map_size: int,
    family: str,
    channels: int,
    layout: str,
    provenance: dict[str, Any],
    source_path: str,
    stored_map_size: int | None = None,
) -> LoadedClassifier:
    """Cross-check the metadata against the model and return the :class:`LoadedClassifier`."""
    cfg = model.config
    if stored_map_size is not None and stored_map_size != cfg.map_size:
        raise ValueError(f"{fname}: metadata map_size {stored_map_size} differs from the config's {cfg.map_size}.")
    if not trained_steps or trained_steps != tuple(sorted(set(trained_steps))):
        raise ValueError(f"{fname}: trained steps must be distinct and ascending, found {list(trained_steps)}.")
    if trained_steps[0] < 0 or trained_steps[-1] >= cfg.num_timesteps:
        raise ValueError(
            f"{fname}: trained steps {list(trained_steps)} must lie in [0, {cfg.num_timesteps}) "
            "(the size of the step-index embedding)."
        )
    if channels > cfg.input_channels:
        raise ValueError(
            f"{fname}: family {family!r} produces {channels} channels but the classifier accepts at most "
            f"{cfg.input_channels} (positional table length)."
        )
    return LoadedClassifier(
        model=model,
        relations=relations,
        trained_steps=trained_steps,
        trained_num_steps=trained_num_steps,
        map_size=cfg.map_size,
        orig_map_size=orig_map_size,
        family=family,
        channels=channels,
        layout=layout,
        provenance=provenance,
        source_path=source_path,
    )
