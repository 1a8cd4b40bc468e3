"""Train the toy world from seeds on CPU: synthetic scenes -> latents -> decoder -> UNet; write the bundle.

Stages (each logs its wall time; the totals go into the bundle metadata):

1. **Scenes**: ``num_images`` scenes of two objects in one of the four relations (:mod:`.scenes`), with a
   co-occurrence bias: with probability ``bias`` the pair is one whose usual arrangement is the drawn relation.
   The prompt names the pair and the true relation ("a red square to the left of a blue circle"), or the same
   scene from the other object's side ("a blue circle to the right of a red square"); with ``relation_captions``
   below 1, only that share of the prompts names the relation and the rest name the two objects alone ("a red square
   and a blue circle"), as most captions of real images leave positions unsaid. ``solo_images`` scenes of one
   object alone ("a blue circle") can be added after them, to tie each object's words to its look on their own.
2. **Latents**: every scene through the frozen pooling encoder (:func:`pooling_init_`, computed directly by
   :func:`pooled_latents`); the latent scale factor makes their standard deviation 1.
3. **Autoencoder** (TAESD layout): the encoder stays the pooling codec; the decoder is trained on random
   ``ae_crop`` pixel crops (and the matching latent crops), MSE + L1 to the pixels. The stages after it do not
   depend on it (the UNet is trained on the encoder's latents, and every stage seeds its own random state).
4. **UNet** (SD1 structure): epsilon prediction on the SD1 noise schedule (scaled-linear betas 0.00085..0.012,
   1000 steps: ComfyUI's default for SD1 models), 10% of prompts dropped to the empty prompt for classifier-free
   guidance, AdamW with warm-up and cosine decay, an exponential moving average of the weights is what is saved.
   The text encoder (CLIP-L architecture at toy width) trains with the UNet at ``text_lr`` (0 keeps it frozen at its
   seeded initialisation): a random encoder's outputs for "red" and "purple" are ~0.9 cosine-similar (position
   embeddings dominate), which leaves the small UNet mixing colours up. A token-grounding term (:mod:`.grounding`,
   weight ``grounding_weight``) pulls each object word's cross-attention into that object's box, so the toy UNet's
   maps localise objects the way a large model's do (without it they stay flat and no classifier can read a relation from them).
   A pixel-level binding term of the same module (weight ``binding_weight``) ties each object's pixels to its own
   words, so that both requested objects get drawn.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from l2s_core.relations import SPATIAL_RELATIONS as RELATIONS
from l2s_core.toy_bundle import save_bundle

from .architecture import (
    ToyArchitecture,
    build_autoencoder,
    build_text_encoder,
    build_unet,
    comfy_unet_config,
    taesd_state_dict,
    text_encoder_config,
)
from .grounding import GroundingCapture, binding_loss, grounding_loss, object_boxes_loss_inputs
from .scenes import (
    DEFAULT_KINDS,
    INVERSE,
    PAPER,
    Colour,
    ToyWorldConfig,
    parse_kinds,
    render_scene,
    render_single,
    sample_pair,
)
from .vocabulary import pair_prompt, prompt_ids, relation_prompt

logger = logging.getLogger(__name__)

SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
}
"""SD1's noise schedule (ComfyUI's ModelSamplingDiscrete default for SD1 models)."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the bundle (with the seed, the build is reproducible on the same torch build)."""

    seed: int = 0
    num_images: int = 8000
    solo_images: int = 0
    bias: float = 0.99
    min_object_frac: float = 0.30
    max_object_frac: float = 0.45
    kinds: tuple[str, ...] = DEFAULT_KINDS
    backgrounds: tuple[Colour, ...] = (PAPER,)
    ae_steps: int = 400
    ae_batch: int = 8
    ae_crop: int = 64
    ae_lr: float = 1e-3
    unet_steps: int = 3500
    unet_batch: int = 64
    unet_lr: float = 1e-3
    text_lr: float = 1e-3
    prompt_dropout: float = 0.1
    ema_decay: float = 0.998
    grounding_weight: float = 0.2
    binding_weight: float = 0.1
    relation_captions: float = 0.25
    threads: int | None = None

    def __post_init__(self) -> None:
        """Check the vocabulary before any stage runs: every kind parses and its words are toy-prompt words."""
        if not 0.0 <= self.relation_captions <= 1.0:
            raise ValueError(f"relation_captions is the share of pair prompts that name the relation, in [0, 1]; "
                             f"got {self.relation_captions}.")
        for kind in parse_kinds(self.kinds):
            prompt_ids(f"a {kind.name}")  # raises ValueError naming the unknown word and the vocabulary

    def world(self, arch: ToyArchitecture) -> ToyWorldConfig:
        """The scene drawing settings."""
        return ToyWorldConfig(size=arch.image_size, min_object_frac=self.min_object_frac,
                              max_object_frac=self.max_object_frac, backgrounds=self.backgrounds)


