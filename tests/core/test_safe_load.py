"""Tests for l2s_core.safe_load: a code-executing pickle is refused as dangerous on any torch wording, nothing runs.

Every payload here would create a marker file if it were ever unpickled; each test checks the marker is absent.
The "future wording" tests replace torch's message with one no torch version uses, so the pickle scan (pickletools,
which only parses) must find the dangerous global by itself.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from l2s_core import safe_load
from l2s_core.checkpoint import load_classifier
from l2s_core.classifier import FAMILY_CLASSIFIER_DEFAULTS, RelationClassifier
from l2s_core.safe_load import load_torch_file, refusal_message, unsafe_globals

DANGEROUS = "needs arbitrary code execution to unpickle; refusing"


class _SystemPayload:
    """Unpickling calls os.system (pickled as posix.system on Linux): the blocked-module refusal of newer torch."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _OpenPayload:
    """Unpickling calls io.open(marker, "w"): the "not an allowed global" refusal."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (io.open, (self.marker, "w"))


def _official_like() -> dict[str, Any]:
    model = RelationClassifier(FAMILY_CLASSIFIER_DEFAULTS["sd2"])
    return {"model_state_dict": model.state_dict(), "rel_name_to_idx": {"above": 0}, "config": {"map_size": 16}}


@pytest.mark.parametrize("payload", [_SystemPayload, _OpenPayload])
@pytest.mark.parametrize("zip_format", [True, False])
def test_code_executing_pickle_is_refused_as_dangerous(tmp_path: Path, payload: type, zip_format: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "sd2.pth"
    torch.save({**_official_like(), "extra": payload(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ValueError) as info:
        load_classifier(path)
    message = str(info.value)
    assert f"sd2.pth {DANGEROUS}" in message and "dangerous" in message, message
    assert "corrupt" not in message and "damaged" not in message, message
    assert ("posix.system" if payload is _SystemPayload else "io.open") in message, message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unknown_torch_wording_still_refused_by_scanning_the_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: int
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "sd2.pth"
    path.write_bytes(pickle.dumps({"config": _SystemPayload(marker)}, protocol=protocol))  # STACK_GLOBAL from 4 on

    def refuse(*args: Any, **kwargs: Any) -> Any:
        assert kwargs.get("weights_only") is True
        raise pickle.UnpicklingError("Weights only load failed: a wording no torch version has used")

    monkeypatch.setattr(safe_load.torch, "load", refuse)
    with pytest.raises(ValueError) as info:
        load_torch_file(path)
    assert DANGEROUS in str(info.value) and "posix.system" in str(info.value), str(info.value)
    assert not marker.exists()


def test_plain_checkpoints_reference_only_plain_globals(tmp_path: Path) -> None:
    for zip_format in (True, False):
        path = tmp_path / f"plain_{zip_format}.pth"
        torch.save({**_official_like(), "steps": [1, 2], "t": torch.zeros(2, dtype=torch.int64),
                    "h": torch.ones(3, dtype=torch.float16)}, path, _use_new_zipfile_serialization=zip_format)
        assert unsafe_globals(path) == []
        assert set(load_torch_file(path)) == {"model_state_dict", "rel_name_to_idx", "config", "steps", "t", "h"}


def test_scan_names_each_unsafe_global_once(tmp_path: Path) -> None:
    path = tmp_path / "two.pth"
    torch.save({"a": _OpenPayload(tmp_path / "x"), "b": _OpenPayload(tmp_path / "y"),
                "c": _SystemPayload(tmp_path / "z")}, path)
    assert unsafe_globals(path) == ["io.open", "posix.system"]
    assert not any((tmp_path / n).exists() for n in "xyz")


@pytest.mark.parametrize(
    ("torch_message", "named"),
    [
        ("Trying to load unsupported GLOBAL posix.system whose module posix is blocked.", "posix.system"),
        ("WeightsUnpickler error: Unsupported global: GLOBAL builtins.print was not an allowed global by default.",
         "builtins.print"),
        ("WeightsUnpickler error: Trying to call reduce for unrecognized function <built-in function eval>",
         "<built-in function eval>"),
        ("Can only build Tensor, Parameter, OrderedDict or types allowlisted via `add_safe_globals`, but got "
         "<class 'evil.Thing'>", "<class 'evil.Thing'>"),
    ],
)
def test_every_known_torch_wording_reads_as_dangerous(torch_message: str, named: str) -> None:
    message = refusal_message("sd2.pth", torch_message)
    assert message.startswith(f"sd2.pth {DANGEROUS}") and named in message, message
    assert "corrupt" not in message


def test_other_unpickling_errors_are_not_called_dangerous() -> None:
    message = refusal_message("sd2.pth", "WeightsUnpickler error: Unsupported operand 149")
    assert "could not read" in message and "Unsupported operand 149" in message and "refusing" not in message


def test_empty_truncated_and_foreign_files_say_what_they_are(tmp_path: Path) -> None:
    empty = tmp_path / "sd2.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"sd2.pth: empty file \(0 bytes\)") as info:
        load_classifier(empty)
    assert "EOFError" not in str(info.value)
    good = tmp_path / "good.pth"
    torch.save(_official_like(), good)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut.pth: could not read as a torch checkpoint \(its zip archive is "
                                         r"damaged or truncated\).*nothing in it was executed"):
        load_torch_file(truncated)
    legacy = tmp_path / "legacy.pth"
    torch.save(_official_like(), legacy, _use_new_zipfile_serialization=False)
    cut_legacy = tmp_path / "cut_legacy.pth"
    cut_legacy.write_bytes(legacy.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cut_legacy.pth: could not read as a torch checkpoint \(") as info:
        load_torch_file(cut_legacy)
    assert DANGEROUS not in str(info.value)
    empty_st = tmp_path / "c.safetensors"
    empty_st.write_bytes(b"")
    with pytest.raises(ValueError, match=r"c.safetensors: empty file \(0 bytes\)"):
        load_classifier(empty_st)
