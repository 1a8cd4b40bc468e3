"""Tests for training/dataset.py, train.py, export.py, scoring.py and evaluate.py on tiny synthetic ``invert``
folders (CPU).

The folders are written here in the ``invert`` format (meta.json, index.jsonl, fp16 shards): each channel of a map is
a Gaussian blob whose position encodes the relation (subject left of the object for "to the left of", ...),
normalised to sum 1 over the 16x16 grid like real attention maps.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from l2s_core.checkpoint import load_classifier
from l2s_core.relations import ABOVE, BELOW, LEFT_OF, RIGHT_OF
from training import evaluate, export, scoring, train
from training.dataset import MapDataset
from training.maps_folder import load_meta
from training.train import INPUT_PROJECTION_WEIGHT, TrainConfig, fold_input_scale, train_classifier

RELATIONS = sorted([ABOVE, BELOW, LEFT_OF, RIGHT_OF])  # official index order
C, S, NUM_STEPS, RECORD_STEPS = 4, 16, 4, [1, 3]


def _blob(cx: float, cy: float, sigma: float, gen: torch.Generator) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij")
    m = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) + 0.02 * torch.rand(S, S, generator=gen)
    return m / m.sum()  # (S, S), sums to 1 like an attention map


def _centres(relation: str, gen: torch.Generator) -> tuple[tuple[float, float], tuple[float, float]]:
    def r(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen))

    near, far, free = (r(2, 5), r(10, 13), r(3, 12))
    free2 = r(3, 12)
    if relation == LEFT_OF:
        return (near, free), (far, free2)
    if relation == RIGHT_OF:
        return (far, free), (near, free2)
    if relation == ABOVE:
        return (free, near), (free2, far)
    return (free, far), (free2, near)  # below


def _maps(relation: str, gen: torch.Generator) -> torch.Tensor:
    (sx, sy), (ox, oy) = _centres(relation, gen)
    subj = torch.stack([_blob(sx, sy, 1.5 + 0.3 * c, gen) for c in range(C)])  # (C, S, S)
    obj = torch.stack([_blob(ox, oy, 1.5 + 0.3 * c, gen) for c in range(C)])  # (C, S, S)
    return torch.stack([subj, obj]).to(torch.float16)  # (2, C, S, S)


def write_folder(
    root: Path,
    items_per_split: int = 16,
    seed: int = 0,
    random_val_labels: bool = False,
    maps_fn=None,
) -> Path:
    """Write a synthetic invert folder: per item one pos and one neg prompt x 2 recorded steps, two shards."""
    gen = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "shards").mkdir(exist_ok=True)
    meta = {
        "family": "toy",
        "channels": C,
        "layout": "unet",
        "map_size": S,
        "grid": None,
        "num_steps": NUM_STEPS,
        "record_steps": RECORD_STEPS,
        "relations": [LEFT_OF, ABOVE, RIGHT_OF, BELOW],  # unsorted on purpose: labels follow the sorted order
        "model": "toy-model",
        "seed": seed,
        "psnr_threshold": 0.0,
        "negatives": True,
        "format": "l2s-invert",
        "format_version": 1,
    }
    (root / "meta.json").write_text(json.dumps(meta))
    shards: list[dict[str, torch.Tensor]] = [{}, {}]
    lines = []
    n = 0
    for split in ("train", "val", "test"):
        for i in range(items_per_split):
            relation = RELATIONS[i % 4]
            item = f"{split}-{i}"
            label = relation
            if random_val_labels and split == "val":
                label = RELATIONS[int(torch.randint(4, (), generator=gen))]
            for ptype in ("pos", "neg"):
                prompt_rel = relation if ptype == "pos" else RELATIONS[(i + 1) % 4]
                for step in RECORD_STEPS:
                    key = f"{item}|{ptype}|{step}"
                    shard_no = n % 2
                    t = maps_fn(relation, split, i, ptype, step) if maps_fn else _maps(relation, gen)
                    shards[shard_no][key] = t
                    lines.append(
                        {
                            "item": item,
                            "split": split,
                            "prompt": f"A red square {prompt_rel} a blue circle",
                            "prompt_type": ptype,
                            "prompt_relation": prompt_rel,
                            "label": label,
                            "step": step,
                            "shard": f"shards/shard_{shard_no:05d}.safetensors",
                            "key": key,
                            "psnr": 30.0,
                        }
                    )
                    n += 1
    for k, tensors in enumerate(shards):
        save_file(tensors, str(root / "shards" / f"shard_{k:05d}.safetensors"))
    (root / "index.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (root / "done.jsonl").write_text("")
    return root


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The model is tiny: one thread avoids oversubscription on shared 2-core CI machines (4x faster here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "toy_data")


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = {"epochs": 6, "lr": 1e-3, "batch_size": 16, "seed": 0, "device": "cpu", "input_scale": 256.0}
    base.update(kw)
    return TrainConfig(data=str(data), out=str(out), **base)


@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> train.TrainResult:
    return train_classifier(_config(data_dir, tmp_path_factory.mktemp("runs") / "run"))


def _val_loss(model: torch.nn.Module, ds: MapDataset, scale: float = 1.0) -> float:
    maps = torch.stack([ds[i][0] for i in range(len(ds))])  # (N, 2, C, S, S)
    with torch.no_grad():
        logits = model.eval()(maps * scale, ds.step_values())
    return float(torch.nn.functional.cross_entropy(logits.double(), ds.labels()))


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------------ dataset


def test_dataset_items_labels_and_dtype(data_dir: Path) -> None:
    ds = MapDataset(data_dir, "val")
    assert len(ds) == 16 * 2 * 2
    assert ds.relations == tuple(RELATIONS) == (ABOVE, BELOW, LEFT_OF, RIGHT_OF)
    maps, step, label = ds[0]
    assert maps.shape == (2, C, S, S) and maps.dtype == torch.float32
    assert step.dtype == torch.long and label.dtype == torch.long
    rec = ds.records[0]
    assert (rec.split, rec.step, rec.label) == ("val", 1, ABOVE)
    assert int(label) == 0 and int(step) == 1
    assert int(ds[2 * 2 * 2][2]) == RELATIONS.index(LEFT_OF) == 2  # item 2 is "to the left of"
    assert torch.allclose(maps.sum(dim=(2, 3)), torch.ones(2, C), atol=1e-2)  # fp16 maps still sum to ~1
    assert sorted(set(ds.step_values().tolist())) == RECORD_STEPS
    only3 = MapDataset(data_dir, "val", steps=[3])
    assert len(only3) == len(ds) // 2 and set(only3.step_values().tolist()) == {3}
    with pytest.raises(ValueError, match=r"not a non-empty subset of the recorded steps \[1, 3\]"):
        MapDataset(data_dir, "val", steps=[2])


def test_no_negatives_drops_exactly_the_neg_records(data_dir: Path) -> None:
    everything = MapDataset(data_dir, "train")
    positives = MapDataset(data_dir, "train", include_negatives=False)
    assert positives.records == [r for r in everything.records if r.prompt_type == "pos"]
    assert len(positives) == len(everything) // 2 == 32
    assert {r.prompt_type for r in everything.records} == {"pos", "neg"}


def test_missing_shard_is_named(data_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    (copy / "shards" / "shard_00001.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"shard_00001\.safetensors does not exist.*index\.jsonl line 2"):
        MapDataset(copy, "train")


def test_shape_mismatch_names_key_expected_and_found(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "d", items_per_split=4)
    shard = folder / "shards" / "shard_00001.safetensors"  # records alternate between the two shards
    from safetensors.torch import load_file

    tensors = load_file(str(shard))
    assert "val-1|neg|3" in tensors
    tensors["val-1|neg|3"] = torch.zeros(2, C - 1, S, S, dtype=torch.float16)
    save_file(tensors, str(shard))
    MapDataset(folder, "train")  # other splits are unaffected
    with pytest.raises(ValueError) as err:
        MapDataset(folder, "val")
    msg = str(err.value)
    assert "shard_00001.safetensors" in msg and "'val-1|neg|3'" in msg
    assert "expected shape (2, 4, 16, 16)" in msg and "found (2, 3, 16, 16)" in msg


def test_meta_and_index_errors(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "d", items_per_split=4)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "family": "sd2", "layout": "unet"}))
    with pytest.raises(ValueError, match=r"family 'sd2' produces 195 channels, but meta.json says 4"):
        load_meta(folder)
    (folder / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "num_steps"}))
    with pytest.raises(ValueError, match=r"missing keys \['num_steps'\]"):
        load_meta(folder)
    (folder / "meta.json").write_text(json.dumps(meta))
    lines = (folder / "index.jsonl").read_text().splitlines()
    lines[0] = lines[0].replace('"label": "above"', '"label": "near"')
    (folder / "index.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"index.jsonl line 1: label 'near' is not one of the relations"):
        MapDataset(folder, "train")
    with pytest.raises(FileNotFoundError, match="meta.json: not found"):
        MapDataset(tmp_path / "nowhere", "train")


# -------------------------------------------------------------------------------------------------------- train


def test_train_learns_and_writes_run_folder(trained: train.TrainResult) -> None:
    run = trained.run_dir
    for name in ("best.safetensors", "last.safetensors", "metrics.json", "confusion_val.png", "confusion_test.png"):
        assert (run / name).is_file(), name
    from PIL import Image

    with Image.open(run / "confusion_test.png") as img:
        assert img.format == "PNG" and img.size[0] > 200 and img.size[1] > 200
    metrics = json.loads((run / "metrics.json").read_text())
    chance = 1 / len(RELATIONS)
    assert metrics["final"]["val"]["accuracy"] > chance + 0.4
    assert metrics["final"]["test"]["accuracy"] > chance + 0.4
    assert metrics["samples"] == {"train": 64, "val": 64, "test": 64}
    assert len(metrics["epochs"]) == metrics["epochs_run"] == trained.epochs_run
    first = metrics["epochs"][0]
    assert first["epoch"] == 1 and first["lr"] == pytest.approx(1e-3)
    for split in ("train", "val"):
        assert set(first[split]["per_step_accuracy"]) == {"1", "3"}
        assert math.isfinite(first[split]["loss"]) and 0 <= first[split]["accuracy"] <= 1
    assert metrics["config"]["input_scale"] == 256.0 and metrics["config"]["steps"] == RECORD_STEPS
    prov = load_classifier(run / "best.safetensors").provenance
    assert prov["data"] == "toy_data" and prov["seed"] == 0 and prov["weights"] == "best"
    assert prov["best_epoch"] == trained.best_epoch and prov["negatives"] is True


def test_best_checkpoint_is_the_lowest_val_loss_epoch(trained: train.TrainResult, data_dir: Path) -> None:
    metrics = trained.metrics
    losses = [e["val"]["loss"] for e in metrics["epochs"]]
    assert metrics["best_epoch"] == 1 + losses.index(min(losses)) == trained.best_epoch
    val = MapDataset(data_dir, "val")
    best = load_classifier(trained.run_dir / "best.safetensors")
    last = load_classifier(trained.run_dir / "last.safetensors")
    assert _val_loss(best.model, val) == pytest.approx(min(losses), rel=1e-4)
    assert _val_loss(last.model, val) == pytest.approx(losses[-1], rel=1e-4)
    # the test split was evaluated with the best weights, not the last ones
    test = MapDataset(data_dir, "test")
    test_metrics = metrics["final"]["test"]
    assert _val_loss(best.model, test) == pytest.approx(test_metrics["loss"], rel=1e-4)


def test_overfitting_run_keeps_the_early_best(tmp_path: Path) -> None:
    """Val labels unrelated to the maps: val loss rises while training fits, so best is early and training stops."""
    folder = write_folder(tmp_path / "rand", items_per_split=8, seed=1, random_val_labels=True)
    result = train_classifier(_config(folder, tmp_path / "run", epochs=8, batch_size=8, early_stopping_patience=3))
    losses = [e["val"]["loss"] for e in result.metrics["epochs"]]
    assert result.metrics["stopped_early"] is True
    assert result.epochs_run == result.best_epoch + 3 < 8
    assert min(losses) < losses[-1]
    val = MapDataset(folder, "val")
    assert _val_loss(load_classifier(tmp_path / "run" / "best.safetensors").model, val) == pytest.approx(
        min(losses), rel=1e-4
    )
    assert _val_loss(load_classifier(tmp_path / "run" / "last.safetensors").model, val) == pytest.approx(
        losses[-1], rel=1e-4
    )


def test_input_scale_is_folded_exactly(trained: train.TrainResult, data_dir: Path) -> None:
    ds = MapDataset(data_dir, "test")
    maps = torch.stack([ds[i][0] for i in range(len(ds))])  # (N, 2, C, S, S)
    steps = ds.step_values()
    saved = load_classifier(trained.run_dir / "best.safetensors").model
    with torch.no_grad():
        reference = trained.model.eval()(maps * 256.0, steps)
        folded = saved(maps, steps)
    assert torch.equal(folded, reference)  # 256 is a power of two: the folding is exact to the bit
    state = {k: v.clone() for k, v in trained.model.state_dict().items()}
    out = fold_input_scale(state, 3.0)
    assert torch.equal(out[INPUT_PROJECTION_WEIGHT], 3.0 * state[INPUT_PROJECTION_WEIGHT])
    assert all(torch.equal(out[k], state[k]) for k in state if k != INPUT_PROJECTION_WEIGHT)


def test_same_seed_same_run(trained: train.TrainResult, data_dir: Path, tmp_path: Path) -> None:
    again = train_classifier(_config(data_dir, tmp_path / "again", epochs=2))
    for a, b in zip(again.metrics["epochs"], trained.metrics["epochs"][:2], strict=True):
        assert a == b


def test_train_cli_no_negatives(data_dir: Path, tmp_path: Path) -> None:
    args = _parse(
        train,
        [str(data_dir), str(tmp_path / "pos"), "--no-negatives", "--epochs", "1", "--batch-size", "32"]
        + ["--device", "cpu", "--input-scale", "256", "--lr", "1e-3"],
    )
    assert train.run(args) == 0
    metrics = json.loads((tmp_path / "pos" / "metrics.json").read_text())
    assert metrics["samples"] == {"train": 32, "val": 32, "test": 32}
    assert metrics["final"]["test"]["per_prompt_type"].keys() == {"pos"}
    assert load_classifier(tmp_path / "pos" / "best.safetensors").provenance["negatives"] is False
    bad = _parse(train, [str(data_dir), str(tmp_path / "bad"), "--steps", "2", "--device", "cpu"])
    assert train.run(bad) == 1
    with pytest.raises(ValueError, match="already holds a training run"):
        train_classifier(_config(data_dir, tmp_path / "pos"))


def test_family_recipes_and_classifier_config(data_dir: Path) -> None:
    assert (train.recipe_for("sd14").lr, train.recipe_for("sd14").epochs) == (1e-4, 150)
    assert train.recipe_for("sd2").epochs == 100 and train.recipe_for("flux_dev").lr == 5e-5
    assert train.recipe_for("toy") is train.recipe_for("sdxl") is train.recipe_for("sd2")
    assert train.recipe_for("sd3") is train.recipe_for("flux_dev") and train.recipe_for("sd3").epochs == 200
    assert train.recipe_for("toy").classifier_size == "small" and train.recipe_for("sd3").classifier_size == "large"
    cfg = train.classifier_config_for(load_meta(data_dir))
    assert (cfg.input_channels, cfg.num_relations, cfg.num_timesteps, cfg.map_size) == (C, 4, NUM_STEPS, S)
    assert (cfg.extractor.nhead, cfg.extractor.num_layers, cfg.head.nhead, cfg.head.num_layers) == (2, 2, 4, 2)


# ------------------------------------------------------------------------------------------------------- export


def test_export_round_trip(trained: train.TrainResult, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "final.safetensors"
    assert export.run(_parse(export, [str(trained.run_dir), str(out)])) == 0
    final = load_classifier(out)
    assert final.relations == tuple(RELATIONS)
    assert (final.trained_steps, final.trained_num_steps) == (tuple(RECORD_STEPS), NUM_STEPS)
    assert (final.map_size, final.orig_map_size, final.family, final.channels, final.layout) == (
        S,
        S,
        "toy",
        C,
        "unet",
    )
    assert final.provenance["exporter"] == "training.export"
    assert final.provenance["metrics"]["best_epoch"] == trained.best_epoch
    assert final.provenance["metrics"]["test_accuracy"] == trained.metrics["final"]["test"]["accuracy"]
    ds = MapDataset(data_dir, "val")
    maps = torch.stack([ds[i][0] for i in range(len(ds))])  # (N, 2, C, S, S)
    with torch.no_grad():
        assert torch.equal(final.model(maps, ds.step_values()), trained.model.eval()(maps * 256.0, ds.step_values()))
    relabelled = export.export_classifier(trained.run_dir, tmp_path / "xl.safetensors", family="sdxl", which="last")
    assert relabelled.family == "sdxl" and relabelled.provenance["family_relabelled_from"] == "toy"
    assert relabelled.provenance["weights"] == "last"
    assert export.run(_parse(export, [str(trained.run_dir), str(tmp_path / "x.safetensors"), "--family", "sd2"])) == 1
    with pytest.raises(FileNotFoundError, match="best.safetensors: not found"):
        export.export_classifier(tmp_path, tmp_path / "y.safetensors")


# --------------------------------------------------------------------------------------------------------- eval


def _hand_folder(tmp_path: Path) -> Path:
    """4 items per split; maps[0, 0, 0, 0] holds the class a stub model will predict (label + 1 where wrong)."""
    wrong = {(0, "pos", 3), (1, "neg", 1), (2, "neg", 1)}

    def maps_fn(relation: str, split: str, i: int, ptype: str, step: int) -> torch.Tensor:
        label = RELATIONS.index(relation)
        t = torch.zeros(2, C, S, S, dtype=torch.float16)
        t[0, 0, 0, 0] = (label + 1) % 4 if (i, ptype, step) in wrong else label
        return t

    return write_folder(tmp_path / "hand", items_per_split=4, maps_fn=maps_fn)


class _Stub(torch.nn.Module):
    """Predicts the class stored in maps[:, 0, 0, 0, 0] with logit 10 (others 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, maps: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.nn.functional.one_hot(maps[:, 0, 0, 0, 0].round().long(), 4).float()


def test_eval_numbers_hand_checked(tmp_path: Path) -> None:
    ds = MapDataset(_hand_folder(tmp_path), "test")
    preds = scoring.predict(_Stub(), ds, batch_size=5)
    s = scoring.summarise_predictions(preds, ds, ds.relations)
    assert (s["n"], s["correct"], s["accuracy"]) == (16, 13, 13 / 16)
    assert {k: (v["n"], v["correct"]) for k, v in s["per_relation"].items()} == {
        ABOVE: (4, 3),
        BELOW: (4, 3),
        LEFT_OF: (4, 3),
        RIGHT_OF: (4, 4),
    }
    assert {k: (v["n"], v["correct"]) for k, v in s["per_step"].items()} == {"1": (8, 6), "3": (8, 7)}
    assert s["per_step_accuracy"] == {"1": 0.75, "3": 0.875}
    assert {k: (v["n"], v["correct"]) for k, v in s["per_prompt_type"].items()} == {"neg": (8, 6), "pos": (8, 7)}
    assert s["confusion"] == [[3, 1, 0, 0], [0, 3, 1, 0], [0, 0, 3, 1], [0, 0, 0, 4]]
    ce_right = math.log(1 + 3 * math.exp(-10))  # CE of logits (10, 0, 0, 0) at the right class
    assert s["loss"] == pytest.approx(ce_right + 3 * 10 / 16, rel=1e-6)  # wrong ones cost 10 more
    table = scoring.format_table("t", s)
    assert "relation to the right of" in table and "75.0%" in table and "81.2%" in table


def test_eval_cli_checkpoint(trained: train.TrainResult, data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    png = tmp_path / "c.png"
    argv = ["--checkpoint", str(trained.run_dir / "best.safetensors"), "--data", str(data_dir), "--split", "test"]
    assert evaluate.run(_parse(evaluate, argv + ["--out", str(out), "--confusion", str(png)])) == 0
    result = json.loads(out.read_text())
    final_test = trained.metrics["final"]["test"]
    assert result["n"] == 64 and result["accuracy"] == final_test["accuracy"]
    assert result["per_relation"] == final_test["per_relation"] and result["confusion"] == final_test["confusion"]
    assert result["loss"] == pytest.approx(final_test["loss"], rel=1e-5)
    assert png.is_file()
    assert "relation above" in capsys.readouterr().out
    assert evaluate.run(_parse(evaluate, ["--checkpoint", str(trained.run_dir / "best.safetensors")])) == 1


def test_eval_cli_refuses_mismatched_data(trained: train.TrainResult, tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "c3", items_per_split=4)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "map_size": 8}))
    with pytest.raises(ValueError, match="expected shape"):
        evaluate.evaluate_checkpoint(trained.run_dir / "best.safetensors", folder)


