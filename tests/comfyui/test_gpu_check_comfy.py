"""The prepared GPU check (benchmarks/gpu_check.sh) runs end to end on CPU with tiny models in a real ComfyUI.

Two of its runs, tiny and at 128 px: SD2.1 with fp16 weights (cast to fp32 at run time on a CPU, through ComfyUI's
manual-cast layers) and FLUX.1-dev with fp8_e4m3fn weights loaded partially by ComfyUI's low-VRAM loader. Each
measures plain sampling and a steering iteration with recomputation off (memory fast) and on (memory low) through
the pack's own SteeringRun; the summary table and the combined report must come out whole, so that the check cannot
rot between the sessions that have a GPU to run it on.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from comfy_harness import comfyui_path, comfyui_python

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
RUNS = ("sd21_512_fp16", "flux_1024_fp8_lowvram")


@pytest.mark.comfyui
def test_gpu_check_tiny_on_cpu(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT")}
    env.update(COMFYUI_PATH=str(comfyui_path()), PYTHON=comfyui_python(), TMPDIR=str(tmp_path))
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), "--tiny", "--only", ",".join(RUNS), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"gpu_check failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    table = (out / "gpu_check_summary.txt").read_text()
    assert table in done.stdout  # the summary is printed at the end
    runs = {run["label"]: run for run in json.loads((out / "gpu_check_reports.json").read_text())}
    assert set(runs) == set(RUNS)
    for label, run in runs.items():
        assert run["status"] == 0, label
        report = run["report"]
        assert report is not None and not report.get("partial"), label
        assert report["compute_dtype"] == "torch.float32"  # what ComfyUI computes fp16/fp8 weights in on a CPU
        memory = report["memory"]
        assert set(memory) == {"plain", "steer_fast", "steer_low"}
        # the weights cast at run time and every layer's activations are what recomputation does not keep
        assert memory["steer_low"]["growth_bytes"] < memory["steer_fast"]["growth_bytes"], label
        for key in ("plain_forward", "steering_iteration_fast", "steering_iteration_low"):
            assert report["timings"][key]["median_s"] > 0, (label, key)
        assert report["ratios"]["time_low_vs_fast"] > 0
        assert set(report["ratios"]["peak_vs_plain_sampling"]) == {"fast", "low"}
        assert label in table and "ok" in table.split(label, 1)[1].splitlines()[0]
    flux = runs["flux_1024_fp8_lowvram"]["report"]
    assert flux["dtype"] == "fp8_e4m3fn" and flux["vram"] == "lowvram"
    placement = flux["placement"]
    assert placement["partial"] and 0 < placement["loaded_bytes"] < placement["weight_bytes"]
    logs = (out / "gpu_check_logs.txt").read_text()
    assert all(f"===== {label} (exit 0)" in logs for label in RUNS)
