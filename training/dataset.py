"""Reading an ``invert`` output folder as a torch Dataset of classifier samples (method.md §7.7).

This module owns the data-folder contract on the reading side: ``meta.json`` (what was recorded and how),
``index.jsonl`` (one record per item x prompt x recorded step) and ``shards/*.safetensors`` (tensors
``(2, C, S, S)``, subject then object, already in the classifier-input layout). Everything is validated when the
dataset is built — meta keys and types, every index record, that every referenced shard exists and holds its key with
shape ``(2, C, S, S)`` — so a broken folder fails at once with a message naming the file, line or key.

Shards are opened lazily with ``safetensors.safe_open`` (memory-mapped) and the open handle is cached per shard; a
sample's maps are read on demand and cast to float32. Labels are the index of the record's TRUE relation in the
sorted relation list of ``meta.json`` (the official ``rel_name_to_idx`` convention: names sorted alphabetically).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import Dataset

from l2s_core.families import get_family

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
INDEX_FILE = "index.jsonl"
SPLITS: tuple[str, ...] = ("train", "val", "test")
PROMPT_TYPES: tuple[str, ...] = ("pos", "neg")
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


@dataclass(frozen=True)
class DataMeta:
    """The contents of an ``invert`` folder's ``meta.json``.

    Attributes:
        family: canonical model family name (``l2s_core.families``).
        channels: channel count C of every map tensor.
        layout: attention layout, ``"unet"`` or ``"joint"``.
        map_size: side S of the square maps.
        grid: token-grid side the maps were recorded at, or None for multi-resolution (UNet) maps.
        num_steps: length of the sampling schedule the step indices refer to.
        record_steps: recorded step indices, ascending.
        relations: relation names in class-index order (sorted alphabetically, the official convention).
        model: basename of the model the maps come from ("" if absent).
        raw: the whole ``meta.json`` document, for provenance.
    """

    family: str
    channels: int
    layout: str
    map_size: int
    grid: int | None
    num_steps: int
    record_steps: tuple[int, ...]
    relations: tuple[str, ...]
    model: str
    raw: Mapping[str, Any]

    @property
    def orig_map_size(self) -> int:
        """Side of the attention grid the maps were recorded at (``grid``, or ``map_size`` for multi-res maps)."""
        return self.grid if self.grid is not None else self.map_size


@dataclass(frozen=True)
class IndexRecord:
    """One line of ``index.jsonl``: a (item, prompt, recorded step) sample.

    Attributes:
        line: 1-based line number in ``index.jsonl`` (for messages).
        item: item id.
        split: "train", "val" or "test".
        prompt: the prompt the maps were recorded with.
        prompt_type: "pos" (prompt states the true relation) or "neg" (a wrong relation).
        prompt_relation: relation word used in the prompt.
        label: the TRUE relation of the image.
        label_index: index of ``label`` in :attr:`DataMeta.relations`.
        step: denoising step index of the recording.
        shard: shard path relative to the data folder.
        key: tensor key inside the shard.
    """

    line: int
    item: str
    split: str
    prompt: str
    prompt_type: str
    prompt_relation: str
    label: str
    label_index: int
    step: int
    shard: str
    key: str


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_meta(folder: str | Path) -> DataMeta:
    """Read and validate ``meta.json`` of an ``invert`` output folder.

    Args:
        folder: the data folder.

    Returns:
        The parsed metadata.

    Raises:
        FileNotFoundError: the folder or its ``meta.json`` does not exist.
        ValueError: invalid JSON, a missing key, a value of the wrong type, or values that contradict the family.
    """
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found. Expected a data folder written by `python -m training invert` "
            f"(meta.json, index.jsonl, shards/)."
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(raw).__name__}.")
    required = ("family", "channels", "layout", "map_size", "num_steps", "record_steps", "relations")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}; expected all of {list(required)} (and 'grid').")
    for key in ("channels", "map_size", "num_steps"):
        if not _is_int(raw[key]) or raw[key] < 1:
            raise ValueError(f"{path}: {key!r} must be a positive integer, found {raw[key]!r}.")
    grid = raw.get("grid")
    if grid is not None and (not _is_int(grid) or grid < 1):
        raise ValueError(f"{path}: 'grid' must be a positive integer or null, found {grid!r}.")
    steps = raw["record_steps"]
    if (
        not isinstance(steps, list)
        or not steps
        or not all(_is_int(s) for s in steps)
        or steps != sorted(set(steps))
        or steps[0] < 0
        or steps[-1] >= raw["num_steps"]
    ):
        raise ValueError(
            f"{path}: 'record_steps' must be a non-empty ascending list of distinct integers in "
            f"[0, num_steps={raw['num_steps']}), found {steps!r}."
        )
    relations = raw["relations"]
    if (
        not isinstance(relations, list)
        or len(relations) < 2
        or not all(isinstance(r, str) and r for r in relations)
        or len(set(relations)) != len(relations)
    ):
        raise ValueError(f"{path}: 'relations' must list at least 2 distinct relation names, found {relations!r}.")
    try:
        family = get_family(str(raw["family"]))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if raw["layout"] != family.layout:
        raise ValueError(
            f"{path}: family {family.name!r} has layout {family.layout!r}, but meta.json says {raw['layout']!r}."
        )
    if family.channels is not None and raw["channels"] != family.channels:
        raise ValueError(
            f"{path}: family {family.name!r} produces {family.channels} channels, but meta.json says "
            f"{raw['channels']}. Check the model the maps were recorded with."
        )
    return DataMeta(
        family=family.name,
        channels=int(raw["channels"]),
        layout=str(raw["layout"]),
        map_size=int(raw["map_size"]),
        grid=None if grid is None else int(grid),
        num_steps=int(raw["num_steps"]),
        record_steps=tuple(int(s) for s in steps),
        relations=tuple(sorted(relations)),
        model=str(raw.get("model") or ""),
        raw=raw,
    )


def read_index(folder: str | Path, meta: DataMeta) -> list[IndexRecord]:
    """Read and validate every line of ``index.jsonl``.

    Args:
        folder: the data folder.
        meta: its metadata (for relations and recorded steps).

    Returns:
        All records in file order.

    Raises:
        FileNotFoundError: no ``index.jsonl``.
        ValueError: a line that is not a JSON object, lacks a key, or has an unknown split, prompt type, relation
            or step; the message names the line.
    """
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found. Expected one JSON record per line written by `invert`.")
    index_of = {name: i for i, name in enumerate(meta.relations)}
    required = ("item", "split", "prompt_type", "label", "step", "shard", "key")
    records: list[IndexRecord] = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc}).") from exc
            if not isinstance(rec, dict):
                raise ValueError(f"{where}: expected a JSON object, found {type(rec).__name__}.")
            missing = [k for k in required if k not in rec]
            if missing:
                raise ValueError(f"{where}: missing keys {missing}; expected all of {list(required)}.")
            if rec["split"] not in SPLITS:
                raise ValueError(f"{where}: split must be one of {list(SPLITS)}, found {rec['split']!r}.")
            if rec["prompt_type"] not in PROMPT_TYPES:
                raise ValueError(
                    f"{where}: prompt_type must be one of {list(PROMPT_TYPES)}, found {rec['prompt_type']!r}."
                )
            if rec["label"] not in index_of:
                raise ValueError(
                    f"{where}: label {rec['label']!r} is not one of the relations in meta.json {list(meta.relations)}."
                )
            if not _is_int(rec["step"]) or rec["step"] not in meta.record_steps:
                raise ValueError(
                    f"{where}: step {rec['step']!r} is not one of the recorded steps {list(meta.record_steps)} "
                    "of meta.json."
                )
            records.append(
                IndexRecord(
                    line=line_no,
                    item=str(rec["item"]),
                    split=str(rec["split"]),
                    prompt=str(rec.get("prompt", "")),
                    prompt_type=str(rec["prompt_type"]),
                    prompt_relation=str(rec.get("prompt_relation", "")),
                    label=str(rec["label"]),
                    label_index=index_of[rec["label"]],
                    step=int(rec["step"]),
                    shard=str(rec["shard"]),
                    key=str(rec["key"]),
                )
            )
    return records


class MapDataset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """One split of an ``invert`` folder: ``(maps (2, C, S, S) float32, step () long, label () long)`` samples.

    Args:
        folder: the data folder (``meta.json``, ``index.jsonl``, ``shards/``).
        split: "train", "val" or "test".
        include_negatives: keep the records recorded with a wrong-relation prompt (``prompt_type == "neg"``).
            False reproduces the paper's ablation (the official ``only_pos``).
        steps: keep only these recorded step indices (default: all of ``meta.record_steps``).

    Raises:
        FileNotFoundError: missing ``meta.json``, ``index.jsonl`` or a referenced shard (named in the message).
        ValueError: invalid metadata or records, unknown split or steps, a key missing from its shard, or a tensor
            whose shape is not ``(2, C, S, S)`` (the message names shard, key, expected and found shapes).
    """

    def __init__(
        self,
        folder: str | Path,
        split: str,
        include_negatives: bool = True,
        steps: Sequence[int] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; expected one of {list(SPLITS)}.")
        self.folder = Path(folder)
        self.split = split
        self.include_negatives = include_negatives
        self.meta = load_meta(self.folder)
        if steps is None:
            self.steps: tuple[int, ...] = self.meta.record_steps
        else:
            wanted = sorted(set(int(s) for s in steps))
            unknown = [s for s in wanted if s not in self.meta.record_steps]
            if not wanted or unknown:
                raise ValueError(
                    f"Requested steps {list(steps)} are not a non-empty subset of the recorded steps "
                    f"{list(self.meta.record_steps)} of {self.folder / META_FILE}."
                )
            self.steps = tuple(wanted)
        self.records: list[IndexRecord] = [
            r
            for r in read_index(self.folder, self.meta)
            if r.split == split and r.step in self.steps and (include_negatives or r.prompt_type != "neg")
        ]
        self._handles: dict[str, Any] = {}
        self._validate_shards()
        logger.info(
            "%s split %r: %d samples (negatives %s, steps %s)",
            self.folder.name,
            split,
            len(self.records),
            "kept" if include_negatives else "dropped",
            list(self.steps),
        )

    @property
    def relations(self) -> tuple[str, ...]:
        """Relation names in class-index order."""
        return self.meta.relations

    @property
    def expected_shape(self) -> tuple[int, int, int, int]:
        """Shape every map tensor must have: ``(2, C, S, S)``."""
        s = self.meta.map_size
        return (2, self.meta.channels, s, s)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        rec = self.records[i]
        maps = self._handle(rec.shard).get_tensor(rec.key).to(torch.float32)  # (2, C, S, S)
        return maps, torch.tensor(rec.step, dtype=torch.long), torch.tensor(rec.label_index, dtype=torch.long)

    def labels(self) -> Tensor:
        """(N,) long label indices in record order."""
        return torch.tensor([r.label_index for r in self.records], dtype=torch.long)

    def step_values(self) -> Tensor:
        """(N,) long step indices in record order."""
        return torch.tensor([r.step for r in self.records], dtype=torch.long)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # open safetensors handles do not pickle (DataLoader workers reopen lazily)
        return state

    def _shard_path(self, shard: str) -> Path:
        return self.folder / shard

    def _handle(self, shard: str) -> Any:
        handle = self._handles.get(shard)
        if handle is None:
            path = self._shard_path(shard)
            if not path.is_file():
                raise FileNotFoundError(f"Shard file {path} referenced by {self.folder / INDEX_FILE} does not exist.")
            try:
                handle = safe_open(str(path), framework="pt")
            except Exception as exc:  # boundary: corrupt or truncated shard
                raise ValueError(
                    f"Shard file {path}: could not read as safetensors ({type(exc).__name__}: {exc})."
                ) from exc
            self._handles[shard] = handle
        return handle

    def _validate_shards(self) -> None:
        """Check that every referenced shard exists and holds each key with shape (2, C, S, S) and a float dtype."""
        by_shard: dict[str, list[IndexRecord]] = {}
        for rec in self.records:
            by_shard.setdefault(rec.shard, []).append(rec)
        expected = self.expected_shape
        for shard, recs in by_shard.items():
            path = self._shard_path(shard)
            if not path.is_file():
                raise FileNotFoundError(
                    f"Shard file {path} does not exist; it is referenced by {self.folder / INDEX_FILE} line "
                    f"{recs[0].line} (and {len(recs) - 1} more records). Re-run `invert` (it resumes) or fix the index."
                )
            handle = self._handle(shard)
            keys = set(handle.keys())
            for rec in recs:
                if rec.key not in keys:
                    raise ValueError(
                        f"Shard file {path} has no tensor {rec.key!r} ({self.folder / INDEX_FILE} line {rec.line})."
                    )
                sl = handle.get_slice(rec.key)
                shape = tuple(int(d) for d in sl.get_shape())
                if shape != expected:
                    raise ValueError(
                        f"Shard file {path}, key {rec.key!r}: expected shape {expected} (2, channels, map_size, "
                        f"map_size) from meta.json, found {shape}."
                    )
                dtype = str(sl.get_dtype())
                if dtype not in _FLOAT_DTYPES:
                    raise ValueError(
                        f"Shard file {path}, key {rec.key!r}: expected a float tensor (float16), found dtype {dtype}."
                    )