def test_eval_boxes(tmp_path: Path, capsys) -> None:
    left, right = [0, 40, 20, 60], [60, 40, 80, 60]
    top, bottom = [40, 0, 60, 20], [40, 60, 60, 80]
    lines = [
        # correct: the cat is left of the dog (the more confident of two cat boxes is used)
        {"image": "a", "prompt": "p1", "subject": "cat", "object": "dog", "relation": "to the left of",
         "detections": [{"name": "cat", "box": left, "score": 0.9}, {"name": "cat", "box": right, "score": 0.2},
                        {"name": "dog", "box": right, "score": 0.8}]},
        # wrong: asked above, found left
        {"image": "b", "prompt": "p1", "subject": "cat", "object": "dog", "relation": "above",
         "detections": [{"name": "cat", "box": left}, {"name": "dog", "box": right}]},
        # missing object
        {"image": "c", "prompt": "p2", "subject": "cat", "object": "dog", "relation": "below",
         "detections": [{"name": "cat", "box": bottom}]},
        # two relations: the first holds, the second does not; the official evaluator's accumulation would pass it
        {"image": "d", "prompt": "p3", "relations": [
            {"subject": "cat", "relation": "left of", "object": "dog"},
            {"subject": "bird", "relation": "left of", "object": "fish"}],
         "detections": [{"name": "cat", "box": left}, {"name": "dog", "box": right},
                        {"name": "bird", "box": right}, {"name": "fish", "box": left}]},
        # correct: above
        {"image": "e", "subject": "bird", "object": "fish", "relation": "above",
         "detections": [{"name": "bird", "box": top}, {"name": "fish", "box": bottom}]},
    ]  # fmt: skip
    path = tmp_path / "boxes.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "boxes.json"
    assert evaluate.run(_parse(evaluate, ["--boxes", str(path), "--out", str(out)])) == 0
    r = json.loads(out.read_text())
    assert (r["n"], r["correct"]) == (5, 2)
    assert [i["correct"] for i in r["images"]] == [True, False, False, False, True]
    assert r["prompts"] == {"n": 4, "correct": 2, "accuracy": 0.5}  # p1 (a), p2, p3, e
    assert {k: (v["n"], v["correct"]) for k, v in r["per_relation"].items()} == {
        ABOVE: (2, 1),
        BELOW: (1, 0),
        LEFT_OF: (3, 2),
    }
    d_checks = r["images"][3]["checks"]
    assert [c["passed"] for c in d_checks] == [True, False] and d_checks[1]["found"] == [RIGHT_OF]
    assert "not detected: 'dog'" in r["images"][2]["checks"][0]["reason"]
    assert "GenEval position rule" in capsys.readouterr().out
    path.write_text(json.dumps({"image": "x", "subject": "cat", "object": "dog", "detections": []}) + "\n")
    with pytest.raises(ValueError, match=r"boxes.jsonl line 1: missing keys \['relation'\]"):
        evaluate.score_boxes_file(path)
