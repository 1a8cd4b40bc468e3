"""What the generator reads from ComfyUI's ``/object_info``: each node class's inputs, in the frontend's order.

The UI format stores widget values positionally, in the frontend's widget order, which comes from ``/object_info``:
inputs in ``input_order`` (required, then optional); an input is a widget when its type is INT, FLOAT, STRING,
BOOLEAN, COMBO or a list of options (unless ``forceInput``); an INT with ``control_after_generate`` (or, when the
option is absent, named ``seed``/``noise_seed``) is followed by the frontend-only "control after generate" value.
:func:`trim_object_info` keeps just that of a live ``/object_info``, for the committed snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = ("seed", "noise_seed")  # the frontend's legacy convention for seed widgets
# Model-file dropdowns: their options list whatever files a server has, so the snapshot keeps them empty and
# validation does not require the value to be listed.
FILE_INPUTS = frozenset({
    ("CheckpointLoaderSimple", "ckpt_name"), ("UNETLoader", "unet_name"), ("DualCLIPLoader", "clip_name1"),
    ("DualCLIPLoader", "clip_name2"), ("VAELoader", "vae_name"), ("L2S_LoadRelationClassifier", "classifier_name"),
    ("L2S_LoadToyWorld", "world"),
})
KEPT_OPTIONS = ("default", "min", "max", "step", "options", "multiline", "control_after_generate", "forceInput")


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
