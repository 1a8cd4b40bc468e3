"""Load Toy World: the pack's small CPU-trained world (MODEL, CLIP, VAE) from one bundle in l2s_toy_worlds."""

from __future__ import annotations

from typing import Any

import folder_paths
from comfy_api.latest import io, ui

from .paths import TOY_WORLD_FOLDER, toy_world_file_names
from .toy_models import load_toy_world
from .types import CATEGORY


def describe(meta: dict[str, Any]) -> str:
    """A few lines on what the world knows, for the node's text preview."""
    world = meta.get("world", {})
    kinds = list(world.get("kinds", []))
    relations = list(world.get("relations", []))
    size = world.get("image_size", "?")
    lines = [f"toy world: {size}x{size} images of two shapes"]
    if kinds:
        lines.append(f"objects: {', '.join(kinds)}")
    if relations:
        lines.append(f"relations: {', '.join(relations)}")
    return "\n".join(lines)


class LoadToyWorld(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="L2S_LoadToyWorld",
            display_name="Load Toy World",
            category=CATEGORY,
            description="Loads the toy world: a tiny text-to-image model (SD1-style UNet, CLIP-style text encoder, "
            "TAESD-style autoencoder) trained on CPU on scenes of two coloured shapes, e.g. 'a red square to the "
            "left of a blue circle'. It runs with the stock nodes (CLIP Text Encode, KSampler, VAE Decode) and "
            "with Learned Spatial Steer and the shipped toy relation classifier, in seconds on a CPU.",
            inputs=[
                io.Combo.Input(
                    "world",
                    options=toy_world_file_names(),
                    tooltip="A toy-world bundle: toy_world.safetensors is the one shipped in the pack's toy_world/ folder; "
                    "bundles you build (python -m training toy model) go into models/l2s_toy_worlds.",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The denoiser (an SD1-type model; images of the world's "
                                "size, 128x128 for the shipped world)."),
                io.Clip.Output(display_name="CLIP", tooltip="The text encoder (ComfyUI's SD1 tokenizer)."),
                io.Vae.Output(display_name="VAE", tooltip="The autoencoder (TAESD layout)."),
            ],
            is_output_node=True,  # its report is re-sent when a run finds it cached (web/learn_to_steer.js shows it)
        )

    @classmethod
    def execute(cls, world: str) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(TOY_WORLD_FOLDER, world)
        models = load_toy_world(path)
        return io.NodeOutput(models.model, models.clip, models.vae, ui=ui.PreviewText(describe(models.meta)))
