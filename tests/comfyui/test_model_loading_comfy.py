"""Steering works with the ways people load models, in a real headless ComfyUI (tiny random-weight models, CPU).

Every case loads a tiny denoiser the way users load big ones and runs, on clones of that one loaded MODEL: a plain
KSampler run, the steering node with ``memory`` fast and with ``memory`` low, and a plain run again. Each of the three
stages goes through its own ``L2STest_Probe`` clone, which logs how the weights are held at every denoiser call (so
the test sees that the loading path really is the one in use during the steering forwards) and makes ComfyUI run the
second plain run again instead of answering it from its cache. Checked each time:

* steering runs and moves the latent away from the plain one, and every latent is finite;
* ``memory=low`` (per-block recomputation) gives the latent of ``memory=fast`` to 1e-6;
* the plain run after steering is byte-identical to the plain run before it, so nothing the user owns (weights,
  patches, the low-VRAM state of the modules) was changed;
* where a LoRA is loaded, it changes the plain result (the case is not vacuous).

The cases: UNETLoader with ``weight_dtype`` fp8_e4m3fn / fp8_e5m2 (weights stored in fp8 and cast per forward by
``comfy.ops.manual_cast``); a LoRA (LoraLoaderModelOnly, a LoRA file written here for the tiny model's keys); a
partially loaded model (ComfyUI's low-VRAM path: ``comfy_cast_weights`` modules, a LoRA applied by
``weight_function``s), forced on the CPU by ``L2STest_PartialLoad`` with half the weight bytes (a card short of
memory) and with none (``--novram``'s budget); GGUF files (Q8_0 / F16 / F32) through city96's ComfyUI-GGUF
``UnetLoaderGGUF``, also with a LoRA and partially loaded.

``--lowvram`` and ``--novram`` themselves need a GPU: ComfyUI refuses them together with ``--cpu``, and on a CPU it
never loads a model partially. :func:`test_low_vram_flags_on_a_gpu` starts servers with them where ComfyUI's Python
sees CUDA and is skipped (one line) elsewhere; the partial-load cases cover the same code path on the CPU.

The tiny diffusion-model files come from ``L2STest_WriteTinyDiffusionModel`` (tests/comfy_test_pack/tiny_files.py,
which also says how ComfyUI's model detection learns the tiny sizes). GGUF needs the ComfyUI-GGUF pack
(``COMFYUI_GGUF_PATH``, or ComfyUI's own ``custom_nodes/ComfyUI-GGUF``) and the ``gguf`` package in ComfyUI's Python;
without them the GGUF tests are skipped with one line saying how to enable them.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_harness import ComfyServer, comfyui_path, comfyui_python
from safetensors import safe_open
from safetensors.torch import save_file
from test_nodes_integration import latent, plain_prompt, steer_prompt, trace_summary, write_classifier

logger = logging.getLogger(__name__)

comfyui = pytest.mark.comfyui

GGUF_PATH_ENV = "COMFYUI_GGUF_PATH"
GGUF_PACK_NAME = "ComfyUI-GGUF"
PROBE_PREFIX = "L2STEST-PROBE "
LORA_RANK = 2


# ---------------------------------------------------------------------------------------------------- the pack


def gguf_pack_path() -> Path | None:
    """The ComfyUI-GGUF checkout: ``COMFYUI_GGUF_PATH``, else ``<COMFYUI_PATH>/custom_nodes/ComfyUI-GGUF``."""
    value = os.environ.get(GGUF_PATH_ENV, "").strip()
    candidates = [Path(value).expanduser()] if value else []
    comfy = comfyui_path()
    if comfy is not None:
        candidates.append(comfy / "custom_nodes" / GGUF_PACK_NAME)
    return next((p.resolve() for p in candidates if (p / "nodes.py").is_file() and (p / "loader.py").is_file()), None)


def gguf_skip_reason() -> str | None:
    """Why the GGUF test cannot run here (one line with the fix), or None when it can."""
    if gguf_pack_path() is None:
        return (f"ComfyUI-GGUF not found: set {GGUF_PATH_ENV} to a checkout of github.com/city96/ComfyUI-GGUF (or put "
                f"it in ComfyUI's custom_nodes) to run the GGUF test")
    check = subprocess.run([comfyui_python(), "-c", "import gguf"], capture_output=True, check=False)
    if check.returncode != 0:
        return f"the gguf package is missing in ComfyUI's Python ({comfyui_python()}): pip install gguf there"
    return None


# ------------------------------------------------------------------------------------------------ the prompts


@dataclass(frozen=True)
class Loading:
    """How one case loads its MODEL.

    Attributes:
        family: Tiny-model family (``tests/comfy_test_pack/tiny_specs.py``).
        loader: ``"tiny"`` (the test pack's in-memory model), ``"unet"`` (UNETLoader) or ``"gguf"`` (UnetLoaderGGUF).
        seed: Weight seed; a case that must not share ComfyUI's loaded copy with another case uses its own seed.
        weight_dtype: UNETLoader's ``weight_dtype``.
        lora: LoRA file name in ``models/loras`` (LoraLoaderModelOnly, strength 1), or None.
        loaded_share: Share of the weight bytes ComfyUI loads regularly (``L2STest_PartialLoad``), or None: full load.
    """

    family: str
    loader: str = "tiny"
    seed: int = 0
    weight_dtype: str = "default"
    lora: str | None = None
    loaded_share: float | None = None

    @property
    def file_name(self) -> str:
        """The tiny diffusion-model file the loader reads."""
        return f"l2s_tiny_{self.family}_{self.seed}.{'gguf' if self.loader == 'gguf' else 'safetensors'}"


def model_nodes(loading: Loading, tag: str) -> tuple[dict[str, Any], list[Any]]:
    """The nodes that load the MODEL of ``loading`` and wrap it in a probe tagged ``tag``; and the MODEL's link."""
    nodes: dict[str, Any] = {}
    if loading.loader == "tiny":
        nodes["m1"] = {"class_type": "L2STest_TinyModel", "inputs": {"family": loading.family, "seed": loading.seed}}
    elif loading.loader == "unet":
        nodes["m1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": loading.file_name,
                                                             "weight_dtype": loading.weight_dtype}}
    elif loading.loader == "gguf":
        nodes["m1"] = {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": loading.file_name}}
    else:
        raise ValueError(f"unknown loader {loading.loader!r}")
    model: list[Any] = ["m1", 0]
    if loading.lora is not None:
        nodes["m2"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": loading.lora,
                                                                      "strength_model": 1.0}}
        model = ["m2", 0]
    nodes["m3"] = {"class_type": "L2STest_Probe", "inputs": {"model": model, "tag": tag}}
    model = ["m3", 0]
    if loading.loaded_share is not None:  # after the probe's clone: GGUF's clone would drop the partial loading
        nodes["m4"] = {"class_type": "L2STest_PartialLoad", "inputs": {"model": model,
                                                                      "loaded_share": loading.loaded_share}}
        model = ["m4", 0]
    return nodes, model


