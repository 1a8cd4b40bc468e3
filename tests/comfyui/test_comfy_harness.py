"""Tests of the real-ComfyUI harness and the tiny random-weight models of the test pack.

The pure tests check :mod:`comfy_test_pack.tiny_specs` against hand-computed numbers and run everywhere. The tests
marked ``comfyui`` start a headless ComfyUI (``COMFYUI_PATH``) and run, for every family, the stock text-to-image
graph on the tiny model: L2STest_TinyModel -> CLIPTextEncode (+ FluxGuidance) -> KSampler (2 steps, euler) ->
SaveLatent and VAEDecode -> SaveImage; then they check determinism across processes and the error paths.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_harness import ComfyServer, ComfyServerError
from comfy_test_pack import tiny_specs

TEXT = "a photo of a dog to the left of a cat"
# 64 px -> 8x8 latent: the three downsamplings of the SD1/SD2 UNets reach 1x1 at the deepest level, which works.
IMAGE_SIDE = 64
# Channels of the official Learn-to-Steer classifiers, which the tiny models of these families reproduce.
OFFICIAL_CHANNELS = {"sd1": 128, "sd2": 195, "flux": 1368}

comfyui = pytest.mark.comfyui


# ------------------------------------------------------------------------------------------ prompt building


def family_prompt(family: str, prefix: str, weight_seed: int = 0, sampler_seed: int = 0, ids: str = "") -> dict:
    """API-format prompt: tiny model -> text encode -> KSampler -> SaveLatent + VAEDecode -> SaveImage.

    Args:
        family: Tiny-model family.
        prefix: File prefix; the latent goes to ``output/latents/<prefix>_*.latent``, the image to ``<prefix>_*``.
        weight_seed: Seed of the random weights.
        sampler_seed: KSampler noise seed.
        ids: Prefix for the node ids (to merge several family graphs into one prompt).
    """
    joint = tiny_specs.get_spec(family)["layout"] == tiny_specs.JOINT

    def n(i: int) -> str:
        return f"{ids}{i}"

    prompt: dict[str, Any] = {
        n(1): {"class_type": "L2STest_TinyModel", "inputs": {"family": family, "seed": weight_seed}},
        n(2): {"class_type": "CLIPTextEncode", "inputs": {"clip": [n(1), 1], "text": TEXT}},
        n(3): {"class_type": "CLIPTextEncode", "inputs": {"clip": [n(1), 1], "text": ""}},
        n(4): {
            "class_type": "EmptySD3LatentImage" if joint else "EmptyLatentImage",
            "inputs": {"width": IMAGE_SIDE, "height": IMAGE_SIDE, "batch_size": 1},
        },
        n(5): {
            "class_type": "KSampler",
            "inputs": {
                "model": [n(1), 0],
                "seed": sampler_seed,
                "steps": 2,
                "cfg": 1.0 if family == "flux" else 5.0,
                "sampler_name": "euler",
                "scheduler": "simple" if joint else "normal",
                "positive": [n(2), 0],
                "negative": [n(3), 0],
                "latent_image": [n(4), 0],
                "denoise": 1.0,
            },
        },
        n(6): {"class_type": "SaveLatent", "inputs": {"samples": [n(5), 0], "filename_prefix": f"latents/{prefix}"}},
        n(7): {"class_type": "VAEDecode", "inputs": {"samples": [n(5), 0], "vae": [n(1), 2]}},
        n(8): {"class_type": "SaveImage", "inputs": {"images": [n(7), 0], "filename_prefix": prefix}},
    }
    if family == "flux":
        prompt[n(9)] = {"class_type": "FluxGuidance", "inputs": {"conditioning": [n(2), 0], "guidance": 3.5}}
        prompt[n(5)]["inputs"]["positive"] = [n(9), 0]
    return prompt


def all_families_prompt(prefix: str) -> dict:
    """One prompt running every family's graph (node ids prefixed by the family)."""
    prompt: dict[str, Any] = {}
    for family in tiny_specs.FAMILIES:
        prompt.update(family_prompt(family, f"{prefix}_{family}", ids=f"{family}_"))
    return prompt


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


# ----------------------------------------------------------------------------------- pure spec tests


