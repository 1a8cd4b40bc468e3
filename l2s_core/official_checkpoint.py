"""The authors' official ``.pth`` classifier checkpoints: read safely, their family told, checked, rebuilt.

An official file is a dict (``model_state_dict``, ``rel_name_to_idx``, ``config``, optionally ``input_channels``,
``idx_to_rel_name`` and ``training_config``), read with ``torch.load(weights_only=True)`` only
(:mod:`.safe_load`): a file that needs arbitrary code to unpickle is refused, never executed. Its family is the one
asked for, else the file's stem when it is a published name (``sd14.pth``, ``sd2.pth``, ...), else the one published
family whose recipe its own configs match (:func:`family_from_training_config`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .classifier import OFFICIAL_INPUT_CHANNELS, published_config
from .families import PUBLISHED_FAMILIES, get_family
from .fields import field_error, require_int, require_int_list, require_mapping
from .loaded_classifier import (
    LoadedClassifier,
    assemble,
    build_model,
    canonical_family,
    classifier_config,
    family_facts,
    relations_from_mapping,
)
from .safe_load import load_torch_file

logger = logging.getLogger(__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_official_family(fname: str, family: str) -> tuple[int, str]:
    """(channel count, layout) of a family an official checkpoint can be for, or a ValueError naming the file."""
    channels, layout = family_facts(fname, family)
    if channels is None:
        raise ValueError(
            f"{fname}: official checkpoints exist only for {list(PUBLISHED_FAMILIES)}; found family {family!r}, whose "
            "channel count depends on the model. Train and save a classifier in our format for it instead."
        )
    return channels, layout


def family_from_training_config(ckpt: Mapping[str, Any]) -> str | None:
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


def load_official(path: Path, family: str | None) -> LoadedClassifier:
    """Load an official ``.pth``/``.pt`` checkpoint for ``family`` (None: told from its name or configs)."""
    fname = path.name
    if family is not None:
        _check_official_family(fname, canonical_family(fname, family))
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, Mapping):
        raise field_error(fname, "the checkpoint", "an official checkpoint dict", ckpt)
    if family is None:
        family = path.stem if path.stem in PUBLISHED_FAMILIES else family_from_training_config(ckpt)
        if family is None:
            raise ValueError(
                f"{fname}: cannot tell which model family this official checkpoint is for: its configs match no "
                f"single published family, and the file is not named after one of {list(PUBLISHED_FAMILIES)} "
                f"(e.g. sd2.pth), found stem {path.stem!r}. Pass family=... (or --family)."
            )
        logger.info("%s: official checkpoint for the %s family (from %s)", fname, family,
                    "its file name" if path.stem == family else "its training config")
    family = canonical_family(fname, family)
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
    relations = relations_from_mapping(fname, ckpt["rel_name_to_idx"], num_classes)
    _check_idx_to_rel(fname, ckpt.get("idx_to_rel_name"), relations)
    config = classifier_config(fname, ckpt["config"], input_channels, num_classes, family)

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
    model = build_model(fname, state, config)
    provenance = {
        "source_file": fname,
        "source_sha256": _sha256(path),
        "source_format": "learn-to-steer official .pth",
    }
    return assemble(
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
