"""The benchmark setup: a built model with conditioning, latent and classifier, ready to run every measured pass."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import torch

from .comfy_modules import import_comfy
from .loading import Placement, configure_dtypes, place_weights
from .models import DTYPES, MODELS
from .random_weights import randomize


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
    compute_dtype: torch.dtype
    placement: Placement
    classifier: Any = None
    channels: int = 0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def build_bench(args: argparse.Namespace) -> Bench:
    """Build the model (under inference mode, like ComfyUI's loaders), conditioning, latent and classifier.

    The weights are stored in ``args.dtype`` and placed as ``args.vram`` says, the ways ComfyUI loads them
    (:mod:`.loading`).
    """
    m = import_comfy(args.device, args.vram)
    choice = MODELS[args.model]
    device = m.model_management.get_torch_device()
    dtype = DTYPES[args.dtype]
    heads: dict[str, Any] = {}
    gcd_group_norm = False
    if args.size == "tiny":
        spec = m.tiny_specs.get_spec(choice.tiny_family)
        config_class = getattr(m.supported_models, spec["supported_model"])
        unet_config = spec["unet_config"]
        heads = spec["heads"]
        gcd_group_norm = bool(spec.get("gcd_group_norm", False))
    else:
        config_class = getattr(m.supported_models, choice.supported_model)
        unet_config = choice.full_config
    model_config = config_class(unet_config)
    model_config.unet_config.update(heads)  # the tiny head layout (the class put the full-size one in)
    compute_dtype = configure_dtypes(m, model_config, dtype, device)
    if gcd_group_norm:  # the operations ComfyUI picks for these dtypes, with the tiny widths' GroupNorm
        operations = m.ops.pick_operations(dtype, model_config.manual_cast_dtype)
        model_config.custom_operations = gcd_group_norm_operations(operations)
    with torch.inference_mode():
        base = model_config.get_model({}, device=device)
        parameters = randomize(base.diffusion_model, args.seed)
        base.to(device)
        base.eval()
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
    patcher, placement = place_weights(m, base, device, args.vram, args.card_gib, tuple(noise.shape), conds)
    # calc_cond_batch talks to the model's current patcher (ComfyUI sets it in CFGGuider.outer_sample via pre_run).
    patcher.pre_run()
    with torch.inference_mode():
        positive = m.samplers.process_conds(base, noise, conds, device, latent_image=torch.zeros_like(noise),
                                            seed=args.seed)["positive"]
    bench = Bench(m=m, args=args, device=device, base=base, positive=positive, x=x.float(), sigmas=sigmas,
                  model_options=patcher.model_options, patcher=patcher, layout=layout, patch=patch,
                  text_length=text_length, subject=tuple(args.subject), object=tuple(args.object),
                  parameters=parameters, compute_dtype=compute_dtype, placement=placement)
    bench.channels = _count_channels(bench)
    bench.classifier = _build_classifier(bench, choice.classifier_family)
    return bench


def gcd_group_norm_operations(operations: type) -> type:
    """``operations`` (a ``comfy.ops`` class) whose GroupNorm uses gcd(groups, channels) groups.

    As ``tests/comfy_test_pack/tiny_models.GcdGroupNormOps`` (tiny UNet widths like 40 cannot be split into 32
    groups), on top of whichever operations ComfyUI picks for the weight and compute dtypes (``manual_cast`` where
    weights are cast at run time).
    """

    class GroupNorm(operations.GroupNorm):  # type: ignore[name-defined]
        def __init__(self, num_groups: int, num_channels: int, *args: Any, **kwargs: Any) -> None:
            super().__init__(math.gcd(num_groups, num_channels), num_channels, *args, **kwargs)

    return type(f"GcdGroupNorm_{operations.__name__}", (operations,), {"GroupNorm": GroupNorm})


def _capture_request(bench: Bench) -> Any:
    return bench.m.capture.MapRequest(bench.layout, bench.text_length, bench.subject, bench.object,
                                      (bench.x.shape[-2], bench.x.shape[-1]), bench.patch)


def _count_channels(bench: Bench) -> int:
    """Attention channels C of the model at this resolution, from one captured no-grad forward (also a warm-up)."""
    m = bench.m
    capture = m.capture.AttentionCapture()
    options = m.steering.capture_options(pytorch_attention_options(bench), capture)
    capture.begin(_capture_request(bench))
    try:
        with torch.inference_mode():
            m.samplers.calc_cond_batch(bench.base, [bench.positive], bench.x, sigma_in(bench), options)
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


def sigma_in(bench: Bench) -> torch.Tensor:
    """The first sigma of the schedule, one per batch item."""
    return bench.sigmas[0].expand(bench.x.shape[0]).clone()  # (B,)


@contextlib.contextmanager
def autograd_weights(bench: Bench) -> Iterator[None]:
    """The pack's once-per-run weight conversion, for the denoiser and the classifier (as steering_sampler does)."""
    with bench.m.autograd.autograd_weights(bench.base.diffusion_model), \
            bench.m.autograd.autograd_weights(bench.classifier.model):
        yield


def pytorch_attention_options(bench: Bench) -> dict[str, Any]:
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