def test_tiny_specs_channel_counts_are_hand_computed() -> None:
    # SD1/SD2/FLUX have the attention layout of the real models, so official-format classifiers fit them.
    # SD1: attn2 in input blocks 1, 2, 4, 5, 7, 8, the middle block and output blocks 3..11 -> 16 layers x 8 heads.
    assert tiny_specs.cross_attention_channels("sd1") == 128
    # SD2: head dim 8 -> 5 heads at 40 ch, 10 at 80, 20 at 160. input 2x5 + 2x10 + 2x20 = 70, middle 20,
    # output 3x20 + 3x10 + 3x5 = 105 -> 195.
    assert tiny_specs.cross_attention_channels("sd2") == 195
    # SDXL: level 0 none; level 1 (64 ch, 4 heads) depth 1; level 2 (128 ch, 8 heads) depth 2; middle depth 2.
    # input 4 + 2x8, middle 2x8, output level 2: 2 blocks x 2 x 8, level 1: 2 blocks x 1 x 4 -> 4+16+16+32+8 = 76.
    assert tiny_specs.cross_attention_channels("sdxl") == 76
    # SD3: MMDiT depth 2 -> heads 2 -> 2 x 2 = 4. FLUX: (19 double + 38 single) x 24 heads = 1368.
    assert tiny_specs.cross_attention_channels("sd3") == 4
    assert tiny_specs.cross_attention_channels("flux") == 1368


def test_tiny_specs_layer_lists_and_text_tokens() -> None:
    sd1 = tiny_specs.unet_attention_layers("sd1")
    assert [(x["block"], x["index"]) for x in sd1] == [
        *[("input", i) for i in (1, 2, 4, 5, 7, 8)],
        ("middle", 0),
        *[("output", i) for i in range(3, 12)],
    ]
    assert {(x["channels"], x["heads"]) for x in sd1} == {(32, 8), (64, 8), (128, 8)}
    sd2 = tiny_specs.unet_attention_layers("sd2")
    assert [(x["block"], x["index"], x["level"], x["heads"]) for x in sd2] == [
        ("input", 1, 0, 5),
        ("input", 2, 0, 5),
        ("input", 4, 1, 10),
        ("input", 5, 1, 10),
        ("input", 7, 2, 20),
        ("input", 8, 2, 20),
        ("middle", 0, 3, 20),
        ("output", 3, 2, 20),
        ("output", 4, 2, 20),
        ("output", 5, 2, 20),
        ("output", 6, 1, 10),
        ("output", 7, 1, 10),
        ("output", 8, 1, 10),
        ("output", 9, 0, 5),
        ("output", 10, 0, 5),
        ("output", 11, 0, 5),
    ]
    assert [x["block"] for x in tiny_specs.joint_attention_layers("flux")] == ["double"] * 19 + ["single"] * 38
    assert {x["heads"] for x in tiny_specs.joint_attention_layers("flux")} == {24}
    assert {f: tiny_specs.text_tokens(f) for f in tiny_specs.FAMILIES} == {
        "sd1": 77,
        "sd2": 77,
        "sdxl": 77,
        "sd3": 154,
        "flux": 256,
    }
    assert [tiny_specs.latent_channels(f) for f in tiny_specs.FAMILIES] == [4, 4, 4, 16, 16]
    flux = tiny_specs.get_spec("flux")["unet_config"]
    assert sum(flux["axes_dim"]) == flux["hidden_size"] // flux["num_heads"]
    # ComfyUI's FLUX RoPE needs an even, non-zero width per position axis (rope() divides by it).
    assert all(d > 0 and d % 2 == 0 for d in flux["axes_dim"])
    with pytest.raises(ValueError, match="unknown tiny-model family 'sd9'"):
        tiny_specs.get_spec("sd9")
    with pytest.raises(ValueError, match="expected a UNet family"):
        tiny_specs.unet_attention_layers("flux")


# ------------------------------------------------------------------------------------ integration tests


