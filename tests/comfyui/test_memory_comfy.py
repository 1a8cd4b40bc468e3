"""The ``memory`` input in a real headless ComfyUI: recomputing blocks changes nothing but memory.

Tiny random-weight models of each layout family (fp32, CPU): the steered latent with per-block recomputation
(``low``) equals the one without (``fast``) to 1e-6, and ``auto`` says in the trace what it chose and why.
"""

from __future__ import annotations

import pytest
from comfy_harness import ComfyServer
from test_nodes_integration import latent, steer_prompt, trace_summary, write_classifier

comfyui = pytest.mark.comfyui


@comfyui
@pytest.mark.parametrize("family", ["sd1", "sdxl", "sd3", "flux"])
def test_recomputation_gives_the_same_latent(comfy_server: ComfyServer, family: str) -> None:
    name = write_classifier(comfy_server.classifier_dir, f"memory_{family}", family)
    traces = {}
    for mode in ("fast", "low", "auto"):
        entry = comfy_server.submit(steer_prompt(family, name, f"memory_{family}_{mode}", memory=mode,
                                                 iterations=3, step_size=50.0))
        traces[mode] = trace_summary(entry)
    comfy_server.submit(steer_prompt(family, name, f"memory_{family}_off", last_steered_step=0))
    fast, low, auto, off = (latent(comfy_server, f"memory_{family}_{m}") for m in ("fast", "low", "auto", "off"))
    tolerance = 1e-6 * max(1.0, float(fast.abs().max()))
    assert (fast - low).abs().max() <= tolerance
    assert (fast - auto).abs().max() <= tolerance
    assert (fast - off).abs().max() > 100 * tolerance  # steering moved the latent: the agreement is not trivial
    assert any(n.startswith("memory fast: keeping activations") for n in traces["fast"]["notes"])
    assert any(n.startswith("memory low: recomputing blocks") for n in traces["low"]["notes"])
    auto_note = next(n for n in traces["auto"]["notes"] if n.startswith("memory auto:"))
    assert "GiB free" in auto_note  # the count and the free memory it compared
    # every mode read the same probabilities
    for mode in ("low", "auto"):
        for mine, reference in zip(traces[mode]["steps"], traces["fast"]["steps"], strict=True):
            assert mine["p_after"] == pytest.approx(reference["p_after"], abs=1e-5)


@comfyui
def test_unknown_memory_mode_is_refused_before_sampling(comfy_server: ComfyServer) -> None:
    name = write_classifier(comfy_server.classifier_dir, "memory_bad", "sd1")
    message = comfy_server.run_error(steer_prompt("sd1", name, "memory_bad", memory="tiny"))
    assert "memory" in message and "tiny" in message
