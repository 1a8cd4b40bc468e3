"""Inputs a user gives a real ComfyUI, through the HTTP API (tests marked ``comfyui``; issue 11, items 3, 5, 6, 10).

The graph is the shipped toy world's steered half (Load Toy World -> Spatial Prompt Encode -> Learned Spatial Steer,
4 steps, 2 iterations) with the user's input swapped in:

* a prompt with ComfyUI's weight syntax on the subject, the relation or the object steers, and its token positions
  are those of the same prompt without weights (item 3);
* a classifier file with metadata of the wrong type, in the server's models folder, fails at load time with a
  message naming the file, the field, what was found and what is expected (item 5);
* an official-style ``.pth`` whose unpickling would run ``os.system`` is refused as dangerous on the server's torch
  (2.14 words this refusal differently from 2.13), and the command never runs (item 6);
* a zero-byte ``.pth`` says "empty file", and the parser's errors reach the UI as a plain ``ValueError`` whose type
  name holds no file path (item 10).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_harness import ComfyServer
from safetensors import safe_open
from safetensors.torch import save_file
from toy_world_files import SHIPPED_BUNDLE, SHIPPED_CLASSIFIER

from devtools.comfy_server import execution_error

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not (SHIPPED_BUNDLE.is_file() and SHIPPED_CLASSIFIER.is_file()),
                       reason="the pack does not ship the toy world and its classifier"),
]

PLAIN = "a blue circle above a red square"
BLUE_ABOVE_RED = {"subject": "blue circle", "relation": "above", "object": "red square", "subject_tokens": [2, 3],
                  "object_tokens": [6, 7]}


def parsed(entry: dict[str, Any], node: str = "4") -> list[dict[str, Any]]:
    """What Spatial Prompt Encode reported it parsed (the JSON next to its readable text)."""
    return json.loads(entry["outputs"][node]["l2s_relations"][0])


def steer_graph(text: str, classifier: str = SHIPPED_CLASSIFIER.name, family: str = "auto") -> dict[str, Any]:
    """The toy workflow's steered half, small: 4 steps, the first 2 steered with 2 iterations each."""
    return {
        "1": {"class_type": "L2S_LoadToyWorld", "inputs": {"world": SHIPPED_BUNDLE.name}},
        "2": {"class_type": "L2S_LoadRelationClassifier", "inputs": {"classifier_name": classifier,
                                                                     "family": family}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "L2S_SpatialPromptEncode", "inputs": {"clip": ["1", 1], "text": text}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "6": {"class_type": "L2S_LearnedSpatialSteer", "inputs": {
            "model": ["1", 0], "classifier": ["2", 0], "positive": ["4", 0], "negative": ["5", 0],
            "latent_image": ["3", 0], "seed": 6, "steps": 4, "cfg": 8.0, "sampler_name": "ddim",
            "scheduler": "ddim_uniform", "denoise": 1.0, "mode": "custom", "last_steered_step": 2,
            "step_size": 1.0, "iterations": 2, "early_stop_probability": 1.0}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "latents/l2s_reliab"}},
    }


def failure(server: ComfyServer, prompt: dict[str, Any]) -> dict[str, Any]:
    """Run a prompt that must fail while executing; return ComfyUI's execution_error (type, message, node)."""
    entry = server.wait(server.queue_prompt(prompt))
    error = execution_error(entry)
    assert error is not None, f"the prompt was expected to fail, got {entry.get('status')}"
    return error


# ------------------------------------------------------------------------------------------- item 3: weights


@pytest.mark.parametrize(
    "text",
    [
        "a (blue circle:1.5) above a red square",
        "a blue circle (above:1.3) a red square",
        "a blue circle above a (red square:1.2)",
        "((a blue circle)) (above) ((a red square:0.9))",
    ],
)
def test_weighted_prompt_steers_on_the_tokens_of_its_plain_text(comfy_server: ComfyServer, text: str) -> None:
    plain = comfy_server.submit(steer_graph(PLAIN))
    weighted = comfy_server.submit(steer_graph(text))
    described = weighted["outputs"]["4"]["text"][0]
    assert described == plain["outputs"]["4"]["text"][0], described  # same relation, same token positions
    assert parsed(weighted) == [BLUE_ABOVE_RED], described
    trace = json.loads(weighted["outputs"]["6"]["l2s_trace"][0])
    assert "blue circle above red square" in json.dumps(trace), trace


def test_explicit_override_finds_weighted_phrases(comfy_server: ComfyServer) -> None:
    graph = steer_graph("a (blue) circle (above:1.3) a (red square:1.2)")
    graph["4"]["inputs"].update(relation="above", subject="blue circle", object="red square")
    entry = comfy_server.submit(graph)
    assert parsed(entry) == [BLUE_ABOVE_RED], entry["outputs"]["4"]["text"][0]


