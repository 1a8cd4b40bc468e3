"""Issue 11 (items 1, 2, 4, 7, 8, 9) in a real headless ComfyUI, through the HTTP API as a user would hit it.

Graphs are the tiny SD1 model of tests/comfy_test_pack with random classifiers (tests/comfyui/test_nodes_integration.py):
conditioning combined with other prompts, areas and timestep ranges (1, 2), partial denoise (4), the largest seeds
(7), a classifier with broken weights (8) and unknown sampler/scheduler names (9).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_harness import ComfyServer, ComfyServerError
from safetensors import safe_open
from safetensors.torch import save_file
from test_nodes_integration import TRAINED_STEPS, latent, plain_prompt, steer_prompt, trace_summary, write_classifier

from l2s_core.steps import classifier_step_index

comfyui = pytest.mark.comfyui

FAMILY = "sd1"
OTHER_TEXT = "a photo of a sunny day in the park"
LONG_TEXT = ", ".join(["a quiet field of golden wheat under a wide blue summer sky"] * 12)  # > 77 tokens: 2 chunks
MAX_SEED = 0xFFFFFFFFFFFFFFFF


@pytest.fixture(scope="module")
def classifier_name(comfy_server: ComfyServer) -> str:
    return write_classifier(comfy_server.classifier_dir, "reliability_sd1", FAMILY)


def _with_positive(prompt: dict[str, Any], nodes: dict[str, Any], positive: str) -> dict[str, Any]:
    """The steer prompt with extra nodes and the steer node's positive input taken from node ``positive``."""
    prompt = {**prompt, **nodes}
    prompt["6"] = dict(prompt["6"], inputs={**prompt["6"]["inputs"], "positive": [positive, 0]})
    return prompt


def _combined(prompt: dict[str, Any], other_text: str = OTHER_TEXT, spatial: str = "2") -> dict[str, Any]:
    """ConditioningCombine(spatial, CLIP Text Encode(other_text)) as the positive input."""
    return _with_positive(prompt, {
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": other_text}},
        "21": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": [spatial, 0],
                                                               "conditioning_2": ["20", 0]}},
    }, "21")


def _timestep_range(node: str, source: str, start: float, end: float) -> dict[str, Any]:
    return {node: {"class_type": "ConditioningSetTimestepRange",
                   "inputs": {"conditioning": [source, 0], "start": start, "end": end}}}


def _first(entry: dict[str, Any]) -> dict[str, Any]:
    return trace_summary(entry)["steps"][0]


# ------------------------------------------------------------------------------- 1: combined conditioning


@comfyui
@pytest.mark.parametrize("other", ["short", "long"])
def test_combined_conditioning_steers_the_spatial_prompts_own_forward(
        comfy_server: ComfyServer, classifier_name: str, other: str) -> None:
    alone = comfy_server.submit(steer_prompt(FAMILY, classifier_name, f"alone_{other}"))
    text = OTHER_TEXT if other == "short" else LONG_TEXT
    combined = comfy_server.submit(_combined(steer_prompt(FAMILY, classifier_name, f"combined_{other}"), text))
    summary = trace_summary(combined)
    assert summary["relations"] == ["dog to the left of cat"]
    assert [s["step"] for s in summary["steps"]] == [0, 1]
    # Step 0 runs on the same noise: the steering forward must see exactly the spatial prompt alone.
    assert _first(combined)["p_before"] == pytest.approx(_first(alone)["p_before"], abs=1e-6)
    assert _first(combined)["p_after"][0] > _first(combined)["p_before"][0]
    # The normal steps still use both prompts.
    assert not torch.equal(latent(comfy_server, f"combined_{other}"), latent(comfy_server, f"alone_{other}"))


@comfyui
def test_an_area_limited_spatial_prompt_is_steered_inside_its_area(
        comfy_server: ComfyServer, classifier_name: str) -> None:
    prompt = steer_prompt(FAMILY, classifier_name, "area_wide")
    prompt["4"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 64, "batch_size": 1}}
    prompt = _with_positive(prompt, {
        "22": {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["2", 0], "width": 64, "height": 64,
                                                               "x": 64, "y": 0, "strength": 1.0}},
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": OTHER_TEXT}},
        "21": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["22", 0],
                                                               "conditioning_2": ["20", 0]}},
    }, "21")
    # Before issue 11 both entries ran in the steering forward (two areas: twice the layers, "56 channels").
    entry = comfy_server.submit(prompt)
    first = _first(entry)
    assert first["p_after"][0] > first["p_before"][0]
    assert latent(comfy_server, "area_wide").shape[-2:] == (8, 16)


