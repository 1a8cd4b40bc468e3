"""The pack's nodes in a real headless ComfyUI, driven through the HTTP API (tests marked ``comfyui``).

Tiny random-weight models of every family (tests/comfy_test_pack) and random classifiers written by this test
process, in this pack's safetensors format and in the official .pth layout, go into the server's l2s_classifiers
folder. The graphs are the ones a user builds: Spatial Prompt Encode -> Learned Spatial Steer -> SaveLatent, or the
SAMPLER variant inside SamplerCustom, with Attention Preview on the decoded image.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_harness import ComfyServer
from comfy_test_pack import tiny_specs
from safetensors.torch import load_file

from l2s_core.checkpoint import LoadedClassifier, save_classifier
from l2s_core.classifier import ClassifierConfig, RelationClassifier

comfyui = pytest.mark.comfyui

TEXT = "a photo of a dog to the left of a cat"
RELATIONS = ("above", "below", "is", "to the left of", "to the right of")  # the official 5-class mapping
# tiny-model family -> classifier family
CLASSIFIER_FAMILY = {"sd1": "sd14", "sd2": "sd2", "sdxl": "sdxl", "sd3": "sd3", "flux": "flux_dev"}
TRAINED_STEPS = (5, 10, 15, 20, 25, 49)


def _random_classifier(channels: int, family: str, seed: int) -> RelationClassifier:
    """A random classifier whose input projection is scaled up so it reacts to sum-1 maps (their values are tiny)."""
    heads_family = "flux_dev" if family in ("flux_dev", "flux_schnell", "sd3") else "sd2"
    config = ClassifierConfig.from_official(
        {"map_size": 16, "d_model": 256, "num_timesteps": 50},
        input_channels=max(channels, 1368), num_relations=len(RELATIONS), family=heads_family,
    )
    torch.manual_seed(seed)
    model = RelationClassifier(config)
    with torch.no_grad():
        model.object_extractor.input_projection.weight.mul_(256.0)
    return model.eval()


def write_classifier(folder: Path, name: str, tiny_family: str, *, official: bool = False, seed: int = 0,
                     channels: int | None = None) -> str:
    """Write a random classifier for a tiny family; returns the file name the loader node lists."""
    family = CLASSIFIER_FAMILY[tiny_family]
    channels = tiny_specs.cross_attention_channels(tiny_family) if channels is None else channels
    model = _random_classifier(channels, family, seed)
    if official:
        path = folder / f"{name}.pth"
        torch.save({
            "model_state_dict": model.state_dict(),
            "rel_name_to_idx": {r: i for i, r in enumerate(RELATIONS)},
            "idx_to_rel_name": dict(enumerate(RELATIONS)),
            "input_channels": model.config.input_channels,
            "config": model.config.to_official(),
            "training_config": {"timesteps": list(TRAINED_STEPS), "num_timesteps": 50, "orig_map_size": 16},
        }, path)
        return path.name
    path = folder / f"{name}.safetensors"
    save_classifier(LoadedClassifier(
        model=model, relations=RELATIONS, trained_steps=TRAINED_STEPS, trained_num_steps=50, map_size=16,
        orig_map_size=16, family=family, channels=channels, layout=tiny_specs.get_spec(tiny_family)["layout"],
        provenance={"source": "random test classifier"}, source_path=str(path),
    ), path)
    return path.name


def steer_prompt(family: str, classifier_file: str, prefix: str, *, text: str = TEXT, steps: int = 4,
                 last_steered_step: int = 2, iterations: int = 3, step_size: float = 5.0, batch: int = 1,
                 sampler: str = "euler", seed: int = 0, side: int | None = None, memory: str = "auto",
                 mode: str = "custom") -> dict[str, Any]:
    """Tiny model -> Spatial Prompt Encode -> Learned Spatial Steer -> SaveLatent + VAEDecode -> Attention Preview.

    The steering numbers count in ``custom`` mode (the default here); other modes ignore them.
    """
    joint = tiny_specs.get_spec(family)["layout"] == tiny_specs.JOINT
    side = side or tiny_specs.get_spec(family).get("test_image_side", 64)
    positive: list[Any] = ["2", 0]
    prompt: dict[str, Any] = {
        "1": {"class_type": "L2STest_TinyModel", "inputs": {"family": family, "seed": 0}},
        "2": {"class_type": "L2S_SpatialPromptEncode", "inputs": {"clip": ["1", 1], "text": text}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptySD3LatentImage" if joint else "EmptyLatentImage",
              "inputs": {"width": side, "height": side, "batch_size": batch}},
        "5": {"class_type": "L2S_LoadRelationClassifier", "inputs": {"classifier_name": classifier_file,
                                                                     "family": "auto"}},
        "6": {"class_type": "L2S_LearnedSpatialSteer", "inputs": {
            "model": ["1", 0], "classifier": ["5", 0], "positive": positive, "negative": ["3", 0],
            "latent_image": ["4", 0], "seed": seed, "steps": steps, "cfg": 1.0 if family == "flux" else 5.0,
            "sampler_name": sampler, "scheduler": "simple" if joint else "normal", "denoise": 1.0,
            "mode": mode, "last_steered_step": last_steered_step, "step_size": step_size,
            "iterations": iterations, "early_stop_probability": 1.0, "memory": memory}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": f"latents/{prefix}"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "9": {"class_type": "L2S_AttentionPreview", "inputs": {"trace": ["6", 1], "image": ["8", 0],
                                                               "steps": "first and last steered step"}},
    }
    if family == "flux":
        prompt["10"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["2", 0], "guidance": 3.5}}
        prompt["6"]["inputs"]["positive"] = ["10", 0]
    return prompt


def plain_prompt(family: str, prefix: str, *, steps: int = 4, seed: int = 0) -> dict[str, Any]:
    """The same graph with the stock KSampler (and stock CLIP Text Encode) instead of the steering nodes."""
    joint = tiny_specs.get_spec(family)["layout"] == tiny_specs.JOINT
    side = tiny_specs.get_spec(family).get("test_image_side", 64)
    prompt: dict[str, Any] = {
        "1": {"class_type": "L2STest_TinyModel", "inputs": {"family": family, "seed": 0}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": TEXT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptySD3LatentImage" if joint else "EmptyLatentImage",
              "inputs": {"width": side, "height": side, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": seed,
            "steps": steps, "cfg": 1.0 if family == "flux" else 5.0, "sampler_name": "euler",
            "scheduler": "simple" if joint else "normal", "denoise": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": f"latents/{prefix}"}},
    }
    if family == "flux":
        prompt["10"] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["2", 0], "guidance": 3.5}}
        prompt["6"]["inputs"]["positive"] = ["10", 0]
    return prompt


def latent(server: ComfyServer, prefix: str) -> torch.Tensor:
    return load_file(str(server.latent_path(prefix)))["latent_tensor"]


def trace_summary(entry: dict[str, Any], node: str = "6") -> dict[str, Any]:
    """The steer node's trace summary: the JSON the node reports next to its readable text."""
    return json.loads(entry["outputs"][node]["l2s_trace"][0])


