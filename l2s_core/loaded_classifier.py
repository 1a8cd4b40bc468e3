"""A loaded relation classifier, and the checks every checkpoint format passes on the way to one.

Whatever the file format (:mod:`.checkpoint` for ours, :mod:`.official_checkpoint` for the authors' ``.pth``), a
classifier is rebuilt the same way: the family is looked up in the family table, the relation mapping is checked
against the output layer and the canonical relation names, :class:`~.classifier.RelationClassifier` is rebuilt from
the stored config and the weights are checked key by key and shape by shape before loading, and the step and
channel metadata are cross-checked against the model (:func:`assemble`). Each message names the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .classifier import ClassifierConfig, RelationClassifier
from .families import get_family
from .fields import field_error
from .relations import canonical_relation, check_class_names


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


def canonical_family(fname: str, family: str) -> str:
    """The table's canonical name of a family (an alias is accepted), or a ValueError naming the file."""
    try:
        return get_family(family).name
    except ValueError as error:
        raise ValueError(f"{fname}: {error}") from None


def family_facts(fname: str, family: str) -> tuple[int | None, str]:
    """(channel count or None, layout) of a family stored by its canonical name, or a ValueError naming the file."""
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


def relations_from_mapping(fname: str, mapping: Any, num_classes: int) -> tuple[str, ...]:
    """Relation names in class-index order from a ``rel_name_to_idx`` mapping, checked against the output layer."""
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


def classifier_config(fname: str, official: Any, input_channels: int, num_classes: int,
                      family: str | None) -> ClassifierConfig:
    """The architecture config from a stored official-layout config dict, or a ValueError naming the file."""
    try:
        return ClassifierConfig.from_official(official, input_channels, num_classes, family=family)
    except ValueError as exc:
        raise ValueError(f"{fname}: {exc}") from None


def build_model(fname: str, state: Mapping[str, Any], config: ClassifierConfig) -> RelationClassifier:
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


def assemble(
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
