"""Run under ComfyUI's Python: the memory account on the meta device vs the same tracker on real CPU tensors.

Invoked by tests/comfyui/test_memory_account_comfy.py in a separate process (ComfyUI must not share the test process).
Usage:

    COMFYUI_PATH=... $COMFYUI_PYTHON tests/comfy_checks/memory_account_check.py FAMILY RESOLUTION

For the integration tests' tiny model of FAMILY (fp32) it runs the account of benchmarks/memory_account/ for the
three passes (plain sampling, steering without and with recomputation) twice: on the meta device with the
value-free replica of the steering step (what the full-size table uses), and on CPU with random weights and the
pack's real ``SteeringRun.steer`` under the same tracker. It also accounts fp8 weights on the meta device (the
casts ComfyUI's ``manual_cast`` makes) and prints one ``L2S_RESULT {json}`` line; the pytest side compares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    family, resolution = sys.argv[1], int(sys.argv[2])
    sys.path.insert(0, str(REPO / "benchmarks"))
    from memory_account.account import account_pass
    from memory_account.build import build_setup
    from memory_account.comfy_env import import_comfy
    from memory_account.measure import measure_here
    from memory_account.validate import resolve_case

    m = import_comfy()
    arch, resolution = resolve_case(m, f"tiny_{family}:{resolution}")
    result: dict[str, dict[str, object]] = {}
    for attention in ("math", "fused"):
        meta = build_setup(m, arch, resolution, "fp32", "meta")
        predicted = {name: account_pass(meta, name, attention).peak_bytes for name in ("plain", "fast", "low")}
        tracked = measure_here(m, arch, resolution, attention, rss=False)
        result[attention] = {name: {"meta": predicted[name], "cpu": tracked[name]["tracked_bytes"]}
                             for name in predicted}
    fp8 = build_setup(m, arch, resolution, "fp8", "meta")
    result["fp8"] = {name: account_pass(fp8, name, "fused").to_json() for name in ("plain", "fast", "low")}
    result["fp8_weight_bytes"] = {"stored": fp8.weight_bytes}
    print("L2S_RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
