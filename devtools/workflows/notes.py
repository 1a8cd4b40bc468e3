"""The text of the examples' Markdown notes: model files, the relation classifier to use, settings."""

from __future__ import annotations

from collections.abc import Sequence

OFFICIAL_REPO = "https://github.com/sapir1779/learn-to-steer"


def note_markdown(title: str, what: str, models: Sequence[str], classifier: Sequence[str],
                  settings: Sequence[str]) -> str:
    """A workflow's note: what it does, the model files, the classifier, the settings, how to write the prompt."""
    lines = [f"## {title}", "", what, "", "**Model files** (into `ComfyUI/models/...`; when they are missing, "
             "ComfyUI's Missing Models dialog offers these downloads)", ""]
    lines += [f"- {m}" for m in models]
    lines += ["", "**Relation classifier** (into `ComfyUI/models/l2s_classifiers/`)", ""]
    lines += [f"- {c}" for c in classifier]
    lines += ["", "**Settings**", ""]
    lines += [f"- {s}" for s in settings]
    lines += ["", "The prompt must name one relation: *above*, *below*, *to the left of*, *to the right of* (or a "
              "synonym). After **Run**, Spatial Prompt Encode shows what it parsed, Learned Spatial Steer the "
              "classifier's probability of the relation before and after each steered step, and Attention Preview "
              "where the two objects attend."]
    return "\n".join(lines) + "\n"


def official_classifier_lines(file: str, model: str) -> list[str]:
    """Where the authors' classifier ``file`` for ``model`` comes from, and its licence."""
    return [
        f"`{file}`: the authors' official classifier for {model}, from the Google Drive folder linked in the README "
        f"of the official repository [sapir1779/learn-to-steer]({OFFICIAL_REPO}). **Non-commercial licence** "
        "(see that repository); this pack loads the `.pth` safely (weights only) and never redistributes it.",
        "Optional: convert it to this pack's format with `python -m l2s_core.convert "
        f"{file} {file.rsplit('.', 1)[0]}.safetensors`.",
    ]


def trained_classifier_lines(file: str, model: str) -> list[str]:
    """For a model without an official classifier: train one and save it as ``file``."""
    return [
        f"`{file}`: **no official classifier exists for {model}.** Train one with this pack's training CLI "
        "(`python -m training --help`, code in the pack's `training/` folder) and save it under this name; until "
        "then this workflow cannot run.",
    ]


STEER_DEFAULTS = ("`mode` official = the published steering of the classifier's family, scaled to your step count; "
                  "`fast` and `quality` make larger, fixed-size updates (`fast` stops a step once the classifier reads "
                  "the relation with p >= 0.9: about a tenth of the passes; `quality` spends all of official's "
                  "passes; on the toy world both are more accurate than official, fast at least as accurate as "
                  "quality), `off` samples without steering. "
                  "`custom` shows four numbers below the mode (steered steps, step size, iterations, early stop p), "
                  "starting at the official values of this graph; the other modes ignore them.")
