"""The pack's model folders: ``l2s_classifiers`` and ``l2s_toy_worlds``, and the file lists their loader nodes show.

Each folder key is ``models/<key>`` plus any extra_model_paths.yaml entries, plus one folder of the pack's own
``toy_world/``: ``toy_world/models/`` for ``l2s_toy_worlds`` (the shipped toy world, ``toy_world.safetensors``) and
``toy_world/classifiers/`` for ``l2s_classifiers`` (its relation classifier, ``toy_relation_classifier.safetensors``),
so both are listed with no setup and each loader lists only its own kind of file.
"""

from __future__ import annotations

import logging
import os

import folder_paths

logger = logging.getLogger(__name__)

CLASSIFIER_FOLDER = "l2s_classifiers"
CLASSIFIER_EXTENSIONS = {".safetensors", ".pth", ".pt"}
TOY_WORLD_FOLDER = "l2s_toy_worlds"
TOY_WORLD_EXTENSIONS = {".safetensors"}

PACK_TOY_WORLD_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "toy_world")
"""The pack's ``toy_world/`` directory (shipped bundle and classifier, in a sub-folder each)."""
PACK_TOY_MODELS_DIR = os.path.join(PACK_TOY_WORLD_DIR, "models")
"""Shipped toy-world bundles (Load Toy World)."""
PACK_TOY_CLASSIFIERS_DIR = os.path.join(PACK_TOY_WORLD_DIR, "classifiers")
"""Shipped relation classifiers of the toy world (Load Relation Classifier)."""


def _register(folder: str, extensions: set[str], shipped: str) -> None:
    """Register ``folder`` with an explicit extension filter, merging with paths already registered.

    extra_model_paths.yaml may have created the key before the pack is imported (with an empty extension set, which
    would list every file); its paths come first and keep precedence, then ``models/<folder>``, then ``shipped``.
    """
    wanted = [os.path.join(folder_paths.models_dir, folder), shipped]
    entry = folder_paths.folder_names_and_paths.get(folder)
    paths, known = (list(entry[0]), set(entry[1])) if entry is not None else ([], set())
    paths += [p for p in wanted if p not in paths]
    folder_paths.folder_names_and_paths[folder] = (paths, known | extensions)


def register_classifier_folder() -> None:
    """Register ``l2s_classifiers`` (``.safetensors``, ``.pth``, ``.pt``)."""
    _register(CLASSIFIER_FOLDER, CLASSIFIER_EXTENSIONS, PACK_TOY_CLASSIFIERS_DIR)


def register_toy_world_folder() -> None:
    """Register ``l2s_toy_worlds`` (``.safetensors`` bundles)."""
    _register(TOY_WORLD_FOLDER, TOY_WORLD_EXTENSIONS, PACK_TOY_MODELS_DIR)


def register_folders() -> None:
    """Register every model folder of the pack (idempotent)."""
    register_classifier_folder()
    register_toy_world_folder()


def classifier_file_names() -> list[str]:
    """What Load Relation Classifier lists: the ``l2s_classifiers`` files."""
    return folder_paths.get_filename_list(CLASSIFIER_FOLDER)


def toy_world_file_names() -> list[str]:
    """What Load Toy World lists: the ``l2s_toy_worlds`` files."""
    return folder_paths.get_filename_list(TOY_WORLD_FOLDER)
