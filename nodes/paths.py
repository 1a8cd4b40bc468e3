"""The ``l2s_classifiers`` model folder (``models/l2s_classifiers`` plus any extra_model_paths.yaml entries)."""

from __future__ import annotations

import os

import folder_paths

CLASSIFIER_FOLDER = "l2s_classifiers"
CLASSIFIER_EXTENSIONS = {".safetensors", ".pth", ".pt"}


def register_classifier_folder() -> None:
    """Register the folder key with an explicit extension filter, merging with paths already registered.

    extra_model_paths.yaml may have created the key before the pack is imported (with an empty extension set, which
    would list every file); its paths are kept and the extension filter is added.
    """
    default = os.path.join(folder_paths.models_dir, CLASSIFIER_FOLDER)
    entry = folder_paths.folder_names_and_paths.get(CLASSIFIER_FOLDER)
    if entry is None:
        folder_paths.folder_names_and_paths[CLASSIFIER_FOLDER] = ([default], set(CLASSIFIER_EXTENSIONS))
        return
    paths, extensions = entry
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[CLASSIFIER_FOLDER] = (paths, set(extensions) | CLASSIFIER_EXTENSIONS)
