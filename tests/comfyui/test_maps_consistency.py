"""Maps recorded by training/ (diffusers) and captured by the nodes (ComfyUI) agree for the same model and inputs.

A classifier trained on ``python -m training invert`` data only works in ComfyUI if both sides produce the same
classifier input. Each case runs tests/comfy_checks/consistency_check.py under ComfyUI's Python (``COMFYUI_PYTHON``,
which must also have diffusers): it builds one tiny random-weight model of the integration-test pack, converts it to
diffusers with ComfyUI's own key maps, checks that both denoisers give the same output, and compares
``training.recorder.AttentionRecorder.classifier_maps`` with the pack's capture (``nodes.capture`` installed by
``nodes.steering.capture_options``) turned into ``l2s_core.layout.classifier_input``, for the same latent, timestep
and text context, at two latent sizes per family (one of them non-square).

Measured on the reference setup (CPU fp32): SD1 outputs agree to ~1e-6 relative, maps to ~1e-7 absolute; FLUX
outputs to ~7e-7 relative, maps to ~1.4e-7 absolute.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from comfy_harness import comfyui_path, comfyui_python
from comfy_test_pack import tiny_specs

CHECK = Path(__file__).resolve().parents[1] / "comfy_checks" / "consistency_check.py"
MAP_TOLERANCE = 1e-5
OUTPUT_TOLERANCE = {"sd1": 1e-5, "flux": 1e-4}  # max |comfy - diffusers| / max |diffusers|
LAYERS = {"sd1": 16, "flux": 57}


def consistency(family: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COMFYUI_PATH=str(comfyui_path()), OMP_NUM_THREADS="1")
    run = subprocess.run([comfyui_python(), str(CHECK), family], env=env, capture_output=True, text=True,
                         timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("L2S_RESULT ")]
    assert run.returncode == 0 and lines, f"consistency check failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result = json.loads(lines[-1].removeprefix("L2S_RESULT "))
    if "skip" in result:
        pytest.skip(result["skip"])
    return result


@pytest.mark.comfyui
@pytest.mark.parametrize("family", ["sd1", "flux"])
def test_training_recorder_matches_node_capture(family: str) -> None:
    result = consistency(family)
    channels = tiny_specs.cross_attention_channels(family)
    assert channels == {"sd1": 128, "flux": 1368}[family]
    assert result["layout"] == tiny_specs.get_spec(family)["layout"]
    assert len(result["cases"]) == 2
    for case in result["cases"]:
        where = f"{family} latent {case['latent_size']}"
        # The conversion is exact: otherwise a map difference would say nothing about the recorders.
        assert case["output_rel_diff"] <= OUTPUT_TOLERANCE[family], where
        assert case["comfy_shape"] == case["diffusers_shape"] == [2, channels, 16, 16], where
        assert case["same_layer_structure"], f"{where}: layers differ in (grid, heads) or count"
        assert case["layers"] == LAYERS[family], where
        assert case["raw_layer_max_abs_diff"] <= MAP_TOLERANCE, where
        assert case["maps_max_abs_diff"] <= MAP_TOLERANCE, where
        # Controls: the maps carry structure, and the comparison is sharp enough to tell subject from object.
        assert case["maps_spread"] > 1e-4, where
        assert case["swapped_max_abs_diff"] > 100 * MAP_TOLERANCE, where
