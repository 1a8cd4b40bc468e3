/**
 * Learn-to-Steer in the ComfyUI frontend (1.27+): what the pack's nodes report, on the nodes themselves, and only
 * the widgets that act.
 *
 * 1. Report panel. Spatial Prompt Encode, Learned Spatial Steer, Load Relation Classifier and Load Toy World send
 *    readable text in their UI output (`ui.text`, the same key ComfyUI's Preview Any uses); this frontend shows such
 *    text only on its own Preview Any node, so each of these nodes gets a read-only panel (a DOM widget named
 *    `l2s_report`) that shows it after a run. The panel is not a node input: it is neither saved in
 *    `widgets_values` nor sent with the prompt.
 * 2. Widgets that act. The four numbers of the steer nodes count only in `custom` mode: they are hidden in the other
 *    modes. Spatial Prompt Encode's `t5_length` acts only on FLUX-style text encoders (T5 without CLIP-G): it is
 *    shown when the CLIP input comes from such a loader (or from a node this file does not know), and after a run
 *    the node's own report (`ui.l2s_t5`) decides.
 *
 * 3. Readable text at the zoom the templates open at: the pack's own notes (`properties.l2s_note`) and Spatial
 *    Prompt Encode's prompt box get a 15 px font instead of the 10 px default of text boxes (only those elements).
 * 4. Template order. ComfyUI 0.3.64 lists a pack's templates in the order its server's file system returns them;
 *    this pack's names start with a number (the toy world is 1), so its list is sorted by name.
 *
 * Hidden widgets keep their values and are still sent with the prompt; only their rows are folded away.
 */
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

const EXTENSION = "learn_to_steer.canvas";
const REPORT = "l2s_report";
/** Node type -> [placeholder before a run, the panel's least height in px (what its report needs)]. */
const REPORT_NODES = {
  L2S_SpatialPromptEncode: ["After Run: what the prompt was parsed into (subject, relation, object, token "
    + "positions).", 96],
  L2S_LearnedSpatialSteer: ["After Run: the classifier's probability of the requested relation, before -> after, "
    + "for each steered step.", 200],
  L2S_LoadRelationClassifier: ["After Run: the classifier's model family, relations and map size.", 96],
  L2S_LoadToyWorld: ["After Run: what the toy world knows (objects, relations, image size).", 110],
};
const STEER_NODES = new Set(["L2S_LearnedSpatialSteer", "L2S_LearnedSpatialSteerSampler"]);
const CUSTOM_ONLY = ["last_steered_step", "step_size", "iterations", "early_stop_probability"];
const T5_WIDGET = "t5_length";
const T5_CLIP_TYPES = new Set(["flux", "chroma"]);
const NO_T5_SOURCES = new Set(["L2S_LoadToyWorld"]);
const CLIP_LOADERS = new Set(["CLIPLoader", "DualCLIPLoader", "TripleCLIPLoader", "QuadrupleCLIPLoader"]);

const READABLE_FONT = "15px";
const widgetOf = (node, name) => node.widgets?.find((w) => w.name === name);

/** A larger font for one text box (a DOM widget); the frontend sizes text boxes with this CSS variable. */
function enlargeText(widget) {
  widget?.element?.style?.setProperty("--comfy-textarea-font-size", READABLE_FONT);
}

/** The height of one widget row (LiteGraph's widget height plus the 4 px between rows). */
const rowHeight = () => (globalThis.LiteGraph?.NODE_WIDGET_HEIGHT ?? 20) + 4;

/**
 * Show or fold away one widget; returns the change in the node's height (0 when nothing changed). A folded widget
 * is `hidden` (not drawn, not clickable) and measures -4 px, so with the 4 px row gap it takes no room.
 */
function setVisible(node, name, visible) {
  const widget = widgetOf(node, name);
  if (!widget || !widget.hidden === visible) return 0;
  if (visible) {
    widget.hidden = false;
    if (widget.l2sOwnComputeSize) widget.computeSize = widget.l2sOwnComputeSize;
    else delete widget.computeSize;
    delete widget.l2sOwnComputeSize;
    return rowHeight();
  }
  if (Object.prototype.hasOwnProperty.call(widget, "computeSize")) widget.l2sOwnComputeSize = widget.computeSize;
  widget.hidden = true;
  widget.computeSize = () => [0, -4];
  return -rowHeight();
}

/** Apply visibilities; with `resize`, grow or shrink the node by the rows that appeared or went. */
function applyVisibility(node, wanted, resize) {
  let delta = 0;
  for (const [name, visible] of Object.entries(wanted)) delta += setVisible(node, name, visible);
  if (delta !== 0 && resize) {
    node.setSize([node.size[0], Math.max(node.computeSize()[1], node.size[1] + delta)]);
  }
  if (delta !== 0) node.setDirtyCanvas?.(true, true);
}

function customOnlyVisibility(node) {
  const custom = widgetOf(node, "mode")?.value === "custom";
  return Object.fromEntries(CUSTOM_ONLY.map((name) => [name, custom]));
}

function linkById(graph, id) {
  return graph.getLink?.(id) ?? graph.links?.get?.(id) ?? graph.links?.[id];
}

