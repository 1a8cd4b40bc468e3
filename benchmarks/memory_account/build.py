"""A model ready for the accounted passes: ComfyUI's own BaseModel on the meta device (or CPU), conditioning, latent,
the steered conditioning entry and a relation classifier.

The denoiser is built exactly as ComfyUI's loaders build it (supported-model config, ``set_inference_dtype``,
``get_model``: the operations follow the weight format, ``manual_cast`` for fp8), on the meta device for the
account: no memory, no values. On CPU (the checks against measured memory) the weights are filled with random
values so that the pack's own steering step runs as in a real sampler. Conditioning is random text features of the
right shapes (no text encoder: ComfyUI offloads it before sampling). Weights never require grad, as inside the
pack's ``autograd_weights``.
"""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace
from typing import Any

import torch

from .architectures import Architecture, dtypes
from .tracker import storage_bytes

logger = logging.getLogger(__name__)

SUBJECT_POSITIONS = (2,)
OBJECT_POSITIONS = (5, 6)
STEPS = 50
CFG_SCALE = 7.0
FLUX_GUIDANCE = 3.5


@dataclasses.dataclass
class Setup:
    """Everything the passes need, on one device.

    Attributes:
        m: the imported ComfyUI and pack modules (:func:`.comfy_env.import_comfy`).
        arch, resolution, weights: the row.
        device: meta (the account) or cpu (the checks).
        base: ComfyUI's BaseModel; ``patcher`` its ModelPatcher (``calc_cond_batch`` talks to it).
        positive, negative: processed conditioning lists (``negative`` empty for a batch-1 model).
        x: (1, C, H/8, W/8) fp32 latent at the first sigma (the sampler's latent).
        sigmas: the schedule (CPU); ``scale``: the denoiser's input scale at sigmas[0] (a float, computed on CPU).
        classifier: LoadedClassifier with the family's published settings and this model's channel count.
        layout, patch, text_length: what the attention capture needs.
        weight_bytes: bytes of the denoiser's parameters and buffers; ``classifier_bytes`` the classifier's.
    """

    m: SimpleNamespace
    arch: Architecture
    resolution: int
    weights: str
    device: torch.device
    base: Any
    patcher: Any
    positive: list[dict[str, Any]]
    negative: list[dict[str, Any]]
    x: torch.Tensor
    sigmas: torch.Tensor
    scale: float
    classifier: Any
    layout: str
    patch: int
    text_length: int
    weight_bytes: int
    classifier_bytes: int


def build_setup(m: SimpleNamespace, arch: Architecture, resolution: int, weights: str, device: str,
                seed: int = 0) -> Setup:
    """Build the model, conditioning, latent and classifier of one row on ``device`` ("meta" or "cpu")."""
    dev = torch.device(device)
    config_class = getattr(m.supported_models, arch.supported_model)
    model_config = config_class(dict(arch.unet_config))
    model_config.unet_config.update(arch.heads)
    storage, compute = dtypes(arch, weights)
    model_config.set_inference_dtype(storage, compute)
    base = model_config.get_model({}, device=dev)
    if dev.type != "meta":
        fill_random_(base.diffusion_model, seed)
    base.diffusion_model.requires_grad_(False)
    base.eval()
    sigmas = m.samplers.calculate_sigmas(base.model_sampling, "simple", STEPS).cpu()  # (STEPS + 1,)
    scale = float(base.model_sampling.calculate_input(sigmas[:1], torch.ones(1)).item())
    base.to(dev)  # model_sampling's buffers join the denoiser
    patcher = m.model_patcher.ModelPatcher(base, load_device=dev, offload_device=dev)
    patcher.pre_run()
    layout, patch = m.steering.model_layout(base)

    gen = torch.Generator().manual_seed(seed + 1)
    latent_channels = int(model_config.latent_format.latent_channels)
    side = resolution // 8
    noise = torch.randn(1, latent_channels, side, side, generator=gen)  # (1, C, H/8, W/8)
    x = (noise * sigmas[0]).to(dev)
    positive = _conditioning(m, arch, base, resolution, gen, x, "positive")
    negative = _conditioning(m, arch, base, resolution, gen, x, "negative") if arch.cfg_batch == 2 else []
    classifier = _classifier(m, arch, base, layout, dev, seed)
    return Setup(m=m, arch=arch, resolution=resolution, weights=weights, device=dev, base=base, patcher=patcher,
                 positive=positive, negative=negative, x=x, sigmas=sigmas, scale=scale, classifier=classifier,
                 layout=layout, patch=patch, text_length=arch.text_tokens,
                 weight_bytes=storage_bytes([*base.diffusion_model.parameters(), *base.diffusion_model.buffers()]),
                 classifier_bytes=storage_bytes([*classifier.model.parameters(), *classifier.model.buffers()]))


