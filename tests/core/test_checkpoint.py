"""Tests for l2s_core.checkpoint and the l2s_core.convert CLI: both formats, validation and unsafe-pickle refusal."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from l2s_core.checkpoint import LoadedClassifier, convert_official, load_classifier, save_classifier
from l2s_core.classifier import (
    FAMILY_CLASSIFIER_DEFAULTS,
    ClassifierConfig,
    ExtractorConfig,
    HeadConfig,
    RelationClassifier,
)
from l2s_core.convert import main as convert_main

REPO = Path(__file__).resolve().parents[2]
RELATIONS = ("above", "below", "is", "to the left of", "to the right of")  # alphabetical, as the official data


def _official_dict(seed: int = 0, family: str = "sd2") -> tuple[dict[str, Any], RelationClassifier]:
    """A checkpoint dict in the official layout and the model it was taken from."""
    torch.manual_seed(seed)
    model = RelationClassifier(FAMILY_CLASSIFIER_DEFAULTS[family]).eval()
    ckpt = {
        "model_state_dict": model.state_dict(),
        "rel_name_to_idx": {name: str(i) for i, name in enumerate(RELATIONS)},  # mapping.json style: str values
        "idx_to_rel_name": dict(enumerate(RELATIONS)),
        "input_channels": 1368,
        "config": model.config.to_official(),
        "training_config": {
            "device": "cuda",
            "lr": 1e-4,
            "early_stopping": {"patience": 5, "min_delta": 0.0},
            "timesteps": [25, 5, 10, 15, 20, 49],
            "num_timesteps": 50,
            "orig_map_size": 16,
        },
    }
    return ckpt, model


def _maps(channels: int, seed: int = 3) -> torch.Tensor:
    return torch.rand(2, 2, channels, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def sd2_pth(tmp_path: Path) -> tuple[Path, RelationClassifier]:
    ckpt, model = _official_dict()
    path = tmp_path / "sd2.pth"
    torch.save(ckpt, path)
    return path, model


def _write_bad(tmp_path: Path, mutate: Any, name: str = "sd2.pth") -> Path:
    ckpt, _ = _official_dict()
    mutate(ckpt)
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


# ----------------------------------------------------------------------------------------------- official format


def test_official_pth_loads_with_metadata_and_same_logits(sd2_pth: tuple[Path, RelationClassifier]) -> None:
    path, source = sd2_pth
    loaded = load_classifier(path)  # family from the file stem
    assert loaded.family == "sd2" and loaded.channels == 195 and loaded.layout == "unet"
    assert loaded.relations == RELATIONS
    assert loaded.trained_steps == (5, 10, 15, 20, 25, 49) and loaded.trained_num_steps == 50
    assert (loaded.map_size, loaded.orig_map_size) == (16, 16)
    assert loaded.source_path == str(path)
    assert loaded.provenance["source_file"] == "sd2.pth"
    assert loaded.provenance["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    model = loaded.model
    assert not model.training
    assert all(not p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    maps, t = _maps(195), torch.tensor([[5.0], [25.0]])
    source.requires_grad_(False)  # frozen like the loaded model: torch picks the same encoder kernels for both
    with torch.no_grad():
        assert torch.equal(model(maps, t), source(maps, t))


def test_loaded_classifier_passes_gradient_to_maps_only(sd2_pth: tuple[Path, RelationClassifier]) -> None:
    loaded = load_classifier(sd2_pth[0])
    maps = _maps(195).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(loaded.model(maps, torch.tensor([5, 10])), torch.tensor([0, 3]))
    loss.backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loaded.model.parameters())


def test_family_argument_and_defaults_for_absent_optional_keys(tmp_path: Path) -> None:
    def strip(ckpt: dict[str, Any]) -> None:
        del ckpt["input_channels"], ckpt["idx_to_rel_name"]
        ckpt["training_config"] = None

    path = _write_bad(tmp_path, strip, name="my_classifier.pt")
    loaded = load_classifier(path, family="sd14")
    assert loaded.family == "sd14" and loaded.channels == 128
    assert loaded.config.input_channels == 1368  # read from the pe table
    assert loaded.trained_steps == tuple(range(50)) and loaded.trained_num_steps == 50  # raw step index is used
    assert loaded.orig_map_size == 16


def test_relation_index_accepts_aliases(sd2_pth: tuple[Path, RelationClassifier]) -> None:
    loaded = load_classifier(sd2_pth[0])
    assert loaded.relation_index("to_the_left_of") == 3
    assert loaded.relation_index("under") == 1
    assert loaded.relation_index("is") == 2
    with pytest.raises(ValueError, match=r"does not know the relation 'near'.*'to the right of'"):
        loaded.relation_index("near")


def test_pickle_payload_is_refused_without_running(tmp_path: Path) -> None:
    class Payload:
        def __init__(self, marker: Path) -> None:
            self.marker = str(marker)

        def __reduce__(self) -> tuple[Any, tuple[str, str]]:
            return (io.open, (self.marker, "w"))  # unpickling calls open(marker, "w"), which creates the file

    ckpt, _ = _official_dict()
    evil = tmp_path / "sd2.pth"
    torch.save({**ckpt, "extra": Payload(tmp_path / "pwned")}, evil)
    # Positive control, without unpickling anything: the saved pickle really references io.open with the marker.
    with zipfile.ZipFile(evil) as archive:
        pickled = next(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
    assert b"io" in pickled and b"open" in pickled and b"pwned" in pickled

    with pytest.raises(ValueError) as info:
        load_classifier(evil)
    message = str(info.value)
    assert "sd2.pth needs arbitrary code execution to unpickle; refusing" in message
    assert "io.open" in message  # names the offending global
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ValueError, match="refusing"):
        convert_official(evil, tmp_path / "out.safetensors")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize(
    ("mutate", "patterns"),
    [
        (
            lambda c: c["model_state_dict"].pop("relation_classifier.fc.4.bias"),
            ["sd2.pth", "missing keys", "relation_classifier.fc.4.bias"],
        ),
        (
            lambda c: c["model_state_dict"].update({"object_extractor.extra.weight": torch.zeros(2)}),
            ["sd2.pth", "unexpected keys", "object_extractor.extra.weight"],
        ),
        (
            lambda c: c["model_state_dict"].update({"object_extractor.input_projection.weight": torch.zeros(256, 100)}),
            ["sd2.pth", "object_extractor.input_projection.weight", "expected shape (256, 256), found (256, 100)"],
        ),
        (lambda c: c.pop("config"), ["sd2.pth", "lacks 'config'"]),
        (
            lambda c: c.update(rel_name_to_idx={"above": 0, "below": 2, "is": 3, "left": 4, "right": 5}),
            ["sd2.pth", "0..4 once each"],
        ),
        (
            lambda c: c.update(rel_name_to_idx={"above": 0, "below": 1, "left": 2, "right": 3}, idx_to_rel_name=None),
            ["sd2.pth", "names 4 relations", "has 5 classes"],
        ),
        (
            lambda c: c["idx_to_rel_name"].update({0: "over"}),
            ["sd2.pth", "'idx_to_rel_name'", "disagrees"],
        ),
        (
            lambda c: c["training_config"].update(timesteps=[5, 50]),
            ["sd2.pth", r"trained steps [5, 50] must lie in [0, 50)"],
        ),
        (
            lambda c: c["config"]["classifier"].update(num_layers=3),
            ["sd2.pth", "missing keys", "relation_classifier.transformer.layers.2.linear1.weight"],
        ),
    ],
)
def test_invalid_official_checkpoints_are_explained(tmp_path: Path, mutate: Any, patterns: list[str]) -> None:
    path = _write_bad(tmp_path, mutate)
    with pytest.raises(ValueError) as info:
        load_classifier(path)
    for pattern in patterns:
        assert pattern in str(info.value), (pattern, str(info.value))


def test_family_errors(tmp_path: Path, sd2_pth: tuple[Path, RelationClassifier]) -> None:
    with pytest.raises(ValueError, match=r"sd2.pth: Unknown model family 'kandinsky'. Known families: sd14"):
        load_classifier(sd2_pth[0], family="kandinsky")
    assert load_classifier(sd2_pth[0], family="sd21").family == "sd2"  # aliases resolve to the canonical name
    renamed = tmp_path / "weights.pth"
    renamed.write_bytes(sd2_pth[0].read_bytes())
    with pytest.raises(ValueError, match=r"weights.pth: cannot tell which model family.*found stem 'weights'"):
        load_classifier(renamed)
    with pytest.raises(ValueError, match="official checkpoints exist only for"):
        load_classifier(renamed, family="sdxl")


@pytest.mark.parametrize(
    ("family", "training_update"),
    [
        ("sd2", {"num_epochs": 100}),
        ("sd14", {"num_epochs": 150}),
        ("flux_schnell", {"timesteps": [1, 3], "num_timesteps": 4, "lr": 5e-5}),
        ("flux_dev", {"lr": 5e-5, "orig_map_size": 32}),
    ],
)
def test_an_official_file_of_any_name_is_read_from_its_training_config(
    tmp_path: Path, family: str, training_update: dict[str, Any]
) -> None:
    ckpt, model = _official_dict(family=family)
    ckpt["training_config"].update(training_update)
    path = tmp_path / "downloaded_weights.pth"
    torch.save(ckpt, path)
    loaded = load_classifier(path)
    assert loaded.family == family
    maps, step = _maps(loaded.channels), torch.full((2, 1), float(loaded.trained_steps[0]))
    model.requires_grad_(False)  # frozen like the loaded model: torch picks the same encoder kernels for both
    with torch.no_grad():
        assert torch.equal(loaded.model(maps, step), model(maps, step))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_classifier(tmp_path / "sd2.pth")
    (tmp_path / "sd2.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported classifier file type '.bin'"):
        load_classifier(tmp_path / "sd2.bin")
    (tmp_path / "sd2.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="sd2.pth: could not read as a torch checkpoint.*nothing in it was executed"):
        load_classifier(tmp_path / "sd2.pth")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="plain.safetensors: no 'l2s' metadata"):
        load_classifier(tmp_path / "plain.safetensors")


# ----------------------------------------------------------------------------------------------------- our format


def test_conversion_keeps_weights_logits_and_records_provenance(
    tmp_path: Path, sd2_pth: tuple[Path, RelationClassifier]
) -> None:
    src, source = sd2_pth
    dst = tmp_path / "out" / "sd2.safetensors"
    dst.parent.mkdir()
    convert_official(src, dst)
    with safe_open(str(dst), framework="pt") as fh:
        header = fh.metadata()
    meta = json.loads(header["l2s"])
    assert (meta["format"], meta["format_version"]) == ("l2s-classifier", 1)
    assert meta["rel_name_to_idx"] == {name: i for i, name in enumerate(RELATIONS)}
    assert str(tmp_path) not in header["l2s"]  # no absolute paths leak into the file
    loaded = load_classifier(dst, family="sd2")
    assert loaded.provenance == {
        "source_file": "sd2.pth",
        "source_sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
        "source_format": "learn-to-steer official .pth",
        "converter": "l2s_core.convert",
        "converter_version": 1,
    }
    assert (loaded.family, loaded.channels, loaded.layout, loaded.relations) == ("sd2", 195, "unet", RELATIONS)
    assert loaded.trained_steps == (5, 10, 15, 20, 25, 49) and loaded.trained_num_steps == 50
    assert loaded.config == source.config
    got, want = loaded.model.state_dict(), source.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert all(not p.requires_grad for p in loaded.model.parameters()) and not loaded.model.training
    maps, t = _maps(195), torch.tensor([10, 49])
    source.requires_grad_(False)  # frozen like the loaded model: torch picks the same encoder kernels for both
    with torch.no_grad():
        assert torch.equal(loaded.model(maps, t), source(maps, t))


def _toy_classifier() -> LoadedClassifier:
    config = ClassifierConfig(
        input_channels=6,
        num_relations=4,
        num_timesteps=4,
        extractor=ExtractorConfig(nhead=2, num_layers=1, dim_feedforward=8, layer_attn_nheads=1, timestep_mode="pre"),
        head=HeadConfig(nhead=1, num_layers=1, dim_feedforward=8, timestep_embedding_dim=0),
        map_size=4,
        d_model=8,
    )
    torch.manual_seed(1)
    model = RelationClassifier(config).eval().requires_grad_(False)
    return LoadedClassifier(
        model=model,
        relations=("above", "below", "to the left of", "to the right of"),
        trained_steps=(1, 3),
        trained_num_steps=4,
        map_size=4,
        orig_map_size=8,
        family="toy",
        channels=6,
        layout="unet",
        provenance={"trainer": "unit-test", "data": ["toy"]},
    )


def test_safetensors_round_trip(tmp_path: Path) -> None:
    original = _toy_classifier()
    path = tmp_path / "toy.safetensors"
    save_classifier(original, path)
    loaded = load_classifier(path)
    assert replace(loaded, model=original.model, source_path="") == original
    assert loaded.config == original.config and loaded.source_path == str(path)
    got, want = loaded.model.state_dict(), original.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    maps = torch.rand(3, 2, 6, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded.model(maps, 3), original.model(maps, 3))
    with pytest.raises(
        ValueError, match="toy.safetensors: this classifier is for family 'toy', but 'sd2' was requested"
    ):
        load_classifier(path, family="sd2")


def test_save_rejects_bad_targets_and_metadata(tmp_path: Path) -> None:
    toy = _toy_classifier()
    with pytest.raises(ValueError, match="saved as .safetensors; found extension '.pth'"):
        save_classifier(toy, tmp_path / "toy.pth")
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_classifier(replace(toy, provenance={"when": object()}), tmp_path / "toy.safetensors")


@pytest.mark.parametrize(
    ("field", "value", "pattern"),
    [
        ("format_version", 2, "expected format 'l2s-classifier' version 1, found 'l2s-classifier' version 2"),
        ("family", "sd9", "Unknown model family 'sd9'"),
        ("channels", 5, None),
        ("layout", "joint", "expected layout 'unet' for family 'toy', found 'joint'"),
        ("trained_steps", [3, 1], "distinct and ascending"),
        ("map_size", 8, "metadata map_size 8 differs from the config's 4"),
        ("orig_map_size", None, "lacks ['orig_map_size']"),
    ],
)
def test_invalid_metadata_is_explained(tmp_path: Path, field: str, value: Any, pattern: str | None) -> None:
    path = tmp_path / "toy.safetensors"
    save_classifier(_toy_classifier(), path)
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["l2s"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if value is None:
        del meta[field]
    else:
        meta[field] = value
    save_file(tensors, str(path), metadata={"l2s": json.dumps(meta)})
    if pattern is None:  # toy channels come from the file: any count up to the pe length is accepted
        assert load_classifier(path).channels == 5
        return
    with pytest.raises(ValueError) as info:
        load_classifier(path)
    assert "toy.safetensors" in str(info.value) and pattern in str(info.value)


def test_fixed_channel_count_must_match_family(tmp_path: Path, sd2_pth: tuple[Path, RelationClassifier]) -> None:
    loaded = load_classifier(sd2_pth[0])
    path = tmp_path / "sd2.safetensors"
    save_classifier(replace(loaded, channels=128), path)
    with pytest.raises(ValueError, match="family 'sd2' has 195 channels, metadata says 128"):
        load_classifier(path)


# ------------------------------------------------------------------------------------------------------------ CLI


def test_cli_converts_and_reports_errors(
    tmp_path: Path, sd2_pth: tuple[Path, RelationClassifier], caplog: pytest.LogCaptureFixture
) -> None:
    renamed = tmp_path / "classifier.pth"
    renamed.write_bytes(sd2_pth[0].read_bytes())
    dst = tmp_path / "c.safetensors"
    with caplog.at_level(logging.INFO):
        assert convert_main([str(renamed), str(dst), "--family", "sd2"]) == 0
    assert load_classifier(dst).family == "sd2"
    assert "family sd2, 195 channels" in caplog.text
    caplog.clear()
    assert convert_main([str(renamed), str(tmp_path / "d.safetensors")]) == 1
    assert "cannot tell which model family" in caplog.text and not (tmp_path / "d.safetensors").exists()


def test_cli_module_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "l2s_core.convert", str(tmp_path / "missing.pth"), str(tmp_path / "x.safetensors")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Classifier checkpoint not found" in result.stderr and "Traceback" not in result.stderr


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    path = _write_bad(tmp_path, lambda c: c["config"]["extractor"].update(timestep_embedding={"enable": False}))
    with pytest.raises(ValueError, match="sd2.pth: extractor.timestep_embedding.enable=False is not supported"):
        load_classifier(path)


# ------------------------------------------------------------------------------------- metadata types (issue 11)


def _rewrite_metadata(path: Path, edit: Any) -> None:
    """Replace the ``l2s`` metadata document of a saved classifier by ``edit(meta)`` (a dict or raw JSON text)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["l2s"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    new = edit(meta)
    save_file(tensors, str(path), metadata={"l2s": new if isinstance(new, str) else json.dumps(new)})


def _set(field: str, value: Any) -> Any:
    def edit(meta: dict[str, Any]) -> dict[str, Any]:
        target = meta
        *parents, last = field.split(".")
        for key in parents:
            target = target[key]
        target[last] = value
        return meta

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda meta: "[1, 2, 3]", "the 'l2s' metadata must be a JSON object with the fields ['config', "),
        (_set("channels", "many"), "'channels' must be a positive integer, found 'many' (str)"),
        (_set("provenance", [1, 2]), "'provenance' must be a dict (JSON object), found [1, 2] (list)"),
        (_set("trained_num_steps", 0), "'trained_num_steps' must be a positive integer, found 0 (int)"),
        (_set("trained_num_steps", "4"), "'trained_num_steps' must be a positive integer, found '4' (str)"),
        (_set("trained_num_steps", 3), "trained steps [1, 3] must lie in [0, 3) for a training schedule of "
                                       "trained_num_steps=3 steps"),
        (_set("trained_steps", "1,3"), "'trained_steps' must be a non-empty list of integers >= 0, found '1,3' (str)"),
        (_set("trained_steps", [1, 2.5]), "'trained_steps'[1] must be an integer >= 0"),
        (_set("map_size", 4.0), "'map_size' must be a positive integer, found 4.0 (float)"),
        (_set("orig_map_size", True), "'orig_map_size' must be a positive integer, found True (bool)"),
        (_set("input_channels", None), "'input_channels' must be a positive integer, found None (NoneType)"),
        (_set("family", 7), "'family' must be a non-empty string, found 7 (int)"),
        (_set("layout", "grid"), "'layout' must be one of 'unet', 'joint', found 'grid' (str)"),
        (_set("config", "x"), "config must be a dict (the official 'config' section), found 'x' (str)"),
        (_set("config.extractor", [1]), "config.extractor must be a dict (JSON object), found [1] (list)"),
        (_set("config.extractor.nhead", "many"), "config.extractor.nhead must be a positive integer, found 'many'"),
        (_set("config.classifier.dropout", "high"), "config.classifier.dropout must be a finite number >= 0.0"),
        (_set("config.num_timesteps", 0), "config.num_timesteps must be a positive integer, found 0 (int)"),
        (_set("rel_name_to_idx", [0, 1]), "'rel_name_to_idx' must be a non-empty dict relation name -> class index"),
        (_set("rel_name_to_idx", {"above": "zero", "below": 1, "to the left of": 2, "to the right of": 3}),
         "'rel_name_to_idx'['above'] must be an integer class index, found 'zero' (str)"),
        (_set("rel_name_to_idx", {"over": 0, "under": 1, "to the left of": 2, "to the right of": 3}),
         "the class 'over' must be stored under the canonical relation name 'above'"),
        (_set("rel_name_to_idx", {"above": 0, "below": 1, "left of": 2, "to the right of": 3}),
         "the class 'left of' must be stored under the canonical relation name 'to the left of'"),
        (_set("rel_name_to_idx", {"a": 0, "b": 1, "c": 2, "d": 3}),
         "none of the classes ['a', 'b', 'c', 'd'] is a spatial relation"),
    ],
)
def test_wrong_metadata_types_name_file_field_found_and_expected(tmp_path: Path, edit: Any, expected: str) -> None:
    path = tmp_path / "toy.safetensors"
    save_classifier(_toy_classifier(), path)
    _rewrite_metadata(path, edit)
    with pytest.raises(ValueError) as info:
        load_classifier(path)
    assert type(info.value) is ValueError  # a plain ValueError: ComfyUI shows its type name next to the message
    message = str(info.value)
    assert message.startswith("toy.safetensors: ") and expected in message, message