def with_model(prompt: dict[str, Any], loading: Loading, tag: str) -> dict[str, Any]:
    """``prompt`` (a graph of test_nodes_integration) with its sampler's MODEL loaded as ``loading`` says."""
    nodes, model = model_nodes(loading, tag)
    prompt = {**prompt, **nodes}
    prompt["6"] = {**prompt["6"], "inputs": {**prompt["6"]["inputs"], "model": model}}
    return prompt


def write_file_prompt(family: str, seed: int, file_format: str) -> dict[str, Any]:
    """A prompt that writes a tiny diffusion-model file (``L2STest_WriteTinyDiffusionModel``)."""
    return {"w": {"class_type": "L2STest_WriteTinyDiffusionModel",
                  "inputs": {"family": family, "seed": seed, "format": file_format}}}


def write_model_file(server: ComfyServer, family: str, seed: int, file_format: str) -> dict[str, Any]:
    """Have the server write a tiny diffusion-model file; returns what the node reported (name, path, types)."""
    entry = server.submit(write_file_prompt(family, seed, file_format))
    return json.loads(entry["outputs"]["w"]["text"][0])


def write_lora(server: ComfyServer, model_file: Path, name: str, seed: int = 0) -> str:
    """Write a random rank-2 LoRA for every linear weight of a tiny diffusion-model file into ``models/loras``.

    Keys follow ComfyUI's plain LoRA format (``diffusion_model.<module>.lora_up.weight`` / ``.lora_down.weight`` /
    ``.alpha``), which LoraLoaderModelOnly maps onto the model's weights. Returns the file name.
    """
    assert server.base_dir is not None
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(model_file), framework="pt") as handle:
        for key in handle.keys():
            shape = handle.get_slice(key).get_shape()
            if not key.endswith(".weight") or len(shape) != 2:
                continue
            module = f"diffusion_model.{key.removesuffix('.weight')}"
            out_features, in_features = shape
            tensors[f"{module}.lora_up.weight"] = torch.randn(out_features, LORA_RANK, generator=generator) * 0.5
            tensors[f"{module}.lora_down.weight"] = (torch.randn(LORA_RANK, in_features, generator=generator)
                                                     * in_features ** -0.5)
            tensors[f"{module}.alpha"] = torch.tensor(float(LORA_RANK))
    folder = server.base_dir / "models" / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    return f"{name}.safetensors"


