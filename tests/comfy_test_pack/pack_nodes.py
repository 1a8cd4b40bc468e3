"""V3 nodes of the integration-test pack (loaded by ComfyUI only in the integration tests, never shipped).

This module owns the node schemas: ``L2STest_TinyModel`` turns a family name and a seed into the MODEL, CLIP and VAE
of :mod:`.tiny_models`, so a test prompt can use stock nodes (CLIPTextEncode, KSampler, VAEDecode, ...) unchanged.
The model-loading nodes (tiny diffusion-model files, partial loading, a weight probe) are in :mod:`.loading_nodes`.
"""

from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension, io

from .loading_nodes import LOADING_NODES
from .tiny_files import install_detection
from .tiny_models import build_tiny_models
from .tiny_specs import FAMILIES

logger = logging.getLogger(__name__)


class TinyModelNode(io.ComfyNode):
    """Tiny random-weight checkpoint of one model family, built from ComfyUI's own classes."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        """Declare the node: family combo and weight seed in, MODEL/CLIP/VAE out."""
        return io.Schema(
            node_id="L2STest_TinyModel",
            display_name="L2S Test: Tiny Random Model",
            category="testing/l2s",
            description="Tiny random-weight MODEL, CLIP and VAE of a model family, for integration tests only.",
            inputs=[
                io.Combo.Input("family", options=list(FAMILIES), default=FAMILIES[0]),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False),
            ],
            outputs=[io.Model.Output(), io.Clip.Output(), io.Vae.Output()],
        )

    @classmethod
    def execute(cls, family: str, seed: int) -> io.NodeOutput:
        """Build the tiny models; same family and seed give bit-identical weights."""
        built = build_tiny_models(family, seed)
        logger.info(
            "L2S test pack: built tiny %s (seed %d) in %.2f s: %d parameters, %d cross-attention channels",
            family,
            seed,
            built.seconds,
            built.parameters,
            built.channels,
        )
        return io.NodeOutput(built.model, built.clip, built.vae)


class L2STestPackExtension(ComfyExtension):
    """Registers the test-pack nodes and teaches ComfyUI's model detection the tiny files (:mod:`.tiny_files`)."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """Install the tiny-file detection (idempotent; ComfyUI 0.3.x never calls ``on_load``) and return the nodes."""
        install_detection()
        return [TinyModelNode, *LOADING_NODES]