/** The node that produces the CLIP reaching `node`'s clip input, through pass-through nodes (LoRA, reroutes). */
function clipSource(node) {
  let current = node;
  let slotName = "clip";
  for (let hop = 0; hop < 32 && current?.graph; hop++) {
    const slot = current.inputs?.find((i) => i.name === slotName);
    if (!slot || slot.link == null) return null;
    const link = linkById(current.graph, slot.link);
    const source = link ? current.graph.getNodeById(link.origin_id) : null;
    if (!source) return null;
    const clipInput = source.inputs?.find((i) => i.type === "CLIP");
    const passesClip = source.outputs?.[link.origin_slot]?.type === "CLIP" && clipInput;
    if (source.type === "Reroute" || passesClip) {
      current = source;
      slotName = clipInput?.name ?? source.inputs?.[0]?.name;
      continue;
    }
    return source;
  }
  return null;
}

/** true / false when the CLIP's source says whether it is FLUX's T5-without-CLIP-G, null when it cannot tell. */
function guessFluxT5(node) {
  const source = clipSource(node);
  if (!source) return false; // unconnected: nothing to pad
  if (NO_T5_SOURCES.has(source.type)) return false;
  if (CLIP_LOADERS.has(source.type)) return T5_CLIP_TYPES.has(String(widgetOf(source, "type")?.value));
  const fileWidget = source.widgets?.find((w) => /ckpt_name|unet_name|model_name/.test(w.name));
  if (fileWidget) return /flux|chroma/i.test(String(fileWidget.value));
  return null;
}

function t5Visibility(node) {
  const known = node.l2sUsesT5;
  const guess = known ?? guessFluxT5(node);
  return { [T5_WIDGET]: guess !== false };
}

function addReport(node, type, [placeholder, minHeight]) {
  const element = document.createElement("div");
  element.className = "l2s-report";
  element.dataset.l2sType = type;
  element.l2sNode = node; // its id is only final once a loaded graph has configured it
  Object.assign(element.style, {
    boxSizing: "border-box", width: "100%", height: "100%", overflow: "auto", padding: "6px 8px",
    whiteSpace: "pre-wrap", wordBreak: "break-word", font: "15px/1.35 ui-monospace, Menlo, Consolas, monospace",
    color: "var(--input-text, #ddd)", background: "var(--comfy-input-bg, #222)", borderRadius: "6px",
    userSelect: "text",
  });
  const show = (text) => {
    element.textContent = text || placeholder;
    element.style.opacity = text ? "1" : "0.6";
  };
  show("");
  const widget = node.addDOMWidget(REPORT, "l2s_report", element, {
    getValue: () => element.dataset.text ?? "",
    setValue: (text) => {
      element.dataset.text = text ?? "";
      show(text);
    },
    getMinHeight: () => minHeight,
    serialize: false,
  });
  widget.serialize = false; // not in widgets_values: saved workflows keep their positional widget values
  return widget;
}

function setup(nodeType, nodeData) {
  const name = nodeData.name;
  const report = REPORT_NODES[name];
  const steer = STEER_NODES.has(name);
  const encode = name === "L2S_SpatialPromptEncode";
  if (!report && !steer) return;

  const refresh = (node, resize) => {
    if (steer) applyVisibility(node, customOnlyVisibility(node), resize);
    if (encode) applyVisibility(node, t5Visibility(node), resize);
  };

  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const result = onNodeCreated?.apply(this, arguments);
    if (report) addReport(this, name, report);
    if (encode) enlargeText(widgetOf(this, "text"));
    const mode = steer ? widgetOf(this, "mode") : null;
    if (mode) {
      const callback = mode.callback;
      const node = this;
      mode.callback = function () {
        const r = callback?.apply(this, arguments);
        refresh(node, true);
        return r;
      };
    }
    if (!app.configuringGraph) refresh(this, true); // a node added by hand; loaded ones wait for their graph
    return result;
  };

  const onAfterGraphConfigured = nodeType.prototype.onAfterGraphConfigured;
  nodeType.prototype.onAfterGraphConfigured = function () {
    const result = onAfterGraphConfigured?.apply(this, arguments);
    refresh(this, false); // the saved size already fits what the graph shows
    return result;
  };

  if (encode) {
    const onConnectionsChange = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const result = onConnectionsChange?.apply(this, arguments);
      if (!app.configuringGraph) {
        this.l2sUsesT5 = undefined;
        refresh(this, true);
      }
      return result;
    };
  }

  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (message) {
    const result = onExecuted?.apply(this, arguments);
    const text = message?.text;
    const widget = widgetOf(this, REPORT);
    if (widget && Array.isArray(text)) widget.value = text.join("\n");
    if (encode && Array.isArray(message?.l2s_t5) && message.l2s_t5.length) {
      this.l2sUsesT5 = Boolean(message.l2s_t5[0]);
      refresh(this, true);
    }
    return result;
  };
}

/** This pack's folder under custom_nodes: ComfyUI serves this file from /extensions/<folder>/. */
const PACK_FOLDER = decodeURIComponent(new URL(import.meta.url).pathname.split("/")[2] ?? "");

/** Sort this pack's entry of GET /workflow_templates by name (numbers in order: 2 before 10). */
function sortOwnTemplates() {
  const fetchTemplates = api.getWorkflowTemplates;
  if (typeof fetchTemplates !== "function" || fetchTemplates.l2sSorted) return;
  const sorted = async function () {
    const templates = await fetchTemplates.apply(this, arguments);
    const own = templates?.[PACK_FOLDER];
    if (Array.isArray(own)) {
      templates[PACK_FOLDER] = [...own].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    }
    return templates;
  };
  sorted.l2sSorted = true;
  api.getWorkflowTemplates = sorted;
}

app.registerExtension({
  name: EXTENSION,
  async setup() {
    sortOwnTemplates();
  },
  loadedGraphNode(node) {
    if (node.properties?.l2s_note) enlargeText(node.widgets?.find((w) => w.element));
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    setup(nodeType, nodeData);
  },
});
