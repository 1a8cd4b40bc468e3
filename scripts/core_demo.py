"""CPU demonstration of the Learn-to-Steer core: steer a tiny random attention model toward a relation.

What it shows: the classifier reads the two objects' attention maps, and gradient steps on the latent (the
test-time optimisation of the paper) raise the classifier's probability for the requested relation. The denoiser
is random and the classifier is trained for a few seconds on synthetic blob maps (no weights are downloaded), so
this demonstrates the mechanics, not image quality. The ComfyUI nodes run the same code on real models.

    python scripts/core_demo.py [--relation "to the left of"] [--steps 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2s_core.classifier import ClassifierConfig, RelationClassifier  # noqa: E402
from l2s_core.optimize import refine_latent  # noqa: E402
from l2s_core.presets import get_preset  # noqa: E402
from l2s_core.prompts import parse_relations  # noqa: E402
from l2s_core.relations import SPATIAL_RELATIONS  # noqa: E402
from l2s_core.steps import classifier_step_index  # noqa: E402
from l2s_core.toy_denoiser import ToyAttentionDenoiser  # noqa: E402


def blob_maps(relations: torch.Tensor, channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Synthetic (B, 2, C, S, S) maps: a Gaussian blob per object, placed so the subject is ``relation`` the object."""
    batch = relations.shape[0]
    centre = torch.rand(batch, 2, generator=generator) * 0.5 + 0.25  # (B, 2) object centre (y, x) in [0.25, 0.75]
    offset = torch.rand(batch, generator=generator) * 0.25 + 0.15
    direction = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])  # above, below, left of, right of
    subject = centre + direction[relations] * offset[:, None]  # (B, 2)
    grid = (torch.arange(size) + 0.5) / size
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")  # (S, S) each

    def blob(c: torch.Tensor) -> torch.Tensor:
        d2 = (yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2  # (B, S, S)
        m = torch.exp(-d2 / 0.01)
        return m / m.sum(dim=(-1, -2), keepdim=True)

    maps = torch.stack([blob(subject), blob(centre)], dim=1)  # (B, 2, S, S)
    noise = torch.rand(batch, 2, channels, size, size, generator=generator) * 0.5 + 0.75
    return maps[:, :, None] * noise  # (B, 2, C, S, S)


def train_classifier(classifier: RelationClassifier, order: list[str], channels: int, steps: int) -> None:
    """A few seconds of AdamW on synthetic blob maps, so the classifier reads relative position.

    Maps sum to 1 over 256 pixels, so their values are tiny; the published classifiers learn from that scale over
    many epochs. To learn in seconds, training sees the maps multiplied by S*S and the factor is then folded into
    the input projection, which gives exactly the same classifier on unscaled maps.
    """
    scale = 16 * 16
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.AdamW(classifier.parameters(), lr=1e-3)
    canonical = ["above", "below", "to the left of", "to the right of"]
    label_of = torch.tensor([order.index(name) for name in canonical])
    classifier.train()
    for _ in range(steps):
        relations = torch.randint(0, 4, (32,), generator=generator)
        maps = blob_maps(relations, channels, 16, generator) * scale
        loss = torch.nn.functional.cross_entropy(classifier(maps, torch.full((32,), 5)), label_of[relations])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        classifier.object_extractor.input_projection.weight.mul_(scale)
    classifier.eval().requires_grad_(False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default="a photo of a dog to the right of a teddy bear")
    parser.add_argument("--steps", type=int, default=5, help="denoising steps to steer")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    triplets = parse_relations(args.prompt)
    print(f"prompt: {args.prompt!r}")
    for t in triplets:
        print(f"  parsed: subject={t.subject!r} relation={t.relation!r} object={t.object!r}")

    torch.manual_seed(args.seed)
    denoiser = ToyAttentionDenoiser(args.seed)
    preset = get_preset("sd2")
    config = ClassifierConfig.from_official(
        {"map_size": 16, "d_model": 256, "num_timesteps": preset.num_steps},
        input_channels=8, num_relations=len(SPATIAL_RELATIONS), family="sd2",
    )
    classifier = RelationClassifier(config)
    order = sorted(SPATIAL_RELATIONS)
    print("training a relation classifier on synthetic blob maps (a few seconds) ...")
    train_classifier(classifier, order, channels=4, steps=80)
    relation_index = {name: i for i, name in enumerate(order)}
    targets = [torch.tensor([relation_index[t.relation]]) for t in triplets]
    subject_tokens, object_tokens = [1, 2], [4, 5]  # where the two phrases sit in the toy model's 8 text tokens

    def maps_fn(latent: torch.Tensor, triplet: int) -> torch.Tensor:
        return denoiser.object_maps(latent, subject_tokens, object_tokens, map_size=16)

    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(args.seed))
    print(f"\nsteering {args.steps} steps, {preset.iterations} iterations each, step size {preset.step_size}")
    start = time.perf_counter()
    for step in range(args.steps):
        class_step = classifier_step_index(step, preset.num_steps, (5, 10, 15, 20, 25, 49), preset.num_steps)
        result = refine_latent(latent, maps_fn, classifier, targets, step_index=class_step,
                               step_size=preset.step_size, iterations=preset.iterations,
                               loss_threshold=preset.threshold_for(step))
        before, after = result.initial_target_probability[0], result.final_target_probability[0]
        print(f"  step {step}: p(target) {before:.3f} -> {after:.3f} ({len(result.records)} iterations, "
              f"stopped: {result.stopped})")
        latent = result.latent
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
