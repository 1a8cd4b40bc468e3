"""The pack's ComfyExtension: registers the model folder and lists the nodes."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .classifier_loader import LoadRelationClassifier
from .paths import register_classifier_folder
from .preview import AttentionPreview
from .spatial_encode import SpatialPromptEncode
from .steer_nodes import LearnedSpatialSteer, LearnedSpatialSteerSampler


class LearnToSteerExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_classifier_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_classifier_folder()
        return [LoadRelationClassifier, SpatialPromptEncode, LearnedSpatialSteer, LearnedSpatialSteerSampler,
                AttentionPreview]
