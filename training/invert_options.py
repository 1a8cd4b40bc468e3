"""The options of one ``invert`` run: the family's defaults filled in and checked, and the error for bad inputs.

:class:`Settings` is what ``meta.json`` records; a resumed run must resolve to the same values
(:mod:`.maps_folder` compares them). Record steps default to the family's trained steps, moved by relative position
when ``--steps`` differs from the official count; the PSNR threshold to the one of the family's inversion path.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from l2s_core.families import JOINT, ModelFamily, describe_channel_count
from l2s_core.steps import scale_step_index

from .models import FLUX, SD3, LoadedModel

PSNR_THRESHOLD_UNET = 19.5
PSNR_THRESHOLD_FLOW = 20.0


class InvertInputError(ValueError):
    """A bad input file, field or option of ``invert``; the message names the file/line/field."""


def default_record_steps(family: ModelFamily, num_steps: int) -> list[int]:
    """The family's trained record steps (its training recipe), scaled by relative position to ``num_steps``.

    UNet families, SD3 and FLUX-dev: [5, 10, 15, 20, 25, 49] of 50; FLUX-schnell: [1, 3] of 4. For another length
    each index moves with :func:`l2s_core.steps.scale_step_index` (duplicates removed).
    """
    recipe = family.training_recipe()
    if num_steps == recipe.num_steps:
        return list(recipe.record_steps)
    return sorted({scale_step_index(s, recipe.num_steps, num_steps) for s in recipe.record_steps})


@dataclass(frozen=True)
class Settings:
    """Resolved options of one run (what meta.json records)."""

    num_steps: int
    record_steps: tuple[int, ...]
    resolution: int
    map_size: int
    psnr_threshold: float
    negatives: bool
    seed: int
    fixed_point_iterations: int
    max_sequence_length: int
    guidance: float
    sample_latent: bool
    shard_size: int


def resolve_settings(args: argparse.Namespace, model: LoadedModel) -> Settings:
    """Fill the family defaults into the options and check them.

    Raises:
        InvertInputError: an option out of range, naming the option.
    """
    family = model.family
    num_steps = args.steps if args.steps is not None else family.training_recipe().num_steps
    if num_steps < 1:
        raise InvertInputError(f"--steps must be >= 1, got {num_steps}.")
    if args.record_steps is not None:
        record = sorted(set(args.record_steps))
        bad = [s for s in record if not 0 <= s < num_steps]
        if bad:
            raise InvertInputError(
                f"--record-steps {bad} are outside the {num_steps}-step schedule (valid: 0..{num_steps - 1})."
            )
    else:
        record = default_record_steps(family, num_steps)
    resolution = args.resolution if args.resolution is not None else family.default_resolution
    if resolution is None:
        raise InvertInputError(f"--resolution is required for the {family.display} family (it has no default).")
    map_size = args.map_size if args.map_size is not None else family.map_size
    if map_size < 1:
        raise InvertInputError(f"--map-size must be >= 1, got {map_size}.")
    flow = model.layout == JOINT
    threshold = args.psnr_threshold
    if threshold is None:
        threshold = PSNR_THRESHOLD_FLOW if flow else PSNR_THRESHOLD_UNET
    if args.fixed_point_iterations < 1:
        raise InvertInputError(f"--fixed-point-iterations must be >= 1, got {args.fixed_point_iterations}.")
    if args.shard_size < 1:
        raise InvertInputError(f"--shard-size must be >= 1, got {args.shard_size}.")
    if args.max_sequence_length is not None:
        max_len = args.max_sequence_length
    elif model.kind == FLUX:
        max_len = family.text_tokens
    elif model.kind == SD3:
        max_len = max(family.text_tokens - 77, 1)
    else:
        max_len = 77
    if max_len < 1:
        raise InvertInputError(f"--max-sequence-length must be >= 1, got {max_len}.")
    return Settings(
        num_steps=num_steps,
        record_steps=tuple(record),
        resolution=int(resolution),
        map_size=int(map_size),
        psnr_threshold=float(threshold),
        negatives=not args.no_negatives,
        seed=int(args.seed),
        fixed_point_iterations=int(args.fixed_point_iterations),
        max_sequence_length=int(max_len),
        guidance=float(args.guidance),
        sample_latent=bool(args.sample_latent),
        shard_size=int(args.shard_size),
    )


def check_channels(model: LoadedModel, channels: int) -> None:
    """Check the recorded channel count against the official family's classifiers.

    A family with a fixed count (SD1.x 128, SD2.x 195, FLUX.1 1368) always gets it: data recorded with another count
    could not train or load as that family (:mod:`l2s_core.checkpoint` and :mod:`training.dataset` check it too).
    Families whose count depends on the model (SDXL, SD3) accept any.

    Raises:
        InvertInputError: the family has a fixed count and the model differs.
    """
    expected = model.family.channels
    if expected is None or expected == channels:
        return
    raise InvertInputError(
        f"--family {model.family.name}: {model.name} has {channels} attention channels "
        f"({describe_channel_count(channels)}), but the official {model.family.display} classifiers take {expected}. "
        "Check --family and the model: a model of this family with another attention layout cannot use its "
        "classifiers."
    )
