"""The pack's model folders: ``l2s_classifiers`` and ``l2s_toy_worlds``, and the file lists their loader nodes show.

Each folder key is ``models/<key>`` plus any extra_model_paths.yaml entries, plus the pack's own ``toy_world/``
directory, so the shipped toy world (``toy_world/toy_world.safetensors``) and its relation classifier
(``toy_world/toy_relation_classifier.safetensors``) are listed with no setup. That directory serves both keys; its
files are told apart by their metadata (a toy-world bundle carries the ``l2s_toy_world`` key), so Load Toy World
lists only its bundles and Load Relation Classifier only its classifiers. Files in the user's folders are listed
unfiltered.
"""

from __future__ import annotations

import logging
import os

import folder_paths
from safetensors import safe_open

from ..l2s_core.toy_bundle import METADATA_KEY

logger = logging.getLogger(__name__)

CLASSIFIER_FOLDER = "l2s_classifiers"
CLASSIFIER_EXTENSIONS = {".safetensors", ".pth", ".pt"}
TOY_WORLD_FOLDER = "l2s_toy_worlds"
TOY_WORLD_EXTENSIONS = {".safetensors"}

PACK_TOY_WORLD_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "toy_world")
"""The pack's ``toy_world/`` directory (shipped bundle and classifier)."""


def _register(folder: str, extensions: set[str]) -> None:
    """Register ``folder`` with an explicit extension filter, merging with paths already registered.

    extra_model_paths.yaml may have created the key before the pack is imported (with an empty extension set, which
    would list every file); its paths come first and keep precedence, then ``models/<folder>``, then the pack's
    ``toy_world/``.
    """
    wanted = [os.path.join(folder_paths.models_dir, folder), PACK_TOY_WORLD_DIR]
    entry = folder_paths.folder_names_and_paths.get(folder)
    paths, known = (list(entry[0]), set(entry[1])) if entry is not None else ([], set())
    paths += [p for p in wanted if p not in paths]
    folder_paths.folder_names_and_paths[folder] = (paths, known | extensions)


def register_classifier_folder() -> None:
    """Register ``l2s_classifiers`` (``.safetensors``, ``.pth``, ``.pt``)."""
    _register(CLASSIFIER_FOLDER, CLASSIFIER_EXTENSIONS)


def register_toy_world_folder() -> None:
    """Register ``l2s_toy_worlds`` (``.safetensors`` bundles)."""
    _register(TOY_WORLD_FOLDER, TOY_WORLD_EXTENSIONS)


def register_folders() -> None:
    """Register every model folder of the pack (idempotent)."""
    register_classifier_folder()
    register_toy_world_folder()


def is_toy_world_bundle(path: str) -> bool:
    """True when ``path`` is a safetensors file with toy-world metadata (only the header is read)."""
    if not path.endswith(".safetensors"):
        return False
    try:
        with safe_open(path, framework="pt") as handle:
            return METADATA_KEY in (handle.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for unreadable files
        logger.warning("Could not read the header of %s (%s); listing it as a classifier.", path, exc)
        return False


def _in_pack_toy_world_dir(path: str) -> bool:
    return os.path.realpath(os.path.dirname(path)) == os.path.realpath(PACK_TOY_WORLD_DIR)


def _listed(folder: str, bundles: bool) -> list[str]:
    names: list[str] = []
    for name in folder_paths.get_filename_list(folder):
        full = folder_paths.get_full_path(folder, name)
        if full is not None and _in_pack_toy_world_dir(full) and is_toy_world_bundle(full) != bundles:
            continue  # the pack's toy_world/ holds both kinds: show each loader only its own
        names.append(name)
    return names


def classifier_file_names() -> list[str]:
    """What Load Relation Classifier lists: the ``l2s_classifiers`` files, without the pack's toy-world bundles."""
    return _listed(CLASSIFIER_FOLDER, bundles=False)


def toy_world_file_names() -> list[str]:
    """What Load Toy World lists: the ``l2s_toy_worlds`` files, without the pack's relation classifiers."""
    return _listed(TOY_WORLD_FOLDER, bundles=True)
