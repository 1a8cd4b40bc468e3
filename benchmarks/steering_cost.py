"""What one Learn-to-Steer iteration costs, in time and memory, compared with a plain denoiser forward.

On one random-weight model, in one run, this script prints:

1. the time of a plain conditional forward (``calc_cond_batch`` on the positive conditioning only, inference mode,
   attention_pytorch (SDPA): the backend steering differentiates and ComfyUI's default on NVIDIA GPUs; where ComfyUI
   picked another backend, e.g. sub-quadratic attention on CPU, that forward is shown as well);
2. the time of one steering iteration, measured inside the pack's own ``SteeringRun.steer`` as the second of two
   iterations, so its once-per-step setup is not counted (attention capture installed by ``SteeringRun.start``,
   forward under ``gradient_mode`` with ``autograd_weights``, ``classifier_input``, a ``RelationClassifier``
   forward, cross-entropy and ``torch.autograd.grad`` with respect to the latent), and the ratio (2)/(1) against the
   target of 3.3x. The weight conversion of ``autograd_weights`` (once per sampling run, not per iteration) is timed
   separately. Passes are timed round-robin (medians of ``--repeats`` rounds), so load from other processes hits
   them alike;
3. the peak memory above the built model of (a) one steering iteration, (b) a plain forward+backward of a scalar loss
   on the denoiser output with respect to the latent (no capture, same backward-capable attention function as
   steering) and (c) a reference that materialises the full attention probabilities of every attention call (UNet
   attn1 and attn2, FLUX/SD3 full joint text+image attention) and keeps them in the graph, as the official code does.
   Ratios (a)/(b) (target <= 1.3x) and (a)/(c) (target <= 0.5x).

On CUDA the peaks come from the allocator (``torch.cuda.max_memory_allocated``). On CPU there is no allocator
counter: each memory figure is taken in a fresh subprocess of this script (``--measure-one MODE``) as the growth of
the peak resident set size over the RSS after the model is built and the measured pass has run once; these figures
are approximate.

ComfyUI is imported as a library from ``COMFYUI_PATH``; the pack is imported as a package (the repo root registered
under a package name), so its ``nodes`` subpackage never shadows ComfyUI's top-level ``nodes`` module. Models are
built by direct construction with random weights: ``--size tiny`` uses the integration tests' tiny configs
(``tests/comfy_test_pack/tiny_specs.py``, same attention layout as the real models), ``--size full`` the real
architectures (SD1.5, SD2.1-base, SDXL, SD3-medium, FLUX.1-dev). Text conditioning is random (no text encoder).

Run on CPU (tiny models take seconds; full-size SD2.1 is slow on CPU, use a small resolution)::

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model sd21 --size tiny --device cpu
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model flux_dev --size tiny --device cpu
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model sd21 --size full --resolution 256 \\
        --device cpu --repeats 3 --json sd21_cpu.json

Run on a GPU machine (the Python environment of that ComfyUI)::

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model sd21 --size full --resolution 512 \\
        --device cuda --dtype fp16 --repeats 5
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/steering_cost.py --model flux_dev --size full --resolution 512 \\
        --device cuda --dtype bf16 --repeats 5

Full FLUX.1-dev needs about 24 GB for its bf16 weights plus activations: use a GPU with 40 GB or more and never try
it on a CPU box. The full-probability reference (c) for FLUX at 1024 px needs far more memory than any single GPU
has; an out-of-memory there is reported as a lower bound.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import gc
import importlib
import importlib.util
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import torch

logger = logging.getLogger("steering_cost")

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Package name the repo root is registered under (ComfyUI itself uses a path-derived name)."""

TARGET_TIME_RATIO = 3.3
TARGET_MEMORY_VS_PLAIN = 1.3
TARGET_MEMORY_VS_REFERENCE = 0.5

MODES = ("steer", "plain_fwd_bwd", "reference")
MODE_LABELS = {
    "steer": "(a) steering iteration",
    "plain_fwd_bwd": "(b) plain forward+backward",
    "reference": "(c) full-probability reference",
}
MEASURE_MARKER = "L2S_MEASURE "
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """A benchmarkable architecture.

    Attributes:
        tiny_family: family name of the tiny config in tests/comfy_test_pack/tiny_specs.py.
        supported_model: ``comfy.supported_models`` class of the full-size model.
        full_config: detect-style ``unet_config`` of the full-size model.
        classifier_family: family whose published classifier settings are used (``FAMILY_CLASSIFIER_DEFAULTS``).
        text_tokens: default length of the denoiser's text axis.
        encoder: text encoder key the token positions refer to (only recorded in the SpatialSpec).
    """

    tiny_family: str
    supported_model: str
    full_config: dict[str, Any]
    classifier_family: str
    text_tokens: int
    encoder: str