# ----------------------------------------------------------------------------------------------------- tests


@comfyui
def test_nodes_are_registered_with_tooltips(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    ours = {k: v for k, v in info.items() if k.startswith("L2S_")}
    assert set(ours) == {"L2S_LoadRelationClassifier", "L2S_SpatialPromptEncode", "L2S_LearnedSpatialSteer",
                         "L2S_LearnedSpatialSteerSampler", "L2S_AttentionPreview", "L2S_LoadToyWorld"}
    for name, node in ours.items():
        assert node["description"], name
        assert node["category"].startswith("learn_to_steer"), name
        for section in ("required", "optional"):
            for input_name, spec in node["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert all(node["output_tooltips"]), name


@comfyui
def test_widget_labels_follow_the_display_names(comfy_server: ComfyServer) -> None:
    """The frontend labels widgets from the pack's locales/en/nodeDefs.json, not from V3 display names: keep them equal."""
    locale = json.loads((Path(__file__).resolve().parents[2] / "locales" / "en" / "nodeDefs.json").read_text())
    info = comfy_server.object_info()
    named = {(node_id, input_name): spec[1]["display_name"]
             for node_id, node in info.items() if node_id.startswith("L2S_")
             for section in ("required", "optional") for input_name, spec in node["input"].get(section, {}).items()
             if len(spec) > 1 and spec[1].get("display_name") not in (None, input_name)}
    labels = {(node_id, input_name): entry["name"] for node_id, node in locale.items()
              for input_name, entry in node.get("inputs", {}).items()}
    assert named and labels == named
    with urllib.request.urlopen(comfy_server.url + "/i18n", timeout=30) as response:
        served = json.loads(response.read())["en"]["nodeDefs"]
    assert served["L2S_LoadRelationClassifier"]["inputs"]["classifier_name"]["name"] == "file"


@comfyui
@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sd3", "flux"])
def test_steering_raises_the_target_probability(comfy_server: ComfyServer, family: str) -> None:
    name = write_classifier(comfy_server.classifier_dir, f"ours_{family}", family)
    entry = comfy_server.submit(steer_prompt(family, name, f"steer_{family}"))
    summary = trace_summary(entry)
    assert summary["relations"] == ["dog to the left of cat"]
    assert [s["step"] for s in summary["steps"]] == [0, 1]
    first = summary["steps"][0]
    assert first["iterations"] == 3
    assert first["p_after"][0] > first["p_before"][0], summary
    steered = latent(comfy_server, f"steer_{family}")
    assert steered.shape[1] == tiny_specs.latent_channels(family)
    assert torch.isfinite(steered).all()
    previews = [p for p in comfy_server.output_files(entry) if p.exists()]
    assert previews, "Attention Preview produced no image"
    parse_text = entry["outputs"]["2"]["text"][0]
    assert "parsed: 'dog' to the left of 'cat'" in parse_text and "relation: to the left of" in parse_text
    readable = entry["outputs"]["6"]["text"][0].splitlines()
    assert readable[0] == "steering: dog to the left of cat", readable
    assert readable[2] == "per step, p(to the left of) before -> after:", readable
    assert readable[3].startswith("step 0: ") and readable[3].endswith("(3 it)"), readable


@comfyui
@pytest.mark.parametrize("family", ["sd1", "sd2", "flux"])
def test_official_pth_checkpoints_load_and_steer(comfy_server: ComfyServer, family: str) -> None:
    official_name = {"sd1": "sd14", "sd2": "sd2", "flux": "flux_dev"}[family]
    (comfy_server.classifier_dir / "official").mkdir(exist_ok=True)
    name = write_classifier(comfy_server.classifier_dir / "official", official_name, family, official=True, seed=1)
    entry = comfy_server.submit(steer_prompt(family, f"official/{name}", f"official_{family}"))
    first = trace_summary(entry)["steps"][0]
    assert first["p_after"][0] > first["p_before"][0]
    assert f"family: {CLASSIFIER_FAMILY[family]}" in entry["outputs"]["5"]["text"][0]


@comfyui
@pytest.mark.parametrize("fresh_comfy_server", [{}], indirect=True)
@pytest.mark.parametrize("family", ["sd1", "flux"])
def test_plain_sampling_after_steering_is_bit_identical_to_a_fresh_server(
        comfy_server: ComfyServer, fresh_comfy_server: ComfyServer, family: str) -> None:
    """Steering must leave the shared model exactly as it was (weights, patches, attention)."""
    reference_server = fresh_comfy_server
    reference_server.submit(plain_prompt(family, f"reference_{family}"))
    reference = latent(reference_server, f"reference_{family}")

    name = write_classifier(comfy_server.classifier_dir, f"after_{family}", family)
    comfy_server.submit(steer_prompt(family, name, f"before_plain_{family}", seed=7))
    comfy_server.submit(plain_prompt(family, f"after_steer_{family}"))  # same model node: the cached, steered model
    after = latent(comfy_server, f"after_steer_{family}")
    assert torch.equal(after, reference)


@comfyui
def test_steering_changes_the_result_and_off_means_plain(comfy_server: ComfyServer) -> None:
    name = write_classifier(comfy_server.classifier_dir, "onoff_sd1", "sd1")
    comfy_server.submit(steer_prompt("sd1", name, "on_sd1", iterations=2, last_steered_step=2))
    comfy_server.submit(steer_prompt("sd1", name, "off_sd1", mode="off"))
    comfy_server.submit(plain_prompt("sd1", "plain_sd1"))
    on, off, plain = latent(comfy_server, "on_sd1"), latent(comfy_server, "off_sd1"), latent(comfy_server, "plain_sd1")
    assert not torch.equal(on, plain)
    assert torch.allclose(off, plain, atol=1e-5), (off - plain).abs().max()


@comfyui
def test_modes_steer_as_their_presets_say(comfy_server: ComfyServer) -> None:
    """official / fast / quality / custom through the node: steered ranges and iterations follow l2s_core.presets."""
    from l2s_core.presets import PRESETS

    name = write_classifier(comfy_server.classifier_dir, "modes_sd1", "sd1")
    summaries = {mode: trace_summary(comfy_server.submit(steer_prompt("sd1", name, f"mode_{mode}", steps=8,
                                                                      mode=mode)))
                 for mode in ("official", "fast", "quality")}
    custom = trace_summary(comfy_server.submit(steer_prompt("sd1", name, "mode_custom", steps=8, mode="custom",
                                                            last_steered_step=3, iterations=2)))
    official = PRESETS["official"].resolve(8, "sd14")
    fast = PRESETS["fast"].resolve(8, "sd14")
    assert [s["step"] for s in summaries["official"]["steps"]] == list(range(official.last_step))
    assert all(s["iterations"] <= official.iterations for s in summaries["official"]["steps"])
    for mode, resolved in (("fast", fast), ("quality", PRESETS["quality"].resolve(8, "sd14"))):
        assert {s["step"] for s in summaries[mode]["steps"]} <= set(range(resolved.last_step))
        assert all(s["iterations"] <= resolved.iterations for s in summaries[mode]["steps"])
    assert [s["step"] for s in custom["steps"]] == [0, 1, 2] and all(s["iterations"] == 2 for s in custom["steps"])
    latents = {mode: latent(comfy_server, f"mode_{mode}") for mode in ("official", "fast", "quality")}
    assert not torch.equal(latents["official"], latents["quality"])  # the update rules differ
    assert not torch.equal(latents["official"], latents["fast"])
    # fast and quality share the update rule; quality has no early stop, so it never stops a step earlier
    fast_its = {s["step"]: s["iterations"] for s in summaries["fast"]["steps"]}
    quality_its = {s["step"]: s["iterations"] for s in summaries["quality"]["steps"]}
    assert fast_its.keys() == quality_its.keys()
    assert all(quality_its[k] >= fast_its[k] for k in fast_its)


@comfyui
def test_batch_of_two_gets_per_sample_traces(comfy_server: ComfyServer) -> None:
    name = write_classifier(comfy_server.classifier_dir, "batch_sd1", "sd1")
    entry = comfy_server.submit(steer_prompt("sd1", name, "batch_sd1", batch=2))
    first = trace_summary(entry)["steps"][0]
    assert len(first["p_before"]) == 2 and len(first["p_after"]) == 2
    assert latent(comfy_server, "batch_sd1").shape[0] == 2
    assert all(a > b for a, b in zip(first["p_after"], first["p_before"], strict=True))


@comfyui
def test_every_stock_sampler_can_be_steered(comfy_server: ComfyServer) -> None:
    spec = comfy_server.object_info("L2S_LearnedSpatialSteer")["L2S_LearnedSpatialSteer"]["input"]["required"][
        "sampler_name"]
    samplers = spec[1]["options"] if spec[0] == "COMBO" else spec[0]
    assert "euler" in samplers and "dpmpp_2m" in samplers and len(samplers) > 20
    name = write_classifier(comfy_server.classifier_dir, "samplers_sd1", "sd1")
    prompt: dict[str, Any] = {}
    for i, sampler in enumerate(samplers):
        one = steer_prompt("sd1", name, f"sampler_{sampler}", sampler=sampler, steps=3, last_steered_step=1,
                           iterations=1)
        # share the model, encoders, latent and classifier nodes; one steer + SaveLatent per sampler
        prompt.update({k: v for k, v in one.items() if k in ("1", "2", "3", "4", "5")})
        steer = dict(one["6"], inputs=dict(one["6"]["inputs"]))
        prompt[f"s{i}"] = steer
        prompt[f"l{i}"] = {"class_type": "SaveLatent", "inputs": {"samples": [f"s{i}", 0],
                                                                  "filename_prefix": f"latents/sampler_{sampler}"}}
    comfy_server.submit(prompt, timeout=900)
    for sampler in samplers:
        result = latent(comfy_server, f"sampler_{sampler}")
        assert torch.isfinite(result).all(), sampler


@comfyui
def test_sampler_node_in_sampler_custom_with_attention_preview(comfy_server: ComfyServer) -> None:
    name = write_classifier(comfy_server.classifier_dir, "custom_sd2", "sd2")
    side = tiny_specs.get_spec("sd2").get("test_image_side", 64)
    prompt: dict[str, Any] = {
        "1": {"class_type": "L2STest_TinyModel", "inputs": {"family": "sd2", "seed": 0}},
        "2": {"class_type": "L2S_SpatialPromptEncode", "inputs": {"clip": ["1", 1], "text": TEXT}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": side, "height": side, "batch_size": 1}},
        "5": {"class_type": "L2S_LoadRelationClassifier", "inputs": {"classifier_name": name, "family": "auto"}},
        "11": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "12": {"class_type": "L2S_LearnedSpatialSteerSampler", "inputs": {
            "classifier": ["5", 0], "sampler": ["11", 0], "mode": "custom", "last_steered_step": 2,
            "step_size": 5.0, "iterations": 2, "early_stop_probability": 1.0}},
        "13": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "karras", "steps": 4,
                                                          "denoise": 1.0}},
        "14": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": True, "noise_seed": 3, "cfg": 4.0, "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["12", 0], "sigmas": ["13", 0], "latent_image": ["4", 0]}},
        "15": {"class_type": "SaveLatent", "inputs": {"samples": ["14", 0], "filename_prefix": "latents/custom"}},
        "16": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["1", 2]}},
        "17": {"class_type": "L2S_AttentionPreview", "inputs": {"trace": ["12", 1], "image": ["16", 0],
                                                                "steps": "every steered step"}},
        # the same graph with the unwrapped sampler, for comparison
        "18": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": True, "noise_seed": 3, "cfg": 4.0, "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["11", 0], "sigmas": ["13", 0], "latent_image": ["4", 0]}},
        "19": {"class_type": "SaveLatent", "inputs": {"samples": ["18", 0], "filename_prefix": "latents/uncustom"}},
    }
    entry = comfy_server.submit(prompt)
    assert not torch.equal(latent(comfy_server, "custom"), latent(comfy_server, "uncustom"))
    images = [p for p in comfy_server.output_files(entry) if p.exists()]
    assert images, "Attention Preview produced no image"