@comfyui
def test_concat_keeps_the_spatial_prompts_token_positions(comfy_server: ComfyServer, classifier_name: str) -> None:
    prompt = _with_positive(steer_prompt(FAMILY, classifier_name, "concat"), {
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": OTHER_TEXT}},
        "26": {"class_type": "ConditioningConcat", "inputs": {"conditioning_to": ["2", 0],
                                                              "conditioning_from": ["20", 0]}},
    }, "26")
    first = _first(comfy_server.submit(prompt))
    assert first["p_after"][0] > first["p_before"][0]
    prompt["26"]["inputs"] = {"conditioning_to": ["20", 0], "conditioning_from": ["2", 0]}
    message = comfy_server.run_error(prompt)
    assert "'conditioning_to'" in message and "Spatial Prompt Encode" in message, message


@comfyui
def test_two_spatial_prompts_at_once_name_the_node_to_change(
        comfy_server: ComfyServer, classifier_name: str) -> None:
    prompt = steer_prompt(FAMILY, classifier_name, "two_spatial")
    prompt["23"] = {"class_type": "L2S_SpatialPromptEncode",
                    "inputs": {"clip": ["1", 1], "text": "a cat above a dog"}}
    message = comfy_server.run_error(_with_positive(prompt, {
        "21": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
                                                               "conditioning_2": ["23", 0]}}}, "21"))
    assert "2 active Spatial Prompt Encode entries" in message, message
    assert "CLIP Text Encode" in message and "ConditioningSetTimestepRange" in message, message


# ----------------------------------------------------------------------------------- 2: timestep ranges


@comfyui
@pytest.mark.parametrize("combined", [True, False])
def test_a_spatial_prompt_active_only_later_is_an_error_before_sampling(
        comfy_server: ComfyServer, classifier_name: str, combined: bool) -> None:
    prefix = f"late_spatial_{combined}"
    prompt = _with_positive(steer_prompt(FAMILY, classifier_name, prefix), _timestep_range("24", "2", 0.5, 1.0), "24")
    if combined:  # the graph: another prompt covers the first half, where steering acts
        prompt = _with_positive(prompt, {
            "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": OTHER_TEXT}},
            **_timestep_range("25", "20", 0.0, 0.5),
            "21": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["24", 0],
                                                                   "conditioning_2": ["25", 0]}},
        }, "21")
    message = comfy_server.run_error(prompt)
    assert "not active at any steered step" in message, message
    assert "timestep range 0.5-1" in message and "ConditioningSetTimestepRange" in message, message
    with pytest.raises(FileNotFoundError):
        comfy_server.latent_path(prefix)  # failed before anything was sampled and saved


@comfyui
def test_a_spatial_prompt_active_early_is_steered_only_while_active(
        comfy_server: ComfyServer, classifier_name: str) -> None:
    alone = comfy_server.submit(steer_prompt(FAMILY, classifier_name, "early_alone", last_steered_step=4))
    prompt = steer_prompt(FAMILY, classifier_name, "early_spatial", last_steered_step=4)
    prompt = _with_positive(prompt, {
        **_timestep_range("24", "2", 0.0, 0.5),
        "20": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": OTHER_TEXT}},
        **_timestep_range("25", "20", 0.5, 1.0),
        "21": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["24", 0],
                                                               "conditioning_2": ["25", 0]}},
    }, "21")
    summary = trace_summary(comfy_server.submit(prompt))
    # 4 'normal' steps: t = 999, 666, 333, 0; the spatial prompt runs while sigma >= sigma(50 %), steps 0 and 1.
    assert [s["step"] for s in summary["steps"]] == [0, 1]
    assert len(trace_summary(alone)["steps"]) == 4
    assert any("[2, 3] not steered" in note for note in summary["notes"]), summary["notes"]
    assert summary["steps"][0]["p_before"] == pytest.approx(trace_summary(alone)["steps"][0]["p_before"], abs=1e-6)