def _conditioning(m: SimpleNamespace, arch: Architecture, base: Any, resolution: int, gen: torch.Generator,
                  x: torch.Tensor, name: str) -> list[dict[str, Any]]:
    """One processed conditioning list: random text features (1, T, context_dim) and the family's extra inputs."""
    diffusion = base.diffusion_model
    if hasattr(diffusion, "context_embedder"):  # MMDiT
        context_dim = int(diffusion.context_embedder.in_features)
    elif hasattr(diffusion, "txt_in"):  # FLUX
        context_dim = int(diffusion.txt_in.in_features)
    else:
        context_dim = int(arch.unet_config["context_dim"])
    extras: dict[str, Any] = {}
    adm = int(arch.unet_config.get("adm_in_channels") or 0)
    if arch.supported_model == "SDXL":
        extras.update(pooled_output=torch.randn(1, adm - 6 * 256, generator=gen), width=resolution, height=resolution)
    elif arch.supported_model == "SD3":
        extras["pooled_output"] = torch.randn(1, adm, generator=gen)
    elif arch.supported_model == "Flux":
        extras.update(pooled_output=torch.randn(1, int(diffusion.vector_in.in_layer.in_features), generator=gen),
                      guidance=FLUX_GUIDANCE)
    context = torch.randn(1, arch.text_tokens, context_dim, generator=gen)  # (1, T, context_dim)
    conds = {name: m.sampler_helpers.convert_cond([[context, extras]])}
    latent_image = torch.zeros_like(x)
    return m.samplers.process_conds(base, x, conds, x.device, latent_image=latent_image, seed=0)[name]


def attention_channels(base: Any, layout: str) -> int:
    """Channels of the classifier input: one per head of every text-attention layer (the pack's layout)."""
    diffusion = base.diffusion_model
    if layout == "unet":
        return sum(mod.heads for name, mod in diffusion.named_modules() if name.endswith(".attn2"))
    if hasattr(diffusion, "joint_blocks"):  # MMDiT
        return sum(block.x_block.attn.num_heads for block in diffusion.joint_blocks)
    return sum(b.num_heads for b in diffusion.double_blocks) + sum(b.num_heads for b in diffusion.single_blocks)


def _classifier(m: SimpleNamespace, arch: Architecture, base: Any, layout: str, device: torch.device,
                seed: int) -> Any:
    """A random RelationClassifier with the family's published settings (built on CPU, then moved)."""
    channels = attention_channels(base, layout)
    config = dataclasses.replace(m.classifier.FAMILY_CLASSIFIER_DEFAULTS[arch.classifier_family],
                                 input_channels=channels)
    relations = tuple(m.relations.SPATIAL_RELATIONS) + tuple(f"class{i}" for i in range(config.num_relations - 4))
    torch.manual_seed(seed + 2)
    model = m.classifier.RelationClassifier(config).eval()
    model.requires_grad_(False)
    model.to(device)
    return m.checkpoint.LoadedClassifier(
        model=model, relations=relations[: config.num_relations], trained_steps=tuple(range(config.num_timesteps)),
        trained_num_steps=config.num_timesteps, map_size=config.map_size, orig_map_size=config.map_size,
        family=arch.classifier_family, channels=channels, layout=layout)


@torch.no_grad()
def fill_random_(module: torch.nn.Module, seed: int) -> None:
    """Random weights with O(1) activations: norms 1/0, other 1-D N(0, 0.02), weights N(0, 1/fan_in).

    fp8 weights are drawn in fp32 and converted; uninitialised buffers (MMDiT's ``pos_embed``) get N(0, 0.02).
    """
    gen = torch.Generator().manual_seed(seed)
    owners = dict(module.named_modules())
    for name, param in module.named_parameters():
        if param.ndim == 0:
            continue
        owner = owners[name.rpartition(".")[0]]
        if "Norm" in type(owner).__name__:
            value = torch.full(param.shape, 1.0 if name.endswith(("weight", "scale")) else 0.0)
        elif param.ndim == 1:
            value = torch.randn(param.shape, generator=gen) * 0.02
        else:
            value = torch.randn(param.shape, generator=gen) * param[0].numel() ** -0.5
        param.copy_(value.to(param.dtype))
    for name, buffer in module.named_buffers():
        if name.endswith("pos_embed"):
            buffer.copy_((torch.randn(buffer.shape, generator=gen) * 0.02).to(buffer.dtype))
