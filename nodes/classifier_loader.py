"""Load Relation Classifier: a checkpoint from the l2s_classifiers folder, ours (.safetensors) or official (.pth)."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io, ui

from ..l2s_core.checkpoint import LoadedClassifier, load_classifier
from ..l2s_core.families import FAMILIES, PUBLISHED_FAMILIES
from .paths import CLASSIFIER_FOLDER, classifier_file_names
from .types import CATEGORY, RelationClassifierType

AUTO = "auto"
OFFICIAL_REPO = "https://github.com/sapir1779/learn-to-steer"


def missing_classifier_message(name: str, folders: list[str]) -> str:
    """Where the classifier file should be and how to get it (the official files are not downloadable by ComfyUI)."""
    where = f"Relation classifier {name!r} is not in the l2s_classifiers folders ({', '.join(folders)})."
    stem = os.path.splitext(os.path.basename(name))[0]
    if stem in PUBLISHED_FAMILIES:
        how = (f"It is one of the authors' official classifiers: download {os.path.basename(name)} from the Google "
               f"Drive folder linked in the README of {OFFICIAL_REPO} (non-commercial licence) into "
               "ComfyUI/models/l2s_classifiers/, then press R in ComfyUI to refresh the file lists.")
    else:
        how = ("Put the file into ComfyUI/models/l2s_classifiers/ (or pick one the list offers). For a model family "
               "without an official classifier, train one with the pack's training CLI (python -m training --help).")
    return f"{where} {how}"


def describe(classifier: LoadedClassifier) -> str:
    return (
        f"family: {classifier.family} ({classifier.channels} attention channels, {classifier.layout} layout)\n"
        f"relations: {', '.join(classifier.relations)}\n"
        f"map size: {classifier.map_size}, trained steps {list(classifier.trained_steps)} of "
        f"{classifier.trained_num_steps}"
    )


class LoadRelationClassifier(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2S_LoadRelationClassifier",
            display_name="Load Relation Classifier",
            category=CATEGORY,
            description="Loads a Learn-to-Steer relation classifier from models/l2s_classifiers: this pack's "
            ".safetensors files, or the authors' official .pth files (loaded safely; arbitrary pickles are refused).",
            inputs=[
                io.Combo.Input(
                    "classifier_name",
                    display_name="file",
                    options=classifier_file_names(),
                    tooltip="A file in models/l2s_classifiers (or a folder registered as l2s_classifiers in "
                    "extra_model_paths.yaml), or the toy world's classifier shipped in the pack's toy_world/ folder.",
                ),
                io.Combo.Input(
                    "family",
                    options=[AUTO, *FAMILIES],
                    default=AUTO,
                    tooltip="The model family the classifier was trained for. 'auto' reads it from the file's "
                    "metadata, or from the official file names sd14/sd2/flux_schnell/flux_dev.",
                ),
            ],
            outputs=[
                RelationClassifierType.Output(
                    display_name="classifier", tooltip="The classifier, for the Learned Spatial Steer nodes."
                )
            ],
            is_output_node=True,  # its report is re-sent when a run finds it cached (web/learn_to_steer.js shows it)
        )

    @classmethod
    def execute(cls, classifier_name: str, family: str) -> io.NodeOutput:
        path = folder_paths.get_full_path(CLASSIFIER_FOLDER, classifier_name)
        if path is None:
            raise FileNotFoundError(missing_classifier_message(classifier_name,
                                                               folder_paths.get_folder_paths(CLASSIFIER_FOLDER)))
        classifier = load_classifier(path, family=None if family == AUTO else family)
        return io.NodeOutput(classifier, ui=ui.PreviewText(describe(classifier)))
