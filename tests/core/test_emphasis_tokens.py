"""Weighted prompts through ComfyUI's real tokenizers (SD1, SD2, SDXL, SD3, FLUX; tests marked ``comfyui``).

Runs tests/comfy_checks/emphasis_check.py under ComfyUI's Python: the pack's token lookup on each weighted prompt and
on the same prompt without weights, with ComfyUI's bundled tokenizer files (no model weights), and ComfyUI's own
``token_weights`` next to :func:`l2s_core.emphasis.emphasis_segments` on random prompts.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from comfy_harness import comfyui_path, comfyui_python

CHECK = Path(__file__).resolve().parents[1] / "comfy_checks" / "emphasis_check.py"
FAMILIES = ("sd1", "sd2", "sdxl", "sd3", "flux")

# (weighted prompt, the same prompt without emphasis, subject weight, object weight)
PAIRS: list[tuple[str, str, float, float]] = [
    ("a (blue circle:1.5) above a red square", "a blue circle above a red square", 1.5, 1.0),
    ("a blue circle (above:1.3) a red square", "a blue circle above a red square", 1.0, 1.0),
    ("((blue circle)) above ((a red square))", "blue circle above a red square", 1.21, 1.21),
    ("a(blue circle)above(a red square:0.8)", "a blue circle above a red square", 1.1, 0.8),
    ("a photo of (a dog:1.2) (to the left of:0.9) a (teddy bear:1.3)", "a photo of a dog to the left of a teddy bear",
     1.2, 1.3),
    ("a (fire hydrant:1.4) , (right of:1.1) a stop sign", "a fire hydrant , right of a stop sign", 1.4, 1.0),
]
# T5 gives a segment that starts with punctuation its own "▁" piece, so here the weighted prompt has one token more
# than its plain text; the phrases must still be found on their own tokens, with their weights.
SHIFTED = ("a (fire hydrant:1.4), (right of:1.1) a (stop sign:1.2)", 1.4, 1.2)
ESCAPED = "a \\(small\\) dog to the left of a cat"


def _fuzz_prompts(count: int = 400) -> list[str]:
    rng = random.Random(11)
    pieces = ["a", "cat", " ", "(", ")", ":", "1.5", "0.8", "\\(", "\\)", "\\", "dog ", "x", "::", "1e1"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 16))) for _ in range(count)]


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if comfyui_path() is None:
        pytest.skip("COMFYUI_PATH is not set")
    prompts = tmp_path_factory.mktemp("emphasis") / "prompts.json"
    pairs = [[w, p] for w, p, _, _ in PAIRS] + [[ESCAPED, ESCAPED], [SHIFTED[0], SHIFTED[0]]]
    prompts.write_text(json.dumps({"pairs": pairs, "fuzz": _fuzz_prompts()}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COMFYUI_PATH=str(comfyui_path()), OMP_NUM_THREADS="1")
    run = subprocess.run([comfyui_python(), str(CHECK), str(prompts)], env=env, capture_output=True, text=True,
                         timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("L2S_RESULT ")]
    assert run.returncode == 0 and lines, f"emphasis check failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("L2S_RESULT "))


@pytest.mark.comfyui
@pytest.mark.parametrize("family", FAMILIES)
def test_weighted_phrases_sit_where_the_plain_ones_do(check: dict[str, Any], family: str) -> None:
    cases = check["families"][family]
    for (weighted_text, plain_text, subject_weight, object_weight), case in zip(PAIRS, cases, strict=False):
        weighted, plain = case["weighted"], case["plain"]
        assert "error" not in weighted, (weighted_text, weighted)
        assert "error" not in plain, (plain_text, plain)
        assert weighted["encoder"] == ("t5xxl" if family == "flux" else ("h" if family == "sd2" else "l"))
        for w, p in zip(weighted["triplets"], plain["triplets"], strict=True):
            assert (w["subject"], w["relation"], w["object"]) == (p["subject"], p["relation"], p["object"])
            for role, weight in (("subject", subject_weight), ("object", object_weight)):
                assert w[f"{role}_positions"] == p[f"{role}_positions"], (weighted_text, role)
                assert w[f"{role}_ids"] == w[f"{role}_alone_ids"], (weighted_text, role)  # the phrase's own tokens
                assert w[f"{role}_weights"] == pytest.approx([weight] * len(w[f"{role}_ids"])), (weighted_text, role)


@pytest.mark.comfyui
@pytest.mark.parametrize("family", FAMILIES)
def test_weighted_phrases_after_a_punctuation_segment(check: dict[str, Any], family: str) -> None:
    (triplet,) = check["families"][family][len(PAIRS) + 1]["weighted"]["triplets"]
    assert (triplet["subject"], triplet["relation"], triplet["object"]) == ("fire hydrant", "to the right of",
                                                                           "stop sign")
    for role, weight in (("subject", SHIFTED[1]), ("object", SHIFTED[2])):
        assert triplet[f"{role}_ids"] == triplet[f"{role}_alone_ids"], role
        assert triplet[f"{role}_weights"] == pytest.approx([weight] * len(triplet[f"{role}_ids"])), role


@pytest.mark.comfyui
@pytest.mark.parametrize("family", FAMILIES)
def test_escaped_parentheses_are_text_not_weights(check: dict[str, Any], family: str) -> None:
    result = check["families"][family][len(PAIRS)]["weighted"]
    (triplet,) = result["triplets"]
    assert (triplet["subject"], triplet["object"]) == ("dog", "cat")
    assert triplet["subject_weights"] == [1.0] and triplet["subject_ids"] == triplet["subject_alone_ids"]
    first = 0 if family == "flux" else 1
    assert triplet["subject_positions"][0] > first + 3  # "a", "(", "small", ")" come before "dog"


@pytest.mark.comfyui
def test_segments_match_comfyui_token_weights(check: dict[str, Any]) -> None:
    fuzz = check["fuzz"]
    assert len(fuzz) == 400 and sum(len(f["comfy"]) > 1 for f in fuzz) > 100  # many prompts really use the syntax
    mismatches = [f for f in fuzz if f["comfy"] != f["ours"]]
    assert mismatches == [], mismatches[:5]
