"""Run under ComfyUI's Python: the toy world in ComfyUI (nodes/toy_models.py) against its diffusers pipeline.

Invoked by tests/comfyui/test_toy_world_comfy.py in a separate process (ComfyUI's top-level ``nodes`` module would clash with this
pack's ``nodes`` package in the test process). Usage:

    COMFYUI_PATH=... $COMFYUI_PYTHON tests/comfy_checks/toy_world_check.py BUNDLE SCRATCH_DIR

It measures

* the tokenizer: ComfyUI's stock SD1 tokenizer against ``training.toy.vocabulary.prompt_ids`` for every word of
  the toy vocabulary, the empty prompt and every toy prompt (ordered pairs of object kinds x relations);
* the networks: the MODEL, CLIP and VAE of ``load_toy_world`` against ``training.toy.bundle.load_pipeline`` (UNet
  output for the same latent, timestep and context; the last hidden state of a toy prompt; VAE decode and encode),
  the latent scale factor and the noise schedule (ComfyUI's sigmas against the DDIM scheduler's);
* bad bundles: copies of the bundle with one thing broken, written to SCRATCH_DIR, and the error each one raises;
* the model folders: what Load Toy World and Load Relation Classifier list from a stand-in of the pack's
  ``toy_world/`` directory and the user's folders (in SCRATCH_DIR).

It prints one ``L2S_RESULT {json}`` line; the pytest side applies the tolerances. When diffusers or transformers is
not importable in ComfyUI's environment the JSON holds only a ``skip`` reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from check_support import load_pack, relative  # noqa: E402  (this folder is on sys.path)

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
SEED = 0
PROMPT = "a red square to the left of a blue circle"


def check_tokenizer() -> dict[str, Any]:
    """ComfyUI's SD1 tokenizer ids against the toy vocabulary's, for every word and every toy prompt."""
    import comfy.sd1_clip

    from l2s_core.relations import SPATIAL_RELATIONS
    from training.toy.scenes import DEFAULT_KINDS
    from training.toy.vocabulary import CLIP_TOKEN_IDS, prompt_ids, relation_prompt

    tokenizer = comfy.sd1_clip.SD1Tokenizer()
    prompts = ["", *CLIP_TOKEN_IDS]
    prompts += [relation_prompt(s, r, o) for s in DEFAULT_KINDS for o in DEFAULT_KINDS if s != o
                for r in SPATIAL_RELATIONS]
    mismatches = []
    for prompt in prompts:
        batches = tokenizer.tokenize_with_weights(prompt)["l"]
        comfy_ids = [[int(token) for token, _weight in batch] for batch in batches]
        expected = prompt_ids(prompt)
        if comfy_ids != [expected]:
            mismatches.append({"prompt": prompt, "comfy": comfy_ids, "toy": expected})
    return {"prompts": len(prompts), "relation_prompts": len(prompts) - 1 - len(CLIP_TOKEN_IDS),
            "mismatches": mismatches[:5], "mismatch_count": len(mismatches)}


def check_networks(torch: Any, pack: dict[str, Any], path: Path) -> dict[str, Any]:
    """ComfyUI's MODEL / CLIP / VAE of the bundle against the diffusers pipeline."""
    from l2s_core.toy_bundle import load_bundle
    from training.toy.bundle import load_pipeline
    from training.toy.vocabulary import prompt_ids

    bundle = load_bundle(path)
    pipe = load_pipeline(bundle)
    world = pack["toy_models"].load_toy_world(path)
    base = world.model.model
    diffusion_model = base.diffusion_model
    latent_side = int(bundle.meta["world"]["image_size"]) // 8
    width = int(bundle.meta["text_encoder_config"]["hidden_size"])
    gen = torch.Generator().manual_seed(SEED)
    result: dict[str, Any] = {}
    with torch.no_grad():
        unet_cases = []
        for timestep in (999.0, 500.0, 21.0):
            x = torch.randn(2, 4, latent_side, latent_side, generator=gen)  # (B, 4, h, w)
            context = torch.randn(2, 77, width, generator=gen)  # (B, 77, D)
            t = torch.full((2,), timestep)
            comfy_out = diffusion_model(x, t, context=context, transformer_options={})
            diffusers_out = pipe.unet(x, t, encoder_hidden_states=context).sample
            unet_cases.append({"timestep": timestep, "rel_diff": relative(comfy_out, diffusers_out),
                               "scale": float(diffusers_out.abs().max())})
        result["unet"] = unet_cases
        result["unet_dtype"] = str(next(diffusion_model.parameters()).dtype)

        text = []
        for prompt in (PROMPT, "a yellow star above a purple cross", ""):
            comfy_cond = world.clip.encode_from_tokens(world.clip.tokenize(prompt))  # (1, 77, D)
            ids = torch.tensor([prompt_ids(prompt)])  # (1, 77)
            hf_ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, truncation=True,
                                    return_tensors="pt").input_ids
            hidden = pipe.text_encoder(ids).last_hidden_state  # (1, 77, D)
            text.append({"prompt": prompt, "shape": list(comfy_cond.shape),
                         "max_abs_diff": float((comfy_cond - hidden).abs().max()),
                         "scale": float(hidden.abs().max()),
                         "pipeline_tokenizer_agrees": hf_ids[0].tolist() == ids[0].tolist()})
        result["text"] = text

        z = torch.randn(1, 4, latent_side, latent_side, generator=gen) * 2.0  # raw autoencoder latents
        comfy_image = world.vae.decode(z)  # (1, H, W, 3) in [0, 1]
        diffusers_image = (pipe.vae.decode(z).sample.clamp(-1, 1) + 1) / 2  # (1, 3, H, W)
        diffusers_image = diffusers_image.permute(0, 2, 3, 1)  # -> (1, H, W, 3)
        pixels = torch.rand(1, 8 * latent_side, 8 * latent_side, 3, generator=gen)  # (1, H, W, 3) in [0, 1]
        comfy_latent = world.vae.encode(pixels)  # (1, 4, h, w)
        diffusers_latent = pipe.vae.encode(pixels.permute(0, 3, 1, 2) * 2 - 1).latents
        result["vae"] = {
            "decode_shape": list(comfy_image.shape), "decode_max_abs_diff": float(
                (comfy_image.float() - diffusers_image).abs().max()),
            "decode_spread": float(diffusers_image.max() - diffusers_image.min()),
            "encode_shape": list(comfy_latent.shape), "encode_rel_diff": relative(comfy_latent.float(),
                                                                                   diffusers_latent),
        }

    alphas = pipe.scheduler.alphas_cumprod.double()
    scheduler_sigmas = ((1 - alphas) / alphas) ** 0.5
    result["schedule_rel_diff"] = relative(base.model_sampling.sigmas.double(), scheduler_sigmas)
    result["latent_scale"] = {"comfy": float(base.latent_format.scale_factor), "bundle": bundle.scale_factor,
                              "diffusers": float(pipe.vae.config.scaling_factor)}
    result["latent_format_is_comfy_sd15"] = type(base.latent_format) is importlib.import_module(
        "comfy.latent_formats").SD15
    result["stock_sd15_scale"] = float(importlib.import_module("comfy.latent_formats").SD15().scale_factor)
    result["model_type"] = str(base.model_type)
    result["attn2_channels"] = sum(m.heads for n, m in diffusion_model.named_modules() if n.endswith(".attn2"))
    return result