_SD_UNET: dict[str, Any] = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}

MODELS: dict[str, ModelChoice] = {
    "sd15": ModelChoice("sd1", "SD15", {**_SD_UNET, "use_linear_in_transformer": False, "context_dim": 768},
                        "sd14", 77, "l"),
    # SD2.1-base: 64-dim heads (the SD20 class adds num_head_channels 64 and fp32 attention precision).
    "sd21": ModelChoice("sd2", "SD20", {**_SD_UNET, "use_linear_in_transformer": True, "context_dim": 1024,
                                        "num_head_channels": 64}, "sd2", 77, "h"),
    "sdxl": ModelChoice("sdxl", "SDXL", {
        **_SD_UNET, "num_classes": "sequential", "adm_in_channels": 2816, "num_res_blocks": [2, 2, 2],
        "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_linear_in_transformer": True,
        "context_dim": 2048}, "sd2", 77, "l"),
    # SD3-medium.
    "sd3": ModelChoice("sd3", "SD3", {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 24, "input_size": None,
        "adm_in_channels": 2048,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 1536}},
        "num_patches": 36864, "pos_embed_max_size": 192, "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": []}, "sd2", 154, "l"),
    # FLUX.1-dev; the pack pads T5 to 512 tokens for FLUX (nodes/spatial_prompt.py FLUX_T5_LENGTH).
    "flux_dev": ModelChoice("flux", "Flux", {
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "patch_size": 2, "vec_in_dim": 768,
        "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19,
        "depth_single_blocks": 38, "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True,
        "guidance_embed": True}, "flux_dev", 512, "t5xxl"),
}


# -- imports -----------------------------------------------------------------------------------------------------------


def _import_comfy(device: str) -> SimpleNamespace:
    """Put COMFYUI_PATH on sys.path, select the device, and import the ComfyUI and pack modules the benchmark uses."""
    comfy_path = os.environ.get("COMFYUI_PATH", "").strip()
    if not comfy_path or not (Path(comfy_path) / "comfy").is_dir():
        raise SystemExit(
            f"COMFYUI_PATH must name a ComfyUI checkout (a folder containing comfy/); got {comfy_path!r}. "
            "Example: COMFYUI_PATH=~/ComfyUI python benchmarks/steering_cost.py ..."
        )
    comfy_path = str(Path(comfy_path).expanduser().resolve())
    if comfy_path not in sys.path:
        sys.path.insert(0, comfy_path)
    import comfy.cli_args

    if device == "cpu":
        comfy.cli_args.args.cpu = True
    import comfy.ldm.modules.attention
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sampler_helpers
    import comfy.samplers
    import comfy.supported_models

    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))  # last, after COMFYUI_PATH, so that `nodes` stays ComfyUI's
    from devtools.pack_loader import PACK_NAME, register_pack  # the one pack loader: the repo root as a package

    register_pack()
    pack = f"{PACK_NAME}.nodes"
    core = f"{PACK_NAME}.l2s_core"
    return SimpleNamespace(
        attention=comfy.ldm.modules.attention,
        model_management=comfy.model_management,
        model_patcher=comfy.model_patcher,
        sampler_helpers=comfy.sampler_helpers,
        samplers=comfy.samplers,
        supported_models=comfy.supported_models,
        steering=importlib.import_module(f"{pack}.steering"),
        capture=importlib.import_module(f"{pack}.capture"),
        autograd=importlib.import_module(f"{pack}.autograd"),
        spatial_prompt=importlib.import_module(f"{pack}.spatial_prompt"),
        steered_conditioning=importlib.import_module(f"{pack}.steered_conditioning"),
        classifier=importlib.import_module(f"{core}.classifier"),
        checkpoint=importlib.import_module(f"{core}.checkpoint"),
        layout=importlib.import_module(f"{core}.layout"),
        prompts=importlib.import_module(f"{core}.prompts"),
        relations=importlib.import_module(f"{core}.relations"),
        steps=importlib.import_module(f"{core}.steps"),
        tiny_specs=importlib.import_module(f"{PACK_NAME}.tests.comfy_test_pack.tiny_specs"),
        tiny_models=importlib.import_module(f"{PACK_NAME}.tests.comfy_test_pack.tiny_models"),
    )


