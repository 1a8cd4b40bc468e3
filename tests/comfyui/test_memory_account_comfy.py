"""The memory account (benchmarks/memory_account/) is device-independent: meta-device figures equal real-CPU figures.

The README's GPU memory table is accounted on the meta device with a value-free replica of the steering step. Here
each tiny model (a UNet and a joint-attention family) is accounted both ways by tests/comfy_checks/
memory_account_check.py under ComfyUI's Python: on meta with the replica, and on CPU with random weights and the
pack's real ``SteeringRun.steer`` under the same tracker. The peaks must agree for plain sampling and for steering
with and without recomputation, for both attention models; recomputation must lower the steering peak; with fp8
weights the steering pass without recomputation keeps the compute-dtype weight copies and the one with it does not.
(Measured RSS against the account: ``benchmarks/memory_account.py --validate``, too slow for a test.)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from comfy_harness import comfyui_path, comfyui_python

CHECK = Path(__file__).resolve().parents[1] / "comfy_checks" / "memory_account_check.py"
RESOLUTION = 64
ABSOLUTE_SLACK = 256 * 1024  # bytes: conditioning and bookkeeping tensors that differ between the two runs


def account(family: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(COMFYUI_PATH=str(comfyui_path()), OMP_NUM_THREADS="1")
    run = subprocess.run([comfyui_python(), str(CHECK), family, str(RESOLUTION)], env=env, capture_output=True,
                         text=True, timeout=900)
    lines = [line for line in run.stdout.splitlines() if line.startswith("L2S_RESULT ")]
    assert run.returncode == 0 and lines, f"memory account check failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return json.loads(lines[-1].removeprefix("L2S_RESULT "))


@pytest.mark.comfyui
@pytest.mark.parametrize("family", ["sd1", "flux"])
def test_meta_account_matches_real_cpu_tensors(family: str) -> None:
    result = account(family)
    for attention in ("math", "fused"):
        for name, figures in result[attention].items():
            where = f"{family} {attention} {name}"
            assert abs(figures["meta"] - figures["cpu"]) <= 0.01 * figures["cpu"] + ABSOLUTE_SLACK, where
        assert result[attention]["low"]["meta"] < result[attention]["fast"]["meta"], attention
    for name in ("plain", "fast", "low"):
        assert result["fused"][name]["meta"] <= result["math"][name]["meta"], name  # no attention matrices kept

    fp8 = result["fp8"]
    cast_fast = fp8["fast"]["peak_by_category"].get("cast weights", 0)
    cast_low = fp8["low"]["peak_by_category"].get("cast weights", 0)
    stored = result["fp8_weight_bytes"]["stored"]
    assert cast_fast > stored  # fp32 copies of (almost) every fp8 weight, kept for the backward
    assert cast_low < 0.5 * cast_fast  # recomputation casts them again, one block at a time
