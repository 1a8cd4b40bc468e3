"""Reading an ``invert`` output folder as a torch Dataset of classifier samples.

The folder format and its validating reader are :mod:`.maps_folder`; this module owns the Dataset on top of it:
``meta.json`` (what was recorded and how), ``index.jsonl`` (one record per item x prompt x recorded step) and
``shards/*.safetensors`` (tensors ``(2, C, S, S)``, subject then object, already in the classifier-input layout).
Everything is validated when the dataset is built — meta keys and types, every index record, that every referenced shard exists and holds its key with
shape ``(2, C, S, S)`` — so a broken folder fails at once with a message naming the file, line or key.

Shards are opened lazily with ``safetensors.safe_open`` (memory-mapped) and the open handle is cached per shard; a
sample's maps are read on demand and cast to float32. Labels are the index of the record's TRUE relation in the
sorted relation list of ``meta.json`` (the official ``rel_name_to_idx`` convention: names sorted alphabetically).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor
from torch.utils.data import Dataset

from .maps_folder import FLOAT_DTYPES, INDEX_FILE, META_FILE, SPLITS, IndexRecord, load_meta, read_index

logger = logging.getLogger(__name__)

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
                if dtype not in FLOAT_DTYPES:
                    raise ValueError(
                        f"Shard file {path}, key {rec.key!r}: expected a float tensor (float16), found dtype {dtype}."
                    )
