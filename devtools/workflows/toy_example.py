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
TOY_STEERING: dict[str, Any] = {"mode": "fast", "last_steered_step": 10, "step_size": 1.0, "iterations": 16,
                                "early_stop_probability": 1.0}
"""The toy example's steering widgets: fast mode (the most accurate on the toy world's benchmark grids, where it was
chosen; not on this prompt); the custom numbers start at the toy recipe's values."""


def _toy_recipe() -> Any:
    """The toy family's steering recipe, read from the family table (a torch-free module, loaded by path)."""
    spec = importlib.util.spec_from_file_location("_l2s_families", REPO_ROOT / "l2s_core" / "families.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while the class is created
    spec.loader.exec_module(module)
    return module.get_family("toy").steering_recipe()


TOY_FILE_NAME = "1. Toy world, plain vs steered (CPU, no downloads)"
"""The template's file name: what ComfyUI's template browser shows as its title; "1." keeps it first."""
TOY_ENLARGE = 3
"""The comparison is enlarged this many times (nearest-exact) before it is saved and shown: 128 px is too small
to judge on the canvas."""
TOY_STITCH_SPACING = 4


def workflow_toy_world() -> Workflow:
    """The shipped toy world: one seed through the stock KSampler and through Learned Spatial Steer, side by side."""
    recipe = _toy_recipe()
    w = Workflow("l2s_toy_world", TOY_FILE_NAME, "Learn-to-Steer: toy world", "Toy world (shipped, CPU)",
                 f"{TOY_SIDE}x{TOY_SIDE} | {TOY_SAMPLING['steps']} steps | CFG {TOY_SAMPLING['cfg']} | DDIM",
                 ("Load Toy World + Spatial Prompt Encode", "KSampler | Learned Spatial Steer", "VAE Decode x2",
                  f"Image Stitch + enlarge x{TOY_ENLARGE}", "Save Image + Attention Preview"),
                 scene=Scene(("circle", (40, 80, 200), "circle"), ("square", (200, 50, 50), "square"),
                             "blue circle above red square", vertical=True))
    # loaders (x 0) | prompts, then decoding (x 340) | samplers (x 780) | results (x 1160); the note bottom left.
    # At the opening zoom (0.8) this fills a 1920 x 1080 screen and stays clear of the minimap's corner.
    world = w.add("L2S_LoadToyWorld", (0, 0), {"world": TOY_WORLD_FILE}, size=(320, 300))
    clf = w.add("L2S_LoadRelationClassifier", (0, 350), {"classifier_name": TOY_CLASSIFIER_FILE, "family": "auto"},
                size=(320, 230), colour=STEER_COLOUR)
    latent = w.add("EmptyLatentImage", (0, 630), {"width": TOY_SIDE, "height": TOY_SIDE, "batch_size": 1},
                   size=(320, 106))
    pos = w.add("L2S_SpatialPromptEncode", (340, 0), {"clip": Out(world, 1), "text": TOY_PROMPT},
                title="Spatial Prompt Encode (positive)", size=(420, 290), colour=POSITIVE_COLOUR)
    neg = w.add("CLIPTextEncode", (340, 340), {"clip": Out(world, 1), "text": ""},
                title="CLIP Text Encode (negative)", size=(420, 90), colour=NEGATIVE_COLOUR)
    conditioning = {"model": Out(world, 0), "positive": Out(pos, 0), "negative": Out(neg, 0),
                    "latent_image": Out(latent, 0)}
    plain = w.add("KSampler", (780, 0), {**conditioning, **TOY_SAMPLING}, title="KSampler (steering off)",
                  size=(360, 262))
    steer = w.add("L2S_LearnedSpatialSteer", (780, 312),
                  {**conditioning, "classifier": Out(clf, 0), **TOY_SAMPLING, **TOY_STEERING},
                  title="Learned Spatial Steer (steering on)", size=(360, 760), colour=STEER_COLOUR)
    decode_plain = w.add("VAEDecode", (340, 480), {"samples": Out(plain, 0), "vae": Out(world, 2)},
                         title="VAE Decode (off)", size=(200, 46))
    decode_steer = w.add("VAEDecode", (560, 480), {"samples": Out(steer, 0), "vae": Out(world, 2)},
                         title="VAE Decode (on)", size=(200, 46))
    stitch = w.add("ImageStitch", (340, 576), {"image1": Out(decode_plain, 0), "image2": Out(decode_steer, 0),
                                               "direction": "right", "match_image_size": True,
                                               "spacing_width": TOY_STITCH_SPACING, "spacing_color": "white"},
                   size=(210, 150))
    enlarge = w.add("ImageScaleBy", (560, 576), {"image": Out(stitch, 0), "upscale_method": "nearest-exact",
                                                 "scale_by": float(TOY_ENLARGE)},
                    title=f"Enlarge x{TOY_ENLARGE} (nearest)", size=(200, 82))
    # the single images, at the world's size, for the demo script's judge: saved, folded away on the canvas
    w.add("SaveImage", (560, 708), {"images": Out(decode_plain, 0), "filename_prefix": "l2s_toy_unsteered"},
          title="Save unsteered", size=(200, 58), collapsed=True)
    w.add("SaveImage", (560, 748), {"images": Out(decode_steer, 0), "filename_prefix": "l2s_toy_steered"},
          title="Save steered", size=(200, 58), collapsed=True)
    results_width = 750  # ends left of the minimap (bottom right of the screen); the 780 px comparison shrinks a bit
    w.add("SaveImage", (1160, 0), {"images": Out(enlarge, 0), "filename_prefix": "l2s_toy_world"},
          title="Save Image (unsteered | steered)", size=(results_width, 420))
    w.add("L2S_AttentionPreview", (1160, 470), {"trace": Out(steer, 1), "image": Out(decode_steer, 0),
                                                "steps": "first and last steered step"}, size=(results_width, 710))
    w.note(toy_note(recipe, w), (0, 800), (760, 380))
    return w


def toy_note(recipe: Any, w: Workflow) -> str:
    """The toy note; the seed and sampler settings are read from the graph's Learned Spatial Steer node."""
    steer = next(n for n in w.nodes if n.class_type == "L2S_LearnedSpatialSteer").inputs
    seeds = sorted({n.inputs["seed"] for n in w.nodes if n.class_type in ("KSampler", "L2S_LearnedSpatialSteer")})
    if len(seeds) != 1:
        raise ValueError(f"{w.name}: the two samplers must share one seed, got {seeds}")
    return "\n".join([
        "## Learn-to-Steer: toy world",
        "",
        f"A tiny world shipped with the pack (nothing to download; seconds on a CPU): two coloured shapes, "
        f"{TOY_SIDE}x{TOY_SIDE} px. One prompt and seed go through the stock KSampler (left image) and Learned "
        f"Spatial Steer (right image), enlarged {TOY_ENLARGE}x. Press **Run**: Spatial Prompt Encode shows what it "
        "parsed, Learned Spatial Steer the classifier's probability of the relation before -> after each steered "
        "step, Attention Preview where the two objects attend.",
        "",
        f"**Files** (in the pack's `toy_world/` folder): `{TOY_WORLD_FILE}` (model, text encoder, autoencoder; your "
        f"own builds go into `models/l2s_toy_worlds/`) and `{TOY_CLASSIFIER_FILE}` (its relation classifier; yours "
        "go into `models/l2s_classifiers/`).",
        "",
        f"**Prompts** like \"{TOY_PROMPT}\": two of *red square*, *green triangle*, *blue circle*, *yellow star*, "
        "*purple cross*, *teal diamond* and one of *above*, *below*, *to the left of*, *to the right of*. The world "
        "was trained with a bias (most pairs usually appear one way round), so the unsteered image may follow the "
        "habit rather than the words.",
        "",
        f"**Settings**: {TOY_SIDE}x{TOY_SIDE} (the world's size), {steer['steps']} steps, CFG {steer['cfg']}, "
        f"`{steer['sampler_name']}` + `{steer['scheduler']}`, seed {seeds[0]} in both samplers (keep them equal). "
        f"`mode` {steer['mode']} steers steps 0-{recipe.last_step - 1} of {recipe.num_steps} with up to "
        f"{recipe.iterations} updates each, every update moving the latent by a fixed share of its spread, and ends a "
        "step once the classifier reads the relation with p >= 0.9; `official` runs the published loop (step "
        f"size {recipe.step_size:g} on this world) to compare with the paper. " + STEER_DEFAULTS + " The single "
        f"images are also saved at {TOY_SIDE} px (the folded Save nodes) for `bash scripts/demo.sh`.",
    ]) + "\n"