@dataclass(frozen=True)
class Scenes:
    """Rendered training scenes."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    prompts: list[str]
    relations: list[str]  # "" where the prompt names no relation (one object, or two without their relation)
    subject_boxes: torch.Tensor  # (N, 4) long: pixel box of the prompt's subject (x0, y0, x1, y1)
    object_boxes: torch.Tensor  # (N, 4) long: pixel box of the prompt's object


def render_scenes(config: BuildConfig, arch: ToyArchitecture) -> Scenes:
    """Draw ``config.num_images`` biased scenes with their prompts, then ``config.solo_images`` single-object scenes
    ("a blue circle", kinds in turn; relation ""), all deterministic in ``config.seed``."""
    world = config.world(arch)
    images = np.zeros((config.num_images + config.solo_images, arch.image_size, arch.image_size, 3), dtype=np.uint8)
    prompts: list[str] = []
    relations: list[str] = []
    boxes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    for i in range(config.num_images):
        rng = random.Random(f"{config.seed}:scene:{i}")
        relation = RELATIONS[rng.randrange(len(RELATIONS))]
        subject, obj = sample_pair(relation, rng, config.kinds, config.bias)
        scene = render_scene(subject, obj, relation, rng, world)
        images[i] = np.asarray(scene.image, dtype=np.uint8)
        # The relation is named or not by a stream of its own: the scenes (and, at a share of 1.0, the prompts)
        # are the same whatever the share.
        named = random.Random(f"{config.seed}:caption:{i}").random() < config.relation_captions
        swapped = rng.random() >= 0.5  # the prompt starts from the other object
        first, second = (1, 0) if swapped else (0, 1)
        subject_name, object_name = scene.objects[first].name, scene.objects[second].name
        if named:
            said = INVERSE[relation] if swapped else relation
            prompts.append(relation_prompt(subject_name, said, object_name))
            relations.append(said)
        else:
            prompts.append(pair_prompt(subject_name, object_name))
            relations.append("")
        boxes.append((scene.objects[first].box, scene.objects[second].box))
    names = [k.name for k in parse_kinds(config.kinds)]
    for i in range(config.solo_images):  # after the pair scenes, so these stay the same whatever solo_images is
        rng = random.Random(f"{config.seed}:solo:{i}")
        image, placed = render_single(names[i % len(names)], rng, world)
        images[config.num_images + i] = np.asarray(image, dtype=np.uint8)
        prompts.append(f"a {placed.name}")
        relations.append("")
        boxes.append((placed.box, placed.box))
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, H, W, 3) -> (N, 3, H, W)
    box_tensor = torch.tensor(boxes, dtype=torch.long).reshape(len(boxes), 2, 4)  # (N, subject/object, 4)
    return Scenes(images=tensor, prompts=prompts, relations=relations, subject_boxes=box_tensor[:, 0],
                  object_boxes=box_tensor[:, 1])


def _to_signed(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(127.5).sub(1.0)  # uint8 -> [-1, 1]


LATENT_CENTRE = 0.9
"""Colour value (0..1) coded as latent 0 by :func:`pooling_init_`: about the backgrounds' brightness, so the latents
start near zero mean (a diffusion model trained on latents with a large mean cannot recover that mean from noise)."""


@torch.no_grad()
def pooling_init_(model: torch.nn.Module) -> None:
    """Start the autoencoder as "8x8 average pooling of RGB / smooth up-sampling" (a soft but exact-colour codec).

    Every residual block's last convolution is zeroed, so the block is the identity on the non-negative activations
    (``relu(0 + x) = x``); the first convolutions copy RGB into channels 0-2; each stride-2 convolution averages
    2x2 pixels; the last encoder convolution maps a [0, 1] colour c to 2 (c - LATENT_CENTRE); the decoder mirrors it,
    each nearest 2x up-sampling followed by a [1 2 1] blur (about bilinear interpolation), so object outlines come
    out as smooth contours instead of 8x8 blocks. Training then only has to sharpen edges instead of discovering colour
    coding from noise, which on a CPU is the difference between minutes and hours.
    """
    blur = torch.zeros(64, 64, 3, 3)
    taps = torch.tensor([1.0, 2.0, 1.0])
    for c in range(64):
        blur[c, c] = torch.outer(taps, taps) / 16.0  # after a nearest 2x up-sampling: about bilinear interpolation
    pool = torch.zeros(64, 64, 3, 3)
    for c in range(64):
        pool[c, c, 1:3, 1:3] = 0.25  # taps at rows/cols 2i, 2i+1 of a stride-2, padding-1 conv
    for part in (model.encoder.layers, model.decoder.layers):
        for layer in part:
            if hasattr(layer, "conv") and hasattr(layer, "skip"):  # residual block
                last = layer.conv[-1]
                last.weight.zero_()
                last.bias.zero_()
    enc = [m for m in model.encoder.layers if isinstance(m, torch.nn.Conv2d)]
    enc[0].weight.zero_()
    enc[0].bias.zero_()
    for c in range(3):
        enc[0].weight[c, c, 1, 1] = 1.0
    for conv in enc[1:-1]:
        conv.weight.copy_(pool)
    enc[-1].weight.zero_()
    enc[-1].bias.fill_(-2.0 * LATENT_CENTRE)
    for c in range(3):
        enc[-1].weight[c, c, 1, 1] = 2.0  # [0, 1] -> 2 (c - centre): light backgrounds land near 0
    enc[-1].bias[3] = 0.0
    dec = [m for m in model.decoder.layers if isinstance(m, torch.nn.Conv2d)]
    dec[0].weight.zero_()
    dec[0].bias.zero_()
    for c in range(3):
        dec[0].weight[c, c, 1, 1] = 0.5
        dec[0].bias[c] = LATENT_CENTRE  # 2 (c - centre) -> c
    for conv in dec[1:-1]:
        conv.weight.copy_(blur)
    dec[-1].weight.zero_()
    dec[-1].bias.zero_()
    for c in range(3):
        dec[-1].weight[c, c, 1, 1] = 1.0


def pooled_latents(images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """The latents of the frozen pooling encoder (:func:`pooling_init_`), computed directly: ``(N, 4, S/8, S/8)``.

    Channels 0-2 are ``2 (mean colour of the 8x8 cell - LATENT_CENTRE)`` (colours in [0, 1]), channel 3 is 0: exactly
    what the encoder's convolutions compute, at a small fraction of their cost (a test checks the two agree).
    """
    out = []
    for i in range(0, images.shape[0], batch):
        colours = F.avg_pool2d(images[i:i + batch].float().div(255.0), 8)  # (B, 3, S, S) -> (B, 3, S/8, S/8)
        out.append(torch.cat([2.0 * (colours - LATENT_CENTRE), torch.zeros_like(colours[:, :1])], dim=1))
    return torch.cat(out)  # (N, 4, S/8, S/8)


def train_autoencoder(images: torch.Tensor, latents: torch.Tensor, config: BuildConfig) -> torch.nn.Module:
    """Train the decoder of the TAESD-layout autoencoder from :func:`pooling_init_`; returns it in eval mode.

    The encoder stays the exact pooling codec (so the latent space is "mean colour per 8x8 cell", which a small UNet
    learns quickly); the decoder learns to draw sharp shapes from those cells, on random ``ae_crop`` pixel crops
    (a crop of the latents and the matching pixels; the decoder is fully convolutional).

    Args:
        images: ``(N, 3, S, S)`` uint8 scenes.
        latents: Their :func:`pooled_latents`.
        config: ``ae_steps``, ``ae_batch``, ``ae_crop`` (pixels, a multiple of 8), ``ae_lr``.
    """
    torch.manual_seed(config.seed + 1)
    model = build_autoencoder()
    pooling_init_(model)
    model.encoder.requires_grad_(False)
    gen = torch.Generator().manual_seed(config.seed + 2)
    optimiser = torch.optim.Adam(model.decoder.parameters(), lr=config.ae_lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, config.ae_steps))
    n, _, size, _ = images.shape
    cells = min(config.ae_crop, size) // 8
    start = time.perf_counter()
    for step in range(config.ae_steps):
        index = torch.randint(0, n, (config.ae_batch,), generator=gen)
        oy, ox = (int(v) for v in torch.randint(0, size // 8 - cells + 1, (2,), generator=gen))
        z = latents[index, :, oy:oy + cells, ox:ox + cells]  # (B, 4, cells, cells)
        x = _to_signed(images[index, :, 8 * oy:8 * (oy + cells), 8 * ox:8 * (ox + cells)])  # (B, 3, 8 cells, 8 cells)
        recon = model.decode(z).sample
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 50 == 0 or step == config.ae_steps - 1:
            logger.info("autoencoder step %d/%d loss %.4f (%.0f s)", step + 1, config.ae_steps, float(loss.detach()),
                        time.perf_counter() - start)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def reconstruction_error(model: torch.nn.Module, images: torch.Tensor, latents: torch.Tensor) -> float:
    """Mean absolute pixel error (0..255 scale) of decoding ``latents`` against ``images``."""
    recon = model.decode(latents).sample.clamp(-1, 1)
    return float((recon - _to_signed(images)).abs().mean() * 127.5)


def alphas_cumprod(schedule: dict[str, Any]) -> torch.Tensor:
    """``alpha_bar_t`` for t = 0..T-1 of the scaled-linear schedule."""
    betas = torch.linspace(schedule["beta_start"] ** 0.5, schedule["beta_end"] ** 0.5,
                           schedule["num_train_timesteps"], dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


@dataclass(frozen=True)
class GroundingTargets:
    """Per scene: the token positions of the prompt's two objects and the box each token must attend to."""

    positions: torch.Tensor  # (N, K) long
    boxes: torch.Tensor  # (N, K, 4) long


