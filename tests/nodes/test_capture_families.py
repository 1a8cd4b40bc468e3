"""Attention capture in real ComfyUI models of every family: channel count, channel layout, and map sums.

Each case runs tests/comfy_checks/capture_check.py under ComfyUI's Python (a separate process) on a tiny random
model of the family and checks what the pack captured against tests/comfy_test_pack/tiny_specs.py:

* channel count and per-layer (grid, heads) in call order, as the l2s_core layout expects;
* the text softmax: averaged over ALL text tokens, every map is exactly 1/T per pixel - over all 77 CLIP tokens for
  UNets, over the text keys only (not the image keys) for joint-attention models;
* the classifier input is renormalised to sum 1 per map when grids are resized, and left raw when the model's single
  token grid already equals the classifier's 16x16 (FLUX at 256 px, as FLUX-schnell was trained).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from comfy_harness import comfyui_path, comfyui_python
from comfy_test_pack import tiny_specs

CHECK = Path(__file__).resolve().parents[1] / "comfy_checks" / "capture_check.py"


def captured(family: str, side: int = 64) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COMFYUI_PATH=str(comfyui_path()), OMP_NUM_THREADS="1")
    run = subprocess.run([comfyui_python(), str(CHECK), family, str(side)], env=env, capture_output=True, text=True,
                         timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("L2S_RESULT ")]
    assert run.returncode == 0 and lines, f"capture check failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("L2S_RESULT "))


@pytest.mark.comfyui
@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sd3", "flux"])
def test_capture_layout_and_sums(family: str) -> None:
    side = 64
    result = captured(family, side)
    spec = tiny_specs.get_spec(family)
    assert result["channels"] == tiny_specs.cross_attention_channels(family)
    layers = result["layers"]
    if spec["layout"] == tiny_specs.UNET:
        latent_side = side // 8
        expected = [([math.ceil(latent_side / 2 ** x["level"])] * 2, x["heads"])
                    for x in tiny_specs.unet_attention_layers(family)]
        assert [(layer["grid"], layer["heads"]) for layer in layers] == expected
        assert result["text_length"] == 77
    else:
        joint = tiny_specs.joint_attention_layers(family)
        grid = side // 16
        assert [(layer["grid"], layer["heads"]) for layer in layers] == [([grid, grid], x["heads"]) for x in joint]
        assert result["text_length"] == (512 if family == "flux" else tiny_specs.text_tokens(family))
    inverse = 1.0 / result["text_length"]
    for layer in layers:
        assert layer["mean_over_all_tokens_min"] == pytest.approx(inverse, rel=1e-4)
        assert layer["mean_over_all_tokens_max"] == pytest.approx(inverse, rel=1e-4)
    assert all(s == pytest.approx(1.0, abs=1e-4) for s in result["map_sums"])  # resized -> renormalised


@pytest.mark.comfyui
def test_flux_at_its_native_grid_keeps_raw_probabilities() -> None:
    result = captured("flux", 256)  # 32x32 latent -> 16x16 tokens: the classifier's own grid, no resize
    assert all(layer["grid"] == [16, 16] for layer in result["layers"])
    raw = result["raw_layer_sums"]  # per layer, mean over heads of a map's spatial sum
    sums = result["map_sums"]
    assert not all(s == pytest.approx(1.0, abs=1e-3) for s in sums), "raw maps must not be renormalised"
    heads = result["layers"][0]["heads"]
    subject_sums = sums[: len(raw) * heads]
    per_layer = [sum(subject_sums[i * heads:(i + 1) * heads]) / heads for i in range(len(raw))]
    assert per_layer == pytest.approx(raw, rel=1e-4)
