"""Plain and steered sampling of the toy world in diffusers, with the pack's core doing the steering.

This is the benchmark's generator: DDIM (eta 0) with classifier-free guidance, and, when steering, the same
:func:`l2s_core.optimize.refine_latent` the ComfyUI nodes call, fed by :class:`training.recorder.AttentionRecorder`
maps (the recorder and the nodes' capture agree to 1e-7, ``tests/comfyui/test_maps_consistency.py``). The latent that is
refined is the variance-preserving DDIM latent, as in the nodes (which rescale ComfyUI's sigma-space latent to it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from l2s_core.attention import MapRequest
from l2s_core.checkpoint import LoadedClassifier
from l2s_core.layout import LayerMaps
from l2s_core.settings import SteeringSettings
from l2s_core.steer import SteerStepResult, steer_step
from l2s_core.steps import ScheduleWindow
from l2s_core.toy_bundle import load_bundle

from ..recorder import AttentionRecorder
from .bundle import load_pipeline
from .vocabulary import prompt_ids, words_of

logger = logging.getLogger(__name__)


StepObserver = Callable[[int, torch.Tensor, SteerStepResult], None]
"""``on_steer(step, latent_before, result)``: called after each steered denoising step."""


@dataclass(frozen=True)
class Samples:
    """Generated images and what they cost.

    Attributes:
        images: ``(B, H, W, 3)`` uint8.
        seconds: Wall time of the whole batch (encode, sampling, steering, decode).
        steering_passes: Forward+backward passes spent on steering, per sample.
    """

    images: np.ndarray
    seconds: float
    steering_passes: tuple[int, ...]


def phrase_positions(prompt: str, phrase: str) -> tuple[int, ...]:
    """Token positions (start token = 0) of the first occurrence of ``phrase`` in a toy prompt (one token per word).

    Raises:
        ValueError: the phrase does not occur in the prompt.
    """
    words, target = words_of(prompt), words_of(phrase)
    for start in range(len(words) - len(target) + 1):
        if words[start:start + len(target)] == target:
            return tuple(range(1 + start, 1 + start + len(target)))
    raise ValueError(f"{phrase!r} does not occur in the prompt {prompt!r}.")


class ToySampler:
    """The toy world in diffusers (CPU by default), ready for plain and steered sampling."""

    def __init__(self, bundle_path: Path, device: str = "cpu") -> None:
        self.bundle = load_bundle(bundle_path)
        self.device = torch.device(device)
        self.pipe = load_pipeline(self.bundle, self.device)
        self.unet = self.pipe.unet
        self.scale = self.bundle.scale_factor
        self.recorder = AttentionRecorder(self.unet, "sd")
        self.latent_size = int(self.bundle.meta["architecture"]["image_size"]) // 8
        self.uncond = self.embed("")

    @torch.no_grad()
    def embed(self, prompt: str) -> torch.Tensor:
        """Text encoder output ``(1, 77, D)`` for ComfyUI's token ids of ``prompt``."""
        ids = torch.tensor([prompt_ids(prompt)], dtype=torch.long, device=self.device)  # (1, 77)
        return self.pipe.text_encoder(ids).last_hidden_state.float()

    def _scheduler(self, steps: int):  # -> DDIMScheduler
        scheduler = self.pipe.scheduler.__class__.from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(steps, device=self.device)
        return scheduler

    def noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """Initial latents ``(B, 4, h, w)``, one generator per seed (a seed gives the same noise in any batch)."""
        shape = (1, 4, self.latent_size, self.latent_size)
        return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(
            self.device)

    def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, cfg: float) -> torch.Tensor:
        batch = z.shape[0]
        context = torch.cat([self.uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)])  # (2B, 77, D)
        out = self.unet(torch.cat([z, z]), t, encoder_hidden_states=context).sample  # (2B, 4, h, w)
        uncond, text = out.chunk(2)
        return uncond + cfg * (text - uncond)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> np.ndarray:
        """Scaled latents -> ``(B, H, W, 3)`` uint8 images."""
        image = self.pipe.vae.decode(z / self.scale).sample  # (B, 3, H, W) in [-1, 1]
        image = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return image.permute(0, 2, 3, 1).cpu().numpy()  # (B, 3, H, W) -> (B, H, W, 3)

    def sample(self, prompt: str | Sequence[str], seeds: Sequence[int], *, steps: int = 20, cfg: float = 5.0,
               subject: str | Sequence[str] | None = None, relation: str | Sequence[str] | None = None,
               obj: str | Sequence[str] | None = None, classifier: LoadedClassifier | None = None,
               steer: SteeringSettings | None = None, on_steer: StepObserver | None = None) -> Samples:
        """Generate one image per seed; steer toward "<subject> <relation> <obj>" when ``steer`` is given.

        ``on_steer(step, before, result)`` is called after each steered step with the latent before it and the
        step's :class:`l2s_core.steer.SteerStepResult` (for diagnostics such as the size of the updates).

        ``prompt``, ``subject``, ``relation`` and ``obj`` are either one value for the whole batch or one per seed.
        A batch of different prompts is sampled together (every sample gets exactly what it would get alone); when
        steering, their subjects and objects must sit at the same token positions (e.g. prompts that share the
        relation words).
        """
        start = time.perf_counter()
        batch = len(seeds)
        prompts = _per_sample(prompt, batch, "prompt")
        distinct = {p: self.embed(p) for p in dict.fromkeys(prompts)}
        cond = torch.cat([distinct[p] for p in prompts])  # (B, 77, D)
        z = self.noise(seeds)
        scheduler = self._scheduler(steps)
        passes = [0] * batch
        settled = [False] * batch
        for i, t in enumerate(scheduler.timesteps):
            if steer is not None and i < steer.last_step:
                if classifier is None or subject is None or relation is None or obj is None:
                    raise ValueError("Steered sampling needs the classifier, subject, relation and object.")
                request = _SteerRequest(prompts, _per_sample(subject, batch, "subject"),
                                        _per_sample(relation, batch, "relation"), _per_sample(obj, batch, "obj"))
                if not all(settled):
                    before = z
                    result = self._refine(z, t, i, steps, cond, request, classifier, steer, settled)
                    z, used, now_settled = result.latent.to(z.dtype), list(result.passes), result.settled
                    if on_steer is not None:
                        on_steer(i, before, result)
                    passes = [p + u for p, u in zip(passes, used, strict=True)]
                    if steer.settle:
                        settled = [a or b for a, b in zip(settled, now_settled, strict=True)]
            with torch.no_grad():
                eps = self._eps(z, t, cond, cfg)
                z = scheduler.step(eps, t, z).prev_sample
        images = self.decode(z)
        return Samples(images=images, seconds=time.perf_counter() - start, steering_passes=tuple(passes))

    def _refine(self, z: torch.Tensor, t: torch.Tensor, step: int, steps: int, cond: torch.Tensor,
                request: _SteerRequest, classifier: LoadedClassifier, steer: SteeringSettings,
                settled: list[bool]) -> SteerStepResult:
        subject_positions, object_positions = request.positions()
        target = MapRequest("unet", 77, subject_positions, object_positions, (self.latent_size, self.latent_size))

        def layers_fn(z_leaf: torch.Tensor, triplet: int, rows: torch.Tensor) -> tuple[list[LayerMaps],
                                                                                      list[LayerMaps]]:
            # only the samples still being steered run: (A, ...) latent, (A, 77, D) text
            with self.recorder.installed(), self.recorder.recording(target):
                self.unet(z_leaf, t, encoder_hidden_states=cond[rows])
                return self.recorder.layers()

        return steer_step(z, layers_fn, classifier, [request.relations], layout="unet", settings=steer,
                          window=ScheduleWindow.from_noise(steps), step=step, active_rows_only=True, skip=settled)


def _per_sample(value: str | Sequence[str], batch: int, name: str) -> list[str]:
    """One value per sample: a single string repeated, or a sequence of exactly ``batch`` strings."""
    if isinstance(value, str):
        return [value] * batch
    values = list(value)
    if len(values) != batch:
        raise ValueError(f"{name}: {len(values)} values for {batch} seeds; give one value or one per seed.")
    return values


@dataclass(frozen=True)
class _SteerRequest:
    """What a steered batch asks for, one entry per sample."""

    prompts: list[str]
    subjects: list[str]
    relations: list[str]
    objects: list[str]

    def positions(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The subject's and the object's token positions, shared by every sample.

        Raises:
            ValueError: the samples' subjects or objects sit at different token positions.
        """
        pairs = {(phrase_positions(p, s), phrase_positions(p, o))
                 for p, s, o in zip(self.prompts, self.subjects, self.objects, strict=True)}
        if len(pairs) != 1:
            raise ValueError(f"A steered batch needs its subjects and objects at the same token positions in every "
                             f"prompt; got {sorted(pairs)}. Batch prompts that share the relation words.")
        return pairs.pop()