def train_unet(latents: torch.Tensor, prompt_index: torch.Tensor, prompt_tokens: torch.Tensor, empty_index: int,
               arch: ToyArchitecture, config: BuildConfig, grounding: GroundingTargets | None = None,
               text_encoder: torch.nn.Module | None = None) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """Train the UNet (epsilon prediction) on scaled latents; returns the EMA UNet and text encoder in eval mode.

    Args:
        latents: ``(N, 4, h, w)`` scaled latents.
        prompt_index: ``(N,)`` row of ``prompt_tokens`` for each latent.
        prompt_tokens: ``(P, 77)`` CLIP ids of the distinct prompts, or ``(P, 77, D)`` fixed embeddings (then
            ``text_encoder`` must be None).
        empty_index: row of the empty prompt (classifier-free guidance dropout).
        text_encoder: trained alongside at ``config.text_lr`` when given with ids (frozen when ``text_lr`` is 0).

    With ``grounding`` and ``config.grounding_weight > 0`` the loss adds the token-grounding term of
    :mod:`.grounding` (object tokens' cross-attention inside their boxes) for the samples that keep their prompt, and
    with ``config.binding_weight > 0`` the pixel-level binding term of the same module.
    """
    torch.manual_seed(config.seed + 3)
    model = build_unet(arch)
    ema = build_unet(arch)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    fixed = prompt_tokens if prompt_tokens.is_floating_point() else None
    if fixed is None and text_encoder is None:
        raise ValueError("train_unet needs a text encoder to embed prompt ids (or pass fixed embeddings).")
    trains_text = fixed is None and config.text_lr > 0
    text_ema = None
    groups = [{"params": list(model.parameters()), "lr": config.unet_lr}]
    if fixed is None:
        text_encoder.requires_grad_(trains_text)
        text_encoder.train(trains_text)
        text_ema = copy.deepcopy(text_encoder).eval().requires_grad_(False)
        if trains_text:
            groups.append({"params": list(text_encoder.parameters()), "lr": config.text_lr})
        else:
            with torch.no_grad():
                fixed = text_encoder(prompt_tokens).last_hidden_state.float()  # (P, 77, D), frozen: embed once
    abar = alphas_cumprod(SCHEDULE)
    gen = torch.Generator().manual_seed(config.seed + 4)
    optimiser = torch.optim.AdamW(groups, weight_decay=0.01)
    warmup = max(1, config.unet_steps // 30)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.unet_steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    start = time.perf_counter()
    running = 0.0
    running_ground = 0.0
    running_binding = 0.0
    capture = GroundingCapture(model)
    grounded = grounding is not None and config.grounding_weight > 0
    pairs = [(ema, model)] + ([(text_ema, text_encoder)] if trains_text else [])
    with capture.installed() if grounded else contextlib.nullcontext():
        for step in range(config.unet_steps):
            embeddings = fixed if fixed is not None else text_encoder(prompt_tokens).last_hidden_state.float()
            loss, ground, binding = _unet_step(model, latents, prompt_index, embeddings, empty_index, abar, gen,
                                               config, capture if grounded else None, grounding, arch.image_size)
            optimiser.zero_grad(set_to_none=True)
            (loss + config.grounding_weight * ground + config.binding_weight * binding).backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optimiser.step()
            schedule.step()
            with torch.no_grad():
                decay = min(config.ema_decay, (1 + step) / (10 + step))
                for averaged, live in pairs:
                    for e, p in zip(averaged.parameters(), live.parameters(), strict=True):
                        e.mul_(decay).add_(p, alpha=1 - decay)
            running = 0.98 * running + 0.02 * float(loss.detach()) if step else float(loss.detach())
            running_ground = 0.98 * running_ground + 0.02 * float(ground.detach()) if step else float(ground.detach())
            running_binding = (0.98 * running_binding + 0.02 * float(binding.detach()) if step
                               else float(binding.detach()))
            if step % 100 == 0 or step == config.unet_steps - 1:
                logger.info("unet step %d/%d loss %.4f grounding %.3f%s (%.0f s)", step + 1, config.unet_steps,
                            running, running_ground,
                            f" binding {running_binding:.3f}" if config.binding_weight > 0 else "",
                            time.perf_counter() - start)
    return ema.eval(), text_ema


def _unet_step(model: torch.nn.Module, latents: torch.Tensor, prompt_index: torch.Tensor, embeddings: torch.Tensor,
               empty_index: int, abar: torch.Tensor, gen: torch.Generator, config: BuildConfig,
               capture: GroundingCapture | None, grounding: GroundingTargets | None, image_size: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch: the denoising loss, the grounding loss and the binding loss (each term 0 without capture; the
    binding loss also 0 when ``config.binding_weight`` is 0, so it costs nothing then)."""
    n = latents.shape[0]
    index = torch.randint(0, n, (config.unet_batch,), generator=gen)
    x0 = latents[index]  # (B, 4, h, w)
    which = prompt_index[index].clone()
    drop = torch.rand(config.unet_batch, generator=gen) < config.prompt_dropout
    which[drop] = empty_index
    # (B, 77, D). Not ``embeddings[which]``: its gradient is a parallel scatter of floats on CPU whose order
    # follows thread timing, so two builds of the same seeds came out different; index_select's is deterministic.
    context = embeddings.index_select(0, which)
    t = torch.randint(0, abar.shape[0], (config.unet_batch,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    a = abar[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
    pred = model(noisy, t, encoder_hidden_states=context).sample
    loss = F.mse_loss(pred, noise)
    if capture is None or grounding is None:
        return loss, torch.zeros(()), torch.zeros(())
    probs = capture.take()
    positions, boxes = grounding.positions[index], grounding.boxes[index]
    ground = grounding_loss(probs, positions, boxes, image_size, ~drop)
    binding = (binding_loss(probs, positions, boxes, image_size, ~drop) if config.binding_weight > 0
               else torch.zeros(()))
    return loss, ground, binding


def _json_ready(value: Any) -> Any:
    """Tuples (nested too) as lists, for the JSON metadata."""
    return [_json_ready(v) for v in value] if isinstance(value, tuple | list) else value


def build_toy_world(out: Path, config: BuildConfig, arch: ToyArchitecture | None = None) -> dict[str, Any]:
    """Run all stages and write the bundle to ``out``. Returns the metadata written."""
    arch = arch or ToyArchitecture()
    if config.threads:
        torch.set_num_threads(config.threads)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    scenes = render_scenes(config, arch)
    timings["scenes_s"] = time.perf_counter() - t0
    logger.info("rendered %d scenes in %.1f s", len(scenes.prompts), timings["scenes_s"])

    t0 = time.perf_counter()
    raw = pooled_latents(scenes.images)
    scale = float(1.0 / raw.std())
    latents = raw * scale
    timings["latents_s"] = time.perf_counter() - t0
    logger.info("latents %s, scale factor %.4f", tuple(latents.shape), scale)

    t0 = time.perf_counter()
    autoencoder = train_autoencoder(scenes.images, raw, config)
    timings["autoencoder_s"] = time.perf_counter() - t0
    recon = reconstruction_error(autoencoder, scenes.images[:64], raw[:64])
    logger.info("autoencoder: mean abs reconstruction error %.2f / 255", recon)

    torch.manual_seed(config.seed + 5)
    text_encoder = build_text_encoder(arch).eval()
    distinct = sorted(set(scenes.prompts))
    tokens = torch.tensor([prompt_ids(p) for p in [*distinct, ""]], dtype=torch.long)  # (P + 1, 77); last: empty
    lookup = {p: i for i, p in enumerate(distinct)}
    prompt_index = torch.tensor([lookup[p] for p in scenes.prompts], dtype=torch.long)

    positions, boxes = object_boxes_loss_inputs(scenes.prompts, scenes.subject_boxes, scenes.object_boxes)
    t0 = time.perf_counter()
    unet, text_encoder = train_unet(latents, prompt_index, tokens, len(distinct), arch, config,
                                    GroundingTargets(positions=positions, boxes=boxes), text_encoder)
    timings["unet_s"] = time.perf_counter() - t0

    meta = {
        "architecture": arch.to_dict(),
        "comfy_unet_config": comfy_unet_config(arch),
        "text_encoder_config": text_encoder_config(arch),
        "latent_scale_factor": scale,
        "schedule": dict(SCHEDULE),
        "world": {
            "kinds": list(config.kinds),
            "image_size": arch.image_size,
            "min_object_frac": config.min_object_frac,
            "max_object_frac": config.max_object_frac,
            "backgrounds": [list(c) for c in config.backgrounds],
            "bias": config.bias,
            "relations": list(RELATIONS),
        },
        "training": {**{k: (_json_ready(v)) for k, v in asdict(config).items()},
                     "timings": timings, "reconstruction_mae": recon, "torch": torch.__version__},
    }
    parts = {
        "vae": taesd_state_dict(autoencoder),
        "unet": unet.state_dict(),
        "text_encoder": {k: v for k, v in text_encoder.state_dict().items() if "position_ids" not in k},
    }
    save_bundle(out, parts, meta)
    logger.info("toy world built in %.0f s: %s", sum(timings.values()), timings)
    return meta
