"""The toy world in a real ComfyUI (tests marked ``comfyui``): Load Toy World against the diffusers pipeline, in a
workflow through the HTTP API, the files its loaders list, and the errors a bad bundle gives.

The comparison runs tests/comfy_checks/toy_world_check.py under ComfyUI's Python (``COMFYUI_PYTHON``, which must
also have diffusers and transformers). The bundle comes from tests/support/toy_world_files.py: ``L2S_TOY_BUNDLE``, else the
shipped ``toy_world/models/toy_world.safetensors``, else a tiny bundle built once and cached.

Measured on the reference setup (CPU fp32, dev bundle): UNet outputs agree to ~1e-6 relative, text hidden states to
~1.5e-6 absolute, VAE decode and encode exactly, the tokenizer on all 159 prompts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_harness import ComfyServer, comfyui_path, comfyui_python
from safetensors.torch import save_file
from toy_world_files import SHIPPED_BUNDLE, SHIPPED_CLASSIFIER, attention_channels, toy_bundle, toy_world_dir

from l2s_core.toy_bundle import read_bundle_metadata

comfyui = pytest.mark.comfyui

CHECK = Path(__file__).resolve().parents[1] / "comfy_checks" / "toy_world_check.py"
UNET_TOLERANCE = 1e-4  # max |comfy - diffusers| / max |diffusers|
TEXT_TOLERANCE = 1e-4  # max |comfy - diffusers|, hidden states of size ~1-4
VAE_TOLERANCE = 1e-5
PROMPT = "a red square to the left of a blue circle"
# The six object kinds and four relations of the toy world: 6 x 5 ordered pairs x 4 relations.
RELATION_PROMPTS = 120
BROKEN = {  # broken copy -> what its error message must say
    "no_metadata": "has no 'l2s_toy_world' metadata",
    "cosine_schedule": "beta_schedule = 'cosine' (ComfyUI: 'scaled_linear')",
    "v_prediction": "prediction_type = 'v_prediction' (ComfyUI: 'epsilon')",
    "unet_missing_weight": "ComfyUI UNet weights not in the bundle: input_blocks.1.1.transformer_blocks.0.attn2.to_k",
    "unet_extra_weight": "bundle weights with no ComfyUI name: extra_block.weight",
    "unet_config_wrong": "shape mismatches: ",
    "text_vocab_wrong": "vocab_size = 1000 (needs 49408)",
    "text_missing_layer": "missing: text_model.encoder.layers.1.",
    "vae_missing_weight": "missing: taesd_encoder.0.bias, taesd_encoder.0.weight",
    "no_scale_factor": "'latent_scale_factor'",
}


@pytest.fixture(scope="module")
def bundle_path(request: pytest.FixtureRequest) -> Path:
    return toy_bundle(request.config.cache.mkdir("l2s_toy_world"))


@pytest.fixture(scope="module")
def check(bundle_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COMFYUI_PATH=str(comfyui_path()), OMP_NUM_THREADS="1")
    scratch = tmp_path_factory.mktemp("toy_world_check")
    run = subprocess.run([comfyui_python(), str(CHECK), str(bundle_path), str(scratch)], env=env,
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("L2S_RESULT ")]
    assert run.returncode == 0 and lines, f"toy world check failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(lines[-1].removeprefix("L2S_RESULT "))
    if "skip" in result:
        pytest.skip(result["skip"])
    return result


@comfyui
def test_comfyui_sd1_tokenizer_gives_the_toy_ids(check: dict[str, Any]) -> None:
    tokenizer = check["tokenizer"]
    assert tokenizer["relation_prompts"] == RELATION_PROMPTS
    assert tokenizer["prompts"] > RELATION_PROMPTS + 30  # plus every vocabulary word and the empty prompt
    assert tokenizer["mismatch_count"] == 0, tokenizer["mismatches"]


@comfyui
def test_comfyui_models_match_the_diffusers_pipeline(check: dict[str, Any], bundle_path: Path) -> None:
    networks = check["networks"]
    meta = read_bundle_metadata(bundle_path)
    assert networks["unet_dtype"] == "torch.float32" and networks["model_type"] == "ModelType.EPS"
    assert len(networks["unet"]) == 3
    for case in networks["unet"]:
        assert case["rel_diff"] <= UNET_TOLERANCE, case
        assert case["scale"] > 0.1, "the UNet output is flat: the comparison would say nothing"
    for case in networks["text"]:
        assert case["shape"] == [1, 77, meta["text_encoder_config"]["hidden_size"]], case
        assert case["max_abs_diff"] <= TEXT_TOLERANCE, case
        assert case["scale"] > 0.1 and case["pipeline_tokenizer_agrees"], case
    vae = networks["vae"]
    side = meta["world"]["image_size"]
    assert vae["decode_shape"] == [1, side, side, 3] and vae["encode_shape"] == [1, 4, side // 8, side // 8]
    assert vae["decode_max_abs_diff"] <= VAE_TOLERANCE and vae["encode_rel_diff"] <= VAE_TOLERANCE, vae
    assert vae["decode_spread"] > 0.01, "the decoded image is flat: the comparison would say nothing"
    assert networks["schedule_rel_diff"] <= 1e-5
    scale = networks["latent_scale"]
    assert scale["comfy"] == scale["bundle"] == scale["diffusers"] == meta["latent_scale_factor"]
    # A fresh latent format: ComfyUI's SD15 class keeps its own scale factor.
    assert not networks["latent_format_is_comfy_sd15"] and networks["stock_sd15_scale"] == 0.18215
    assert networks["attn2_channels"] == attention_channels(bundle_path)


def test_default_architecture_has_28_attention_channels() -> None:
    from training.toy.architecture import ToyArchitecture, comfy_unet_config

    config = comfy_unet_config(ToyArchitecture())
    levels = len(config["channel_mult"])
    attn2_layers = levels + 1 + 2 * levels  # one per down level, the middle block, two per up level
    assert attn2_layers * config["num_heads"] == 28


@comfyui
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_bundle_raises_a_bundle_error_naming_the_file(check: dict[str, Any], name: str) -> None:
    error = check["errors"][name]
    assert error["type"] == "BundleError", error
    assert f"{name}.safetensors" in error["message"] and BROKEN[name] in error["message"], error["message"]


@comfyui
def test_loaders_list_the_pack_folder_of_their_kind_and_user_folders_as_they_are(check: dict[str, Any]) -> None:
    listing = check["listing"]
    assert listing["toy_worlds"] == ["my_world.safetensors", "stray.safetensors", "toy_world.safetensors"]
    assert listing["classifiers"] == ["my_classifier.safetensors", "toy_relation_classifier.safetensors",
                                      "yaml_classifier.pth"]
    assert listing["toy_world_paths"] == listing["expected_toy_world_paths"]
    assert listing["classifier_paths"] == listing["expected_classifier_paths"]
    assert listing["classifier_extensions"] == [".pt", ".pth", ".safetensors"]


# ---------------------------------------------------------------------------------------------- through the API


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def plain_workflow(world: str, prefix: str, side: int) -> dict[str, Any]:
    """Load Toy World -> CLIP Text Encode -> KSampler -> VAE Decode -> Save Image."""
    return {
        "1": {"class_type": "L2S_LoadToyWorld", "inputs": {"world": world}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": PROMPT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": side, "height": side, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": 4, "cfg": 5.0, "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
    }


@comfyui
def test_toy_world_workflow_saves_an_image_of_the_bundle_size(comfy_server: ComfyServer, bundle_path: Path) -> None:
    shutil.copyfile(bundle_path, toy_world_dir(comfy_server) / "api_test_world.safetensors")
    side = int(read_bundle_metadata(bundle_path)["world"]["image_size"])
    entry = comfy_server.submit(plain_workflow("api_test_world.safetensors", "toy_api_test", side))
    saved = [p for p in comfy_server.output_files(entry) if p.name.startswith("toy_api_test")]
    assert len(saved) == 1 and _png_size(saved[0]) == (side, side)
    summary = entry["outputs"]["1"]["text"][0]
    assert "objects: red square" in summary and "relations: above, below" in summary, summary


@comfyui
def test_loader_lists_the_folder_and_refuses_a_file_without_toy_metadata(comfy_server: ComfyServer) -> None:
    save_file({"weight": torch.zeros(2, 2)}, str(toy_world_dir(comfy_server) / "not_a_world.safetensors"))
    options = comfy_server.object_info("L2S_LoadToyWorld")["L2S_LoadToyWorld"]["input"]["required"]["world"][1]
    assert "not_a_world.safetensors" in options["options"]
    message = comfy_server.run_error(plain_workflow("not_a_world.safetensors", "toy_api_bad", 64))
    assert "not_a_world.safetensors has no 'l2s_toy_world' metadata" in message, message
    assert "python -m training toy model" in message


@comfyui
@pytest.mark.skipif(not (SHIPPED_BUNDLE.is_file() and SHIPPED_CLASSIFIER.is_file()),
                    reason="the pack does not ship toy_world/models/toy_world.safetensors and "
                    "toy_world/classifiers/toy_relation_classifier.safetensors yet")
def test_shipped_files_appear_in_their_loaders_with_no_setup(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    worlds = info["L2S_LoadToyWorld"]["input"]["required"]["world"][1]["options"]
    classifiers = info["L2S_LoadRelationClassifier"]["input"]["required"]["classifier_name"][1]["options"]
    assert SHIPPED_BUNDLE.name in worlds and SHIPPED_CLASSIFIER.name not in worlds
    assert SHIPPED_CLASSIFIER.name in classifiers and SHIPPED_BUNDLE.name not in classifiers
