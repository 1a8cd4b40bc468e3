"""Relation-classifier checkpoints: loading, validating, saving and converting.

Two formats are understood:

* **ours**: ``.safetensors`` weights plus one JSON document under the metadata key ``"l2s"`` (format name and version,
  official-layout model config, relation mapping, trained step indices, map sizes, target family, channel count,
  layout and provenance);
* **official**: the ``.pth`` dicts of the Learn-to-Steer repository, read with ``torch.load(weights_only=True)``
  only. A file that needs arbitrary code to unpickle is refused, never executed.

Every load checks each metadata field for its type and range (a message names the file, the field, what was found
and what is expected), checks that the relation names are the canonical ones the steering nodes ask for, rebuilds
:class:`~.classifier.RelationClassifier` from the stored config and checks the weights key by key and shape by shape
before loading them, so a wrong file fails at load time, not later in the sampler.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .classifier import OFFICIAL_INPUT_CHANNELS, ClassifierConfig, RelationClassifier, published_config
from .families import LAYOUTS, PUBLISHED_FAMILIES, get_family
from .fields import field_error, require_int, require_int_list, require_mapping, require_str
from .relations import canonical_relation, check_class_names
from .safe_load import load_torch_file

logger = logging.getLogger(__name__)

FORMAT_NAME = "l2s-classifier"
FORMAT_VERSION = 1
METADATA_KEY = "l2s"
CONVERTER_NAME = "l2s_core.convert"
CONVERTER_VERSION = 1


@dataclass(frozen=True)
class LoadedClassifier:
    """A ready-to-use relation classifier and what it was trained for.

    Attributes:
        model: the network, eval mode, float32, every parameter with requires_grad False.
        relations: relation names in class-index order.
        trained_steps: step indices the classifier was trained on, ascending.
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