# ------------------------------------------------------------------------------------ 4: partial denoise


def _denoise(prompt: dict[str, Any], denoise: float) -> dict[str, Any]:
    prompt["6"]["inputs"]["denoise"] = denoise
    return prompt


@comfyui
def test_partial_denoise_takes_the_classifier_step_from_the_noise_level(
        comfy_server: ComfyServer, classifier_name: str) -> None:
    steps, found = 4, {}
    for denoise in (1.0, 0.75, 0.5, 0.01):
        prompt = _denoise(steer_prompt(FAMILY, classifier_name, f"denoise_{denoise}", steps=steps,
                                       last_steered_step=1, iterations=1), denoise)
        summary = trace_summary(comfy_server.submit(prompt))
        full = steps if denoise == 1.0 else int(steps / denoise)  # ComfyUI's KSampler: last 4 of int(4 / denoise)
        assert summary["full_steps"] == full and summary["num_steps"] == steps
        found[denoise] = summary["steps"][0]["classifier_step"]
        assert found[denoise] == classifier_step_index(full - steps, full, TRAINED_STEPS, 50)
    assert found[1.0] < found[0.75] < found[0.5] <= found[0.01], found


@comfyui
def test_default_steered_range_for_partial_denoise(comfy_server: ComfyServer, classifier_name: str) -> None:
    half = trace_summary(comfy_server.submit(_denoise(
        steer_prompt(FAMILY, classifier_name, "half_default", mode="official"), 0.5)))
    assert half["steps"] == [] and any("nothing is steered" in n for n in half["notes"]), half
    plain = plain_prompt(FAMILY, "half_plain")
    plain["6"]["inputs"]["denoise"] = 0.5
    comfy_server.submit(plain)
    half_latent, plain_latent = latent(comfy_server, "half_default"), latent(comfy_server, "half_plain")
    assert torch.allclose(half_latent, plain_latent, atol=1e-5), (half_latent - plain_latent).abs().max()

    most = trace_summary(comfy_server.submit(_denoise(
        steer_prompt(FAMILY, classifier_name, "most_default", mode="official"), 0.75)))
    # 4 steps of a 5-step run; the official first half of 5 steps is 3 (round(2.5) up), one of them already done.
    assert [s["step"] for s in most["steps"]] == [0, 1], most


@comfyui
@pytest.mark.parametrize("part", ["denoise_half", "split_first_half"])
def test_sampler_custom_partial_schedule_is_placed_by_sigma(
        comfy_server: ComfyServer, classifier_name: str, part: str) -> None:
    """SamplerCustom with BasicScheduler(denoise 0.5), or with the first half of SplitSigmas of an 8-step run."""
    steps = 4 if part == "denoise_half" else 8
    denoise = 0.5 if part == "denoise_half" else 1.0
    prompt = steer_prompt(FAMILY, classifier_name, f"custom_{part}")
    sigmas: list[Any] = ["13", 0]
    prompt.update({
        "11": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "12": {"class_type": "L2S_LearnedSpatialSteerSampler", "inputs": {
            "classifier": ["5", 0], "sampler": ["11", 0], "mode": "official", "last_steered_step": 10,
            "step_size": 5.0, "iterations": 16, "early_stop_probability": 1.0}},
        "13": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": steps,
                                                          "denoise": denoise}},
        "14": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": True, "noise_seed": 0, "cfg": 5.0, "positive": ["2", 0],
            "negative": ["3", 0], "sampler": ["12", 0], "sigmas": sigmas, "latent_image": ["4", 0]}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["14", 0], "filename_prefix": f"latents/c_{part}"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["1", 2]}},
        "9": {"class_type": "L2S_AttentionPreview", "inputs": {"trace": ["12", 1], "image": ["8", 0],
                                                               "steps": "every steered step"}},
    })
    if part == "split_first_half":
        prompt["15"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["13", 0], "step": 4}}
        prompt["14"]["inputs"]["sigmas"] = ["15", 0]
    del prompt["6"]
    seen = len(comfy_server.log_text())
    entry = comfy_server.submit(prompt)
    # The SAMPLER knows neither denoise nor the split: both are placed from the sigmas ('simple': exactly).
    # The trace object goes to Attention Preview; this run's log lines carry the classifier steps.
    log = comfy_server.log_text()[seen:]
    first, expected_steered = (4, []) if part == "denoise_half" else (0, [0, 1, 2, 3])
    assert f"steps {first}..{first + 3} of a 8-step run from noise" in log, log[-3000:]
    for step in expected_steered:
        expected = classifier_step_index(first + step, 8, TRAINED_STEPS, 50)
        assert f"L2S step {step} (classifier step {expected})" in log, log[-3000:]
    if not expected_steered:  # the second half of a from-noise run: past the official range (first half)
        assert "L2S step 0 (" not in log and "nothing is steered" in log, log[-3000:]
    assert comfy_server.output_files(entry), "Attention Preview produced no image"