def probes(server: ComfyServer, tag: str) -> list[dict[str, Any]]:
    """Every ``L2STEST-PROBE`` record the server logged for ``tag``, in call order."""
    found = []
    for line in server.log_text().splitlines():
        _, marker, payload = line.partition(PROBE_PREFIX)
        if marker:
            record = json.loads(payload)
            if record["tag"] == tag:
                found.append(record)
    return found


# -------------------------------------------------------------------------------------------------- one case


@dataclass(frozen=True)
class CaseResult:
    """What one case produced: the four latents, the probe records of the steering forwards (gradients on) and of the
    two plain runs, and the steering traces per memory mode."""

    plain_before: torch.Tensor
    fast: torch.Tensor
    low: torch.Tensor
    plain_after: torch.Tensor
    steering_probes: list[dict[str, Any]]
    plain_probes: list[dict[str, Any]]
    traces: dict[str, dict[str, Any]]


def run_case(server: ComfyServer, loading: Loading, name: str, classifier: str) -> CaseResult:
    """Plain run, steering with memory fast and low, plain run again; all on clones of one loaded MODEL.

    Each of the three stages has its own probe clone (tag), so the records say which stage they come from and the
    second plain run is not answered from ComfyUI's cache. Steering: one steered step of two iterations.
    """
    server.submit(with_model(plain_prompt(loading.family, f"{name}_plain_before"), loading, f"{name}_plain_before"))
    traces = {}
    for memory in ("fast", "low"):
        entry = server.submit(with_model(steer_prompt(loading.family, classifier, f"{name}_{memory}", iterations=2,
                                                      last_steered_step=1, step_size=50.0, memory=memory),
                                         loading, f"{name}_steer"))
        traces[memory] = trace_summary(entry)
    server.submit(with_model(plain_prompt(loading.family, f"{name}_plain_after"), loading, f"{name}_plain_after"))
    return CaseResult(
        plain_before=latent(server, f"{name}_plain_before"), fast=latent(server, f"{name}_fast"),
        low=latent(server, f"{name}_low"), plain_after=latent(server, f"{name}_plain_after"),
        steering_probes=[r for r in probes(server, f"{name}_steer") if r["grad"]],
        plain_probes=probes(server, f"{name}_plain_before") + probes(server, f"{name}_plain_after"),
        traces=traces,
    )


def assert_steering_is_safe(result: CaseResult) -> None:
    """Steering ran and moved the latent, low == fast to 1e-6, and the plain run after it is byte-identical."""
    for name in ("plain_before", "fast", "low", "plain_after"):
        assert torch.isfinite(getattr(result, name)).all(), name
    tolerance = 1e-6 * max(1.0, float(result.fast.abs().max()))
    low_vs_fast = float((result.fast - result.low).abs().max())
    moved = float((result.fast - result.plain_before).abs().max())
    logger.info("steered latent moved by %.3g from plain; low vs fast %.3g (tolerance %.3g)", moved, low_vs_fast,
                tolerance)
    assert low_vs_fast <= tolerance, low_vs_fast
    assert moved > 100 * tolerance, "steering did not move the latent"
    assert torch.equal(result.plain_after, result.plain_before), "the plain run changed after steering"
    assert result.steering_probes, "no steering forward went through the probe"
    for memory, trace in result.traces.items():
        assert [s["iterations"] for s in trace["steps"]] == [2], (memory, trace)
        assert any(n.startswith(f"memory {memory}:") for n in trace["notes"]), (memory, trace["notes"])


