"""The pack's ComfyExtension: registers the model folders and lists the nodes."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .classifier_loader import LoadRelationClassifier
from .paths import register_folders
from .preview import AttentionPreview
from .spatial_encode import SpatialPromptEncode
from .steer_nodes import LearnedSpatialSteer, LearnedSpatialSteerSampler
from .toy_world import LoadToyWorld


class LearnToSteerExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        register_folders()
        return [LoadRelationClassifier, SpatialPromptEncode, LearnedSpatialSteer, LearnedSpatialSteerSampler,
                AttentionPreview, LoadToyWorld]