# ------------------------------------------------------------------------------------------------ 7: seeds


@comfyui
@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_sde"])
def test_the_largest_seeds_work_with_noise_drawing_samplers(
        comfy_server: ComfyServer, classifier_name: str, sampler: str) -> None:
    for seed in (MAX_SEED - 1, MAX_SEED):
        prefix = f"seed_{sampler}_{seed}"
        entry = comfy_server.submit(steer_prompt(FAMILY, classifier_name, prefix, steps=4, last_steered_step=3,
                                                 iterations=1, sampler=sampler, seed=seed))
        assert [s["step"] for s in trace_summary(entry)["steps"]] == [0, 1, 2]
        assert torch.isfinite(latent(comfy_server, prefix)).all()


# --------------------------------------------------------------------------------- 8: non-finite classifier


def _poisoned_copy(folder: Path, name: str, poison: float) -> str:
    """A copy of a classifier file with one weight tensor filled with ``poison`` (metadata unchanged)."""
    source = folder / name
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open has no iter)
    key = next(k for k in sorted(tensors) if k.endswith("input_projection.weight"))
    tensors[key] = torch.full_like(tensors[key], poison)
    target = folder / f"poisoned_{'nan' if math.isnan(poison) else 'inf'}_{name}"
    save_file(tensors, str(target), metadata=metadata)
    return target.name


@comfyui
@pytest.mark.parametrize("poison", [math.nan, math.inf])
def test_a_classifier_with_non_finite_weights_is_an_error(
        comfy_server: ComfyServer, classifier_name: str, poison: float) -> None:
    broken = _poisoned_copy(comfy_server.classifier_dir, classifier_name, poison)
    prefix = f"poisoned_{broken}"
    message = comfy_server.run_error(steer_prompt(FAMILY, broken, prefix))
    assert broken in message and "non-finite logits" in message, message
    assert "input_projection.weight" in message and "re-export" in message, message
    with pytest.raises(FileNotFoundError):
        comfy_server.latent_path(prefix)


# ----------------------------------------------------------------------------------------- 9: combo names


@comfyui
@pytest.mark.parametrize(("field", "valid"), [("sampler_name", "euler_ancestral"), ("scheduler", "karras")])
def test_unknown_sampler_or_scheduler_is_rejected_like_ksampler(
        comfy_server: ComfyServer, classifier_name: str, field: str, valid: str) -> None:
    stock = plain_prompt(FAMILY, "stock_bad_name")
    stock["6"]["inputs"][field] = "nonexistent"
    with pytest.raises(ComfyServerError, match="HTTP 400"):
        comfy_server.queue_prompt(stock)  # the reference behaviour
    prompt = steer_prompt(FAMILY, classifier_name, f"bad_{field}")
    prompt["6"]["inputs"][field] = "nonexistent"
    # The pack's reporting nodes are output nodes, so ComfyUI queues the prompt for them and refuses the steer node
    # (and what depends on it) with its validation error, which the frontend shows on the node.
    reply = comfy_server.post_prompt(prompt)
    errors = reply["node_errors"]["6"]["errors"]
    message = " ".join(f"{e.get('message', '')} {e.get('details', '')}" for e in errors)
    assert f"{field} 'nonexistent' is not one of ComfyUI's" in message, reply["node_errors"]
    assert valid in message  # the message lists the names that are valid
    entry = comfy_server.wait(reply["prompt_id"])
    assert "6" not in entry["outputs"] and "7" not in entry["outputs"], "the steer node must not run"
