"""Build the pack's example workflows from one Python definition per graph (a dev tool, not part of the pack).

Each graph is defined ONCE below (API-format inputs plus node positions) and written twice:

- ``example_workflows/<name>.json``: UI format (what the frontend's Save/Export writes and what ComfyUI lists in its
  template browser: ``GET /workflow_templates`` globs ``example_workflows/*.json``), with ``<name>.jpg`` as thumbnail;
- ``example_workflows/api/<name>.api.json``: API format (what ``POST /prompt`` executes, "Export (API)"). The API
  twins live in a sub-folder because ComfyUI would otherwise list them as templates too (the glob is not recursive).

The UI format stores widget values positionally, in the frontend's widget order, which comes from ``/object_info``:
inputs in ``input_order`` (required, then optional); an input is a widget when its type is INT, FLOAT, STRING,
BOOLEAN, COMBO or a list of options (unless ``forceInput``); an INT with ``control_after_generate`` (or, when the
option is absent, named ``seed``/``noise_seed``) is followed by the frontend-only "control after generate" value.
A trimmed snapshot of ``/object_info`` for the node classes used is committed next to this script, so it runs
without a server.

Usage (from the repository root)::

    python scripts/build_example_workflows.py               # rewrite JSON + thumbnails from the snapshot
    python scripts/build_example_workflows.py --check       # exit 1 if the committed JSON is out of date
    python scripts/build_example_workflows.py --no-thumbnails

Refreshing the snapshot (after a ComfyUI update or a change of this pack's node inputs): start ComfyUI with this
pack installed, then either::

    python scripts/build_example_workflows.py --server http://127.0.0.1:8188
    # or: curl -s http://127.0.0.1:8188/object_info > object_info.json
    python scripts/build_example_workflows.py --object-info object_info.json

Both trim the schema to the node classes used, drop tooltips and the contents of model-file dropdowns, rewrite the
snapshot and regenerate everything. Thumbnails need Pillow (``pip install pillow``); the pack itself does not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger("build_example_workflows")

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "example_workflows"
API_DIR = OUT_DIR / "api"
SNAPSHOT = Path(__file__).resolve().parent / "example_workflows_object_info.json"

PROMPT = "a photo of a dog to the right of a teddy bear"
SEED = 42  # the official run.py seeds everything with 42

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")  # the frontend's legacy convention for seed widgets
CONTROL_VALUE = "fixed"  # the "control after generate" value stored after every seed widget
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote"})  # frontend-only: never in API format
# Model-file dropdowns: their options list whatever files a server has, so the snapshot keeps them empty and
# validation does not require the value to be listed.
FILE_INPUTS = frozenset({
    ("CheckpointLoaderSimple", "ckpt_name"), ("UNETLoader", "unet_name"), ("DualCLIPLoader", "clip_name1"),
    ("DualCLIPLoader", "clip_name2"), ("VAELoader", "vae_name"), ("L2S_LoadRelationClassifier", "classifier_name"),
    ("L2S_LoadToyWorld", "world"),
})
KEPT_OPTIONS = ("default", "min", "max", "step", "options", "multiline", "control_after_generate", "forceInput")

POSITIVE_COLOUR = ("#232", "#353")
NEGATIVE_COLOUR = ("#322", "#533")
NOTE_COLOUR = ("#432", "#653")
STEER_COLOUR = ("#223", "#335")

OFFICIAL_REPO = "https://github.com/sapir1779/learn-to-steer"


# ------------------------------------------------------------------------------------------------- schema helpers


class InputSpec(NamedTuple):
    """One input of a node class, as ``/object_info`` describes it."""

    name: str
    type: Any  # a type name, or a list of options (legacy combo)
    options: dict[str, Any]
    optional: bool


def input_specs(node_info: dict[str, Any]) -> list[InputSpec]:
    """The inputs of a node class in the frontend's order: ``input_order`` required, then optional (no hidden)."""
    specs: list[InputSpec] = []
    for section in ("required", "optional"):
        declared = node_info.get("input", {}).get(section, {})
        order = node_info.get("input_order", {}).get(section, list(declared))
        for name in order:
            raw = declared[name]
            options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
            specs.append(InputSpec(name, raw[0], options, section == "optional"))
    return specs


def is_widget(spec: InputSpec) -> bool:
    """True when the frontend shows the input as a widget (its value is stored in ``widgets_values``)."""
    if spec.options.get("forceInput"):
        return False
    return isinstance(spec.type, list) or spec.type in WIDGET_TYPES


def has_control_widget(spec: InputSpec) -> bool:
    """True when the frontend adds a "control after generate" widget after this one (seeds)."""
    flag = spec.options.get("control_after_generate")
    if flag is None:
        return spec.type == "INT" and spec.name in SEED_NAMES
    return bool(flag)


def combo_options(spec: InputSpec) -> list[Any] | None:
    """The options of a combo input (legacy list or V3 ``COMBO``), or None for other inputs."""
    if isinstance(spec.type, list):
        return spec.type
    if spec.type == "COMBO":
        return list(spec.options.get("options", []))
    return None


def trim_object_info(full: dict[str, Any], classes: Iterable[str]) -> dict[str, Any]:
    """Keep what this script needs of ``/object_info`` for ``classes``: input specs (no tooltips), order, outputs."""
    trimmed: dict[str, Any] = {}
    for cls in sorted(set(classes)):
        if cls not in full:
            raise ValueError(
                f"/object_info has no node class {cls!r}: the server must run ComfyUI with this pack installed "
                "(and the stock nodes the examples use)"
            )
        info = full[cls]
        inputs: dict[str, dict[str, Any]] = {}
        for section in ("required", "optional"):
            for name, raw in info.get("input", {}).get(section, {}).items():
                kind = raw[0]
                options = {k: v for k, v in (raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}).items()
                           if k in KEPT_OPTIONS}
                if (cls, name) in FILE_INPUTS:
                    kind = [] if isinstance(kind, list) else kind
                    if "options" in options:
                        options["options"] = []
                inputs.setdefault(section, {})[name] = [kind, options] if options else [kind]
        order = {s: list(v) for s, v in info.get("input_order", {}).items() if s in ("required", "optional")}
        trimmed[cls] = {
            "name": info.get("name", cls), "display_name": info.get("display_name", cls), "input": inputs,
            "input_order": order, "output": list(info.get("output", [])),
            "output_name": list(info.get("output_name", [])),
        }
    return trimmed


