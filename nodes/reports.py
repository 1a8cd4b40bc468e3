"""What the pack's nodes report after a run: readable text for people, JSON for programs, in one UI output.

A node's UI output is a dict of lists that ComfyUI sends to the frontend (websocket ``executed``) and keeps in
``/history``. The pack's nodes use these keys:

* ``text``: readable lines. The pack's web extension (``web/learn_to_steer.js``) shows them in a panel on the node;
  the key is the one ComfyUI's own Preview Any uses.
* ``l2s_relations``: Spatial Prompt Encode's parse as a JSON string (a list of {subject, relation, object,
  subject_tokens, object_tokens}).
* ``l2s_t5``: whether that prompt's tokens are FLUX's T5 (then ``t5_length`` acts); the extension shows the widget
  only then.
* ``l2s_trace``: the steering trace summary as a JSON string (:meth:`SteeringTrace.summary`), for scripts and
  tests. A string rather than an object: a non-finite probability stays valid JSON for the browser.

No ComfyUI imports: the formatting is unit-tested without a ComfyUI checkout.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

TEXT_KEY = "text"
RELATIONS_KEY = "l2s_relations"
T5_KEY = "l2s_t5"
TRACE_KEY = "l2s_trace"

RELATION_WORDS = ("to the left of", "to the right of", "above", "below")
"""The canonical relation names, longest first (``l2s_core.relations.SPATIAL_RELATIONS``), to find one in a text."""

STOP_WORDS = {
    "iterations": "",
    "loss_threshold": "official stop",
    "early_stop_probability": "early stop",
    "non_finite_gradient": "stopped: non-finite gradient",
    "no_targets": "nothing to steer",
}
"""How each ``RefineResult.stopped`` value reads in a step line ("" = ran all its iterations)."""


@dataclass(frozen=True)
class ParsedRelation:
    """One relation of a prompt as Spatial Prompt Encode found it."""

    subject: str
    relation: str
    object: str
    subject_tokens: tuple[int, ...]
    object_tokens: tuple[int, ...]


def _tokens(positions: Sequence[int]) -> str:
    return ", ".join(str(p) for p in positions)


def relations_text(relations: Sequence[ParsedRelation]) -> str:
    """The parse, one block per relation::

        parsed: 'blue circle' above 'red square'
        subject:  'blue circle' = tokens 2, 3
        relation: above
        object:   'red square' = tokens 6, 7
    """
    blocks = []
    for index, r in enumerate(relations):
        head = "parsed" if len(relations) == 1 else f"relation {index + 1} of {len(relations)}"
        blocks.append("\n".join([
            f"{head}: {r.subject!r} {r.relation} {r.object!r}",
            f"subject:  {r.subject!r} = tokens {_tokens(r.subject_tokens)}",
            f"relation: {r.relation}",
            f"object:   {r.object!r} = tokens {_tokens(r.object_tokens)}",
        ]))
    return "\n\n".join(blocks)


def relations_report(relations: Sequence[ParsedRelation], uses_t5: bool) -> dict[str, list[Any]]:
    """Spatial Prompt Encode's UI output: the readable parse, the parse as JSON, and whether T5 is in use."""
    return {
        TEXT_KEY: [relations_text(relations)],
        RELATIONS_KEY: [json.dumps([asdict(r) for r in relations])],
        T5_KEY: [bool(uses_t5)],
    }


def text_report(text: str) -> dict[str, list[Any]]:
    """The UI output of a node that only reports readable text (the loaders)."""
    return {TEXT_KEY: [text]}


def _probability(value: Any) -> str:
    """0.126 -> '0.13'; below 0.01 and above 0.99 three decimals ('0.004', '0.997'), so 'almost never' and 'almost
    sure' do not read as a flat 0.00 or 1.00."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if value > 0.99 or value < 0.01 else f"{value:.2f}"


def _pairs(before: Sequence[Any], after: Sequence[Any]) -> str:
    """'0.13 -> 0.92' per sample, ' | ' between the samples of a batch."""
    if not before:
        return "n/a"
    return " | ".join(f"{_probability(b)} -> {_probability(a)}" for b, a in zip(before, after, strict=False))


def relation_word(relations: Sequence[str]) -> str:
    """The relation named in every steered relation ('blue circle above red square' -> 'above'), else 'target'."""
    words = set()
    for text in relations:
        found = next((w for w in RELATION_WORDS if f" {w} " in f" {text} "), None)
        words.add(found)
    return words.pop() if len(words) == 1 and None not in words else "target"


def trace_text(summary: Mapping[str, Any]) -> str:
    """The steering trace in a few readable lines::

        steering: blue circle above red square
        p(above) 0.13 -> 0.997 in 10 of 20 steps, 160 passes
        per step, p(above) before -> after:
        step 0: 0.13 -> 0.92 (16 it)
        step 1: 0.91 -> 0.995 (3 it, early stop)

    followed by the run's notes (memory choice, steps left unsteered and why). The step lines are short, so they
    fit the node's default width without wrapping.
    """
    relations = list(summary.get("relations", []))
    steps = list(summary.get("steps", []))
    p = f"p({relation_word(relations)})"
    lines = [f"steering: {'; '.join(relations) if relations else '(no relation)'}"]
    if steps:
        passes = sum(int(s.get("iterations", 0)) for s in steps)
        first, last = steps[0], steps[-1]
        lines.append(f"{p} {_pairs(first.get('p_before', []), last.get('p_after', []))} in {len(steps)} of "
                     f"{summary.get('num_steps', '?')} steps, {passes} passes")
        lines.append(f"per step, {p} before -> after:")
        for s in steps:
            extra = STOP_WORDS.get(str(s.get("stopped", "")), str(s.get("stopped", "")))
            detail = f"{s.get('iterations', 0)} it" + (f", {extra}" if extra else "")
            lines.append(f"step {s.get('step')}: {_pairs(s.get('p_before', []), s.get('p_after', []))} ({detail})")
    else:
        lines.append("no step was steered")
    lines += [str(note) for note in summary.get("notes", [])]
    return "\n".join(lines)


def trace_report(summary: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The steer node's UI output: the readable trace and the summary as a JSON string."""
    return {TEXT_KEY: [trace_text(summary)], TRACE_KEY: [json.dumps(summary)]}
