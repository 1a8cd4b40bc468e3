"""Training a relation classifier on an ``invert`` data folder: the ``train`` command.

Defaults reproduce the published recipe per family (``l2s_core.families``): the published classifier architecture
(``l2s_core.classifier.published_config``), AdamW (lr 1e-4 for SD, 5e-5 for FLUX, weight decay 0.05),
ReduceLROnPlateau on the validation loss (factor 0.5, patience 5, threshold 0, min lr 1e-6) stepped once per epoch,
early stopping on the validation loss (patience 10, min_delta 0, the counter resets on strict improvement), 150 / 100
/ 200 epochs for SD1.x / SD2.x / FLUX, batch 64 shuffled for training and 256 for evaluation, plain cross-entropy.
Families without a published classifier borrow the recipe of the family the table names (sdxl and toy: SD2.x's;
sd3: FLUX.1-dev's).

Deliberate differences from the official script:

* The extractor's positional table has length ``C`` (the real channel count of the data), not the hard-coded 1368.
  The table is deterministic (sinusoidal), its first C rows are the same either way, and only those are ever used,
  so a model with table length C computes exactly what one with 1368 would; the loader accepts both.
* The checkpoint kept is the one with the lowest validation loss (``best.safetensors``), and the test split is
  evaluated with those weights (item 14); ``last.safetensors`` holds the final epoch.
* ``--input-scale``: attention maps sum to 1 over the 16x16 grid, so their values are tiny (~1/256) and the
  published network learns slowly on them. The option multiplies the maps by a constant during training and folds
  the constant into ``object_extractor.input_projection.weight`` when saving (``W x s`` is a linear map of ``x`` with
  weight ``s W``), so saved classifiers consume unscaled maps exactly like the official ones. Default 1 (official).
* ``--no-negatives`` drops the wrong-relation-prompt samples (the paper's ablation; the official ``only_pos``).

Run folder outputs: ``best.safetensors``, ``last.safetensors`` (this pack's format, with provenance),
``metrics.json`` (config, data metadata, per-epoch loss/accuracy/per-step accuracy/lr per split, best epoch, and the
final evaluation of the best weights per split) and ``confusion_<split>.png`` (best weights).

Why one module of ~500 lines: it is one concept, the training loop of the published recipe and its command line;
scoring lives in :mod:`.scoring`, data reading in :mod:`.dataset`, the recipe table in ``l2s_core.families``. What is
left (``train_classifier``'s epoch loop with its scheduler, early stop and checkpoint choice) reads best in one piece.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from l2s_core.checkpoint import LoadedClassifier, save_classifier
from l2s_core.classifier import ClassifierConfig, RelationClassifier, published_config
from l2s_core.families import TrainingRecipe, get_family

from .dataset import MapDataset
from .maps_folder import DataMeta, load_meta
from .models import parse_device
from .scoring import draw_confusion_png, predict, summarise, summarise_predictions, write_json

logger = logging.getLogger(__name__)

INPUT_PROJECTION_WEIGHT = "object_extractor.input_projection.weight"


def recipe_for(family: str) -> TrainingRecipe:
    """The training recipe of a family: its own, or the one it borrows (``l2s_core.families``).

    Args:
        family: any family name or alias known to ``l2s_core.families``.

    Raises:
        ValueError: unknown family.
    """
    return get_family(family).training_recipe()


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. ``None`` fields take the family's published default.

    Attributes:
        data: ``invert`` output folder.
        out: run folder to create/fill.
        epochs: maximum epochs (None: 150 sd14 / 100 sd2 and UNet / 200 FLUX and joint).
        lr: AdamW learning rate (None: 1e-4 SD and UNet / 5e-5 FLUX and joint).
        weight_decay: AdamW weight decay.
        batch_size: training batch (shuffled).
        eval_batch_size: evaluation batch.
        seed: seeds torch (model init, dropout) and the shuffling generator.
        device: torch device ("auto": cuda when available, else cpu).
        include_negatives: keep the wrong-relation-prompt samples (False: the paper's ablation).
        steps: train on these recorded steps only (None: all of ``meta.record_steps``).
        input_scale: constant the maps are multiplied by during training, folded into the saved weights.
        scheduler_factor: ReduceLROnPlateau factor.
        scheduler_patience: ReduceLROnPlateau patience (epochs).
        min_lr: ReduceLROnPlateau floor.
        early_stopping_patience: epochs without strict val-loss improvement before stopping.
        early_stopping_min_delta: improvement needed to reset the counter.
        dropout: override the extractor and head dropout (None: the published values).
    """

    data: str
    out: str
    epochs: int | None = None
    lr: float | None = None
    weight_decay: float = 0.05
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    include_negatives: bool = True
    steps: tuple[int, ...] | None = None
    input_scale: float = 1.0
    scheduler_factor: float = 0.5
    scheduler_patience: int = 5
    min_lr: float = 1e-6
    early_stopping_patience: int = 10
    early_stopping_min_delta: float = 0.0
    dropout: float | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, found {getattr(self, name)}.")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, found {self.epochs}.")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, found {self.lr}.")
        if not (self.input_scale > 0 and math.isfinite(self.input_scale)):
            raise ValueError(f"--input-scale must be a positive finite number, found {self.input_scale}.")
        if self.early_stopping_patience < 1 or self.scheduler_patience < 0:
            raise ValueError(
                "--early-stopping-patience must be >= 1 and --scheduler-patience >= 0, found "
                f"{self.early_stopping_patience} and {self.scheduler_patience}."
            )
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"--dropout must lie in [0, 1), found {self.dropout}.")


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        model: the trained network with the BEST (lowest val loss) weights, eval mode; it expects maps multiplied
            by ``input_scale`` (the saved files do not).
        last_state: state dict after the final epoch (unscaled-input folding not applied).
        best_epoch: 1-based epoch with the lowest val loss.
        epochs_run: epochs actually run (fewer than the maximum when early stopping fired).
        metrics: the document written to ``metrics.json``.
        run_dir: the run folder.
        input_scale: the training input scale.
        relations: class names in index order.
    """

    model: RelationClassifier
    last_state: dict[str, torch.Tensor]
    best_epoch: int
    epochs_run: int
    metrics: dict[str, Any]
    run_dir: Path
    input_scale: float
    relations: tuple[str, ...]


def classifier_config_for(meta: DataMeta, dropout: float | None = None) -> ClassifierConfig:
    """The published architecture of the data's family, sized for the data.

    ``input_channels`` (the extractor's positional-table length) is the real channel count C, ``num_timesteps`` the
    data's schedule length and ``map_size`` its map side; R is the number of relations in ``meta.json``.

    Args:
        meta: the data folder's metadata.
        dropout: override both dropout values (None keeps the published ones).
    """
    base = published_config(meta.family)
    config = replace(
        base,
        input_channels=meta.channels,
        num_relations=len(meta.relations),
        num_timesteps=meta.num_steps,
        map_size=meta.map_size,
    )
    if dropout is not None:
        config = replace(
            config, extractor=replace(config.extractor, dropout=dropout), head=replace(config.head, dropout=dropout)
        )
    return config


def fold_input_scale(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """Fold a constant input scale into the extractor's input projection.

    The extractor's first op is ``input_projection(x) = W x + b`` on the flattened maps, so a model trained on
    ``s * x`` computes ``W (s x) + b = (s W) x + b``: scaling ``W`` by ``s`` gives a model for unscaled maps. For a
    power-of-two ``s`` this is exact to the last bit.

    Args:
        state: a classifier state dict (not modified).
        scale: the training input scale.

    Returns:
        A new state dict (tensors cloned).
    """
    out = {k: v.detach().clone() for k, v in state.items()}
    if scale != 1.0:
        out[INPUT_PROJECTION_WEIGHT] = out[INPUT_PROJECTION_WEIGHT] * scale
    return out


def _classifier_file(
    state: dict[str, torch.Tensor],
    config: ClassifierConfig,
    meta: DataMeta,
    steps: tuple[int, ...],
    provenance: dict[str, Any],
) -> LoadedClassifier:
    model = RelationClassifier(config)
    model.load_state_dict(state, strict=True)
    model.eval().requires_grad_(False)
    return LoadedClassifier(
        model=model,
        relations=meta.relations,
        trained_steps=steps,
        trained_num_steps=meta.num_steps,
        map_size=meta.map_size,
        orig_map_size=meta.orig_map_size,
        family=meta.family,
        channels=meta.channels,
        layout=meta.layout,
        provenance=provenance,
    )


def train_classifier(cfg: TrainConfig) -> TrainResult:
    """Train a classifier and write the run folder.

    Args:
        cfg: the run configuration.

    Returns:
        The :class:`TrainResult` (best-weights model in memory, metrics).

    Raises:
        FileNotFoundError, ValueError: invalid data folder or configuration (e.g. an empty train or val split).
    """
    run_dir = Path(cfg.out)
    if (run_dir / "metrics.json").exists():
        raise ValueError(
            f"{run_dir} already holds a training run (metrics.json); choose another output folder or delete it."
        )
    meta = load_meta(cfg.data)
    recipe = recipe_for(meta.family)
    epochs = cfg.epochs if cfg.epochs is not None else recipe.epochs
    lr = cfg.lr if cfg.lr is not None else recipe.lr
    device = parse_device(cfg.device)
    datasets = {
        split: MapDataset(cfg.data, split, include_negatives=cfg.include_negatives, steps=cfg.steps)
        for split in ("train", "val", "test")
    }
    for split in ("train", "val"):
        if not len(datasets[split]):
            raise ValueError(
                f"The {split} split of {cfg.data} has no samples (after the negatives/steps filters); training needs "
                "train samples and val samples (the checkpoint is selected on the val loss)."
            )
    steps = datasets["train"].steps
    relations = meta.relations
    run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)
    config = classifier_config_for(meta, cfg.dropout)
    model = RelationClassifier(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=cfg.scheduler_factor,
        patience=cfg.scheduler_patience,
        threshold=0.0,
        min_lr=cfg.min_lr,
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(datasets["train"], batch_size=cfg.batch_size, shuffle=True, generator=generator)
    logger.info(
        "Training %s classifier on %s: %d train / %d val / %d test samples, C=%d, steps %s, relations %s, "
        "lr %g, up to %d epochs, input scale %g, device %s",
        meta.family,
        Path(cfg.data).name,
        len(datasets["train"]),
        len(datasets["val"]),
        len(datasets["test"]),
        meta.channels,
        list(steps),
        list(relations),
        lr,
        epochs,
        cfg.input_scale,
        device,
    )

    history: list[dict[str, Any]] = []
    best_loss = math.inf
    best_epoch = 0
    best_state: dict[str, torch.Tensor] = {}
    stale = 0
    stopped_early = False
    started = time.monotonic()
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=None)
    for epoch in bar:
        epoch_lr = optimizer.param_groups[0]["lr"]
        model.train()
        preds, labels_seen, steps_seen, losses = [], [], [], []
        for maps, step, label in loader:
            maps, step, label = maps.to(device), step.to(device), label.to(device)
            logits = model(maps * cfg.input_scale, step)  # (B, R)
            loss = F.cross_entropy(logits, label)
            if not torch.isfinite(loss):
                raise ValueError(
                    f"Epoch {epoch}: the training loss is {loss.item()}; the maps may hold NaN/inf or --lr "
                    f"{lr:g} / --input-scale {cfg.input_scale:g} is too large."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            preds.append(logits.detach().argmax(1).cpu())
            labels_seen.append(label.cpu())
            steps_seen.append(step.cpu())
            losses.append(F.cross_entropy(logits.detach(), label, reduction="none").cpu())
        train_metrics = summarise(
            torch.cat(preds), torch.cat(labels_seen), torch.cat(steps_seen), relations, torch.cat(losses)
        )
        val_pred = predict(
            model, datasets["val"], batch_size=cfg.eval_batch_size, device=device, input_scale=cfg.input_scale
        )
        val_metrics = summarise_predictions(val_pred, datasets["val"], relations)
        val_loss = val_metrics["loss"]
        history.append({"epoch": epoch, "lr": epoch_lr, "train": train_metrics, "val": val_metrics})
        scheduler.step(val_loss)
        if val_loss < best_loss - cfg.early_stopping_min_delta:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
        bar.set_postfix(
            train_loss=f"{train_metrics['loss']:.4f}",
            val_loss=f"{val_loss:.4f}",
            val_acc=f"{val_metrics['accuracy']:.3f}",
        )
        logger.debug(
            "epoch %d: train loss %.4f acc %.3f | val loss %.4f acc %.3f | lr %g",
            epoch,
            train_metrics["loss"],
            train_metrics["accuracy"],
            val_loss,
            val_metrics["accuracy"],
            epoch_lr,
        )
        if stale >= cfg.early_stopping_patience:
            stopped_early = True
            logger.info("Early stopping after epoch %d (no val-loss improvement for %d epochs).", epoch, stale)
            break
    bar.close()
    if not best_state:
        raise ValueError(
            f"The validation loss was never finite ({[h['val']['loss'] for h in history]}); no checkpoint can be "
            "selected. Check the val split's maps for NaN/inf."
        )
    epochs_run = len(history)
    last_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    model.load_state_dict(best_state)
    model.eval()
    final: dict[str, Any] = {}
    for split, ds in datasets.items():
        if not len(ds):
            logger.info("The %s split is empty; it is not evaluated.", split)
            final[split] = None
            continue
        p = predict(model, ds, batch_size=cfg.eval_batch_size, device=device, input_scale=cfg.input_scale)
        final[split] = summarise_predictions(p, ds, relations)
        draw_confusion_png(
            final[split]["confusion"],
            relations,
            run_dir / f"confusion_{split}.png",
            f"{split}, best epoch {best_epoch} ({Path(cfg.data).name})",
        )

    provenance_base = {
        "trainer": "training.train",
        "data": Path(cfg.data).resolve().name,
        "data_model": meta.model,
        "seed": cfg.seed,
        "max_epochs": epochs,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "lr": lr,
        "input_scale_folded": cfg.input_scale,
        "negatives": cfg.include_negatives,
        "best_val_loss": best_loss,
        "best_val_accuracy": final["val"]["accuracy"] if final["val"] else None,
        "test_accuracy": final["test"]["accuracy"] if final["test"] else None,
    }
    for name, state, epoch_of in (("best", best_state, best_epoch), ("last", last_state, epochs_run)):
        provenance = {**provenance_base, "weights": name, "weights_epoch": epoch_of}
        loaded = _classifier_file(fold_input_scale(state, cfg.input_scale), config, meta, steps, provenance)
        save_classifier(loaded, run_dir / f"{name}.safetensors")

    config_doc = {**asdict(cfg), "epochs": epochs, "lr": lr, "device": str(device), "steps": list(steps)}
    metrics: dict[str, Any] = {
        "config": config_doc,
        "classifier_config": config.to_official(),
        "data_meta": dict(meta.raw),
        "relations": list(relations),
        "samples": {split: len(ds) for split, ds in datasets.items()},
        "epochs": history,
        "best_epoch": best_epoch,
        "best_val_loss": best_loss,
        "epochs_run": epochs_run,
        "stopped_early": stopped_early,
        "final": final,
        "seconds": round(time.monotonic() - started, 3),
    }
    write_json(run_dir / "metrics.json", metrics)
    logger.info(
        "Done: best epoch %d of %d (val loss %.4f, val acc %s, test acc %s); wrote %s",
        best_epoch,
        epochs_run,
        best_loss,
        _pct(final["val"]),
        _pct(final["test"]),
        run_dir,
    )
    return TrainResult(
        model=model,
        last_state=last_state,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        metrics=metrics,
        run_dir=run_dir,
        input_scale=cfg.input_scale,
        relations=relations,
    )


def _pct(summary: dict[str, Any] | None) -> str:
    return "-" if summary is None else f"{100 * summary['accuracy']:.1f}%"


# ----------------------------------------------------------------------------------------------- train command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` arguments to a (sub)parser."""
    parser.add_argument("data", help="data folder written by `invert` (meta.json, index.jsonl, shards/)")
    parser.add_argument("out", help="run folder to write (best/last.safetensors, metrics.json, confusion PNGs)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="max epochs (default: 150 sd14, 100 sd2/UNet, 200 FLUX/joint)"
    )
    parser.add_argument(
        "--lr", type=float, default=None, help="AdamW learning rate (default: 1e-4 SD/UNet, 5e-5 FLUX/joint)"
    )
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    parser.add_argument("--eval-batch-size", type=int, default=256, help="evaluation batch (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed for init, dropout and shuffling (default 0)")
    parser.add_argument("--device", default="auto", help="torch device (default auto: cuda if available)")
    parser.add_argument(
        "--no-negatives",
        action="store_true",
        help="ablation: drop the samples recorded with a wrong-relation prompt (prompt_type 'neg')",
    )
    parser.add_argument(
        "--steps", type=int, nargs="+", default=None, help="train on these recorded step indices only (default all)"
    )
    parser.add_argument(
        "--input-scale",
        type=float,
        default=1.0,
        help="multiply maps by this while training and fold it into the saved weights, which then take unscaled "
        "maps exactly; sum-1 maps are tiny, 256 (= 16x16) speeds learning up (default 1, official)",
    )
    parser.add_argument("--scheduler-patience", type=int, default=5, help="ReduceLROnPlateau patience (default 5)")
    parser.add_argument("--scheduler-factor", type=float, default=0.5, help="ReduceLROnPlateau factor (default 0.5)")
    parser.add_argument("--min-lr", type=float, default=1e-6, help="ReduceLROnPlateau floor (default 1e-6)")
    parser.add_argument(
        "--early-stopping-patience", type=int, default=10, help="epochs without val-loss improvement (default 10)"
    )
    parser.add_argument("--dropout", type=float, default=None, help="override every dropout (default: published)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed ``train`` arguments."""
    return TrainConfig(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        seed=args.seed,
        device=args.device,
        include_negatives=not args.no_negatives,
        steps=tuple(args.steps) if args.steps else None,
        input_scale=args.input_scale,
        scheduler_factor=args.scheduler_factor,
        scheduler_patience=args.scheduler_patience,
        min_lr=args.min_lr,
        early_stopping_patience=args.early_stopping_patience,
        dropout=args.dropout,
    )


def run(args: argparse.Namespace) -> int:
    """Run the ``train`` command.

    Returns:
        0 on success, 1 on invalid input (the reason is logged).
    """
    try:
        train_classifier(config_from_args(args))
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    return 0
