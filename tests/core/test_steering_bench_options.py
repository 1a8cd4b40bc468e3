"""The steering benchmark's device-independent parts: its options, the report's ratios, the GPU check's summary table.

The measured runs need ComfyUI (tests/comfyui/test_gpu_check_comfy.py runs them, tiny, on CPU); these pin what the
GPU check's table and verdicts are made of, so that a run on a lent GPU cannot print a wrong summary.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks.steering_bench import report, summary
from benchmarks.steering_bench.cli import parse_args
from benchmarks.steering_bench.loading import GIB, Placement


def test_memory_option_takes_a_list_of_the_node_inputs() -> None:
    args = parse_args(["--memory", "fast,low", "--dtype", "fp8_e4m3fn", "--vram", "lowvram", "--lean"])
    assert args.memory == ("fast", "low")
    assert args.dtype == "fp8_e4m3fn" and args.vram == "lowvram" and args.lean
    assert parse_args([]).memory == ("auto",)  # the node's default


@pytest.mark.parametrize("argv", [["--memory", "fast,tiny"], ["--memory", "low,low"], ["--memory", ""],
                                  ["--card-gib", "12"], ["--vram", "lowvram", "--card-gib", "-1"],
                                  ["--dtype", "fp4"]])
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_placement_says_what_streams() -> None:
    assert Placement("normal", 2 * GIB, 2 * GIB, False).describe() == "normal: all 2.00 GiB of weights on the device"
    text = Placement("lowvram", 12 * GIB, 6 * GIB, True, 12.0).describe()
    assert text.startswith("lowvram (as a 12 GiB card): 6.00 of 12.00 GiB") and "streamed" in text


def _memory(baseline: int, growth: int, oom: bool = False) -> dict[str, Any]:
    return {"baseline_bytes": baseline, "growth_bytes": growth, "oom": oom}


def _timing(median: float | None) -> dict[str, Any]:
    return {"median_s": median, "min_s": median, "times_s": [] if median is None else [median], "oom": median is None}


def test_report_ratios_of_recomputation() -> None:
    args = argparse.Namespace(memory=("fast", "low"), device="cuda", repeats=2, warmup=1, clock="wall")
    memory = {"plain": _memory(10 * GIB, 2 * GIB), "steer_fast": _memory(10 * GIB, 20 * GIB, oom=True),
              "steer_low": _memory(10 * GIB, 4 * GIB)}
    timings = {"plain_forward": _timing(1.0), "steering_iteration_fast": _timing(3.0),
               "steering_iteration_low": _timing(4.0)}
    result: dict[str, Any] = {"ratios": {}}
    time_lines = report.timing_lines(result, timings, args, "attention_pytorch")
    memory_lines = report.memory_lines(result, memory, args)
    ratios = result["ratios"]
    assert ratios["time_low_vs_fast"] == pytest.approx(4 / 3)
    assert ratios["time_vs_plain_forward"] == {"fast": pytest.approx(3.0), "low": pytest.approx(4.0)}
    assert ratios["peak_vs_plain_sampling"] == {"fast": pytest.approx(30 / 12), "low": pytest.approx(14 / 12)}
    assert ratios["peak_low_vs_fast"] == pytest.approx(14 / 30)
    assert any("low)/(2, fast) = 1.33x" in line and "PASS" in line for line in time_lines)
    assert any("(a, low)/(p)" in line and "PASS" in line for line in memory_lines)
    assert any("(a, fast)/(p)" in line and "MISS" in line and "lower bound" in line for line in memory_lines)


def test_report_survives_a_steering_pass_that_ran_out_of_memory() -> None:
    args = argparse.Namespace(memory=("fast", "low"), device="cuda", repeats=2, warmup=1, clock="wall")
    timings = {"plain_forward": _timing(1.0), "steering_iteration_fast": _timing(None),
               "steering_iteration_low": _timing(4.0)}
    result: dict[str, Any] = {"ratios": {}}
    lines = report.timing_lines(result, timings, args, "attention_pytorch")
    assert "time_low_vs_fast" not in result["ratios"]
    assert any("memory fast" in line and "OOM" in line for line in lines)


def _report(peaks: dict[str, tuple[int, bool]], times: dict[str, float | None], partial: bool = False,
            placement: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "device_name": "cuda:0 (Test GPU)",
        "memory": {mode: _memory(GIB, peak - GIB, oom) for mode, (peak, oom) in peaks.items()},
        "timings": {key: _timing(value) for key, value in times.items()},
        "placement": placement or {"vram": "normal", "weight_bytes": GIB, "loaded_bytes": GIB, "partial": False},
        **({"partial": True} if partial else {}),
    }


def test_summary_table_rows(tmp_path: Path) -> None:
    complete = _report({"plain": (10 * GIB, False), "steer_fast": (14 * GIB, False), "steer_low": (12 * GIB, False)},
                       {"plain_forward": 0.5, "steering_iteration_fast": 1.5, "steering_iteration_low": 1.8})
    oom = _report({"plain": (20 * GIB, False), "steer_fast": (80 * GIB, True), "steer_low": (25 * GIB, False)},
                  {}, partial=True,
                  placement={"vram": "lowvram", "weight_bytes": 12 * GIB, "loaded_bytes": 6 * GIB, "partial": True,
                             "card_gib": 24.0})
    (tmp_path / "a.json").write_text(json.dumps(complete))
    (tmp_path / "b.json").write_text(json.dumps(oom))
    status = tmp_path / "status.tsv"
    status.write_text(f"sd21\t0\t41\t{tmp_path / 'a.json'}\nflux\t124\t105\t{tmp_path / 'b.json'}\n"
                      f"sdxl\t1\t9\t{tmp_path / 'missing.json'}\nsd3\t-1\t0\t{tmp_path / 'none.json'}\n")
    runs = summary.read_runs(status)
    rows = {run.label: summary.row(run) for run in runs}
    header = summary.HEADER
    sd21 = dict(zip(header, rows["sd21"], strict=True))
    assert sd21["plain peak"] == "10.00" and sd21["fast/plain"] == "1.40x MISS" and sd21["low/plain"] == "1.20x ok"
    assert sd21["low/fast time"] == "1.20x ok" and sd21["status"] == "ok"
    flux = dict(zip(header, rows["flux"], strict=True))
    assert flux["weights GiB"] == "6.00/12.00" and flux["fast peak"] == ">80.00 OOM"
    assert flux["fast/plain"] == ">4.00x MISS" and flux["status"] == "TIMEOUT, memory only"
    sdxl = dict(zip(header, rows["sdxl"], strict=True))
    assert sdxl["status"] == "FAILED (exit 1), no report" and sdxl["plain peak"] == "-"
    assert rows["sd3"][-1] == "skipped: no time left"
    text = summary.table(runs)
    assert "Test GPU" in text and text.count("\n") == len(runs) + 4
    assert text.splitlines()[-1] == ("flux, as a 24 GiB card: plain 20.00 GiB fits; fast >80.00 OOM GiB does NOT fit; "
                                     "low 25.00 GiB does NOT fit")

    summary.main([str(status), "--quiet", "--text", str(tmp_path / "s.txt"), "--json", str(tmp_path / "all.json")])
    assert (tmp_path / "s.txt").read_text().strip() == text
    assert [r["label"] for r in json.loads((tmp_path / "all.json").read_text())] == ["sd21", "flux", "sdxl", "sd3"]


def test_gpu_check_script_parses_and_documents_its_setup() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
    text = script.read_text()
    for needed in ("COMFYUI_PATH", "PYTHON", "--tiny", "--check-setup", "timeout", "GPU_CHECK_WHEELS",
                   "sd21_512_fp16", "sdxl_1024_fp16", "flux_1024_bf16", "flux_1024_fp8", "--vram lowvram"):
        assert needed in text
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