def _relation_index_value(value: Any) -> int | None:
    """A class index: an int, or a decimal string as in the official mapping.json; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _relations(fname: str, mapping: Any, num_classes: int) -> tuple[str, ...]:
    expected = "a non-empty dict relation name -> class index, e.g. {\"above\": 0, \"below\": 1}"
    if not isinstance(mapping, Mapping) or not mapping:
        raise field_error(fname, "'rel_name_to_idx'", expected, mapping)
    by_index: dict[int, str] = {}
    for name, value in mapping.items():
        if not isinstance(name, str) or not name.strip():
            raise field_error(fname, "every relation name in 'rel_name_to_idx'", "a non-empty string", name)
        index = _relation_index_value(value)
        if index is None:
            raise field_error(fname, f"'rel_name_to_idx'[{name!r}]", "an integer class index", value)
        by_index[index] = name
    if sorted(by_index) != list(range(len(mapping))):
        raise ValueError(
            f"{fname}: 'rel_name_to_idx' must number the relations 0..{len(mapping) - 1} once each, found {mapping!r}."
        )
    if len(by_index) != num_classes:
        raise ValueError(
            f"{fname}: 'rel_name_to_idx' names {len(by_index)} relations but the output layer "
            f"relation_classifier.fc.8 has {num_classes} classes."
        )
    relations = tuple(by_index[i] for i in range(num_classes))
    try:
        check_class_names(relations)
    except ValueError as exc:
        raise ValueError(f"{fname}: 'rel_name_to_idx': {exc}") from None
    return relations


def _config(fname: str, official: Any, input_channels: int, num_classes: int, family: str | None) -> ClassifierConfig:
    try:
        return ClassifierConfig.from_official(official, input_channels, num_classes, family=family)
    except ValueError as exc:
        raise ValueError(f"{fname}: {exc}") from None


def _check_official_family(fname: str, family: str) -> tuple[int, str]:
    """(channel count, layout) of a family an official checkpoint can be for, or a ValueError naming the file."""
    channels, layout = _check_family(fname, family)
    if channels is None:
        raise ValueError(
            f"{fname}: official checkpoints exist only for {list(PUBLISHED_FAMILIES)}; found family {family!r}, whose "
            "channel count depends on the model. Train and save a classifier in our format for it instead."
        )
    return channels, layout


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


def _family_from_training_config(ckpt: Mapping[str, Any]) -> str | None:
    """The one published family whose recipe matches an official checkpoint's own configs, or None.

    Compared with each published family's entry in the family table: the classifier size (extractor depth), the
    trained step indices and the schedule length, and (where the file records them) the epochs and learning rate.
    SD1.4 and SD2.1 differ only in their epochs (150 vs 100), so a file without ``num_epochs`` may stay ambiguous.
    """
    config = ckpt.get("config")
    training = ckpt.get("training_config")
    if not isinstance(config, Mapping) or not isinstance(training, Mapping):
        return None
    extractor = config.get("extractor")
    depth = extractor.get("num_layers") if isinstance(extractor, Mapping) else None
    steps = training.get("timesteps")
    recorded = sorted(steps) if isinstance(steps, list) and all(isinstance(s, int) for s in steps) else None
    matches = []
    for name in PUBLISHED_FAMILIES:
        recipe = get_family(name).training_recipe()
        facts = (
            (depth, published_config(name).extractor.num_layers),
            (recorded, sorted(recipe.record_steps)),
            (training.get("num_timesteps"), recipe.num_steps),
            (training.get("num_epochs"), recipe.epochs),
            (training.get("lr"), recipe.lr),
        )
        if all(found is None or found == expected for found, expected in facts):
            matches.append(name)
    return matches[0] if len(matches) == 1 else None


def _load_official(path: Path, family: str | None) -> LoadedClassifier:
    fname = path.name
    if family is not None:
        _check_official_family(fname, _canonical_family(fname, family))
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, Mapping):
        raise field_error(fname, "the checkpoint", "an official checkpoint dict", ckpt)
    if family is None:
        family = path.stem if path.stem in PUBLISHED_FAMILIES else _family_from_training_config(ckpt)
        if family is None:
            raise ValueError(
                f"{fname}: cannot tell which model family this official checkpoint is for: its configs match no "
                f"single published family, and the file is not named after one of {list(PUBLISHED_FAMILIES)} "
                f"(e.g. sd2.pth), found stem {path.stem!r}. Pass family=... (or --family)."
            )
        logger.info("%s: official checkpoint for the %s family (from %s)", fname, family,
                    "its file name" if path.stem == family else "its training config")
    family = _canonical_family(fname, family)
    channels, layout = _check_official_family(fname, family)
    for key in ("config", "model_state_dict", "rel_name_to_idx"):
        if key not in ckpt:
            raise ValueError(
                f"{fname}: the official checkpoint lacks {key!r}; expected keys model_state_dict, rel_name_to_idx, "
                f"config (and input_channels, training_config), found {sorted(map(str, ckpt))}."
            )
    state = require_mapping(ckpt["model_state_dict"], "'model_state_dict'", fname, expected="a dict of tensors")
    input_channels = ckpt.get("input_channels")
    if input_channels is None:
        pe = state.get("object_extractor.positional_encoding.pe")
        input_channels = int(pe.shape[1]) if isinstance(pe, torch.Tensor) and pe.ndim == 3 else OFFICIAL_INPUT_CHANNELS
    input_channels = require_int(input_channels, "'input_channels'", fname, minimum=1)
    fc8 = state.get("relation_classifier.fc.8.weight")
    num_classes = int(fc8.shape[0]) if isinstance(fc8, torch.Tensor) and fc8.ndim == 2 else len(
        require_mapping(ckpt["rel_name_to_idx"], "'rel_name_to_idx'", fname)
    )
    relations = _relations(fname, ckpt["rel_name_to_idx"], num_classes)
    _check_idx_to_rel(fname, ckpt.get("idx_to_rel_name"), relations)
    config = _config(fname, ckpt["config"], input_channels, num_classes, family)

    training = ckpt.get("training_config")
    training = {} if training is None else require_mapping(training, "'training_config'", fname,
                                                           expected="a dict or None")
    if "timesteps" in training:
        trained_steps = tuple(sorted(require_int_list(training["timesteps"], "'training_config.timesteps'", fname,
                                                      minimum=0)))
    else:  # official behaviour without training_config: the raw step index is used
        logger.info("%s has no trained step list; the raw step index is used (identity table).", fname)
        trained_steps = tuple(range(config.num_timesteps))
    num_timesteps = training.get("num_timesteps")
    trained_num_steps = config.num_timesteps if num_timesteps is None else require_int(
        num_timesteps, "'training_config.num_timesteps'", fname, minimum=1
    )
    orig_map_size = training.get("orig_map_size")
    orig_map_size = config.map_size if orig_map_size is None else require_int(
        orig_map_size, "'training_config.orig_map_size'", fname, minimum=1
    )
    model = _build(fname, state, config)
    provenance = {
        "source_file": fname,
        "source_sha256": _sha256(path),
        "source_format": "learn-to-steer official .pth",
    }
    return _assemble(
        fname, model, relations, trained_steps, trained_num_steps, orig_map_size, family, channels, layout,
        provenance, str(path),
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
    table_channels, table_layout = _check_family(fname, stored_family)
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
    relations = _relations(fname, meta["rel_name_to_idx"], num_classes)
    config = _config(fname, meta["config"], input_channels, num_classes, None)
    model = _build(fname, state, config)
    return _assemble(
        fname, model, relations, trained_steps, trained_num_steps, orig_map_size, stored_family, channels, layout,
        dict(provenance), str(path), stored_map_size=map_size,
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
    if trained_steps[-1] >= trained_num_steps:
        raise ValueError(
            f"{fname}: trained steps {list(trained_steps)} must lie in [0, {trained_num_steps}) for a training "
            f"schedule of trained_num_steps={trained_num_steps} steps; fix the step list or the schedule length."
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
