"""Tests for nodes/reports.py: the readable text and the JSON the pack's nodes report after a run.

No ComfyUI is needed: the module formats plain data (a parse, a trace summary as SteeringTrace.summary() writes it).
"""

from __future__ import annotations

import json
import math

from devtools.pack_loader import load_pack_module

reports = load_pack_module("nodes.reports")

BLUE_ABOVE_RED = reports.ParsedRelation("blue circle", "above", "red square", (2, 3), (6, 7))


def _summary(steps: list[dict], relations: tuple[str, ...] = ("blue circle above red square",),
             notes: tuple[str, ...] = ()) -> dict:
    return {"relations": list(relations), "num_steps": 20, "full_steps": 20, "offset": 0, "notes": list(notes),
            "steps": steps}


def _step(step: int, before: list[float], after: list[float], iterations: int = 16, stopped: str = "iterations"):
    return {"step": step, "classifier_step": step, "iterations": iterations, "stopped": stopped,
            "p_before": before, "p_after": after}


def test_the_parse_names_subject_relation_object_and_their_tokens() -> None:
    text = reports.relations_text([BLUE_ABOVE_RED])
    assert text.splitlines() == [
        "parsed: 'blue circle' above 'red square'",
        "subject:  'blue circle' = tokens 2, 3",
        "relation: above",
        "object:   'red square' = tokens 6, 7",
    ]


def test_several_relations_are_numbered_blocks() -> None:
    second = reports.ParsedRelation("cat", "to the left of", "dog", (10,), (14,))
    text = reports.relations_text([BLUE_ABOVE_RED, second])
    blocks = text.split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        "relation 1 of 2: 'blue circle' above 'red square'", "relation 2 of 2: 'cat' to the left of 'dog'"]


def test_the_parse_report_carries_json_and_the_t5_flag() -> None:
    ui = reports.relations_report([BLUE_ABOVE_RED], uses_t5=False)
    assert set(ui) == {"text", "l2s_relations", "l2s_t5"} and all(isinstance(v, list) for v in ui.values())
    assert json.loads(ui["l2s_relations"][0]) == [{"subject": "blue circle", "relation": "above",
                                                   "object": "red square", "subject_tokens": [2, 3],
                                                   "object_tokens": [6, 7]}]
    assert ui["l2s_t5"] == [False] and reports.relations_report([], uses_t5=True)["l2s_t5"] == [True]


def test_the_trace_reads_per_step_before_and_after() -> None:
    summary = _summary([_step(0, [0.126], [0.923]), _step(1, [0.91], [0.9971], iterations=3,
                                                         stopped="early_stop_probability")],
                       notes=("memory fast: keeping activations",))
    assert reports.trace_text(summary).splitlines() == [
        "steering: blue circle above red square",
        "p(above) 0.13 -> 0.997 in 2 of 20 steps, 19 passes",
        "per step, p(above) before -> after:",
        "step 0: 0.13 -> 0.92 (16 it)",
        "step 1: 0.91 -> 0.997 (3 it, early stop)",
        "memory fast: keeping activations",
    ]


def test_a_batch_shows_each_sample_and_non_finite_values_say_so() -> None:
    summary = _summary([_step(0, [0.1, math.nan], [0.004, 0.6], stopped="loss_threshold")])
    assert reports.trace_text(summary).splitlines()[3] == "step 0: 0.10 -> 0.004 | n/a -> 0.60 (16 it, official stop)"


def test_mixed_or_unknown_relations_read_as_the_target() -> None:
    assert reports.relation_word(["a to the left of b"]) == "to the left of"
    assert reports.relation_word(["a above b", "c below d"]) == "target"
    assert reports.relation_word(["a near b"]) == "target"
    assert reports.relation_word([]) == "target"


def test_nothing_steered_says_so_and_the_json_round_trips() -> None:
    summary = _summary([], notes=("mode off",))
    ui = reports.trace_report(summary)
    assert ui["text"][0].splitlines() == ["steering: blue circle above red square", "no step was steered", "mode off"]
    assert json.loads(ui["l2s_trace"][0]) == summary
    assert reports.text_report("a\nb") == {"text": ["a\nb"]}
