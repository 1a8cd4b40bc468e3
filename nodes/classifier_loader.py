"""Load Relation Classifier: a checkpoint from the l2s_classifiers folder, ours (.safetensors) or official (.pth)."""

from __future__ import annotations

import folder_paths
from comfy_api.latest import io, ui

from ..l2s_core.checkpoint import LoadedClassifier, load_classifier
from ..l2s_core.families import FAMILIES
from .paths import CLASSIFIER_FOLDER, classifier_file_names
from .types import CATEGORY, RelationClassifierType

AUTO = "auto"


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
        )

    @classmethod
    def execute(cls, classifier_name: str, family: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(CLASSIFIER_FOLDER, classifier_name)
        classifier = load_classifier(path, family=None if family == AUTO else family)
        return io.NodeOutput(classifier, ui=ui.PreviewText(describe(classifier)))
