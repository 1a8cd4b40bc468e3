"""The toy-world example: the world shipped with the pack, one seed through KSampler and Learned Spatial Steer."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from devtools import REPO_ROOT
from devtools.workflows.graph import NEGATIVE_COLOUR, POSITIVE_COLOUR, STEER_COLOUR, Out, Scene, Workflow
from devtools.workflows.notes import STEER_DEFAULTS

TOY_WORLD_FILE = "toy_world.safetensors"
TOY_CLASSIFIER_FILE = "toy_relation_classifier.safetensors"
TOY_PROMPT = "a blue circle above a red square"
TOY_SIDE = 128
TOY_SEED = 0  # the first seed, not a hand-picked one (the demo runs seeds 0..3 through this workflow)
TOY_SAMPLING: dict[str, Any] = {"seed": TOY_SEED, "steps": 20, "cfg": 8.0, "sampler_name": "ddim",
                                "scheduler": "ddim_uniform", "denoise": 1.0}
"""The toy example's sampler settings, shared by its KSampler and its Learned Spatial Steer."""
TOY_STEERING: dict[str, Any] = {"mode": "official", "last_steered_step": 10, "step_size": 1.0, "iterations": 16,
                                "early_stop_probability": 1.0}
"""The toy example's steering widgets: official mode; the custom numbers start at the toy recipe's values."""


def _toy_recipe() -> Any:
    """The toy family's steering recipe, read from the family table (a torch-free module, loaded by path)."""
    spec = importlib.util.spec_from_file_location("_l2s_families", REPO_ROOT / "l2s_core" / "families.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while the class is created
    spec.loader.exec_module(module)
    return module.get_family("toy").steering_recipe()


def workflow_toy_world() -> Workflow:
    """The shipped toy world: one seed through the stock KSampler and through Learned Spatial Steer, side by side."""
    recipe = _toy_recipe()
    w = Workflow("l2s_toy_world", "Learn-to-Steer: toy world", "Toy world (shipped, CPU)",
                 f"{TOY_SIDE}x{TOY_SIDE} | {TOY_SAMPLING['steps']} steps | CFG {TOY_SAMPLING['cfg']} | DDIM",
                 ("Load Toy World + Spatial Prompt Encode", "KSampler | Learned Spatial Steer", "VAE Decode x2",
                  "Image Stitch", "Save Image + Attention Preview"),
                 scene=Scene(("circle", (40, 80, 200), "circle"), ("square", (200, 50, 50), "square"),
                             "blue circle above red square", vertical=True))
    world = w.add("L2S_LoadToyWorld", (0, 0), {"world": TOY_WORLD_FILE}, size=(340, 98))
    clf = w.add("L2S_LoadRelationClassifier", (0, 150), {"classifier_name": TOY_CLASSIFIER_FILE, "family": "auto"},
                size=(340, 82), colour=STEER_COLOUR)
    latent = w.add("EmptyLatentImage", (0, 290), {"width": TOY_SIDE, "height": TOY_SIDE, "batch_size": 1},
                   size=(340, 106))
    pos = w.add("L2S_SpatialPromptEncode", (400, 0), {"clip": Out(world, 1), "text": TOY_PROMPT},
                title="Spatial Prompt Encode (positive)", size=(420, 300), colour=POSITIVE_COLOUR)
    neg = w.add("CLIPTextEncode", (400, 350), {"clip": Out(world, 1), "text": ""},
                title="CLIP Text Encode (negative)", size=(420, 150), colour=NEGATIVE_COLOUR)
    conditioning = {"model": Out(world, 0), "positive": Out(pos, 0), "negative": Out(neg, 0),
                    "latent_image": Out(latent, 0)}
    plain = w.add("KSampler", (880, 0), {**conditioning, **TOY_SAMPLING}, title="KSampler (steering off)",
                  size=(340, 262))
    steer = w.add("L2S_LearnedSpatialSteer", (880, 320),
                  {**conditioning, "classifier": Out(clf, 0), **TOY_SAMPLING, **TOY_STEERING},
                  title="Learned Spatial Steer (steering on)", size=(340, 470), colour=STEER_COLOUR)
    decode_plain = w.add("VAEDecode", (1280, 0), {"samples": Out(plain, 0), "vae": Out(world, 2)},
                         title="VAE Decode (off)", size=(220, 46))
    decode_steer = w.add("VAEDecode", (1280, 320), {"samples": Out(steer, 0), "vae": Out(world, 2)},
                         title="VAE Decode (on)", size=(220, 46))
    stitch = w.add("ImageStitch", (1280, 90), {"image1": Out(decode_plain, 0), "image2": Out(decode_steer, 0),
                                               "direction": "right", "match_image_size": True, "spacing_width": 4,
                                               "spacing_color": "white"}, size=(260, 150))
    w.add("SaveImage", (1580, 0), {"images": Out(stitch, 0), "filename_prefix": "l2s_toy_world"},
          title="Save Image (unsteered | steered)", size=(420, 300))
    w.add("SaveImage", (1580, 350), {"images": Out(decode_plain, 0), "filename_prefix": "l2s_toy_unsteered"},
          title="Save Image (unsteered)", size=(260, 260))
    w.add("SaveImage", (1880, 350), {"images": Out(decode_steer, 0), "filename_prefix": "l2s_toy_steered"},
          title="Save Image (steered)", size=(260, 260))
    w.add("L2S_AttentionPreview", (2040, 0), {"trace": Out(steer, 1), "image": Out(decode_steer, 0),
                                              "steps": "first and last steered step"}, size=(780, 760))
    w.note("\n".join([
        "## Learn-to-Steer: toy world",
        "",
        "A tiny text-to-image world that ships with the pack and runs on a CPU in seconds: scenes of two coloured "
        f"shapes, {TOY_SIDE}x{TOY_SIDE} pixels. The same prompt, conditioning and seed go through the stock KSampler "
        "(left image) and through Learned Spatial Steer (right image); Image Stitch puts them side by side.",
        "",
        "**Files** (shipped in the pack's `toy_world/` folder, nothing to download)",
        "",
        f"- `{TOY_WORLD_FILE}`: the model, text encoder and autoencoder (Load Toy World; your own builds go into "
        "`models/l2s_toy_worlds/`)",
        f"- `{TOY_CLASSIFIER_FILE}`: its relation classifier (Load Relation Classifier; your own go into "
        "`models/l2s_classifiers/`)",
        "",
        "**Prompts**",
        "",
        f"- Like \"{TOY_PROMPT}\": two of *red square*, *green triangle*, *blue circle*, *yellow star*, *purple "
        "cross*, *orange diamond* and one of *above*, *below*, *to the left of*, *to the right of*.",
        "- The world was trained with a bias (most pairs usually appear in one arrangement), so for some prompts the "
        "unsteered image follows the habit rather than the words; steering pushes toward the relation the prompt "
        "names.",
        "",
        "**Settings**",
        "",
        f"- {TOY_SIDE}x{TOY_SIDE} (the size the world was trained at), {TOY_SAMPLING['steps']} steps, CFG "
        f"{TOY_SAMPLING['cfg']}, `ddim` + `ddim_uniform`, seed {TOY_SEED} in both samplers (keep them equal when you "
        "change it).",
        f"- The toy family's steering recipe: steps 0-{recipe.last_step - 1} of {recipe.num_steps}, step size "
        f"{recipe.step_size:g} (the toy latents' scale; SD's 5 overshoots there), {recipe.iterations} iterations per "
        "step. " + STEER_DEFAULTS,
    ]) + "\n", (-480, 0), (440, 760))
    return w