def _broken_copies(torch: Any, path: Path, scratch: Path) -> dict[str, Path]:
    """Bundles with one defect each (and one file with no toy metadata)."""
    from safetensors.torch import save_file

    from l2s_core.toy_bundle import load_bundle, save_bundle

    bundle = load_bundle(path)
    meta = {k: v for k, v in bundle.meta.items() if k not in ("format", "version")}
    scratch.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def write(name: str, parts: dict[str, dict[str, Any]], new_meta: dict[str, Any]) -> None:
        out[name] = scratch / f"{name}.safetensors"
        save_bundle(out[name], parts, new_meta)

    def parts_with(part: str, weights: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {**bundle.parts, part: weights}

    out["no_metadata"] = scratch / "no_metadata.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(out["no_metadata"]))
    write("cosine_schedule", bundle.parts, {**meta, "schedule": {**meta["schedule"], "beta_schedule": "cosine"}})
    write("v_prediction", bundle.parts, {**meta, "schedule": {**meta["schedule"],
                                                                 "prediction_type": "v_prediction"}})
    unet = dict(bundle.parts["unet"])
    dropped = sorted(k for k in unet if k.endswith("attn2.to_k.weight"))[0]
    del unet[dropped]
    write("unet_missing_weight", parts_with("unet", unet), meta)
    write("unet_extra_weight", parts_with("unet", {**bundle.parts["unet"], "extra_block.weight": torch.zeros(3)}),
          meta)
    write("unet_config_wrong", bundle.parts, {**meta, "comfy_unet_config": {**meta["comfy_unet_config"],
                                                                            "model_channels": 64}})
    write("text_vocab_wrong", bundle.parts, {**meta, "text_encoder_config": {**meta["text_encoder_config"],
                                                                              "vocab_size": 1000}})
    text = {k: v for k, v in bundle.parts["text_encoder"].items() if "layers.1." not in k}
    write("text_missing_layer", parts_with("text_encoder", text), meta)
    vae = {k: v for k, v in bundle.parts["vae"].items() if not k.startswith("taesd_encoder.0.")}
    write("vae_missing_weight", parts_with("vae", vae), meta)
    no_scale = {k: v for k, v in meta.items() if k != "latent_scale_factor"}
    write("no_scale_factor", bundle.parts, no_scale)
    return out


def check_errors(torch: Any, pack: dict[str, Any], path: Path, scratch: Path) -> dict[str, Any]:
    """Each broken copy must raise BundleError; returns the messages."""
    from l2s_core import toy_bundle

    errors: dict[str, Any] = {}
    pack_bundle_error = pack["toy_bundle"].BundleError
    for name, broken in _broken_copies(torch, path, scratch).items():
        try:
            pack["toy_models"].load_toy_world(broken)
        except (pack_bundle_error, toy_bundle.BundleError) as exc:
            errors[name] = {"type": type(exc).__name__, "message": str(exc)}
        except Exception as exc:  # reported as a failure by the pytest side
            errors[name] = {"type": type(exc).__name__, "message": repr(exc)}
        else:
            errors[name] = {"type": None, "message": "no error"}
    return errors


def check_listing(torch: Any, pack: dict[str, Any], path: Path, scratch: Path) -> dict[str, Any]:
    """Folder registration and the loaders' file lists, with a stand-in for the pack's ``toy_world/`` directory.

    Layout: ``pack_toy_world/models`` holds the bundle and ``pack_toy_world/classifiers`` a classifier (as the pack
    ships them); ``models/`` the user's
    folders with a bundle, a stray non-bundle file and a classifier; ``yaml_classifiers/`` a folder registered as
    ``l2s_classifiers`` before the pack, as extra_model_paths.yaml does.
    """
    import folder_paths
    from safetensors.torch import save_file

    paths = pack["paths"]
    root = scratch / "listing"
    pack_dir, models, yaml_dir = root / "pack_toy_world", root / "models", root / "yaml_classifiers"
    pack_models, pack_classifiers = pack_dir / "models", pack_dir / "classifiers"
    for folder in (pack_models, pack_classifiers, models / "l2s_toy_worlds", models / "l2s_classifiers", yaml_dir):
        folder.mkdir(parents=True, exist_ok=True)
    plain = {"weight": torch.zeros(2)}
    (pack_models / "toy_world.safetensors").symlink_to(path)
    save_file(plain, str(pack_classifiers / "toy_relation_classifier.safetensors"))
    (models / "l2s_toy_worlds" / "my_world.safetensors").symlink_to(path)
    save_file(plain, str(models / "l2s_toy_worlds" / "stray.safetensors"))
    torch.save(plain, models / "l2s_toy_worlds" / "not_a_world.pth")
    save_file(plain, str(models / "l2s_classifiers" / "my_classifier.safetensors"))
    torch.save(plain, yaml_dir / "yaml_classifier.pth")

    paths.PACK_TOY_MODELS_DIR = str(pack_models)
    paths.PACK_TOY_CLASSIFIERS_DIR = str(pack_classifiers)
    folder_paths.models_dir = str(models)
    folder_paths.folder_names_and_paths.pop(paths.TOY_WORLD_FOLDER, None)
    folder_paths.folder_names_and_paths[paths.CLASSIFIER_FOLDER] = ([str(yaml_dir)], set())
    paths.register_folders()
    paths.register_folders()  # idempotent
    return {
        "toy_worlds": paths.toy_world_file_names(),
        "classifiers": paths.classifier_file_names(),
        "toy_world_paths": folder_paths.folder_names_and_paths[paths.TOY_WORLD_FOLDER][0],
        "classifier_paths": folder_paths.folder_names_and_paths[paths.CLASSIFIER_FOLDER][0],
        "classifier_extensions": sorted(folder_paths.folder_names_and_paths[paths.CLASSIFIER_FOLDER][1]),
        "expected_toy_world_paths": [str(models / "l2s_toy_worlds"), str(pack_models)],
        "expected_classifier_paths": [str(yaml_dir), str(models / "l2s_classifiers"), str(pack_classifiers)],
    }


def main() -> None:
    bundle_path, scratch = Path(sys.argv[1]), Path(sys.argv[2])
    sys.path.insert(0, os.environ["COMFYUI_PATH"])
    sys.path.append(str(REPO))  # after ComfyUI, so `nodes` stays ComfyUI's; gives `training` and `l2s_core`
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        print("L2S_RESULT " + json.dumps({"skip": f"{exc.name} is not installed in ComfyUI's Python "
                                                  f"({sys.executable}): install diffusers and transformers there to "
                                                  "compare the toy world in ComfyUI with its diffusers pipeline"}))
        return
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu)
    import torch

    load_pack()
    pack = {"toy_models": importlib.import_module("l2s_pack.nodes.toy_models"),
            "toy_bundle": importlib.import_module("l2s_pack.l2s_core.toy_bundle"),
            "paths": importlib.import_module("l2s_pack.nodes.paths")}
    result = {"tokenizer": check_tokenizer(), "networks": check_networks(torch, pack, bundle_path),
              "errors": check_errors(torch, pack, bundle_path, scratch),
              "listing": check_listing(torch, pack, bundle_path, scratch)}
    print("L2S_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
