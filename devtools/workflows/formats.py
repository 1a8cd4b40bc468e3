"""The two files of each workflow: the UI graph (frontend workflow JSON 0.4) and its API twin (``POST /prompt``).

Inputs are checked against the schema and omitted widgets filled with their defaults first
(:func:`complete_inputs`); :func:`ui_to_api` converts a UI graph back the way the frontend does (widgets by
position), so the generator can prove that every UI graph round-trips to its API twin.
"""

from __future__ import annotations

from typing import Any

from devtools.workflows.graph import Node, Out, Workflow
from devtools.workflows.layout import ui_box
from devtools.workflows.schema import FILE_INPUTS, combo_options, has_control_widget, input_specs, is_widget

CONTROL_VALUE = "fixed"  # the "control after generate" value stored after every seed widget
VIEW_MARGIN = 24
"""Screen pixels between the canvas's top-left corner and the graph when a workflow opens."""
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote"})  # frontend-only: never in API format
NOTE_PROPERTY = "l2s_note"
"""Marks the pack's own notes; its web extension shows their text at a readable size (web/learn_to_steer.js)."""


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
    """The title a node shows: its own, else its class's display name, else its class."""
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
        flags = {"collapsed": True} if node.collapsed else {}
        if node.class_type in VIRTUAL_NODES:
            entry.update({"size": list(node.size or (400, 300)), "flags": flags, "order": order[node.id], "mode": 0,
                          "inputs": [], "outputs": [], "properties": {NOTE_PROPERTY: True},
                          "widgets_values": [node.text or ""]})
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
                "flags": flags, "order": order[node.id], "mode": 0,
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
            if node.models:
                entry["properties"]["models"] = [m._asdict() for m in node.models]
            entry["widgets_values"] = widgets
        if node.colour:
            entry["color"], entry["bgcolor"] = node.colour
        ui_nodes.append(entry)
    return {
        "last_node_id": max(nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links, "groups": [],
        "config": {}, "extra": {"ds": opening_view(ui_nodes, workflow.zoom)}, "version": 0.4,
    }


def opening_view(ui_nodes: list[dict[str, Any]], zoom: float) -> dict[str, Any]:
    """The canvas view a workflow opens at (``extra.ds``): ``zoom``, the graph's top-left corner near the screen's.

    The frontend draws graph point p at screen (p + offset) * scale.
    """
    boxes = [ui_box(n) for n in ui_nodes]
    left, top = min(b.x for b in boxes), min(b.y for b in boxes)
    return {"scale": zoom, "offset": [round(VIEW_MARGIN / zoom - left, 1), round(VIEW_MARGIN / zoom - top, 1)]}


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