@comfyui
def test_server_registers_test_pack_and_stock_nodes(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    node = info["L2STest_TinyModel"]
    assert node["display_name"] == "L2S Test: Tiny Random Model"
    family_input = node["input"]["required"]["family"]
    options = family_input[1]["options"] if family_input[0] == "COMBO" else family_input[0]
    assert list(options) == list(tiny_specs.FAMILIES)
    assert node["output"] == ["MODEL", "CLIP", "VAE"]
    for stock in ("CLIPTextEncode", "KSampler", "SaveLatent", "VAEDecode", "SaveImage", "EmptySD3LatentImage"):
        assert stock in info, f"stock node {stock} missing from /object_info"
    assert "FluxGuidance" in info
    assert comfy_server.classifier_dir.is_dir()
    assert "Adding extra search path l2s_classifiers" in comfy_server.log_text()


@comfyui
@pytest.mark.parametrize("family", tiny_specs.FAMILIES)
def test_tiny_family_text_to_image(comfy_server: ComfyServer, family: str) -> None:
    prefix = f"e2e_{family}"
    entry = comfy_server.submit(family_prompt(family, prefix))

    images = comfy_server.output_files(entry, "images")
    latents = comfy_server.output_files(entry, "latents")
    assert len(images) == 1 and images[0].is_file(), images
    assert png_size(images[0]) == (IMAGE_SIDE, IMAGE_SIDE)
    assert len(latents) == 1 and latents[0] == comfy_server.latent_path(prefix)

    latent = comfy_server.read_latent(prefix)["latent_tensor"]
    side = IMAGE_SIDE // 8
    assert tuple(latent.shape) == (1, tiny_specs.latent_channels(family), side, side)
    assert latent.dtype == torch.float32
    assert torch.isfinite(latent).all()
    assert latent.std() > 0

    # The node logs what it built; the channel count it measured on the real model must match tiny_specs.
    match = re.search(
        rf"built tiny {family} \(seed 0\) in ([0-9.]+) s: (\d+) parameters, (\d+) cross-attention channels",
        comfy_server.log_text(),
    )
    assert match is not None, comfy_server.log_tail()
    assert int(match.group(3)) == tiny_specs.cross_attention_channels(family)
    if family in OFFICIAL_CHANNELS:
        assert int(match.group(3)) == OFFICIAL_CHANNELS[family]
    assert float(match.group(1)) < 10.0


@comfyui
def test_weight_seed_changes_the_result(comfy_server: ComfyServer) -> None:
    comfy_server.submit(family_prompt("sd1", "seed_a", weight_seed=0))
    comfy_server.submit(family_prompt("sd1", "seed_b", weight_seed=1))
    a = comfy_server.read_latent("seed_a")["latent_tensor"]
    b = comfy_server.read_latent("seed_b")["latent_tensor"]
    assert not torch.equal(a, b)


@comfyui
def test_run_error_returns_validation_and_execution_errors(comfy_server: ComfyServer) -> None:
    missing_text = family_prompt("sd1", "missing_text")
    del missing_text["2"]["inputs"]["text"]
    text = comfy_server.run_error(missing_text)
    assert "Required input is missing" in text and "node 2 (CLIPTextEncode)" in text, text
    with pytest.raises(ComfyServerError, match="HTTP 400") as rejected:
        comfy_server.submit(missing_text)
    assert rejected.value.body is not None and "2" in rejected.value.body["node_errors"]

    # ComfyUI 0.3.64 does not check V3 combo values against their options at validation time (only list-typed
    # V1 combos are checked), so an unknown family reaches the node, which must reject it itself.
    bad_family = family_prompt("sd1", "bad_family")
    bad_family["1"]["inputs"]["family"] = "sd9"
    assert comfy_server.run_error(bad_family).startswith("unknown tiny-model family 'sd9'")

    # A 16-channel latent into the 4-channel SD1 VAE fails at execution, not validation. (KSampler would not do:
    # ComfyUI resizes an all-zero "empty" latent to the model's channel count before sampling.)
    wrong_latent = {
        "1": {"class_type": "L2STest_TinyModel", "inputs": {"family": "sd1", "seed": 0}},
        "2": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "wrong_latent"}},
    }
    message = comfy_server.run_error(wrong_latent)
    assert "channels" in message, message
    with pytest.raises(ComfyServerError, match=r"failed in node 3 \(VAEDecode\)"):
        comfy_server.submit(wrong_latent)


@comfyui
@pytest.mark.parametrize("fresh_comfy_server", [{"extra_args": ["--cache-none"]}], indirect=True)
def test_same_prompt_gives_bit_identical_latents_across_runs_and_processes(
    comfy_server: ComfyServer, fresh_comfy_server: ComfyServer
) -> None:
    # --cache-none: the second run really recomputes everything (weights included) in the same process.
    fresh_comfy_server.submit(all_families_prompt("det_a"))
    fresh_comfy_server.submit(all_families_prompt("det_b"))
    comfy_server.submit(all_families_prompt("det_s"))
    for family in tiny_specs.FAMILIES:
        first = fresh_comfy_server.read_latent(f"det_a_{family}")["latent_tensor"]
        second = fresh_comfy_server.read_latent(f"det_b_{family}")["latent_tensor"]
        other_process = comfy_server.read_latent(f"det_s_{family}")["latent_tensor"]
        assert torch.equal(first, second), f"{family}: two runs in one server differ"
        assert torch.equal(first, other_process), f"{family}: two server processes differ"
        assert math.isfinite(float(first.abs().max()))
