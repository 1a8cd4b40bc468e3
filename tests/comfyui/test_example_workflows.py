"""The example workflows in example_workflows/: well-formed UI graphs, API twins, thumbnails, and real runs.

Without ComfyUI: every UI graph parses and its links agree with its nodes, converts (widgets by position, from the
committed /object_info snapshot) to exactly its API twin, matches what scripts/build_example_workflows.py generates
(the generator :mod:`devtools.workflows`), has a JPEG thumbnail, and carries the settings each example promises. With ComfyUI (``comfyui`` marker): every node
class and input exists in the live /object_info, the UI graphs regenerate identically from it, ComfyUI lists exactly
the UI graphs as templates, and every API workflow executes: the full-size model examples with tiny random models
and a random classifier, the toy-world example as it is, with the shipped toy world and classifier (or, until the
pack ships them, stand-ins: see tests/support/toy_world_files.py).
"""

from __future__ import annotations

import copy
import glob
import json
import re
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from comfy_harness import PACK_LINK_NAME, ComfyServer
from comfy_test_pack import tiny_specs

from devtools.workflows.catalogue import build_workflows, used_classes
from devtools.workflows.files import SNAPSHOT as SNAPSHOT_PATH
from devtools.workflows.files import render_files
from devtools.workflows.formats import to_ui, ui_to_api
from devtools.workflows.layout import describe_overlaps, overlapping, ui_box
from devtools.workflows.schema import trim_object_info
from devtools.workflows.toy_example import TOY_ENLARGE, TOY_SEED, TOY_STEERING

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "example_workflows"
API_DIR = EXAMPLES / "api"

PROMPT = "a photo of a dog to the right of a teddy bear"
MODEL_NAMES = ("l2s_sd15", "l2s_sd21", "l2s_sdxl", "l2s_sd3", "l2s_flux_schnell", "l2s_flux_dev", "l2s_compare_on_off",
               "l2s_sampler_custom")
"""The examples for full-size models (run here on tiny random stand-ins)."""
TOY = "l2s_toy_world"
NAMES = (TOY, *MODEL_NAMES)
FILE_NAMES = {w.name: w.file_name for w in build_workflows()}
"""Short id -> the UI graph's file name (the template's title in ComfyUI's template browser)."""
# workflow -> tiny-model family of tests/comfy_test_pack
TINY_FAMILY = {"l2s_sd15": "sd1", "l2s_sd21": "sd2", "l2s_sdxl": "sdxl", "l2s_sd3": "sd3", "l2s_flux_schnell": "flux",
               "l2s_flux_dev": "flux", "l2s_compare_on_off": "sd2", "l2s_sampler_custom": "flux"}
# loader class -> {its output slot: L2STest_TinyModel output slot (MODEL 0, CLIP 1, VAE 2)}
LOADER_OUTPUTS = {"CheckpointLoaderSimple": {0: 0, 1: 1, 2: 2}, "UNETLoader": {0: 0}, "DualCLIPLoader": {0: 1},
                  "VAELoader": {0: 2}}
STEER_CLASSES = ("L2S_LearnedSpatialSteer", "L2S_LearnedSpatialSteerSampler")


SNAPSHOT: dict[str, Any] = json.loads(SNAPSHOT_PATH.read_text(encoding="utf-8"))