# ------------------------------------------------------------------------------------------------- graph model


class Out(NamedTuple):
    """An output slot of a node: an input given an ``Out`` is a link."""

    node: int
    slot: int


@dataclass(frozen=True)
class Node:
    """One node: class, inputs (literal values or ``Out`` links), canvas placement and looks."""

    id: int
    class_type: str
    inputs: dict[str, Any]
    pos: tuple[float, float]
    size: tuple[float, float] | None = None
    title: str | None = None
    colour: tuple[str, str] | None = None
    text: str | None = None  # notes only


class Scene(NamedTuple):
    """The relation a thumbnail pictures: the left and right object (label, RGB fill, shape) and a caption."""

    left: tuple[str, tuple[int, int, int], str]
    right: tuple[str, tuple[int, int, int], str]
    caption: str
    vertical: bool = False  # draw ``left`` above ``right`` instead of beside it


# the default prompt: teddy bear (object, blue) on the left, dog (subject, red) on the right
DOG_TEDDY = Scene(("teddy", (40, 80, 170), "box"), ("dog", (200, 70, 40), "box"), "dog to the right of teddy bear")


@dataclass
class Workflow:
    """One example workflow and what its thumbnail shows."""

    name: str
    title: str
    model: str
    settings: str
    chain: tuple[str, ...]
    nodes: list[Node] = field(default_factory=list)
    scene: Scene = DOG_TEDDY

    def add(self, class_type: str, pos: tuple[float, float], inputs: dict[str, Any] | None = None, *,
            title: str | None = None, size: tuple[float, float] | None = None,
            colour: tuple[str, str] | None = None) -> int:
        """Add a node and return its id (ids count from 1 in the order of addition)."""
        node_id = len(self.nodes) + 1
        self.nodes.append(Node(node_id, class_type, dict(inputs or {}), pos, size, title, colour))
        return node_id

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float]) -> int:
        """Add a MarkdownNote (frontend-only; not part of the API format)."""
        node_id = len(self.nodes) + 1
        self.nodes.append(Node(node_id, "MarkdownNote", {}, pos, size, None, NOTE_COLOUR, text))
        return node_id


def complete_inputs(node: Node, info: dict[str, Any]) -> dict[str, Any]:
    """Validate a node's inputs against the schema and fill omitted widget inputs with their defaults.

    Raises:
        ValueError: unknown class or input, missing required input, a value outside its options or range, or a
            link to an output whose type differs from the input's.
    """
    if node.class_type not in info:
        raise ValueError(f"node {node.id}: class {node.class_type!r} is not in the object_info snapshot; refresh it "
                         "(see --object-info) or fix the class name")
    specs = input_specs(info[node.class_type])
    known = {s.name for s in specs}
    unknown = sorted(set(node.inputs) - known)
    if unknown:
        raise ValueError(f"node {node.id} ({node.class_type}): unknown inputs {unknown}; known: {sorted(known)}")
    done: dict[str, Any] = {}
    for spec in specs:
        where = f"node {node.id} ({node.class_type}).{spec.name}"
        if spec.name in node.inputs:
            value = node.inputs[spec.name]
        elif is_widget(spec) and "default" in spec.options:
            value = spec.options["default"]
        elif spec.optional:
            continue
        else:
            raise ValueError(f"{where}: required input missing (no default to fill in)")
        if isinstance(value, Out):
            if is_widget(spec):
                raise ValueError(f"{where}: links into widget inputs are not supported by this generator")
        elif is_widget(spec):
            options = combo_options(spec)
            if options and value not in options and (node.class_type, spec.name) not in FILE_INPUTS:
                raise ValueError(f"{where}: {value!r} is not one of {options}")
            if spec.type in ("INT", "FLOAT"):
                low, high = spec.options.get("min"), spec.options.get("max")
                if (low is not None and value < low) or (high is not None and value > high):
                    raise ValueError(f"{where}: {value} is outside [{low}, {high}]")
        else:
            raise ValueError(f"{where}: a {spec.type} input needs a link, got the literal {value!r}")
        done[spec.name] = value
    return done


def node_title(node: Node, info: dict[str, Any]) -> str:
    return node.title or info[node.class_type].get("display_name") or node.class_type


def to_api(workflow: Workflow, info: dict[str, Any]) -> dict[str, Any]:
    """The API-format prompt of a workflow (notes left out), keyed by node id as strings."""
    api: dict[str, Any] = {}
    for node in workflow.nodes:
        if node.class_type in VIRTUAL_NODES:
            continue
        inputs = {name: [str(v.node), v.slot] if isinstance(v, Out) else v
                  for name, v in complete_inputs(node, info).items()}
        api[str(node.id)] = {"class_type": node.class_type, "inputs": inputs,
                             "_meta": {"title": node_title(node, info)}}
    return api


def _estimated_size(node: Node, info: dict[str, Any]) -> list[float]:
    """A node size close to what the frontend computes: 20 px per slot row, 24 per widget, taller text boxes."""
    specs = input_specs(info[node.class_type])
    slots = sum(1 for s in specs if not is_widget(s))
    widgets = sum(1 + has_control_widget(s) for s in specs if is_widget(s))
    multiline = sum(1 for s in specs if is_widget(s) and s.options.get("multiline"))
    rows = max(slots, len(info[node.class_type]["output"]))
    width = 400 if multiline else 320
    return [width, rows * 20 + widgets * 24 + multiline * 110 + 14]