# -- the benchmark setup -----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Bench:
    """A built model with conditioning, latent and classifier, ready to run every measured pass."""

    m: SimpleNamespace
    args: argparse.Namespace
    device: torch.device
    base: Any
    patcher: Any
    positive: list[dict[str, Any]]
    x: torch.Tensor  # (1, C, H/8, W/8) fp32 noisy latent at sigmas[0]
    sigmas: torch.Tensor
    model_options: dict[str, Any]
    layout: str
    patch: int
    text_length: int
    subject: tuple[int, ...]
    object: tuple[int, ...]
    parameters: int
    classifier: Any = None
    channels: int = 0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@torch.no_grad()
def _randomize(module: torch.nn.Module, seed: int) -> int:
    """Fill parameters in place on their device: norms 1/0, other 1-D N(0, 0.02), weights N(0, 1/fan_in).

    The rule of tests/comfy_test_pack/tiny_models.py (O(1) activations, non-uniform attention), without its strided
    embedding trick, so full-size weights stay ordinary contiguous tensors.
    """
    count = 0
    modules = dict(module.named_modules())
    generators: dict[torch.device, torch.Generator] = {}
    for full_name, param in module.named_parameters():
        if param.ndim == 0:
            continue
        gen = generators.setdefault(param.device, torch.Generator(device=param.device).manual_seed(seed))
        owner = modules[full_name.rpartition(".")[0]]
        if "Norm" in type(owner).__name__:
            param.fill_(1.0 if full_name.endswith(("weight", "scale")) else 0.0)
        elif param.ndim == 1:
            param.normal_(0.0, 0.02, generator=gen)
        else:
            param.normal_(0.0, param[0].numel() ** -0.5, generator=gen)
        count += param.numel()
    for name, buffer in module.named_buffers():
        if name.endswith("pos_embed"):  # MMDiT: allocated with torch.empty
            gen = generators.setdefault(buffer.device, torch.Generator(device=buffer.device).manual_seed(seed))
            buffer.normal_(0.0, 0.02, generator=gen)
        elif buffer.is_floating_point() and not bool(torch.isfinite(buffer).all()):
            raise RuntimeError(f"Buffer {name!r} of the random model is not initialised (non-finite values).")
    return count


def build_bench(args: argparse.Namespace) -> Bench:
    """Build the model (under inference mode, like ComfyUI's loaders), conditioning, latent and classifier."""
    m = _import_comfy(args.device)
    choice = MODELS[args.model]
    device = m.model_management.get_torch_device()
    dtype = DTYPES[args.dtype]
    heads: dict[str, Any] = {}
    operations = None
    if args.size == "tiny":
        spec = m.tiny_specs.get_spec(choice.tiny_family)
        config_class = getattr(m.supported_models, spec["supported_model"])
        unet_config = spec["unet_config"]
        heads = spec["heads"]
        if spec.get("gcd_group_norm", False):
            operations = m.tiny_models.GcdGroupNormOps
    else:
        config_class = getattr(m.supported_models, choice.supported_model)
        unet_config = choice.full_config
    model_config = config_class(unet_config)
    model_config.unet_config.update(heads)  # the tiny head layout (the class put the full-size one in)
    model_config.set_inference_dtype(dtype, None)
    if operations is not None:
        model_config.custom_operations = operations
    with torch.inference_mode():
        base = model_config.get_model({}, device=device)
        parameters = _randomize(base.diffusion_model, args.seed)
        base.to(device)
        base.eval()
    # calc_cond_batch talks to the model's current patcher (ComfyUI sets it in CFGGuider.outer_sample via pre_run).
    patcher = m.model_patcher.ModelPatcher(base, load_device=device, offload_device=device)
    patcher.pre_run()
    layout, patch = m.steering.model_layout(base)

    diffusion = base.diffusion_model
    text_length = args.text_tokens or choice.text_tokens
    if layout == "unet":
        context_dim = int(model_config.unet_config["context_dim"])
    elif hasattr(diffusion, "context_embedder"):  # MMDiT
        context_dim = int(diffusion.context_embedder.in_features)
    else:  # FLUX
        context_dim = int(diffusion.txt_in.in_features)
    gen = torch.Generator().manual_seed(args.seed + 1)
    extras: dict[str, Any] = {}
    adm = model_config.unet_config.get("adm_in_channels")
    if args.model == "sdxl":
        extras.update(pooled_output=torch.randn(1, int(adm) - 6 * 256, generator=gen),
                      width=args.resolution, height=args.resolution)
    elif args.model == "sd3":
        extras["pooled_output"] = torch.randn(1, int(adm), generator=gen)
    elif args.model == "flux_dev":
        extras.update(pooled_output=torch.randn(1, int(diffusion.vector_in.in_layer.in_features), generator=gen),
                      guidance=3.5)
    context = torch.randn(1, text_length, context_dim, generator=gen)  # (1, T, context_dim)
    latent_channels = int(model_config.latent_format.latent_channels)
    side = args.resolution // 8
    with torch.inference_mode():
        noise = torch.randn(1, latent_channels, side, side, generator=gen).to(device)  # (1, C, H/8, W/8)
        sigmas = m.samplers.calculate_sigmas(base.model_sampling, "simple", args.steps).to(device)
        x = base.model_sampling.noise_scaling(sigmas[0], noise, torch.zeros_like(noise))
        conds = {"positive": m.sampler_helpers.convert_cond([[context, extras]])}
        positive = m.samplers.process_conds(base, noise, conds, device, latent_image=torch.zeros_like(noise),
                                            seed=args.seed)["positive"]
    bench = Bench(m=m, args=args, device=device, base=base, positive=positive, x=x.float(), sigmas=sigmas,
                  model_options=patcher.model_options, patcher=patcher, layout=layout, patch=patch,
                  text_length=text_length, subject=tuple(args.subject), object=tuple(args.object),
                  parameters=parameters)
    bench.channels = _count_channels(bench)
    bench.classifier = _build_classifier(bench, choice.classifier_family)
    return bench


