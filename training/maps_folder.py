"""The maps folder that ``invert`` writes and ``train`` reads: one module for the format, its writer and its reader.

A maps folder holds:

* ``meta.json``: what was recorded and how (family, channel count C, layout, map side S, recorded steps, relations,
  model, inversion settings) plus ``format`` ("l2s-invert") and ``format_version`` (:data:`FORMAT_VERSION`);
* ``shards/shard_NNNNN.safetensors``: fp16 tensors ``(2, C, S, S)`` (subject, object), already in the classifier's
  input layout, keyed ``<item>/<prompt type>/<step>``;
* ``index.jsonl``: one record per item x prompt x recorded step (split, prompt, prompt type, the image's true
  relation, step, shard, key);
* ``done.jsonl``: the items whose shard is complete (resume bookkeeping).

The writer (:class:`MapsFolderWriter`) makes every step crash-safe: a shard is written to ``.tmp`` and renamed, then
its index lines, then its done lines are appended with fsync; on resume, leftovers of an interrupted shard are
dropped and the run continues after the last complete one. The reader (:func:`load_meta`, :func:`read_index`)
validates everything, including the format version, and names the file, line or key of anything wrong.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from l2s_core.families import get_family

from .json_fields import iter_jsonl_lines

logger = logging.getLogger(__name__)

FORMAT_NAME = "l2s-invert"
FORMAT_VERSION = 1
"""Version of the maps-folder layout; the reader refuses other versions."""


class MapsFolderError(ValueError):
    """An output folder that cannot be written to (another run's settings, an unreadable meta.json)."""


META_FILE = "meta.json"
INDEX_FILE = "index.jsonl"
SPLITS: tuple[str, ...] = ("train", "val", "test")
PROMPT_TYPES: tuple[str, ...] = ("pos", "neg")
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


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
    if raw.get("format", FORMAT_NAME) != FORMAT_NAME or raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: expected a maps folder of format {FORMAT_NAME!r} version {FORMAT_VERSION}, found "
            f"{raw.get('format', FORMAT_NAME)!r} version {raw.get('format_version')!r}. Write it again with this "
            "version of `python -m training invert`."
        )
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
    for line_no, where, rec in iter_jsonl_lines(path):
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


def _fsync_append(path: Path, lines: Sequence[str]) -> None:
    if not lines:
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; an unparsable line (a write cut off by a kill) ends the list."""
    if not path.is_file():
        return []
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                logger.warning(
                    "%s line %d is incomplete (interrupted write); it and later lines are ignored.", path, number
                )
                break
            if isinstance(record, dict):
                records.append(record)
    return records


class MapsFolderWriter:
    """The ``--out`` folder: meta check, resume bookkeeping and shard/index/done writing.

    Args:
        root: The folder (created if needed).
        meta: This run's meta.json content; an existing meta.json must match it.
        shard_size: Items per shard.

    Raises:
        MapsFolderError: the folder holds a run with other settings.
    """

    def __init__(self, root: Path, meta: dict[str, Any], shard_size: int) -> None:
        meta = {**meta, "format": FORMAT_NAME, "format_version": FORMAT_VERSION}
        self.root = root
        self.shards = root / "shards"
        self.index_path = root / "index.jsonl"
        self.done_path = root / "done.jsonl"
        self.shard_size = shard_size
        self.shards.mkdir(parents=True, exist_ok=True)
        meta_path = root / "meta.json"
        if meta_path.is_file():
            try:
                old = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise MapsFolderError(f"--out: {meta_path} is unreadable ({exc}); use a new --out folder.") from exc
            diffs = [
                f"{k}: {old.get(k)!r} -> {meta.get(k)!r}"
                for k in sorted(set(old) | set(meta))
                if old.get(k) != meta.get(k)
            ]
            if diffs:
                raise MapsFolderError(
                    f"--out: {root} holds an `invert` run with other settings ({'; '.join(diffs)}). Resume it with "
                    "the same options, or write to a new --out folder."
                )
        else:
            _atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        for tmp in self.shards.glob("*.tmp"):
            tmp.unlink()
        done_records = _read_jsonl(self.done_path)
        self.done: dict[str, int] = {}
        for record in done_records:
            if isinstance(record.get("item"), str) and isinstance(record.get("shard"), int):
                self.done[record["item"]] = record["shard"]
        _atomic_write_text(self.done_path, "".join(json.dumps(r) + "\n" for r in done_records))
        index = _read_jsonl(self.index_path)
        kept = [r for r in index if r.get("item") in self.done]
        if len(kept) != len(index):
            logger.info("Resume: dropping %d index records of unfinished items.", len(index) - len(kept))
        _atomic_write_text(self.index_path, "".join(json.dumps(r) + "\n" for r in kept))
        self.next_shard = max(self.done.values()) + 1 if self.done else 0
        self._buffer: list[tuple[str, list[dict[str, Any]], dict[str, torch.Tensor]]] = []
        if self.done:
            logger.info("Resuming %s: %d items done, next shard %05d.", root, len(self.done), self.next_shard)

    def add(self, item_id: str, records: list[dict[str, Any]], tensors: dict[str, torch.Tensor]) -> None:
        """Buffer one finished item; a full shard is written out."""
        self._buffer.append((item_id, records, tensors))
        if len(self._buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered items: shard (tmp + rename), then index lines, then done lines."""
        if not self._buffer:
            return
        from safetensors.torch import save_file

        number = self.next_shard
        rel = f"shards/shard_{number:05d}.safetensors"
        tensors: dict[str, torch.Tensor] = {}
        index_lines: list[str] = []
        for _item_id, records, item_tensors in self._buffer:
            tensors.update(item_tensors)
            for record in records:
                index_lines.append(json.dumps({**record, "shard": rel}))
        if tensors:
            final = self.root / rel
            tmp = final.with_name(final.name + ".tmp")
            save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION)})
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        _fsync_append(self.index_path, index_lines)
        _fsync_append(
            self.done_path, [json.dumps({"item": item_id, "shard": number}) for item_id, _, _ in self._buffer]
        )
        for item_id, _, _ in self._buffer:
            self.done[item_id] = number
        self.next_shard = number + 1
        self._buffer = []
