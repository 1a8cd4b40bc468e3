"""benchmarks/prompt_map_shift.py: pos/neg records paired per item and step, shifts measured, on a real maps folder
written by the same writer ``invert`` uses."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from training.maps_folder import MapsFolderWriter

ROOT = Path(__file__).resolve().parents[2]
C, S = 3, 16


def _script():
    spec = importlib.util.spec_from_file_location("prompt_map_shift", ROOT / "benchmarks" / "prompt_map_shift.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _point_maps(subject: tuple[int, int], obj: tuple[int, int]) -> torch.Tensor:
    """(2, C, S, S): all of each map's mass on one cell, so centres of mass are exact."""
    maps = torch.zeros(2, C, S, S)
    maps[0, :, subject[0], subject[1]] = 1.0
    maps[1, :, obj[0], obj[1]] = 1.0
    return maps.half()


def _folder(root: Path, negatives: bool = True) -> Path:
    """Two items at step 2. Item a: the wrong relation moves the subject one cell; item b: it changes nothing."""
    meta = {"family": "toy", "channels": C, "layout": "unet", "map_size": S, "grid": None, "num_steps": 4,
            "record_steps": [2], "relations": ["above", "below", "to the left of", "to the right of"],
            "model": "hand", "negatives": negatives}
    writer = MapsFolderWriter(root, meta, shard_size=1)
    neg_subject = {"a": (4, 5), "b": (4, 4)}
    for item in ("a", "b"):
        records, tensors = [], {}
        types = ("pos", "neg") if negatives else ("pos",)
        for prompt_type in types:
            key = f"{item}/{prompt_type}/2"
            subject = (4, 4) if prompt_type == "pos" else neg_subject[item]
            tensors[key] = _point_maps(subject, (4, 12))
            records.append({"item": item, "split": "train", "prompt": "p", "prompt_type": prompt_type,
                            "prompt_relation": "to the left of" if prompt_type == "pos" else "above",
                            "label": "to the left of", "step": 2, "key": key})
        writer.add(item, records, tensors)
    writer.flush()
    return root


def test_shift_is_measured_in_cells_per_step(tmp_path: Path) -> None:
    (step,) = _script().shift_by_step(_folder(tmp_path / "maps"))
    assert step.step == 2 and step.items == 2
    # item a: the subject's centre moves 1 cell, the object's 0 -> 0.5; item b: 0. Mean 0.25.
    assert step.centroid_shift == pytest.approx(0.25, abs=1e-6)
    # item a: |pos - neg| = sqrt(2C) (C cells lose 1, C gain 1), |pos| = sqrt(2C) -> 1; item b: 0. Mean 0.5.
    assert step.relative_change == pytest.approx(0.5, abs=1e-6)
    assert step.separation == pytest.approx(8.0, abs=1e-6)  # columns 4 and 12, same row


def test_centroids_are_row_and_column() -> None:
    centres = _script().centroids(_point_maps((3, 9), (10, 1)).float())
    assert centres.tolist() == [[3.0, 9.0], [10.0, 1.0]]


def test_folder_without_negatives_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wrong-relation"):
        _script().shift_by_step(_folder(tmp_path / "maps", negatives=False))