def _capture_request(bench: Bench) -> Any:
    return bench.m.capture.MapRequest(bench.layout, bench.text_length, bench.subject, bench.object,
                                      (bench.x.shape[-2], bench.x.shape[-1]), bench.patch)


def _count_channels(bench: Bench) -> int:
    """Attention channels C of the model at this resolution, from one captured no-grad forward (also a warm-up)."""
    m = bench.m
    capture = m.capture.AttentionCapture()
    options = m.steering.capture_options(_pytorch_attention_options(bench), capture)
    capture.begin(_capture_request(bench))
    try:
        with torch.inference_mode():
            m.samplers.calc_cond_batch(bench.base, [bench.positive], bench.x, _sigma_in(bench), options)
    finally:
        subject, obj = capture.end()
    return int(m.layout.classifier_input(subject, obj, bench.layout, 16).shape[2])


def _build_classifier(bench: Bench, family: str) -> Any:
    """A random RelationClassifier with the family's published settings, made under inference mode like the loader."""
    m = bench.m
    config = m.classifier.FAMILY_CLASSIFIER_DEFAULTS[family]
    if bench.channels > config.input_channels:
        config = dataclasses.replace(config, input_channels=bench.channels)
    relations = tuple(m.relations.SPATIAL_RELATIONS) + tuple(f"class{i}" for i in range(config.num_relations - 4))
    with torch.inference_mode():
        torch.manual_seed(bench.args.seed + 2)
        model = m.classifier.RelationClassifier(config).to(bench.device).eval()
        model.requires_grad_(False)
    return m.checkpoint.LoadedClassifier(
        model=model, relations=relations[: config.num_relations], trained_steps=tuple(range(config.num_timesteps)),
        trained_num_steps=config.num_timesteps, map_size=config.map_size, orig_map_size=config.map_size,
        family=family, channels=bench.channels, layout=bench.layout)


def _sigma_in(bench: Bench) -> torch.Tensor:
    return bench.sigmas[0].expand(bench.x.shape[0]).clone()  # (B,)


@contextlib.contextmanager
def autograd_weights(bench: Bench) -> Iterator[None]:
    """The pack's once-per-run weight conversion, for the denoiser and the classifier (as steering_sampler does)."""
    with bench.m.autograd.autograd_weights(bench.base.diffusion_model), \
            bench.m.autograd.autograd_weights(bench.classifier.model):
        yield


# -- the measured passes -----------------------------------------------------------------------------------------------


