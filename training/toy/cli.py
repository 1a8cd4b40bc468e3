"""``python -m training toy model|classifier|bench``: build the toy world, train its classifier, benchmark it.

* ``model``: train the toy text-to-image model from seeds on CPU (:mod:`training.toy.build`) and write the bundle.
* ``classifier``: train the relation classifier on the toy model with the real pipeline: ``triplets --source toy``
  (ground-truth scenes of the same world) -> ``invert`` (dual inversion) -> ``train`` -> ``export``.
* ``frontier``: accuracy against steering passes per image, drawn from ``bench`` results (:mod:`.frontier_plot`).
* ``bench``: the benchmark table (:mod:`training.toy.benchmark`): plain sampling, steering with the classifier,
  steering with an ablation classifier trained without the wrong-relation samples, and steering at smaller compute
  budgets.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_WORLD = Path("toy_world/models/toy_world.safetensors")
DEFAULT_CLASSIFIER = Path("toy_world/classifiers/toy_relation_classifier.safetensors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands and their options."""
    sub = parser.add_subparsers(dest="toy_command", metavar="toy_command", required=True)

    model = sub.add_parser("model", help="train the toy text-to-image model from seeds and write the bundle")
    model.add_argument("--out", type=Path, default=DEFAULT_WORLD, help=f"bundle to write (default {DEFAULT_WORLD})")
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--images", type=int, default=None, help="training scenes (default 8000)")
    model.add_argument("--solo-images", type=int, default=None,
                       help="single-object scenes added to the pair scenes (default 0)")
    model.add_argument("--ae-steps", type=int, default=None, help="decoder training steps (default 400)")
    model.add_argument("--unet-steps", type=int, default=None, help="UNet steps (default 3500)")
    model.add_argument("--bias", type=float, default=None, help="co-occurrence bias of the scenes (default 0.99)")
    model.add_argument("--binding-weight", type=float, default=None,
                       help="weight of the pixel-level binding term (default 0.1; 0 turns it off)")
    model.add_argument("--relation-captions", type=float, default=None,
                       help="share of the pair prompts that name the relation; the rest name the two objects only, "
                       "'a red square and a blue circle' (default 0.25)")
    model.add_argument("--kinds", default=None,
                       help="comma-separated '<colour> <shape>' object kinds (default: red square, green triangle, "
                       "blue circle, yellow star, purple cross, teal diamond)")
    model.add_argument("--threads", type=int, default=None, help="torch CPU threads")

    clf = sub.add_parser("classifier", help="train the relation classifier on a toy world (triplets -> invert -> "
                         "train -> export)")
    clf.add_argument("--world", type=Path, default=DEFAULT_WORLD)
    clf.add_argument("--work", type=Path, required=True, help="working folder for triplets, maps and the run")
    clf.add_argument("--out", type=Path, default=DEFAULT_CLASSIFIER)
    clf.add_argument("--per-relation", type=int, default=160,
                     help="training scenes per relation (default 160; val and test get a fifth and a tenth of that)")
    clf.add_argument("--steps", type=int, default=20, help="sampling steps of the inversion (default 20)")
    clf.add_argument("--fixed-point-iterations", type=int, default=2,
                     help="fixed-point iterations per DDIM inversion step (default 2; invert's own default is 5)")
    clf.add_argument("--epochs", type=int, default=40, help="most epochs (default 40)")
    clf.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    clf.add_argument("--patience", type=int, default=5,
                     help="stop after this many epochs without a lower validation loss (default 5)")
    clf.add_argument("--seed", type=int, default=1)
    clf.add_argument("--no-negatives", action="store_true", help="ablation: no wrong-relation samples")
    clf.add_argument("--psnr-threshold", type=float, default=None,
                     help="drop inversions below this PSNR (default: invert's, 19.5 dB for UNets)")
    clf.add_argument("--threads", type=int, default=None)

    bench = sub.add_parser("bench", help="benchmark plain vs steered sampling on a fixed prompt x seed grid")
    bench.add_argument("--world", type=Path, default=DEFAULT_WORLD)
    bench.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER)
    bench.add_argument("--ablation-classifier", type=Path, default=None,
                       help="classifier trained with --no-negatives, for the ablation row")
    bench.add_argument("--pairs", type=int, default=30,
                       help="ordered object pairs (x 4 relations) (default 30: every ordered pair of the six kinds)")
    bench.add_argument("--seeds", type=int, default=2, help="seeds per prompt (default 2)")
    bench.add_argument("--first-seed", type=int, default=1000,
                       help="first seed of the grid (default 1000); re-measure on other seeds with another value")
    bench.add_argument("--batch", type=int, default=60, help="images sampled together (default 60)")
    bench.add_argument("--steps", type=int, default=20)
    bench.add_argument("--cfg", type=float, default=8.0)
    bench.add_argument("--budgets", default="official,early,short",
                       help="comma list of steering rows, each a spec like official, fast, quality (the nodes' "
                       "modes), early:0.9, steps:3, share:0.5, iters:4, size:2, rel:0.02, keep or a '+' combination "
                       "(early = early:0.9, short = steps:3); see training/toy/budgets.py")
    bench.add_argument("--out", type=Path, default=Path("benchmarks/results/toy_world"))
    bench.add_argument("--save-images", action="store_true")
    bench.add_argument("--threads", type=int, default=None)

    frontier = sub.add_parser("frontier", help="plot accuracy against steering passes from bench results")
    frontier.add_argument("results", type=Path, nargs="+", help="results.json files of toy bench (one per seed set)")
    frontier.add_argument("--names", default=None, help="comma list naming the results files (default: their folders)")
    frontier.add_argument("--out", type=Path, default=Path("benchmarks/results/toy_world/frontier.png"))
    frontier.add_argument("--title", default="Toy world: spatial accuracy against steering compute")


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _run_model(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .build import BuildConfig, build_toy_world

    config = BuildConfig(seed=args.seed, threads=args.threads)
    kinds = tuple(k.strip() for k in args.kinds.split(",")) if args.kinds is not None else None
    for field, value in (("num_images", args.images), ("solo_images", args.solo_images), ("ae_steps", args.ae_steps),
                         ("unet_steps", args.unet_steps), ("bias", args.bias), ("kinds", kinds),
                         ("binding_weight", args.binding_weight), ("relation_captions", args.relation_captions)):
        if value is not None:
            config = replace(config, **{field: value})
    start = time.perf_counter()
    build_toy_world(args.out, config)
    logger.info("toy model written to %s in %.0f s", args.out, time.perf_counter() - start)
    return 0


def _run_classifier(args: argparse.Namespace) -> int:
    from l2s_core.toy_bundle import read_bundle_metadata

    from ..__main__ import main as training_main

    world = read_bundle_metadata(args.world)["world"]
    backgrounds = (["--backgrounds", ";".join(",".join(str(v) for v in c) for c in world["backgrounds"])]
                   if world.get("backgrounds") else [])
    work: Path = args.work
    triplets, maps, run = work / "triplets", work / "maps", work / "run"
    threads = ["--threads", str(args.threads)] if args.threads else []
    negatives = ["--no-negatives"] if args.no_negatives else []
    psnr = [] if args.psnr_threshold is None else ["--psnr-threshold", str(args.psnr_threshold)]
    commands = [
        ["triplets", "--source", "toy", "--out", str(triplets), "--overwrite", "--per-relation",
         str(args.per_relation), "--seed", str(args.seed), "--size", str(world["image_size"]),
         "--min-object-frac", str(world["min_object_frac"]), "--max-object-frac", str(world["max_object_frac"]),
         "--bias", str(world["bias"]), "--kinds", ",".join(world["kinds"]), *backgrounds],
        ["invert", "--triplets", str(triplets), "--out", str(maps), "--model", str(args.world), "--family", "toy",
         "--steps", str(args.steps), "--resolution", str(world["image_size"]), "--seed", str(args.seed),
         "--fixed-point-iterations", str(args.fixed_point_iterations),
         "--device", "cpu", *threads, *negatives, *psnr],
        ["train", str(maps), str(run), "--epochs", str(args.epochs), "--input-scale", "256", "--lr", str(args.lr),
         "--early-stopping-patience", str(args.patience), "--device", "cpu", "--seed", str(args.seed), *negatives],
        ["export", str(run), str(args.out), "--family", "toy"],
    ]
    for argv in commands:
        start = time.perf_counter()
        logger.info("python -m training %s", " ".join(argv))
        status = training_main(argv)
        if status != 0:
            logger.error("`python -m training %s` failed with status %d", argv[0], status)
            return status
        logger.info("%s took %.0f s", argv[0], time.perf_counter() - start)
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from l2s_core.checkpoint import load_classifier
    from l2s_core.settings import SteeringOptions

    from .benchmark import Condition, format_table, prompt_grid, run_benchmark
    from .budgets import parse_budget
    from .sampling import ToySampler

    budgets = [parse_budget(b) for b in args.budgets.split(",") if b.strip()]  # bad specs fail before loading
    _threads(args.threads)
    sampler = ToySampler(args.world)
    classifier = load_classifier(args.classifier)
    official = SteeringOptions().resolve(args.steps, classifier.family)
    conditions = [Condition("plain")]
    if any(b.spec == "official" for b in budgets):
        conditions.append(Condition("steered: official schedule", classifier, official))
    if args.ablation_classifier is not None:
        conditions.append(Condition("steered: classifier without negatives (official schedule)",
                                    load_classifier(args.ablation_classifier), official))
    conditions += [Condition(b.label, classifier, b.options.resolve(args.steps, classifier.family))
                   for b in budgets if b.spec != "official"]
    kinds = sampler.bundle.meta["world"]["kinds"]
    grid = prompt_grid(kinds, args.pairs)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows = run_benchmark(sampler, conditions, grid, seeds, steps=args.steps, cfg=args.cfg, out=args.out,
                         save_images=args.save_images, batch_size=args.batch)
    print(format_table(rows))  # noqa: T201 - the command's result
    logger.info("table written to %s", args.out / "table.md")
    return 0


def _run_frontier(args: argparse.Namespace) -> int:
    from .frontier_plot import draw_frontier, load_points

    names = args.names.split(",") if args.names else [p.parent.name for p in args.results]
    if len(names) != len(args.results):
        raise ValueError(f"--names: {len(names)} names for {len(args.results)} results files; give one per file.")
    draw_frontier(load_points(args.results), names, args.out, args.title)
    logger.info("frontier written to %s", args.out)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch the toy sub-command."""
    if args.toy_command == "model":
        return _run_model(args)
    if args.toy_command == "classifier":
        return _run_classifier(args)
    if args.toy_command == "frontier":
        return _run_frontier(args)
    return _run_bench(args)