def test_unchanged_metadata_still_loads_after_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "toy.safetensors"
    save_classifier(_toy_classifier(), path)
    _rewrite_metadata(path, lambda meta: meta)
    assert load_classifier(path).relations == _toy_classifier().relations


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["training_config"].update(num_timesteps=0),
         "'training_config.num_timesteps' must be a positive integer, found 0 (int)"),
        (lambda c: c["training_config"].update(timesteps="5,10"),
         "'training_config.timesteps' must be a non-empty list of integers >= 0, found '5,10' (str)"),
        (lambda c: c["training_config"].update(orig_map_size="16"),
         "'training_config.orig_map_size' must be a positive integer, found '16' (str)"),
        (lambda c: c["training_config"].update(num_timesteps=20),
         "trained steps [5, 10, 15, 20, 25, 49] must lie in [0, 20) for a training schedule"),
        (lambda c: c.update(training_config=[1, 2]), "'training_config' must be a dict or None, found [1, 2] (list)"),
        (lambda c: c.update(input_channels="1368"), "'input_channels' must be a positive integer, found '1368' (str)"),
        (lambda c: c.update(model_state_dict=[1]), "'model_state_dict' must be a dict of tensors, found [1] (list)"),
        (lambda c: c["config"]["extractor"].update(nhead=2.0),
         "config.extractor.nhead must be a positive integer, found 2.0 (float)"),
        (lambda c: c.update(rel_name_to_idx={"above": 0, "below": 1, "is": 2, "left": 3, "right": 4},
                            idx_to_rel_name=None),
         "the class 'left' must be stored under the canonical relation name 'to the left of'"),
    ],
)
def test_wrong_official_fields_name_file_field_found_and_expected(tmp_path: Path, mutate: Any, expected: str) -> None:
    path = _write_bad(tmp_path, mutate)
    with pytest.raises(ValueError) as info:
        load_classifier(path)
    assert type(info.value) is ValueError
    assert str(info.value).startswith("sd2.pth") and expected in str(info.value), str(info.value)


def test_official_checkpoint_that_is_not_a_dict(tmp_path: Path) -> None:
    path = tmp_path / "sd2.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match=r"sd2.pth: the checkpoint must be an official checkpoint dict, found "
                                         r"\[1, 2, 3\] \(list\)"):
        load_classifier(path)