def _pytorch_attention_options(bench: Bench) -> dict[str, Any]:
    """model_options whose attention calls all use attention_pytorch (SDPA), the backend steering differentiates.

    On NVIDIA GPUs this is ComfyUI's default anyway; on CPU ComfyUI defaults to sub-quadratic attention, which is
    several times slower than SDPA at 512 px and would make the steering ratio look better than it is.
    """
    grad_attention = bench.m.steering.backward_capable_attention()
    if grad_attention is None:
        raise RuntimeError("This ComfyUI has no attention_pytorch; the benchmark needs ComfyUI >= 0.3.60.")
    options = dict(bench.model_options)
    transformer_options = dict(options.get("transformer_options", {}))

    def override(func: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
        return grad_attention(*args, **kwargs)

    transformer_options[bench.m.steering.OVERRIDE_KEY] = override
    options["transformer_options"] = transformer_options
    return options


def plain_forward(bench: Bench) -> None:
    """(1) The positive branch of a normal sampling step (inference mode) with SDPA attention."""
    with torch.inference_mode():
        bench.m.samplers.calc_cond_batch(bench.base, [bench.positive], bench.x, _sigma_in(bench),
                                         _pytorch_attention_options(bench))


def plain_forward_default_attention(bench: Bench) -> None:
    """(1) with the attention function ComfyUI picked for this device (sub-quadratic on CPU)."""
    with torch.inference_mode():
        bench.m.samplers.calc_cond_batch(bench.base, [bench.positive], bench.x, _sigma_in(bench), bench.model_options)


def plain_forward_backward(bench: Bench) -> None:
    """(b) Forward + gradient w.r.t. the latent of a scalar loss on the denoiser output, no capture."""
    base = bench.base
    options = _pytorch_attention_options(bench)
    with bench.m.autograd.gradient_mode():
        sigma = bench.sigmas[0]
        scale = float(base.model_sampling.calculate_input(sigma.reshape(1), torch.ones(1, device=bench.device)).item())
        z = (bench.x.detach().clone() * scale).requires_grad_(True)
        out = bench.m.samplers.calc_cond_batch(base, [bench.positive], z / scale, _sigma_in(bench), options)[0]
        loss = out.float().square().mean()
        (grad,) = torch.autograd.grad(loss, z)
        del grad


def _steering_run(bench: Bench, iterations: int, on_iteration: Callable[[], None] | None) -> tuple[Any, Any]:
    """The node's own per-run steering context (public ``SteeringRun``) and the steered conditioning entry."""
    m = bench.m
    steering, prompts, spatial = m.steering, m.prompts, m.spatial_prompt
    triplet = prompts.RelationTriplet("a", m.relations.LEFT_OF, "b", (0, 1), (2, 16), (17, 18))
    spec = spatial.SpatialSpec(prompt="benchmark", triplets=(triplet,),
                               positions=(spatial.PhrasePositions(bench.subject, bench.object),),
                               encoder=MODELS[bench.args.model].encoder, text_length=bench.text_length)
    steered = m.steered_conditioning.SteeredEntry(entry=bench.positive[0], index=0, spec=spec,
                                                  text_length=bench.text_length,
                                                  latent_size=(bench.x.shape[-2], bench.x.shape[-1]))
    # Threshold 0: every iteration updates (the official thresholds would only stop a trained classifier).
    settings = steering.SteeringSettings(last_step=1, step_size=5.0, iterations=iterations, loss_thresholds=(0.0,))
    job = steering.SteeringJob(classifier=bench.classifier, options=steering.SteeringOptions(),
                               on_iteration=on_iteration)
    window = m.steps.ScheduleWindow.from_noise(len(bench.sigmas) - 1)
    return steering.SteeringRun.start(bench.base, bench.model_options, job, settings, window), steered


def steering_iterations(bench: Bench, iterations: int,
                        on_iteration: Callable[[], None] | None = None) -> list[str]:
    """(2)/(a) ``iterations`` iterations of the pack's steering step at step 0; returns the stop reasons."""
    run, steered = _steering_run(bench, iterations, on_iteration)
    run.steer(bench.x, bench.sigmas, 0, steered)
    return [step.stopped for step in run.job.trace.steps]


def steering_iteration(bench: Bench) -> None:
    stops = steering_iterations(bench, 1)
    if stops != ["iterations"]:
        raise RuntimeError(f"The steering iteration did not run to the end: {stops}.")


def reference_iteration(bench: Bench) -> None:
    """(c) The steering iteration with a capture that materialises every attention call's full probabilities."""
    steering = bench.m.steering
    original = steering.AttentionCapture
    steering.AttentionCapture = _full_probability_capture_class(bench.m.capture)
    try:
        steering_iteration(bench)
    finally:
        steering.AttentionCapture = original


def _full_probability_capture_class(capture_mod: ModuleType) -> type:
    """An AttentionCapture whose every attention call computes softmax(q k^T / sqrt(d)) over ALL keys explicitly.

    The layer output is ``P @ v``, so P stays in the autograd graph (UNet: attn1 (N x N) and attn2 (N x T); FLUX/SD3:
    the full (L_txt + L_img)^2 joint matrix); the maps are read from P. P is kept in the model's compute dtype, as an
    eager attention processor does (a float32 upcast would double the reference in bf16/fp16 runs).
    """

    class FullProbabilityCapture(capture_mod.AttentionCapture):
        def override(self, func: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     heads: int, *args: Any, **kwargs: Any) -> torch.Tensor:
            request = self.request
            if request is None:
                return super().override(func, q, k, v, heads, *args, **kwargs)
            skip_reshape = bool(kwargs.get("skip_reshape", False))
            q4, k4, v4 = (capture_mod.heads_first(t, heads, skip_reshape) for t in (q, k, v))  # (B, H, L, D)
            logits = (q4 @ k4.transpose(-1, -2)) * q4.shape[-1] ** -0.5  # (B, H, Lq, Lk)
            mask = kwargs.get("mask")
            if mask is not None:
                logits = logits.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else logits + mask
            probs = torch.softmax(logits, dim=-1)  # (B, H, Lq, Lk), all keys
            n, t = q4.shape[2], k4.shape[2]
            if request.layout == "unet":
                options = kwargs.get("transformer_options") or {}
                if self._is_cross_attention(n, t, options, request):
                    self._append(probs.float(), capture_mod._unet_grid(n, options, request))
            else:
                grid = request.image_grid
                n_img, n_txt = grid[0] * grid[1], request.text_length
                if n >= n_txt + n_img:
                    rows = probs[:, :, n_txt:n_txt + n_img]  # (B, H, N_img, Lk)
                    index = len(self.subject)
                    for store, positions in ((self.subject, request.subject_positions),
                                             (self.object, request.object_positions)):
                        maps = rows[..., list(positions)].float().mean(dim=-1)  # (B, H, N_img)
                        store.append(capture_mod.LayerMaps.from_flat(index, grid, maps))
            out = probs.to(v4.dtype) @ v4  # (B, H, Lq, D)
            if kwargs.get("skip_output_reshape", False):
                return out
            return out.transpose(1, 2).reshape(out.shape[0], n, -1)  # (B, Lq, H*D)

    return FullProbabilityCapture


MODE_FUNCTIONS: dict[str, Callable[[Bench], None]] = {
    "steer": steering_iteration,
    "plain_fwd_bwd": plain_forward_backward,
    "reference": reference_iteration,
}


# -- timing ------------------------------------------------------------------------------------------------------------


def _time_once(bench: Bench, fn: Callable[[Bench], None]) -> float:
    bench.sync()
    start = time.perf_counter()
    fn(bench)
    bench.sync()
    return time.perf_counter() - start


def _time_steering_iteration(bench: Bench) -> float:
    """Wall time of the second of two iterations inside one steered step (its per-step setup is not counted)."""
    stamps: list[float] = []

    def on_iteration() -> None:
        bench.sync()
        stamps.append(time.perf_counter())

    stops = steering_iterations(bench, 2, on_iteration)
    if stops != ["iterations"] or len(stamps) != 2:
        raise RuntimeError(f"Steering stopped early ({stops}, {len(stamps)} iterations): the timing is invalid.")
    return stamps[1] - stamps[0]


def time_passes(bench: Bench, passes: dict[str, Callable[[Bench], float]], warmup: int,
                repeats: int) -> dict[str, dict[str, Any]]:
    """Time every pass round-robin, so that load from other processes hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in passes}
    for i in range(warmup + repeats):
        for name, timer in passes.items():
            seconds = timer(bench)
            if i >= warmup:
                times[name].append(seconds)
    return {name: _stats(values) for name, values in times.items()}


def _stats(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


# -- memory ------------------------------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line.")


def _release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_cpu(bench: Bench, mode: str) -> dict[str, Any]:
    """Peak RSS growth of one pass over the RSS after a first (warm-up) run of the same pass."""
    fn = MODE_FUNCTIONS[mode]
    fn(bench)  # warm-up: one-off allocations (kernels, caches) are not part of the per-iteration peak
    _release_memory()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS (Linux >= 4.0)
    baseline = _rss_bytes()
    fn(bench)
    peak = _peak_rss_bytes()
    return {"growth_bytes": peak - baseline, "baseline_bytes": baseline, "oom": False}


def measure_cuda(bench: Bench, mode: str) -> dict[str, Any]:
    """Peak allocated CUDA memory of one pass above what was allocated before it (after one warm-up pass).

    An out-of-memory error is reported with the peak reached until then (a lower bound) and ``oom`` True.
    """
    fn = MODE_FUNCTIONS[mode]
    result: dict[str, Any] = {}
    for _ in range(2):  # warm-up, then the measured pass
        gc.collect()
        torch.cuda.synchronize(bench.device)
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated(bench.device)
        torch.cuda.reset_peak_memory_stats(bench.device)
        oom = False
        try:
            fn(bench)
        except torch.OutOfMemoryError:
            oom = True
        torch.cuda.synchronize(bench.device)
        result = {"growth_bytes": torch.cuda.max_memory_allocated(bench.device) - baseline,
                  "baseline_bytes": baseline, "oom": oom}
        if oom:
            break
    gc.collect()
    torch.cuda.empty_cache()
    return result


def _child_command(args: argparse.Namespace, mode: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--model", args.model, "--size", args.size,
               "--resolution", str(args.resolution), "--device", args.device, "--dtype", args.dtype,
               "--seed", str(args.seed), "--steps", str(args.steps), "--text-tokens", str(args.text_tokens),
               "--subject", *map(str, args.subject), "--object", *map(str, args.object), "--measure-one", mode]
    return command


def measure_in_subprocesses(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """CPU: every memory figure from a fresh process (a process's peak RSS cannot be shared between passes)."""
    env = dict(os.environ)
    # Large blocks come from mmap and go back to the OS when freed, so the RSS follows the live tensors.
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    results = {}
    for mode in MODES:
        logger.info("measuring %s in a subprocess", mode)
        done = subprocess.run(_child_command(args, mode), env=env, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(MEASURE_MARKER)]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"The {mode} measurement failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        results[mode] = json.loads(lines[-1][len(MEASURE_MARKER):])
    return results


def run_measure_one(args: argparse.Namespace) -> None:
    bench = build_bench(args)
    with autograd_weights(bench):
        result = measure_cpu(bench, args.measure_one) if bench.device.type == "cpu" else measure_cuda(
            bench, args.measure_one)
    print(MEASURE_MARKER + json.dumps(result), flush=True)


# -- report ------------------------------------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return f"{n / 2**20:10.1f} MiB"


def _verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else f"MISS by {value / target - 1:.0%}"


def _timing_lines(report: dict[str, Any], timings: dict[str, dict[str, Any]], args: argparse.Namespace,
                  attention_name: str) -> list[str]:
    """Table rows for the timings; also stores the time ratio in ``report``."""
    labels = {
        "plain_forward": "(1) plain conditional forward, SDPA",
        "plain_forward_default_attention": f"    same with {attention_name}",
        "steering_iteration": "(2) steering iteration",
        "plain_forward_backward": "    plain forward+backward (context)",
        "reference_iteration": "    full-probability reference iter.",
    }
    lines = [f"time, median of {args.repeats} round-robin rounds (+{args.warmup} warm-up){'median':>10s}{'min':>10s}"]
    for key, label in labels.items():
        if key in timings:
            lines.append(f"{label:48s}{timings[key]['median_s']:9.3f}s{timings[key]['min_s']:9.3f}s")
    forward, steer = timings["plain_forward"], timings["steering_iteration"]
    ratio = steer["median_s"] / forward["median_s"]
    report["time_ratio"] = ratio
    lines.append(f"time ratio (2)/(1) = {ratio:.2f}x   target <= {TARGET_TIME_RATIO}x   "
                 f"{_verdict(ratio, TARGET_TIME_RATIO)}   (by minima {steer['min_s'] / forward['min_s']:.2f}x)")
    extra = [f"(2)/(plain fwd+bwd) = {steer['median_s'] / timings['plain_forward_backward']['median_s']:.2f}x"]
    if "plain_forward_default_attention" in timings:
        extra.append(f"(2)/(1 with {attention_name}) = "
                     f"{steer['median_s'] / timings['plain_forward_default_attention']['median_s']:.2f}x")
    lines.append("   " + "; ".join(extra))
    return lines


def run(args: argparse.Namespace) -> dict[str, Any]:
    memory: dict[str, dict[str, Any]] | None = None
    if not args.skip_memory and args.device == "cpu":
        memory = measure_in_subprocesses(args)  # before this process builds its own copy of the model
    build_start = time.perf_counter()
    bench = build_bench(args)
    build_s = time.perf_counter() - build_start
    attention_name = getattr(bench.m.attention.optimized_attention, "__name__", "?")
    passes: dict[str, Callable[[Bench], float]] = {} if args.skip_timing else {
        "plain_forward": lambda b: _time_once(b, plain_forward),
        "steering_iteration": _time_steering_iteration,
        "plain_forward_backward": lambda b: _time_once(b, plain_forward_backward),
    }
    if passes and attention_name != "attention_pytorch":
        passes["plain_forward_default_attention"] = lambda b: _time_once(b, plain_forward_default_attention)
    if passes and args.time_reference:
        passes["reference_iteration"] = lambda b: _time_once(b, reference_iteration)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(autograd_weights(bench))
        convert_in_s = time.perf_counter() - start
        timings = time_passes(bench, passes, args.warmup, args.repeats)
        if memory is None and not args.skip_memory:
            memory = {mode: measure_cuda(bench, mode) for mode in MODES}
        start = time.perf_counter()
    convert_out_s = time.perf_counter() - start
    report: dict[str, Any] = {
        "model": args.model, "size": args.size, "resolution": args.resolution, "device": str(bench.device),
        "dtype": args.dtype, "repeats": args.repeats, "parameters": bench.parameters, "layout": bench.layout,
        "text_tokens": bench.text_length, "attention_channels": bench.channels,
        "classifier_parameters": sum(p.numel() for p in bench.classifier.model.parameters()),
        "default_attention": attention_name, "build_s": build_s, "timings": timings,
        "weight_conversion_s": {"to_autograd": convert_in_s, "back_to_inference": convert_out_s},
        "time_ratio_target": TARGET_TIME_RATIO, "memory": memory,
        "memory_source": "peak RSS growth (approximate)" if args.device == "cpu" else "torch.cuda.max_memory_allocated",
    }
    lines = [
        f"Learn-to-Steer steering cost: {args.model} ({args.size}), {args.resolution} px, {bench.device}, {args.dtype}",
        f"denoiser {bench.parameters / 1e6:.1f} M params, layout {bench.layout}, {bench.text_length} text tokens, "
        f"{bench.channels} attention channels; classifier {report['classifier_parameters'] / 1e6:.2f} M params "
        f"({bench.classifier.family} settings); ComfyUI's attention here: {attention_name}",
    ]
    if timings:
        lines += _timing_lines(report, timings, args, attention_name)
    lines.append(f"{'weight conversion (once per run)':48s}{convert_in_s:9.3f}s  (+{convert_out_s:.3f}s to restore)")
    if memory is not None:
        cpu = args.device == "cpu"
        lines.append("peak memory above the built model" + (
            " (CPU: peak-RSS growth in fresh subprocesses, approximate)" if cpu else " (CUDA allocator)"))
        for mode in MODES:
            item = memory[mode]
            total = item["baseline_bytes"] + item["growth_bytes"]
            lines.append(f"{MODE_LABELS[mode]:48s}{_mib(item['growth_bytes'])}   total {_mib(total)}"
                         + ("   OOM: lower bound" if item["oom"] else ""))
        a, b, c = (memory[mode]["growth_bytes"] for mode in MODES)
        ratio_b, ratio_c = a / max(b, 1), a / max(c, 1)
        totals = [memory[mode]["baseline_bytes"] + memory[mode]["growth_bytes"] for mode in MODES]
        report.update(memory_ratio_vs_plain=ratio_b, memory_ratio_vs_reference=ratio_c,
                      total_memory_ratio_vs_plain=totals[0] / totals[1],
                      total_memory_ratio_vs_reference=totals[0] / totals[2])
        lines += [
            f"memory (a)/(b) = {ratio_b:.2f}x   target <= {TARGET_MEMORY_VS_PLAIN}x   "
            f"{_verdict(ratio_b, TARGET_MEMORY_VS_PLAIN)}   (totals incl. weights: {totals[0] / totals[1]:.2f}x)",
            f"memory (a)/(c) = {ratio_c:.2f}x   target <= {TARGET_MEMORY_VS_REFERENCE}x   "
            f"{_verdict(ratio_c, TARGET_MEMORY_VS_REFERENCE)}   (totals incl. weights: {totals[0] / totals[2]:.2f}x)",
        ]
    print("\n".join(lines), flush=True)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="sd21")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--resolution", type=int, default=512, help="image side in pixels (latent side = 1/8)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="denoiser weight/compute dtype")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (medians are reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed repetitions before timing")
    parser.add_argument("--steps", type=int, default=50, help="schedule length (the steered step is step 0)")
    parser.add_argument("--text-tokens", type=int, default=0, help="text axis length (0: the model's default)")
    parser.add_argument("--subject", type=int, nargs="+", default=[2], help="subject token positions")
    parser.add_argument("--object", type=int, nargs="+", default=[5, 6], help="object token positions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="timings only")
    parser.add_argument("--skip-timing", action="store_true", help="memory only")
    parser.add_argument("--time-reference", action="store_true", help="also time the full-probability reference")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.add_argument("--measure-one", choices=MODES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.resolution % 16:
        parser.error(f"--resolution must be a multiple of 16, got {args.resolution}.")
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0.")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA device.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.measure_one is not None:
        run_measure_one(args)
        return
    report = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