def assert_lora_changes_plain(server: ComfyServer, loading: Loading, result: CaseResult, name: str) -> None:
    """The plain run of ``loading`` without its LoRA differs from the one with it: the LoRA took effect."""
    unpatched = replace(loading, lora=None)
    server.submit(with_model(plain_prompt(loading.family, f"{name}_unpatched"), unpatched, f"{name}_unpatched"))
    difference = (result.plain_before - latent(server, f"{name}_unpatched")).abs().max()
    assert difference > 1e-3, f"the LoRA does not change the plain output (max difference {difference})"


def lora_for(server: ComfyServer, family: str) -> str:
    """Write the tiny family's safetensors file (for its keys and shapes) and a LoRA for it; returns the LoRA's name."""
    written = write_model_file(server, family, 0, "safetensors")
    return write_lora(server, Path(written["path"]), f"l2s_tiny_{family}_lora")


# ---------------------------------------------------------------------------------------------------- fixtures


def cuda_visible() -> bool:
    """Whether ComfyUI's Python sees a CUDA device (what ``--lowvram`` / ``--novram`` need)."""
    check = [comfyui_python(), "-c", "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"]
    return subprocess.run(check, capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def gguf_server() -> Iterator[ComfyServer]:
    """A server with ComfyUI-GGUF installed; the tests that use it skip (one line, how to enable) without it."""
    if comfyui_path() is None:
        pytest.skip("COMFYUI_PATH is not set")
    reason = gguf_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with ComfyServer(custom_nodes=[gguf_pack_path()]) as server:
        if "UnetLoaderGGUF" not in server.object_info():
            pytest.fail(f"ComfyUI-GGUF did not load in the server:\n{server.log_tail()}")
        yield server


@pytest.fixture
def gpu_server(request: pytest.FixtureRequest) -> Iterator[ComfyServer]:
    """A server on ComfyUI's GPU with the flag in ``request.param``; skipped where ComfyUI sees no CUDA device."""
    if comfyui_path() is None:
        pytest.skip("COMFYUI_PATH is not set")
    flag = request.param
    if not cuda_visible():
        pytest.skip(f"{flag} needs a GPU: ComfyUI refuses it together with --cpu, and its CPU mode never loads a model "
                    "partially (test_partially_loaded_model covers that path on the CPU); run where ComfyUI's Python "
                    "sees CUDA")
    with ComfyServer(extra_args=[flag], cpu=False) as server:
        yield server


# ------------------------------------------------------------------------------------------------------- tests


@comfyui
@pytest.mark.parametrize(("family", "weight_dtype"), [("flux", "fp8_e4m3fn"), ("sd1", "fp8_e5m2"),
                                                      ("sd3", "fp8_e4m3fn")])
def test_unet_loader_fp8_weights(comfy_server: ComfyServer, family: str, weight_dtype: str) -> None:
    """UNETLoader with fp8 storage: the steering forwards run on fp8 weights cast per forward (manual_cast)."""
    write_model_file(comfy_server, family, 0, "safetensors")
    classifier = write_classifier(comfy_server.classifier_dir, f"loading_{family}", family)
    loading = Loading(family, loader="unet", weight_dtype=weight_dtype)
    result = run_case(comfy_server, loading, f"fp8_{family}_{weight_dtype}", classifier)
    assert_steering_is_safe(result)
    # steering swaps inference-mode weights for normal copies and puts inference copies back afterwards
    assert all(r["inference_weights"] == 0 for r in result.steering_probes), result.steering_probes[0]
    assert all(r["inference_weights"] == r["weights"] for r in result.plain_probes), result.plain_probes[-1]
    stored = weight_dtype.removeprefix("fp8_").replace("e", "float8_e", 1)
    for record in result.steering_probes + result.plain_probes:
        assert record["weight_dtypes"] == [stored], record
        assert record["cast"] == record["cast_capable"] > 0, record  # manual_cast: every op casts at run time


@comfyui
def test_lora_patched_model(comfy_server: ComfyServer) -> None:
    """LoraLoaderModelOnly, fully loaded: ComfyUI patches the weights at load; steering runs on the patched weights."""
    family = "sd1"
    loading = Loading(family, lora=lora_for(comfy_server, family))
    classifier = write_classifier(comfy_server.classifier_dir, f"loading_{family}", family)
    result = run_case(comfy_server, loading, f"lora_{family}", classifier)
    assert_steering_is_safe(result)
    assert_lora_changes_plain(comfy_server, loading, result, f"lora_{family}")
    assert all(r["weight_functions"] == 0 for r in result.steering_probes)  # patched at load, not per forward


@comfyui
@pytest.mark.parametrize(("family", "loaded_share", "lora", "seed"), [("flux", 0.5, False, 11), ("sd1", 0.5, True, 11),
                                                                      ("sd1", 0.0, True, 12), ("sd3", 0.0, False, 12)])
def test_partially_loaded_model(comfy_server: ComfyServer, family: str, loaded_share: float, lora: bool,
                                seed: int) -> None:
    """ComfyUI's low-VRAM path: modules past the budget cast their weights per forward, a LoRA comes as
    ``weight_function``s. Share 0.5 is a card short of memory; 0.0 is ``--novram``'s budget (nothing loaded).

    Each case has its own weight seed, so its model is one that no other case has loaded fully before.
    """
    loading = Loading(family, seed=seed, lora=lora_for(comfy_server, family) if lora else None,
                      loaded_share=loaded_share)
    name = f"partial_{family}_{loaded_share}_{lora}"
    classifier = write_classifier(comfy_server.classifier_dir, f"loading_{family}", family)
    result = run_case(comfy_server, loading, name, classifier)
    assert_steering_is_safe(result)
    if lora:
        assert_lora_changes_plain(comfy_server, loading, result, name)
    for record in result.steering_probes + result.plain_probes:
        assert record["lowvram"], record
        if loaded_share == 0.0:
            assert record["cast"] == record["cast_capable"], record  # nothing loaded regularly
        else:
            assert 0 < record["cast"] < record["cast_capable"], record
        if lora:  # LowVramPatch: the LoRA applied at each forward of the streamed linear layers
            assert 0 < record["weight_functions"] <= record["cast"], record
        else:
            assert record["weight_functions"] == 0, record


@comfyui
@pytest.mark.parametrize(("family", "lora", "loaded_share"), [("flux", False, None), ("sd3", True, None),
                                                              ("sd1", True, 0.5)])
def test_gguf_quantised_model(gguf_server: ComfyServer, family: str, lora: bool, loaded_share: float | None) -> None:
    """ComfyUI-GGUF's UnetLoaderGGUF: weights held as GGMLTensor (Q8_0 / F16 / F32) and dequantised per forward;
    with a LoRA (kept on the quantised tensors and applied at dequantisation) and partially loaded."""
    written = write_model_file(gguf_server, family, 0, "gguf")
    assert written["types"].get("Q8_0", 0) > 0, written  # some tensors really are quantised
    loading = Loading(family, loader="gguf", lora=lora_for(gguf_server, family) if lora else None,
                      loaded_share=loaded_share)
    name = f"gguf_{family}_{lora}_{loaded_share}"
    classifier = write_classifier(gguf_server.classifier_dir, f"loading_{family}", family)
    result = run_case(gguf_server, loading, name, classifier)
    assert_steering_is_safe(result)
    if lora:
        assert_lora_changes_plain(gguf_server, loading, result, name)
    for record in result.steering_probes + result.plain_probes:
        assert "GGMLTensor" in record["tensor_classes"] and "uint8" in record["weight_dtypes"], record  # Q8_0 bytes
        assert record["lowvram"] == (loaded_share is not None), record


@comfyui
@pytest.mark.parametrize("gpu_server", ["--lowvram", "--novram"], indirect=True)
def test_low_vram_flags_on_a_gpu(gpu_server: ComfyServer) -> None:
    """A GPU server started with ``--lowvram`` / ``--novram`` (ComfyUI's own budgets; ``--novram`` streams every
    castable module): steering runs and plain sampling is unchanged afterwards."""
    novram = "--novram" in gpu_server.extra_args
    for family in ("sd1", "flux"):
        classifier = write_classifier(gpu_server.classifier_dir, f"loading_{family}", family)
        result = run_case(gpu_server, Loading(family), f"gpu_{family}", classifier)
        assert_steering_is_safe(result)
        if novram:
            assert all(r["lowvram"] and r["cast"] == r["cast_capable"] for r in result.steering_probes)