def ui(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{FILE_NAMES[name]}.json").read_text(encoding="utf-8"))


def api(name: str) -> dict[str, Any]:
    return json.loads((API_DIR / f"{name}.api.json").read_text(encoding="utf-8"))


def nodes_of(prompt: dict[str, Any], class_type: str) -> list[dict[str, Any]]:
    return [n for n in prompt.values() if n["class_type"] == class_type]


def one(prompt: dict[str, Any], class_type: str) -> dict[str, Any]:
    found = nodes_of(prompt, class_type)
    assert len(found) == 1, f"expected one {class_type}, found {len(found)}"
    return found[0]["inputs"]


# ------------------------------------------------------------------------------------------- without ComfyUI


def test_template_folder_holds_exactly_the_ui_workflows() -> None:
    """ComfyUI lists example_workflows/*.json as templates: only the UI graphs may match; the API twins are in api/."""
    listed = sorted(Path(p).name for p in glob.glob(str(EXAMPLES / "*.json")))
    assert listed == sorted(f"{FILE_NAMES[n]}.json" for n in NAMES)
    assert sorted(p.name for p in API_DIR.glob("*.json")) == sorted(f"{n}.api.json" for n in NAMES)
    assert not any(name.startswith("_") for name in listed)


@pytest.mark.parametrize("name", NAMES)
def test_ui_graph_is_well_formed(name: str) -> None:
    graph = ui(name)
    assert graph["version"] == 0.4 and graph["groups"] == [] and "ds" in graph["extra"]
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert len(nodes) == len(graph["nodes"]), "duplicate node ids"
    assert graph["last_node_id"] == max(nodes)
    assert sorted(n["order"] for n in graph["nodes"]) == list(range(len(nodes)))
    link_ids = [link[0] for link in graph["links"]]
    assert len(set(link_ids)) == len(link_ids), "duplicate link ids"
    assert graph["last_link_id"] == max(link_ids)
    for link_id, source, source_slot, target, target_slot, kind in graph["links"]:
        output = nodes[source]["outputs"][source_slot]
        assert link_id in output["links"] and output["type"] == kind and output["slot_index"] == source_slot
        target_input = nodes[target]["inputs"][target_slot]
        assert target_input["link"] == link_id and target_input["type"] == kind
        assert nodes[source]["order"] < nodes[target]["order"], "order is not an execution order"
    referenced_by_nodes = {i["link"] for n in graph["nodes"] for i in n["inputs"] if i["link"] is not None}
    referenced_by_nodes |= {lid for n in graph["nodes"] for o in n["outputs"] for lid in o["links"]}
    assert referenced_by_nodes == set(link_ids), "a node refers to a link that does not exist (or the reverse)"
    for node in graph["nodes"]:
        assert set(node) >= {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties",
                             "widgets_values"}
        if node["type"] != "MarkdownNote":
            assert node["properties"]["Node name for S&R"] == node["type"]


@pytest.mark.parametrize("name", NAMES)
def test_ui_graph_converts_to_its_api_twin(name: str) -> None:
    assert ui_to_api(ui(name), SNAPSHOT) == api(name)


def test_converter_maps_widgets_by_position_and_catches_a_wrong_count() -> None:
    graph = ui("l2s_sd15")
    steer = next(n for n in graph["nodes"] if n["type"] == "L2S_LearnedSpatialSteer")
    # seed, control_after_generate, steps, cfg, sampler, scheduler, denoise, then the six steering widgets
    assert steer["widgets_values"] == [42, "fixed", 50, 7.5, "ddim", "ddim_uniform", 1.0, "official", 25, 7.5, 16,
                                       1.0, "auto"]
    steer["widgets_values"].pop(1)  # without the frontend-only control value the positions shift
    with pytest.raises(ValueError, match="widget values"):
        ui_to_api(graph, SNAPSHOT)


def test_generated_files_are_up_to_date() -> None:
    """The committed JSON is what the generator writes from the committed snapshot (rerun it after edits)."""
    for path, text in render_files(SNAPSHOT).items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is out of date: run python scripts/build_example_workflows.py")


@pytest.mark.parametrize("name", NAMES)
def test_every_workflow_has_a_small_jpeg_thumbnail(name: str) -> None:
    data = (EXAMPLES / f"{FILE_NAMES[name]}.jpg").read_bytes()
    assert data[:3] == b"\xff\xd8\xff", "not a JPEG"
    assert 2_000 < len(data) < 40_000


def test_template_titles_are_descriptive_numbered_and_the_toy_world_comes_first() -> None:
    """ComfyUI 0.3.64's template browser shows a pack's template by its file name, in the order of those names."""
    titles = [w.file_name for w in build_workflows()]
    assert titles[0].startswith("1. Toy world") and "no downloads" in titles[0]
    assert [t.split(".")[0] for t in titles] == [str(i) for i in range(1, len(titles) + 1)]
    assert sorted(titles) == titles, "the names must sort in the catalogue's order"
    for title in titles:
        assert not re.search(r'[\\/:*?"<>|#%&]', title) and title == title.strip(), title
        assert not title.lower().startswith("l2s_") and len(title.split()) >= 3, title


def test_the_overlap_check_counts_title_bars_and_ignores_neighbours() -> None:
    def node(node_id: int, y: float, height: float = 100) -> dict[str, Any]:
        return {"id": node_id, "type": "X", "pos": [0, y], "size": [100, height]}

    assert overlapping([ui_box(node(1, 0)), ui_box(node(2, 140))]) == []
    assert len(overlapping([ui_box(node(1, 0)), ui_box(node(2, 120))])) == 1, "the second title bar starts at 90"
    assert overlapping([ui_box(node(1, 0)), ui_box({**node(2, 0), "pos": [100, 0]})]) == [], "side by side"


@pytest.mark.parametrize("name", NAMES)
def test_no_nodes_overlap(name: str) -> None:
    """Nodes (title bars included) as the generator sizes them; the browser test checks the frontend's sizes."""
    assert not describe_overlaps(overlapping(ui_box(n) for n in ui(name)["nodes"]))


@pytest.mark.parametrize("name", NAMES)
def test_the_graph_opens_in_one_screen(name: str) -> None:
    """At the saved zoom, every node fits a 1920 x 1080 screen (canvas from x 64, y 80), clear of the minimap."""
    graph = ui(name)
    view = graph["extra"]["ds"]
    assert view["scale"] >= 0.8, "the pack's 15 px report text must read at 12 px or more"
    for node in graph["nodes"]:
        box = ui_box(node)
        left, top = (box.x + view["offset"][0]) * view["scale"] + 64, (box.y + view["offset"][1]) * view["scale"] + 80
        right, bottom = left + box.width * view["scale"], top + box.height * view["scale"]
        assert left >= 64 and top >= 80 and right <= 1920 and bottom <= 1080, (box, left, top, right, bottom)
        assert not (right > 1620 and bottom > 815), f"{box.title} reaches under the minimap (bottom right)"


@pytest.mark.parametrize("name", NAMES)
def test_notes_state_the_seeds_the_graph_uses(name: str) -> None:
    graph = ui(name)
    text = next(n for n in graph["nodes"] if n["type"] == "MarkdownNote")["widgets_values"][0]
    seeds = {v["inputs"][k] for v in api(name).values() for k in ("seed", "noise_seed") if k in v["inputs"]}
    stated = {int(m) for m in re.findall(r"\bseed (\d+)", text)}
    assert len(seeds) == 1, seeds
    assert stated <= seeds, f"the note says seed {stated}, the samplers use {seeds}"


MODEL_WIDGETS = ("ckpt_name", "unet_name", "clip_name1", "clip_name2", "vae_name")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_loaders_carry_download_links_for_the_missing_models_dialog(name: str) -> None:
    """The frontend's dialog reads properties.models {name, url, directory}; it downloads only .safetensors files
    from huggingface.co (or civitai.com) whose name is one of the node's widget values."""
    prompt = api(name)
    for node in ui(name)["nodes"]:
        files = [prompt[str(node["id"])]["inputs"][k] for k in MODEL_WIDGETS
                 if str(node["id"]) in prompt and k in prompt[str(node["id"])]["inputs"]]
        if not files:
            continue
        models = node["properties"].get("models", [])
        assert [m["name"] for m in models] == files, node["type"]
        for model in models:
            assert set(model) == {"name", "url", "directory"}
            assert model["url"].startswith("https://huggingface.co/") and model["name"].endswith(".safetensors")
            assert urllib.parse.urlparse(model["url"]).path.endswith("/" + model["name"]), model
            assert model["directory"] in ("checkpoints", "diffusion_models", "text_encoders", "vae"), model
    assert not any("models" in n["properties"] for n in ui(name)["nodes"] if n["type"] == "L2S_LoadRelationClassifier")


# name -> (model files, classifier, side, steps, cfg, sampler, scheduler, flux guidance)
EXPECTED: dict[str, tuple[tuple[str, ...], str, int, int, float, str, str, float | None]] = {
    "l2s_sd15": (("v1-5-pruned-emaonly.safetensors",), "sd14.pth", 512, 50, 7.5, "ddim", "ddim_uniform", None),
    "l2s_sd21": (("v2-1_512-ema-pruned.safetensors",), "sd2.pth", 512, 50, 7.5, "ddim", "ddim_uniform", None),
    "l2s_sdxl": (("sd_xl_base_1.0.safetensors",), "sdxl_l2s.safetensors", 1024, 50, 7.5, "ddim", "ddim_uniform",
                 None),
    "l2s_sd3": (("sd3_medium_incl_clips_t5xxlfp16.safetensors",), "sd3_l2s.safetensors", 1024, 28, 4.5, "euler",
                "sgm_uniform", None),
    "l2s_flux_schnell": (("flux1-schnell.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors",
                          "ae.safetensors"), "flux_schnell.pth", 256, 4, 1.0, "euler", "simple", None),
    "l2s_flux_dev": (("flux1-dev.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors", "ae.safetensors"),
                     "flux_dev.pth", 512, 50, 1.0, "euler", "simple", 3.5),
    "l2s_compare_on_off": (("v2-1_512-ema-pruned.safetensors",), "sd2.pth", 512, 50, 7.5, "ddim", "ddim_uniform",
                           None),
    "l2s_sampler_custom": (("flux1-dev.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors",
                            "ae.safetensors"), "flux_dev.pth", 512, 50, 1.0, "euler", "simple", 3.5),
}


def _model_files(prompt: dict[str, Any]) -> tuple[str, ...]:
    files: list[str] = []
    for node in prompt.values():
        inputs = node["inputs"]
        for key in ("ckpt_name", "unet_name", "clip_name1", "clip_name2", "vae_name"):
            if key in inputs:
                files.append(inputs[key])
    return tuple(files)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_workflow_carries_the_promised_settings(name: str) -> None:
    files, classifier, side, steps, cfg, sampler, scheduler, guidance = EXPECTED[name]
    prompt = api(name)
    assert _model_files(prompt) == files
    assert one(prompt, "L2S_LoadRelationClassifier") == {"classifier_name": classifier, "family": "auto"}
    encode = one(prompt, "L2S_SpatialPromptEncode")
    assert encode["text"] == PROMPT and encode["relation"] == "parse from text" and encode["t5_length"] == 512
    latent = one(prompt, "EmptySD3LatentImage" if name in ("l2s_sd3", "l2s_flux_schnell", "l2s_flux_dev",
                                                           "l2s_sampler_custom") else "EmptyLatentImage")
    assert (latent["width"], latent["height"], latent["batch_size"]) == (side, side, 1)
    steer_class = "L2S_LearnedSpatialSteerSampler" if name == "l2s_sampler_custom" else "L2S_LearnedSpatialSteer"
    steer = one(prompt, steer_class)
    assert steer["mode"] == "official", "the examples use the official steering"
    official_steps = 1 if name == "l2s_flux_schnell" else (steps + 1) // 2
    assert (steer["last_steered_step"], steer["iterations"], steer["early_stop_probability"]) == (
        official_steps, 16, 1.0), "custom mode starts at the official values of the graph"
    assert steer["step_size"] == (7.5 if name == "l2s_sd15" else 5.0)
    if name == "l2s_sampler_custom":
        assert one(prompt, "KSamplerSelect")["sampler_name"] == sampler
        assert one(prompt, "BasicScheduler")["scheduler"] == scheduler
        assert one(prompt, "BasicScheduler")["steps"] == steps
        sampler_inputs = one(prompt, "SamplerCustomAdvanced")
        steer_id = next(k for k, v in prompt.items() if v["class_type"] == steer_class)
        assert sampler_inputs["sampler"] == [steer_id, 0]
        assert prompt[sampler_inputs["guider"][0]]["class_type"] == "BasicGuider"
        assert prompt[sampler_inputs["noise"][0]]["class_type"] == "RandomNoise"
    else:
        assert (steer["steps"], steer["cfg"], steer["sampler_name"], steer["scheduler"], steer["denoise"]) == (
            steps, cfg, sampler, scheduler, 1.0)
    if guidance is None:
        assert not nodes_of(prompt, "FluxGuidance")
    else:
        assert one(prompt, "FluxGuidance")["guidance"] == guidance
        shift = one(prompt, "ModelSamplingFlux")
        assert (shift["width"], shift["height"], shift["max_shift"], shift["base_shift"]) == (side, side, 1.15, 0.5)
    assert [n["inputs"]["filename_prefix"] for n in nodes_of(prompt, "SaveImage")] == [f"l2s/{name}"]
    preview = one(prompt, "L2S_AttentionPreview")
    assert prompt[preview["trace"][0]]["class_type"] == steer_class and preview["trace"][1] == 1
    assert prompt[preview["image"][0]]["class_type"] == "VAEDecode"


def test_compare_workflow_runs_one_seed_with_and_without_steering() -> None:
    prompt = api("l2s_compare_on_off")
    plain, steer = one(prompt, "KSampler"), one(prompt, "L2S_LearnedSpatialSteer")
    for key in ("model", "positive", "negative", "latent_image", "seed", "steps", "cfg", "sampler_name", "scheduler",
                "denoise"):
        assert plain[key] == steer[key], key
    stitch = one(prompt, "ImageStitch")
    decoded_from = [prompt[prompt[stitch[k][0]]["inputs"]["samples"][0]]["class_type"] for k in ("image1", "image2")]
    assert decoded_from == ["KSampler", "L2S_LearnedSpatialSteer"]
    assert stitch["direction"] == "right"
    save = nodes_of(prompt, "SaveImage")[0]["inputs"]
    assert prompt[save["images"][0]]["class_type"] == "ImageStitch"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_note_says_where_the_files_come_from(name: str) -> None:
    notes = [n for n in ui(name)["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    assert "models/l2s_classifiers" in text and EXPECTED[name][1] in text
    for file in EXPECTED[name][0]:
        assert file in text, file
    if name in ("l2s_sdxl", "l2s_sd3"):
        assert "no official classifier" in text and "training" in text
    else:
        assert "sapir1779/learn-to-steer" in text and "Google Drive" in text and "Non-commercial" in text


TOY_PROMPT = "a blue circle above a red square"
TOY_FILES = ("toy_world.safetensors", "toy_relation_classifier.safetensors")
TOY_SAVES = {"l2s_toy_world": "ImageStitch", "l2s_toy_unsteered": "KSampler", "l2s_toy_steered":
             "L2S_LearnedSpatialSteer"}  # SaveImage prefix -> what its image comes from (through the enlargement)


def _image_source(prompt: dict[str, Any], link: list[Any]) -> str:
    """The class behind an IMAGE link: the sampler a VAE Decode decodes, the input of an enlargement, or the node."""
    node = prompt[link[0]]
    if node["class_type"] == "ImageScaleBy":
        return _image_source(prompt, node["inputs"]["image"])
    if node["class_type"] == "VAEDecode":
        return prompt[node["inputs"]["samples"][0]]["class_type"]
    return node["class_type"]


def test_toy_workflow_compares_one_seed_with_and_without_steering_on_the_shipped_files() -> None:
    prompt = api(TOY)
    assert one(prompt, "L2S_LoadToyWorld") == {"world": TOY_FILES[0]}
    assert one(prompt, "L2S_LoadRelationClassifier") == {"classifier_name": TOY_FILES[1], "family": "auto"}
    assert one(prompt, "L2S_SpatialPromptEncode")["text"] == TOY_PROMPT
    assert one(prompt, "CLIPTextEncode")["text"] == ""
    latent = one(prompt, "EmptyLatentImage")
    from l2s_core.toy_bundle import read_bundle_metadata

    side = read_bundle_metadata(REPO_ROOT / "toy_world" / "models" / TOY_FILES[0])["world"]["image_size"]
    assert (latent["width"], latent["height"], latent["batch_size"]) == (side, side, 1), "the world's own size"
    plain, steer = one(prompt, "KSampler"), one(prompt, "L2S_LearnedSpatialSteer")
    for key in ("model", "positive", "negative", "latent_image", "seed", "steps", "cfg", "sampler_name", "scheduler",
                "denoise"):
        assert plain[key] == steer[key], key
    assert (steer["seed"], steer["steps"], steer["cfg"], steer["sampler_name"], steer["scheduler"]) == (
        TOY_SEED, 20, 8.0, "ddim", "ddim_uniform")
    # the toy example shows the mode most accurate on the toy benchmark; the custom numbers start at its recipe
    assert {k: steer[k] for k in TOY_STEERING} == TOY_STEERING == {
        "mode": "fast", "last_steered_step": 10, "step_size": 1.0, "iterations": 16,
        "early_stop_probability": 1.0}
    loader = next(k for k, v in prompt.items() if v["class_type"] == "L2S_LoadToyWorld")
    assert plain["model"] == [loader, 0] and one(prompt, "CLIPTextEncode")["clip"] == [loader, 1]
    assert all(n["inputs"]["vae"] == [loader, 2] for n in nodes_of(prompt, "VAEDecode"))
    stitch = one(prompt, "ImageStitch")
    assert [_image_source(prompt, stitch[k]) for k in ("image1", "image2")] == ["KSampler", "L2S_LearnedSpatialSteer"]
    assert stitch["direction"] == "right"
    saves = {n["inputs"]["filename_prefix"]: _image_source(prompt, n["inputs"]["images"])
             for n in nodes_of(prompt, "SaveImage")}
    assert saves == TOY_SAVES
    comparison = next(n for n in nodes_of(prompt, "SaveImage") if n["inputs"]["filename_prefix"] == TOY)
    enlarge = prompt[comparison["inputs"]["images"][0]]
    assert enlarge["class_type"] == "ImageScaleBy", "the 128 px comparison must be enlarged to be judged on the canvas"
    assert enlarge["inputs"]["upscale_method"] == "nearest-exact" and enlarge["inputs"]["scale_by"] == TOY_ENLARGE >= 3
    preview = one(prompt, "L2S_AttentionPreview")
    assert prompt[preview["trace"][0]]["class_type"] == "L2S_LearnedSpatialSteer"


def test_toy_note_says_the_files_ship_with_the_pack() -> None:
    notes = [n for n in ui(TOY)["nodes"] if n["type"] == "MarkdownNote"]
    assert len(notes) == 1
    text = notes[0]["widgets_values"][0]
    assert "toy_world/" in text and "nothing to download" in text and TOY_PROMPT in text
    assert all(file in text for file in TOY_FILES)
    assert f"`mode` {TOY_STEERING['mode']}" in text and "`official` runs the published loop" in text


# ---------------------------------------------------------------------------------------------- with ComfyUI


comfyui = pytest.mark.comfyui


@comfyui
def test_api_workflows_use_known_nodes_and_inputs(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    for name in NAMES:
        for node_id, node in api(name).items():
            assert node["class_type"] in info, f"{name} node {node_id}: unknown class {node['class_type']}"
            declared = info[node["class_type"]]["input"]
            known = set(declared.get("required", {})) | set(declared.get("optional", {}))
            unknown = set(node["inputs"]) - known
            assert not unknown, f"{name} node {node_id} ({node['class_type']}): unknown inputs {unknown}"
            missing = set(declared.get("required", {})) - set(node["inputs"])
            assert not missing, f"{name} node {node_id} ({node['class_type']}): missing inputs {missing}"


@comfyui
def test_ui_graphs_regenerate_identically_from_the_live_object_info(comfy_server: ComfyServer) -> None:
    """The widget order in the UI files matches the running ComfyUI (else refresh the snapshot: see the script)."""
    workflows = build_workflows()
    live = trim_object_info(comfy_server.object_info(), used_classes(workflows))
    for workflow in workflows:
        assert to_ui(workflow, live) == ui(workflow.name), (
            f"{workflow.name}: rerun scripts/build_example_workflows.py --server <url> to refresh the snapshot")


@comfyui
def test_comfyui_lists_the_ui_graphs_as_templates(comfy_server: ComfyServer) -> None:
    with urllib.request.urlopen(comfy_server.url + "/workflow_templates", timeout=30) as response:
        templates = json.loads(response.read())
    assert sorted(templates[PACK_LINK_NAME]) == sorted(FILE_NAMES.values())
    base = f"{comfy_server.url}/api/workflow_templates/{PACK_LINK_NAME}/{urllib.parse.quote(FILE_NAMES['l2s_sd15'])}"
    with urllib.request.urlopen(f"{base}.json", timeout=30) as response:
        assert json.loads(response.read()) == ui("l2s_sd15")
    with urllib.request.urlopen(f"{base}.jpg", timeout=30) as response:
        assert response.read()[:3] == b"\xff\xd8\xff"


def tiny_prompt(name: str, classifier_file: str) -> dict[str, Any]:
    """The API workflow on a tiny random model: loaders -> L2STest_TinyModel, tiny size, 3 steps, 1 steered step."""
    family = TINY_FAMILY[name]
    side = tiny_specs.get_spec(family).get("test_image_side", 64)
    prompt = copy.deepcopy(api(name))
    remap: dict[tuple[str, int], list[Any]] = {}
    for node_id in [k for k, v in prompt.items() if v["class_type"] in LOADER_OUTPUTS]:
        for slot, tiny_slot in LOADER_OUTPUTS[prompt.pop(node_id)["class_type"]].items():
            remap[(node_id, slot)] = ["tiny", tiny_slot]
    assert remap, f"{name} has no model loader to replace"
    prompt["tiny"] = {"class_type": "L2STest_TinyModel", "inputs": {"family": family, "seed": 0}}
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        for key, value in inputs.items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                assert value[0] in prompt or (value[0], value[1]) in remap, f"{name}: dangling link {value}"
                inputs[key] = remap.get((value[0], value[1]), value)
        if kind in ("EmptyLatentImage", "EmptySD3LatentImage", "ModelSamplingFlux"):
            inputs["width"] = inputs["height"] = side
        if kind in ("KSampler", "L2S_LearnedSpatialSteer", "BasicScheduler"):
            inputs["steps"] = 3
        if kind in STEER_CLASSES:
            inputs["mode"], inputs["last_steered_step"], inputs["iterations"] = "custom", 1, 1
        if kind == "L2S_LoadRelationClassifier":
            inputs["classifier_name"] = classifier_file
    return prompt


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@comfyui
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_example_workflow_executes_on_tiny_models(comfy_server: ComfyServer, name: str) -> None:
    from test_nodes_integration import write_classifier

    family = TINY_FAMILY[name]
    classifier = write_classifier(comfy_server.classifier_dir, f"example_{name}", family)
    prompt = tiny_prompt(name, classifier)
    entry = comfy_server.submit(prompt)
    for node_id, node in prompt.items():
        if node["class_type"] in ("SaveImage", "L2S_AttentionPreview"):
            images = entry["outputs"].get(node_id, {}).get("images", [])
            assert len(images) == 1, f"{name}: {node['class_type']} {node_id} produced {images}"
    saved = [p for p in comfy_server.output_files(entry) if p.parent.name == "l2s" and p.name.startswith(name)]
    assert len(saved) == 1 and saved[0].exists()
    side = tiny_specs.get_spec(family).get("test_image_side", 64)
    spacing = one(prompt, "ImageStitch")["spacing_width"] if name == "l2s_compare_on_off" else 0
    columns = 2 if name == "l2s_compare_on_off" else 1
    assert _png_size(saved[0]) == (columns * side + spacing, side)
    summary = json.loads(entry["outputs"][next(k for k, v in prompt.items() if v["class_type"] in STEER_CLASSES)]
                         ["l2s_trace"][0]) if name != "l2s_sampler_custom" else None
    if summary is not None:
        assert summary["relations"] == ["dog to the right of teddy bear"]
        assert [s["step"] for s in summary["steps"]] == [0]


def _prepare_toy_files(server: ComfyServer, cache_dir: Path) -> str:
    """Make the toy example's files loadable; returns what is used (the shipped files, or which stand-ins)."""
    from toy_world_files import (
        SHIPPED_BUNDLE,
        SHIPPED_CLASSIFIER,
        attention_channels,
        build_tiny_bundle,
        toy_world_dir,
        write_random_classifier,
    )

    bundle = SHIPPED_BUNDLE
    used = []
    if not SHIPPED_BUNDLE.is_file():
        bundle = toy_world_dir(server) / TOY_FILES[0]
        shutil.copyfile(build_tiny_bundle(cache_dir), bundle)
        used.append("a tiny untrained toy world")
    if not SHIPPED_CLASSIFIER.is_file():
        write_random_classifier(server.classifier_dir, TOY_FILES[1], attention_channels(bundle))
        used.append("a random toy classifier")
    return ", ".join(used) or "the shipped files"


@comfyui
def test_toy_workflow_executes_as_shipped(comfy_server: ComfyServer, request: pytest.FixtureRequest) -> None:
    """The toy example runs unchanged: the shipped files when the pack has them, else stand-ins of the same names."""
    _prepare_toy_files(comfy_server, request.config.cache.mkdir("l2s_toy_world"))
    prompt = api(TOY)
    entry = comfy_server.submit(prompt)
    for node_id, node in prompt.items():
        if node["class_type"] in ("SaveImage", "L2S_AttentionPreview"):
            images = entry["outputs"].get(node_id, {}).get("images", [])
            assert len(images) == 1, f"{node['class_type']} {node_id} produced {images}"
    spacing = one(prompt, "ImageStitch")["spacing_width"]
    side = one(prompt, "EmptyLatentImage")["width"]  # the world's own size (checked against the bundle above)
    sizes = {prefix: (TOY_ENLARGE * (2 * side + spacing), TOY_ENLARGE * side) if prefix == TOY else (side, side)
             for prefix in TOY_SAVES}
    for prefix, size in sizes.items():
        saved = [p for p in comfy_server.output_files(entry) if p.name.startswith(f"{prefix}_")]
        assert len(saved) == 1 and _png_size(saved[0]) == size, (prefix, saved)
    steer_id = next(k for k, v in prompt.items() if v["class_type"] == "L2S_LearnedSpatialSteer")
    summary = json.loads(entry["outputs"][steer_id]["l2s_trace"][0])
    assert summary["relations"] == ["blue circle above red square"]
    assert summary["steps"] and summary["steps"][0]["step"] == 0