def _execution_order(workflow: Workflow) -> dict[int, int]:
    """A topological order (notes first), as the frontend stores in each node's ``order``."""
    deps = {n.id: {v.node for v in n.inputs.values() if isinstance(v, Out)} for n in workflow.nodes}
    order: dict[int, int] = {}
    pending = sorted(deps, key=lambda i: (bool(deps[i]), i))
    while pending:
        ready = [i for i in pending if deps[i] <= set(order)]
        if not ready:
            raise ValueError(f"workflow {workflow.name}: the graph has a cycle among nodes {pending}")
        for i in ready:
            order[i] = len(order)
        pending = [i for i in pending if i not in order]
    return order


def to_ui(workflow: Workflow, info: dict[str, Any]) -> dict[str, Any]:
    """The UI-format graph of a workflow (frontend workflow JSON, version 0.4)."""
    nodes = {n.id: n for n in workflow.nodes}
    completed = {n.id: ({} if n.class_type in VIRTUAL_NODES else complete_inputs(n, info)) for n in workflow.nodes}
    links: list[list[Any]] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_links: dict[tuple[int, str], int] = {}
    for node in workflow.nodes:
        if node.class_type in VIRTUAL_NODES:
            continue
        slot_specs = [s for s in input_specs(info[node.class_type]) if not is_widget(s)]
        for index, spec in enumerate(slot_specs):
            value = completed[node.id].get(spec.name)
            if not isinstance(value, Out):
                continue
            source = nodes[value.node]
            out_type = info[source.class_type]["output"][value.slot]
            if out_type != spec.type and spec.type != "*":
                raise ValueError(f"{workflow.name}: {source.class_type} output {value.slot} is {out_type}, but "
                                 f"{node.class_type}.{spec.name} takes {spec.type}")
            link_id = len(links) + 1
            links.append([link_id, value.node, value.slot, node.id, index, out_type])
            out_links.setdefault((value.node, value.slot), []).append(link_id)
            in_links[(node.id, spec.name)] = link_id
    order = _execution_order(workflow)
    ui_nodes: list[dict[str, Any]] = []
    for node in workflow.nodes:
        entry: dict[str, Any] = {"id": node.id, "type": node.class_type, "pos": list(node.pos)}
        if node.class_type in VIRTUAL_NODES:
            entry.update({"size": list(node.size or (400, 300)), "flags": {}, "order": order[node.id], "mode": 0,
                          "inputs": [], "outputs": [], "properties": {}, "widgets_values": [node.text or ""]})
        else:
            node_info = info[node.class_type]
            specs = input_specs(node_info)
            widgets: list[Any] = []
            for spec in specs:
                if is_widget(spec):
                    widgets.append(completed[node.id][spec.name])
                    if has_control_widget(spec):
                        widgets.append(CONTROL_VALUE)
            entry.update({
                "size": list(node.size) if node.size else _estimated_size(node, info),
                "flags": {}, "order": order[node.id], "mode": 0,
                "inputs": [{"name": s.name, "type": s.type, "link": in_links.get((node.id, s.name))}
                           for s in specs if not is_widget(s)],
                "outputs": [{"name": name, "type": kind, "links": out_links.get((node.id, slot), []),
                             "slot_index": slot}
                            for slot, (name, kind) in enumerate(zip(node_info["output_name"], node_info["output"],
                                                                    strict=True))],
            })
            if node.title:
                entry["title"] = node.title
            entry["properties"] = {"Node name for S&R": node.class_type}
            entry["widgets_values"] = widgets
        if node.colour:
            entry["color"], entry["bgcolor"] = node.colour
        ui_nodes.append(entry)
    return {
        "last_node_id": max(nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links, "groups": [],
        "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [520, 120]}}, "version": 0.4,
    }


def ui_to_api(ui: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Convert a UI-format graph to API format the way the frontend does (widgets mapped by position).

    Raises:
        ValueError: a node class is missing from ``info`` or its widget values do not match the schema's count.
    """
    links = {link[0]: link for link in ui["links"]}
    api: dict[str, Any] = {}
    for node in sorted(ui["nodes"], key=lambda n: n["id"]):
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) == 4:
            continue
        if node["type"] not in info:
            raise ValueError(f"node {node['id']}: class {node['type']!r} is not in object_info")
        node_info = info[node["type"]]
        linked = {i["name"]: links[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        position = 0
        inputs: dict[str, Any] = {}
        for spec in input_specs(node_info):
            if is_widget(spec):
                if position >= len(values):
                    raise ValueError(f"node {node['id']} ({node['type']}): too few widget values {values}")
                value = values[position]
                position += 1 + has_control_widget(spec)
            elif spec.name in linked:
                value = None
            else:
                continue
            if spec.name in linked:
                link = linked[spec.name]
                value = [str(link[1]), link[2]]
            inputs[spec.name] = value
        if position != len(values):
            raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widget values, the schema has "
                             f"{position}: {values}")
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or node_info.get("display_name")
                                          or node["type"]}}
    return api


# ---------------------------------------------------------------------------------------------------- notes


def _note(title: str, what: str, models: Sequence[str], classifier: Sequence[str], settings: Sequence[str]) -> str:
    lines = [f"## {title}", "", what, "", "**Model files** (into `ComfyUI/models/...`)", ""]
    lines += [f"- {m}" for m in models]
    lines += ["", "**Relation classifier** (into `ComfyUI/models/l2s_classifiers/`)", ""]
    lines += [f"- {c}" for c in classifier]
    lines += ["", "**Settings**", ""]
    lines += [f"- {s}" for s in settings]
    lines += ["", "The prompt must name one relation: *above*, *below*, *to the left of*, *to the right of* (or a "
              "synonym). Spatial Prompt Encode shows what it parsed; Attention Preview shows what the classifier "
              "saw before and after steering."]
    return "\n".join(lines) + "\n"


def _official_classifier(file: str, model: str) -> list[str]:
    return [
        f"`{file}`: the authors' official classifier for {model}, from the Google Drive folder linked in the README "
        f"of the official repository [sapir1779/learn-to-steer]({OFFICIAL_REPO}). **Non-commercial licence** "
        "(see that repository); this pack loads the `.pth` safely (weights only) and never redistributes it.",
        "Optional: convert it to this pack's format with `python -m l2s_core.convert "
        f"{file} {file.rsplit('.', 1)[0]}.safetensors`.",
    ]


def _trained_classifier(file: str, model: str) -> list[str]:
    return [
        f"`{file}`: **no official classifier exists for {model}.** Train one with this pack's training CLI "
        "(`python -m training --help`, code in the pack's `training/` folder) and save it under this name; until "
        "then this workflow cannot run.",
    ]


STEER_DEFAULTS = ("Steering widgets `-1 / 0 / 0 / 0` = the steering recipe of the classifier's family (the published "
                  "one for the official classifiers), scaled to your step count. `early_stop_probability` 0.9 is "
                  "much faster and usually as good.")


# ------------------------------------------------------------------------------------------------ workflows


def _steer_inputs(model: Out, classifier: Out, positive: Out, negative: Out, latent: Out, steps: int, cfg: float,
                  sampler: str, scheduler: str) -> dict[str, Any]:
    return {"model": model, "classifier": classifier, "positive": positive, "negative": negative,
            "latent_image": latent, "seed": SEED, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "denoise": 1.0, "last_steered_step": -1, "step_size": 0.0, "iterations": 0,
            "early_stop_probability": 0.0}


def _outputs(w: Workflow, x: float, latent: Out, vae: Out, trace: Out) -> None:
    """VAE Decode -> Save Image, and Attention Preview over the decoded image."""
    decode = w.add("VAEDecode", (x, 0), {"samples": latent, "vae": vae}, size=(220, 46))
    w.add("SaveImage", (x, 90), {"images": Out(decode, 0), "filename_prefix": f"l2s/{w.name}"}, size=(520, 580))
    w.add("L2S_AttentionPreview", (x + 560, 0), {"trace": trace, "image": Out(decode, 0),
                                                 "steps": "first and last steered step"}, size=(780, 760))


def checkpoint_workflow(name: str, *, title: str, model: str, ckpt: str, ckpt_source: str, classifier: str,
                        classifier_lines: list[str], side: int, steps: int, cfg: float, sampler: str, scheduler: str,
                        latent_class: str, settings_lines: list[str], settings: str) -> Workflow:
    """SD1.x / SD2.x / SDXL / SD3 from one checkpoint file: the all-in-one Learned Spatial Steer node."""
    w = Workflow(name, title, model, settings, ("Load Checkpoint", "Spatial Prompt Encode", "Learned Spatial Steer",
                                                "VAE Decode", "Save Image + Attention Preview"))
    ckpt_node = w.add("CheckpointLoaderSimple", (0, 0), {"ckpt_name": ckpt}, size=(340, 98))
    clf = w.add("L2S_LoadRelationClassifier", (0, 150), {"classifier_name": classifier, "family": "auto"},
                size=(340, 82), colour=STEER_COLOUR)
    latent = w.add(latent_class, (0, 290), {"width": side, "height": side, "batch_size": 1}, size=(340, 106))
    pos = w.add("L2S_SpatialPromptEncode", (400, 0), {"clip": Out(ckpt_node, 1), "text": PROMPT},
                title="Spatial Prompt Encode (positive)", size=(420, 300), colour=POSITIVE_COLOUR)
    neg = w.add("CLIPTextEncode", (400, 350), {"clip": Out(ckpt_node, 1), "text": ""},
                title="CLIP Text Encode (negative)", size=(420, 150), colour=NEGATIVE_COLOUR)
    steer = w.add("L2S_LearnedSpatialSteer", (880, 0),
                  _steer_inputs(Out(ckpt_node, 0), Out(clf, 0), Out(pos, 0), Out(neg, 0), Out(latent, 0), steps, cfg,
                                sampler, scheduler), size=(340, 470), colour=STEER_COLOUR)
    _outputs(w, 1280, Out(steer, 0), Out(ckpt_node, 2), Out(steer, 1))
    w.note(_note(title, f"{model} with Learned Spatial Steer: the first denoising steps are steered until the relation "
                 "classifier reads the requested relation from the model's own attention; then the sampler finishes "
                 "as usual.", [f"`checkpoints/{ckpt}`: {ckpt_source}"], classifier_lines, settings_lines),
           (-480, 0), (440, 700))
    return w


FLUX_TEXT_ENCODERS = [
    "`text_encoders/clip_l.safetensors` and `text_encoders/t5xxl_fp16.safetensors`: "
    "[comfyanonymous/flux_text_encoders](https://huggingface.co/comfyanonymous/flux_text_encoders)",
    "`vae/ae.safetensors`: the FLUX.1 autoencoder (in the black-forest-labs FLUX.1 repositories on Hugging Face, or "
    "[Comfy-Org/Lumina_Image_2.0_Repackaged](https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged), "
    "`split_files/vae`)",
]


def _flux_loaders(w: Workflow, unet: str) -> tuple[int, int, int]:
    model = w.add("UNETLoader", (0, 0), {"unet_name": unet, "weight_dtype": "default"}, size=(340, 82))
    clip = w.add("DualCLIPLoader", (0, 130), {"clip_name1": "clip_l.safetensors",
                                              "clip_name2": "t5xxl_fp16.safetensors", "type": "flux",
                                              "device": "default"}, size=(340, 130))
    vae = w.add("VAELoader", (0, 310), {"vae_name": "ae.safetensors"}, size=(340, 58))
    return model, clip, vae


def flux_workflow(name: str, *, title: str, model: str, unet: str, unet_source: str, classifier: str, side: int,
                  steps: int, guidance: float | None, settings_lines: list[str], settings: str) -> Workflow:
    """FLUX.1 (schnell / dev) from split files: the all-in-one Learned Spatial Steer node."""
    encode = "Spatial Prompt Encode (T5 512)" + (" + Flux Guidance 3.5" if guidance is not None else "")
    chain = ("Load Diffusion Model + DualCLIP + VAE", encode, "Learned Spatial Steer", "VAE Decode",
             "Save Image + Attention Preview")
    w = Workflow(name, title, model, settings, chain)
    unet_node, clip, vae = _flux_loaders(w, unet)
    clf = w.add("L2S_LoadRelationClassifier", (0, 420), {"classifier_name": classifier, "family": "auto"},
                size=(340, 82), colour=STEER_COLOUR)
    latent = w.add("EmptySD3LatentImage", (0, 550), {"width": side, "height": side, "batch_size": 1},
                   size=(340, 106))
    pos = w.add("L2S_SpatialPromptEncode", (400, 0), {"clip": Out(clip, 0), "text": PROMPT, "t5_length": 512},
                title="Spatial Prompt Encode (positive)", size=(420, 300), colour=POSITIVE_COLOUR)
    positive, model_out = Out(pos, 0), Out(unet_node, 0)
    if guidance is not None:
        guided = w.add("FluxGuidance", (400, 350), {"conditioning": positive, "guidance": guidance}, size=(420, 58))
        positive = Out(guided, 0)
        sampling = w.add("ModelSamplingFlux", (400, 560), {"model": model_out, "max_shift": 1.15, "base_shift": 0.5,
                                                           "width": side, "height": side}, size=(420, 130))
        model_out = Out(sampling, 0)
    neg = w.add("ConditioningZeroOut", (400, 450), {"conditioning": Out(pos, 0)},
                title="Negative (unused at CFG 1)", size=(420, 26), colour=NEGATIVE_COLOUR)
    steer = w.add("L2S_LearnedSpatialSteer", (880, 0),
                  _steer_inputs(model_out, Out(clf, 0), positive, Out(neg, 0), Out(latent, 0), steps, 1.0, "euler",
                                "simple"), size=(340, 470), colour=STEER_COLOUR)
    _outputs(w, 1280, Out(steer, 0), Out(vae, 0), Out(steer, 1))
    w.note(_note(title, f"{model} with Learned Spatial Steer: the first denoising steps are steered until the relation "
                 "classifier reads the requested relation from the model's own attention; then the sampler finishes "
                 "as usual.", [f"`diffusion_models/{unet}`: {unet_source}", *FLUX_TEXT_ENCODERS],
                 _official_classifier(classifier, model), settings_lines), (-480, 0), (440, 760))
    return w


SD15_SOURCE = ("Stable Diffusion 1.5 ([Comfy-Org/stable-diffusion-v1-5-archive]"
               "(https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive)); SD 1.4 works the same way")
SD21_SOURCE = ("Stable Diffusion 2.1-base, 512 px ([stabilityai/stable-diffusion-2-1-base]"
               "(https://huggingface.co/stabilityai/stable-diffusion-2-1-base))")
SD_SETTINGS = "512x512, 50 steps, CFG 7.5, sampler `ddim` + scheduler `ddim_uniform` (closest to the official DDIM, eta 0)"


def workflow_sd15() -> Workflow:
    return checkpoint_workflow(
        "l2s_sd15", title="Learn-to-Steer: SD1.5", model="Stable Diffusion 1.5",
        ckpt="v1-5-pruned-emaonly.safetensors", ckpt_source=SD15_SOURCE, classifier="sd14.pth",
        classifier_lines=_official_classifier("sd14.pth", "Stable Diffusion 1.4 (same architecture as 1.5)"),
        side=512, steps=50, cfg=7.5, sampler="ddim", scheduler="ddim_uniform", latent_class="EmptyLatentImage",
        settings_lines=[f"Official SD1.4 run: {SD_SETTINGS}.",
                        "Official steering: steps 0-24 of 50, step size 7.5, 16 iterations per step. " + STEER_DEFAULTS],
        settings="512x512 | 50 steps | CFG 7.5 | DDIM")


def workflow_sd21() -> Workflow:
    return checkpoint_workflow(
        "l2s_sd21", title="Learn-to-Steer: SD2.1", model="Stable Diffusion 2.1-base",
        ckpt="v2-1_512-ema-pruned.safetensors", ckpt_source=SD21_SOURCE, classifier="sd2.pth",
        classifier_lines=_official_classifier("sd2.pth", "Stable Diffusion 2.1-base"),
        side=512, steps=50, cfg=7.5, sampler="ddim", scheduler="ddim_uniform", latent_class="EmptyLatentImage",
        settings_lines=[f"Official SD2.1 run: {SD_SETTINGS}.",
                        "Official steering: steps 0-24 of 50, step size 5, 16 iterations per step. " + STEER_DEFAULTS],
        settings="512x512 | 50 steps | CFG 7.5 | DDIM")


def workflow_sdxl() -> Workflow:
    return checkpoint_workflow(
        "l2s_sdxl", title="Learn-to-Steer: SDXL", model="SDXL 1.0 base",
        ckpt="sd_xl_base_1.0.safetensors",
        ckpt_source=("SDXL 1.0 base ([stabilityai/stable-diffusion-xl-base-1.0]"
                     "(https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0))"),
        classifier="sdxl_l2s.safetensors", classifier_lines=_trained_classifier("sdxl_l2s.safetensors", "SDXL"),
        side=1024, steps=50, cfg=7.5, sampler="ddim", scheduler="ddim_uniform", latent_class="EmptyLatentImage",
        settings_lines=["1024x1024, 50 steps, CFG 7.5, `ddim` + `ddim_uniform`: the SD recipe the official "
                        "classifiers were trained and run with; match the step count your classifier was trained on.",
                        STEER_DEFAULTS],
        settings="1024x1024 | 50 steps | CFG 7.5 | DDIM")


def workflow_sd3() -> Workflow:
    return checkpoint_workflow(
        "l2s_sd3", title="Learn-to-Steer: SD3", model="Stable Diffusion 3 Medium",
        ckpt="sd3_medium_incl_clips_t5xxlfp16.safetensors",
        ckpt_source=("SD3 Medium with its text encoders in one file ([stabilityai/stable-diffusion-3-medium]"
                     "(https://huggingface.co/stabilityai/stable-diffusion-3-medium), gated: accept the licence "
                     "first)"),
        classifier="sd3_l2s.safetensors", classifier_lines=_trained_classifier("sd3_l2s.safetensors", "SD3"),
        side=1024, steps=28, cfg=4.5, sampler="euler", scheduler="sgm_uniform", latent_class="EmptySD3LatentImage",
        settings_lines=["1024x1024, 28 steps, CFG 4.5, `euler` + `sgm_uniform` (the usual SD3 Medium settings).",
                        STEER_DEFAULTS],
        settings="1024x1024 | 28 steps | CFG 4.5 | euler")


def workflow_flux_schnell() -> Workflow:
    return flux_workflow(
        "l2s_flux_schnell", title="Learn-to-Steer: FLUX.1-schnell", model="FLUX.1-schnell",
        unet="flux1-schnell.safetensors",
        unet_source=("[black-forest-labs/FLUX.1-schnell](https://huggingface.co/black-forest-labs/FLUX.1-schnell) or "
                     "[Comfy-Org/flux1-schnell](https://huggingface.co/Comfy-Org/flux1-schnell)"),
        classifier="flux_schnell.pth", side=256, steps=4, guidance=None,
        settings_lines=["Official FLUX.1-schnell run: **256x256** (the classifier's 16x16 maps at 16 px per cell), "
                        "4 steps, no guidance (CFG 1.0), `euler` + `simple`; Spatial Prompt Encode pads T5 to 512 "
                        "tokens as the classifier saw.",
                        "Official steering: only step 0, step size 5, 16 iterations. " + STEER_DEFAULTS],
        settings="256x256 | 4 steps | CFG 1.0 | euler")


def workflow_flux_dev() -> Workflow:
    return flux_workflow(
        "l2s_flux_dev", title="Learn-to-Steer: FLUX.1-dev", model="FLUX.1-dev",
        unet="flux1-dev.safetensors",
        unet_source=("[black-forest-labs/FLUX.1-dev](https://huggingface.co/black-forest-labs/FLUX.1-dev) (gated, "
                     "non-commercial licence) or [Comfy-Org/flux1-dev](https://huggingface.co/Comfy-Org/flux1-dev)"),
        classifier="flux_dev.pth", side=512, steps=50, guidance=3.5,
        settings_lines=["Official FLUX.1-dev run: **512x512**, 50 steps, Flux Guidance 3.5, CFG 1.0, `euler` + "
                        "`simple`; Spatial Prompt Encode pads T5 to 512 tokens.",
                        "ModelSamplingFlux with the image size gives the resolution-dependent shift the official "
                        "(diffusers) scheduler uses; change its width/height with the latent's.",
                        "Official steering: steps 0-24 of 50, step size 5, 16 iterations per step. " + STEER_DEFAULTS],
        settings="512x512 | 50 steps | guidance 3.5 | euler")


def workflow_compare_on_off() -> Workflow:
    """SD2.1, one seed through the stock KSampler and through Learned Spatial Steer, stitched side by side."""
    w = Workflow("l2s_compare_on_off", "Learn-to-Steer: on vs off", "Stable Diffusion 2.1-base",
                 "same seed | KSampler vs Learned Spatial Steer",
                 ("Spatial Prompt Encode", "KSampler | Learned Spatial Steer", "VAE Decode x2", "Image Stitch",
                  "Save Image + Attention Preview"))
    ckpt = w.add("CheckpointLoaderSimple", (0, 0), {"ckpt_name": "v2-1_512-ema-pruned.safetensors"}, size=(340, 98))
    clf = w.add("L2S_LoadRelationClassifier", (0, 150), {"classifier_name": "sd2.pth", "family": "auto"},
                size=(340, 82), colour=STEER_COLOUR)
    latent = w.add("EmptyLatentImage", (0, 290), {"width": 512, "height": 512, "batch_size": 1}, size=(340, 106))
    pos = w.add("L2S_SpatialPromptEncode", (400, 0), {"clip": Out(ckpt, 1), "text": PROMPT},
                title="Spatial Prompt Encode (positive)", size=(420, 300), colour=POSITIVE_COLOUR)
    neg = w.add("CLIPTextEncode", (400, 350), {"clip": Out(ckpt, 1), "text": ""},
                title="CLIP Text Encode (negative)", size=(420, 150), colour=NEGATIVE_COLOUR)
    plain = w.add("KSampler", (880, 0), {"model": Out(ckpt, 0), "positive": Out(pos, 0), "negative": Out(neg, 0),
                                         "latent_image": Out(latent, 0), "seed": SEED, "steps": 50, "cfg": 7.5,
                                         "sampler_name": "ddim", "scheduler": "ddim_uniform", "denoise": 1.0},
                  title="KSampler (steering off)", size=(340, 262))
    steer = w.add("L2S_LearnedSpatialSteer", (880, 320),
                  _steer_inputs(Out(ckpt, 0), Out(clf, 0), Out(pos, 0), Out(neg, 0), Out(latent, 0), 50, 7.5, "ddim",
                                "ddim_uniform"), title="Learned Spatial Steer (steering on)", size=(340, 470),
                  colour=STEER_COLOUR)
    decode_plain = w.add("VAEDecode", (1280, 0), {"samples": Out(plain, 0), "vae": Out(ckpt, 2)},
                         title="VAE Decode (off)", size=(220, 46))
    decode_steer = w.add("VAEDecode", (1280, 320), {"samples": Out(steer, 0), "vae": Out(ckpt, 2)},
                         title="VAE Decode (on)", size=(220, 46))
    stitch = w.add("ImageStitch", (1280, 90), {"image1": Out(decode_plain, 0), "image2": Out(decode_steer, 0),
                                               "direction": "right", "match_image_size": True, "spacing_width": 16,
                                               "spacing_color": "white"}, size=(260, 150))
    w.add("SaveImage", (1580, 0), {"images": Out(stitch, 0), "filename_prefix": f"l2s/{w.name}"}, size=(820, 460))
    w.add("L2S_AttentionPreview", (1580, 520), {"trace": Out(steer, 1), "image": Out(decode_steer, 0),
                                                "steps": "first and last steered step"}, size=(780, 760))
    w.note(_note("Learn-to-Steer: steering on vs off", "The same prompt, conditioning and seed go through the stock "
                 "KSampler (left image) and through Learned Spatial Steer (right image); Image Stitch puts them side "
                 "by side. The only difference is the steering of the first steps.",
                 [f"`checkpoints/v2-1_512-ema-pruned.safetensors`: {SD21_SOURCE}"],
                 _official_classifier("sd2.pth", "Stable Diffusion 2.1-base"),
                 [f"{SD_SETTINGS}, seed {SEED} in both samplers (keep them equal when you change it).",
                  "Official steering: steps 0-24 of 50, step size 5, 16 iterations per step. " + STEER_DEFAULTS]),
           (-480, 0), (440, 760))
    return w


def workflow_sampler_custom() -> Workflow:
    """FLUX.1-dev with SamplerCustomAdvanced: the SAMPLER variant wraps KSamplerSelect's sampler."""
    w = Workflow("l2s_sampler_custom", "Learn-to-Steer: SamplerCustomAdvanced", "FLUX.1-dev",
                 "512x512 | 50 steps | guidance 3.5 | euler",
                 ("KSamplerSelect", "Learned Spatial Steer (SAMPLER)", "SamplerCustomAdvanced", "VAE Decode",
                  "Save Image + Attention Preview"))
    unet, clip, vae = _flux_loaders(w, "flux1-dev.safetensors")
    clf = w.add("L2S_LoadRelationClassifier", (0, 420), {"classifier_name": "flux_dev.pth", "family": "auto"},
                size=(340, 82), colour=STEER_COLOUR)
    latent = w.add("EmptySD3LatentImage", (0, 550), {"width": 512, "height": 512, "batch_size": 1}, size=(340, 106))
    sampling = w.add("ModelSamplingFlux", (400, 0), {"model": Out(unet, 0), "max_shift": 1.15, "base_shift": 0.5,
                                                     "width": 512, "height": 512}, size=(420, 130))
    pos = w.add("L2S_SpatialPromptEncode", (400, 180), {"clip": Out(clip, 0), "text": PROMPT, "t5_length": 512},
                title="Spatial Prompt Encode (positive)", size=(420, 300), colour=POSITIVE_COLOUR)
    guided = w.add("FluxGuidance", (400, 530), {"conditioning": Out(pos, 0), "guidance": 3.5}, size=(420, 58))
    noise = w.add("RandomNoise", (880, 0), {"noise_seed": SEED}, size=(340, 82))
    guider = w.add("BasicGuider", (880, 130), {"model": Out(sampling, 0), "conditioning": Out(guided, 0)},
                   size=(340, 46))
    select = w.add("KSamplerSelect", (880, 230), {"sampler_name": "euler"}, size=(340, 58))
    steer = w.add("L2S_LearnedSpatialSteerSampler", (880, 340),
                  {"classifier": Out(clf, 0), "sampler": Out(select, 0), "last_steered_step": -1, "step_size": 0.0,
                   "iterations": 0, "early_stop_probability": 0.0}, size=(340, 170), colour=STEER_COLOUR)
    sigmas = w.add("BasicScheduler", (880, 560), {"model": Out(sampling, 0), "scheduler": "simple", "steps": 50,
                                                  "denoise": 1.0}, size=(340, 106))
    sampler = w.add("SamplerCustomAdvanced", (1280, 0),
                    {"noise": Out(noise, 0), "guider": Out(guider, 0), "sampler": Out(steer, 0),
                     "sigmas": Out(sigmas, 0), "latent_image": Out(latent, 0)}, size=(300, 110))
    _outputs(w, 1640, Out(sampler, 0), Out(vae, 0), Out(steer, 1))
    w.note(_note("Learn-to-Steer with SamplerCustomAdvanced", "Learned Spatial Steer (SAMPLER) wraps the sampler from "
                 "KSamplerSelect, so any guider, scheduler and noise source works. The positive conditioning must "
                 "come from Spatial Prompt Encode. Attention Preview takes the decoded image, so it runs after "
                 "sampling (when the trace is filled in).",
                 ["`diffusion_models/flux1-dev.safetensors`: [black-forest-labs/FLUX.1-dev]"
                  "(https://huggingface.co/black-forest-labs/FLUX.1-dev) (gated, non-commercial licence) or "
                  "[Comfy-Org/flux1-dev](https://huggingface.co/Comfy-Org/flux1-dev)", *FLUX_TEXT_ENCODERS],
                 _official_classifier("flux_dev.pth", "FLUX.1-dev"),
                 ["Official FLUX.1-dev run: 512x512, 50 steps (BasicScheduler `simple`), Flux Guidance 3.5 with "
                  "BasicGuider (no CFG), `euler`; T5 padded to 512 tokens; ModelSamplingFlux at the image size.",
                  "Official steering: steps 0-24 of 50, step size 5, 16 iterations per step. " + STEER_DEFAULTS]),
           (-480, 0), (440, 760))
    return w


TOY_WORLD_FILE = "toy_world.safetensors"


def _toy_recipe() -> Any:
    """The toy family's steering recipe, read from the family table (a torch-free module, loaded by path)."""
    spec = importlib.util.spec_from_file_location("_l2s_families", REPO_ROOT / "l2s_core" / "families.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while the class is created
    spec.loader.exec_module(module)
    return module.get_family("toy").steering_recipe()
TOY_CLASSIFIER_FILE = "toy_relation_classifier.safetensors"
TOY_PROMPT = "a blue circle above a red square"
TOY_SIDE = 128
TOY_SEED = 0  # the first seed, not a hand-picked one (the demo runs seeds 0..3 through this workflow)
TOY_SAMPLING: dict[str, Any] = {"seed": TOY_SEED, "steps": 20, "cfg": 8.0, "sampler_name": "ddim",
                                "scheduler": "ddim_uniform", "denoise": 1.0}
"""The toy example's sampler settings, shared by its KSampler and its Learned Spatial Steer."""
TOY_STEERING: dict[str, Any] = {"last_steered_step": -1, "step_size": 0.0, "iterations": 0,
                                "early_stop_probability": 0.0}
"""The toy example's steering widgets (-1 / 0 = the recipe of the classifier's family): tune them here."""


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


def build_workflows() -> list[Workflow]:
    """Every example workflow, in the order the README lists them."""
    return [workflow_sd15(), workflow_sd21(), workflow_sdxl(), workflow_sd3(), workflow_flux_schnell(),
            workflow_flux_dev(), workflow_compare_on_off(), workflow_sampler_custom(), workflow_toy_world()]


def used_classes(workflows: Iterable[Workflow]) -> set[str]:
    return {n.class_type for w in workflows for n in w.nodes if n.class_type not in VIRTUAL_NODES}


# ------------------------------------------------------------------------------------------------- thumbnails

THUMB_SIZE = (512, 288)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_thumbnail(workflow: Workflow, path: Path) -> None:
    """A 512x288 JPEG: title, model, settings, the node chain, and the relation the prompt asks for."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", THUMB_SIZE, (28, 30, 36))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, THUMB_SIZE[0], 6], fill=(80, 120, 220))
    draw.text((20, 16), "Learn-to-Steer", font=_font(14), fill=(140, 170, 240))
    title = workflow.title.split(": ", 1)[-1]
    size = 28
    while size > 12 and draw.textlength(title, font=_font(size)) > 305:
        size -= 1
    draw.text((20, 50), title, font=_font(size), fill=(240, 240, 240), anchor="lm")
    draw.text((20, 70), workflow.model, font=_font(15), fill=(200, 200, 200))
    draw.text((20, 90), workflow.settings, font=_font(13), fill=(160, 160, 160))
    # the relation the prompt asks for: two objects side by side and a caption
    if workflow.scene.vertical:  # one above the other: two 42 px objects in the same 70 px column
        places = ((workflow.scene.left, [395, 6, 437, 48]), (workflow.scene.right, [395, 52, 437, 94]))
    else:
        places = ((workflow.scene.left, [340, 22, 410, 92]), (workflow.scene.right, [422, 22, 492, 92]))
    for (label, fill, shape), box in places:
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        else:
            draw.rounded_rectangle(box, radius=0 if shape == "square" else 8, fill=fill)
        draw.text(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2), label, font=_font(11 if workflow.scene.vertical
                  else 13), fill=(255, 255, 255), anchor="mm")
    draw.text((416, 104), workflow.scene.caption, font=_font(11), fill=(170, 170, 170), anchor="mm")
    # the node chain, one box per step, top to bottom
    if len(workflow.chain) > 5:
        raise ValueError(f"{workflow.name}: a thumbnail shows at most 5 chain steps, got {len(workflow.chain)}")
    font = _font(13)
    y = 124
    for index, step in enumerate(workflow.chain):
        steer = "Steer" in step or "Spatial" in step
        fill = (45, 50, 85) if steer else (52, 54, 60)
        draw.rounded_rectangle([20, y, 492, y + 24], radius=6, fill=fill,
                               outline=(110, 140, 230) if steer else (90, 92, 100))
        draw.text((32, y + 12), step, font=font, fill=(230, 230, 230), anchor="lm")
        if index < len(workflow.chain) - 1:
            draw.polygon([(252, y + 26), (260, y + 26), (256, y + 31)], fill=(150, 150, 150))
        y += 32
    image.save(path, "JPEG", quality=82, optimize=True)


# ------------------------------------------------------------------------------------------------------- main


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_files(info: dict[str, Any]) -> dict[Path, str]:
    """Every JSON file this script writes (UI graphs and API twins), by path."""
    files: dict[Path, str] = {}
    for workflow in build_workflows():
        ui = to_ui(workflow, info)
        api = to_api(workflow, info)
        if ui_to_api(ui, info) != api:  # the UI graph must round-trip to the API twin
            raise AssertionError(f"{workflow.name}: UI graph does not convert back to its API twin")
        files[OUT_DIR / f"{workflow.name}.json"] = dump(ui)
        files[API_DIR / f"{workflow.name}.api.json"] = dump(api)
    return files


def load_object_info(args: argparse.Namespace) -> dict[str, Any]:
    """The schema to build with: a fresh /object_info (trimmed and saved as the snapshot) or the snapshot."""
    full: dict[str, Any] | None = None
    if args.server:
        with urllib.request.urlopen(args.server.rstrip("/") + "/object_info", timeout=60) as response:
            full = json.loads(response.read())
    elif args.object_info:
        full = json.loads(Path(args.object_info).read_text(encoding="utf-8"))
    if full is None:
        return json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    trimmed = trim_object_info(full, used_classes(build_workflows()))
    SNAPSHOT.write_text(dump(trimmed), encoding="utf-8")
    logger.info("wrote %s", SNAPSHOT.relative_to(REPO_ROOT))
    return trimmed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--object-info", metavar="FILE", help="a saved GET /object_info (refreshes the snapshot)")
    source.add_argument("--server", metavar="URL", help="read /object_info from a running ComfyUI (refreshes the "
                        "snapshot)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a JSON file is out of date")
    parser.add_argument("--no-thumbnails", action="store_true", help="do not (re)draw the .jpg thumbnails")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    info = load_object_info(args)
    files = render_files(info)
    if args.check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            logger.error("out of date: %s", path.relative_to(REPO_ROOT))
        return 1 if stale else 0
    API_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        logger.info("wrote %s", path.relative_to(REPO_ROOT))
    if not args.no_thumbnails:
        if importlib.util.find_spec("PIL") is None:
            logger.error("thumbnails need Pillow: pip install pillow (or pass --no-thumbnails)")
            return 1
        for workflow in build_workflows():
            path = OUT_DIR / f"{workflow.name}.jpg"
            draw_thumbnail(workflow, path)
            logger.info("wrote %s (%d bytes)", path.relative_to(REPO_ROOT), path.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