# -------------------------------------------------------------------------------------------------- errors


@comfyui
def test_prompt_without_relation_is_a_readable_error(comfy_server: ComfyServer) -> None:
    name = write_classifier(comfy_server.classifier_dir, "err_sd1", "sd1")
    message = comfy_server.run_error(steer_prompt("sd1", name, "err_norel", text="a photo of a dog and a cat"))
    assert "relation" in message and "to the left of" in message, message


@comfyui
def test_unsupported_relation_is_named(comfy_server: ComfyServer) -> None:
    name = write_classifier(comfy_server.classifier_dir, "err_sd1", "sd1")
    message = comfy_server.run_error(steer_prompt("sd1", name, "err_near", text="a photo of a dog next to a cat"))
    assert "next to" in message, message


@comfyui
def test_classifier_for_another_model_is_a_readable_error(comfy_server: ComfyServer) -> None:
    name = write_classifier(comfy_server.classifier_dir, "wrong_sd2_for_sd1", "sd2")
    message = comfy_server.run_error(steer_prompt("sd1", name, "err_wrong"))
    assert "195" in message and "128" in message and "channels" in message, message


@comfyui
def test_plain_conditioning_is_a_readable_error(comfy_server: ComfyServer) -> None:
    name = write_classifier(comfy_server.classifier_dir, "err_sd1", "sd1")
    prompt = steer_prompt("sd1", name, "err_plain")
    prompt["2"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": TEXT}}
    message = comfy_server.run_error(prompt)
    assert "Spatial Prompt Encode" in message, message


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


@comfyui
def test_pickle_payload_is_refused(comfy_server: ComfyServer) -> None:
    path = comfy_server.classifier_dir / "sd14.pth"
    torch.save({"config": _Payload()}, path)  # a torch checkpoint whose unpickling would call print()
    message = comfy_server.run_error(steer_prompt("sd1", "sd14.pth", "err_pickle"))
    assert "refus" in message.lower(), message
    assert "this must never run" not in comfy_server.log_text()
