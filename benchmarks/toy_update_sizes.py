"""How far the steering loop moves the toy world's latent at each denoising step, and what that does to the background.

For every classifier given, the toy benchmark's unusual-arrangement prompts (all ordered pairs, the three relations
each pair does not usually appear in) are sampled at one seed and steered with the classifier family's official
schedule. After each steered step the size of that step's total latent change is recorded (the L2 norm of
``z_after - z_before`` over the whole 4 x 16 x 16 latent, whose own norm is about 32), with the classifier's target
probability at the step's first forward. Every image is judged as the benchmark judges it. Printed per classifier:
accuracy and background cleanliness, the mean update size per steered step, the mean target probability per step, and
how background cleanliness goes with the total update size (correlation; cleanliness of the quarter of the images
with the largest total update against the rest). Run from the repository root (about 3 minutes per classifier on two
cores)::

    python benchmarks/toy_update_sizes.py toy_world/classifiers/toy_relation_classifier.safetensors other.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root, for l2s_core and training

from l2s_core.checkpoint import load_classifier  # noqa: E402
from l2s_core.settings import SteeringOptions  # noqa: E402
from l2s_core.steer import SteerStepResult  # noqa: E402
from training.toy.benchmark import prompt_grid  # noqa: E402
from training.toy.judge import Palette, judge  # noqa: E402
from training.toy.sampling import ToySampler  # noqa: E402

DEFAULT_WORLD = Path("toy_world/models/toy_world.safetensors")


@dataclass(frozen=True)
class ImageTrace:
    """One steered image: its verdict and, per steered step, the update size and the first target probability."""

    prompt: str
    correct: bool
    clean: float
    update_norms: list[float]
    target_probabilities: list[float]


@dataclass
class StepLog:
    """An ``on_steer`` observer: per steered step, each sample's update size and first target probability."""

    norms: list[list[float]] = field(default_factory=list)  # per steered step, per sample
    probabilities: list[tuple[float, ...]] = field(default_factory=list)

    def __call__(self, step: int, before: torch.Tensor, result: SteerStepResult) -> None:
        change = (result.latent - before.float()).flatten(1)  # (B, 4, h, w) -> (B, 4*h*w)
        self.norms.append(change.norm(dim=1).tolist())
        self.probabilities.append(result.refined.initial_target_probability)


def trace_classifier(sampler: ToySampler, classifier_path: Path, seed: int, steps: int, cfg: float) -> list[ImageTrace]:
    """Sample and judge the unusual-arrangement prompts with the official schedule, recording each step's update."""
    classifier = load_classifier(classifier_path)
    settings = SteeringOptions().resolve(steps, classifier.family)
    world = sampler.bundle.meta["world"]
    palette = Palette.of_world(world)
    grid = [item for item in prompt_grid(world["kinds"], 30) if not item.usual]
    traces: list[ImageTrace] = []
    for relation in dict.fromkeys(item.relation for item in grid):  # one batch per relation (shared positions)
        items = [item for item in grid if item.relation == relation]
        log = StepLog()
        samples = sampler.sample([item.prompt for item in items], [seed] * len(items), steps=steps, cfg=cfg,
                                 subject=[item.subject for item in items], relation=[item.relation for item in items],
                                 obj=[item.object for item in items], classifier=classifier, steer=settings,
                                 on_steer=log)
        for b, (item, image) in enumerate(zip(items, samples.images, strict=True)):
            verdict = judge(image, item.subject, item.relation, item.object, backgrounds=palette.backgrounds,
                            colours=palette.colours)
            traces.append(ImageTrace(item.prompt, verdict.correct, verdict.clean, [n[b] for n in log.norms],
                                     [float(p[b]) for p in log.probabilities]))
    return traces


def summary(name: str, traces: list[ImageTrace]) -> str:
    """The printed figures of one classifier."""
    norms = np.array([t.update_norms for t in traces])  # (images, steered steps)
    probabilities = np.array([t.target_probabilities for t in traces])  # (images, steered steps)
    clean = np.array([t.clean for t in traces])
    total = norms.sum(axis=1)
    top = total >= np.quantile(total, 0.75)
    return "\n".join([
        f"{name}: {len(traces)} images, accuracy {np.mean([t.correct for t in traces]):.3f}, "
        f"background clean {clean.mean():.3f}",
        "  mean update size per steered step: " + " ".join(f"{v:.2f}" for v in norms.mean(axis=0)),
        "  mean target probability per step:  " + " ".join(f"{v:.2f}" for v in np.nanmean(probabilities, axis=0)),
        f"  total update size: mean {total.mean():.2f}, median {np.median(total):.2f}, max {total.max():.2f}",
        f"  correlation of total update size and background clean: {np.corrcoef(total, clean)[0, 1]:.2f}; "
        f"clean of the quarter with the largest updates {clean[top].mean():.3f}, of the rest {clean[~top].mean():.3f}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("classifiers", type=Path, nargs="+", help="classifier files to compare")
    parser.add_argument("--world", type=Path, default=DEFAULT_WORLD)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write every image's trace here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    sampler = ToySampler(args.world)
    results = {}
    for path in args.classifiers:
        traces = trace_classifier(sampler, path, args.seed, args.steps, args.cfg)
        results[str(path)] = [asdict(t) for t in traces]
        sys.stdout.write(summary(path.name, traces) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