@pytest.mark.parametrize(("file", "hint"), [
    ("flux_schnell.pth", "Google Drive folder linked in the README of https://github.com/sapir1779/learn-to-steer"),
    ("my_sdxl.safetensors", "python -m training --help"),
])
def test_a_missing_classifier_file_says_where_to_get_it(comfy_server: ComfyServer, file: str, hint: str) -> None:
    error = failure(comfy_server, steer_graph(PLAIN, classifier=file))
    message = str(error.get("exception_message", ""))
    assert f"Relation classifier '{file}' is not in the l2s_classifiers folders" in message, message
    assert hint in message and "models/l2s_classifiers/" in message, message


# ------------------------------------------------------------------------------------ item 5: metadata types


def _bad_classifier(folder: Path, name: str, edit: Any) -> str:
    """A copy of the shipped toy classifier whose ``l2s`` metadata is ``edit(meta)`` (a dict or raw JSON text)."""
    with safe_open(str(SHIPPED_CLASSIFIER), framework="pt") as fh:
        meta = json.loads(fh.metadata()["l2s"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    new = edit(meta)
    save_file(tensors, str(folder / name), metadata={"l2s": new if isinstance(new, str) else json.dumps(new)})
    return name


@pytest.mark.parametrize(
    ("name", "edit", "expected"),
    [
        ("l2s_meta_list.safetensors", lambda m: "[1, 2, 3]",
         "the 'l2s' metadata must be a JSON object with the fields"),
        ("l2s_meta_channels.safetensors", lambda m: {**m, "channels": "many"},
         "'channels' must be a positive integer, found 'many' (str)"),
        ("l2s_meta_provenance.safetensors", lambda m: {**m, "provenance": [1, 2]},
         "'provenance' must be a dict (JSON object), found [1, 2] (list)"),
        ("l2s_meta_steps0.safetensors", lambda m: {**m, "trained_num_steps": 0},
         "'trained_num_steps' must be a positive integer, found 0 (int)"),
        ("l2s_meta_synonyms.safetensors",
         lambda m: {**m, "rel_name_to_idx": {"over": 0, "under": 1, "to the left of": 2, "to the right of": 3}},
         "the class 'over' must be stored under the canonical relation name 'above'"),
    ],
)
def test_classifier_metadata_of_the_wrong_type_names_file_and_field(
    comfy_server: ComfyServer, name: str, edit: Any, expected: str
) -> None:
    _bad_classifier(comfy_server.classifier_dir, name, edit)
    error = failure(comfy_server, steer_graph(PLAIN, classifier=name))
    assert error["node_type"] == "L2S_LoadRelationClassifier", error  # at load time, before any sampling
    assert error["exception_type"] == "ValueError", error
    message = error["exception_message"]
    assert message.startswith(f"{name}: ") and expected in message, message


# ----------------------------------------------------------------------------------- item 6: dangerous pickle


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))  # pickled as posix.system, a module torch blocks


def test_code_executing_pth_is_refused_as_dangerous(comfy_server: ComfyServer, tmp_path: Path) -> None:
    marker = tmp_path / "l2s_pickle_ran"
    name = "l2s_reliab_system.pth"
    torch.save({"config": _SystemPayload(marker)}, comfy_server.classifier_dir / name)
    error = failure(comfy_server, steer_graph(PLAIN, classifier=name, family="sd14"))
    message = error["exception_message"]
    assert error["node_type"] == "L2S_LoadRelationClassifier", error
    assert f"{name} needs arbitrary code execution to unpickle; refusing" in message, message
    assert "dangerous" in message and "posix.system" in message, message
    assert "corrupt" not in message.lower(), message
    assert not marker.exists(), "the pickle's command ran"


# ------------------------------------------------------------------------ item 10: empty file, error type names


def test_zero_byte_pth_says_empty_file(comfy_server: ComfyServer) -> None:
    name = "l2s_reliab_empty.pth"
    (comfy_server.classifier_dir / name).write_bytes(b"")
    error = failure(comfy_server, steer_graph(PLAIN, classifier=name, family="sd14"))
    message = error["exception_message"]
    assert message.startswith(f"{name}: empty file (0 bytes)") and "EOFError" not in message, message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a blue circle and a red square", "No spatial relation found in prompt"),
        ("a blue circle next to a red square", "'next to' is not a relation the classifiers were trained on"),
        ("(above:1.2) a red square", "relation 'above' has no subject before it"),
    ],
)
def test_parser_errors_reach_the_ui_as_a_plain_value_error(comfy_server: ComfyServer, text: str,
                                                           expected: str) -> None:
    error = failure(comfy_server, steer_graph(text))
    assert error["node_type"] == "L2S_SpatialPromptEncode", error
    assert error["exception_type"] == "ValueError", error  # no module path derived from the pack's folder
    assert expected in error["exception_message"], error["exception_message"]


def test_shipped_classifier_still_loads(comfy_server: ComfyServer, tmp_path: Path) -> None:
    """Control for the metadata tests: the unmodified copy of the classifier loads and steers."""
    name = "l2s_meta_unchanged.safetensors"
    shutil.copyfile(SHIPPED_CLASSIFIER, comfy_server.classifier_dir / name)
    entry = comfy_server.submit(steer_graph(PLAIN, classifier=name))
    assert "relations: above, below, to the left of, to the right of" in entry["outputs"]["2"]["text"][0]
