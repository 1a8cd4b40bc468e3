"""Sources of the ``triplets`` command: where candidate items come from (``--source``).

Registry: :data:`SOURCES` lists the source names in the order the command offers them; each has its own module.

Sources:
    gqa    GQA scene graphs (:mod:`.gqa`, :func:`load_gqa`).
    coco   A COCO-style instances JSON, relations from the boxes (:mod:`.coco`, :func:`load_coco`).
    jsonl  One item per line (:mod:`.jsonl`, :func:`load_jsonl`).
    toy    The synthetic world of :mod:`training.toy.scenes` (:mod:`.toy`, :func:`generate_toy`).

Filters (each counted in ``summary.json``): relations outside the requested set; subject and object with the same
name; names with several instances in one image (ambiguous: the official GQA code forgot this); hypernym clashes
(:mod:`training.hypernyms`); boxes in no relation or, unless ``--allow-diagonal``, in two relations at once.
"""

from __future__ import annotations

from .coco import load_coco
from .gqa import GQA_RELATION_NAMES, load_gqa
from .jsonl import load_jsonl
from .toy import generate_toy

__all__ = ["GQA_RELATION_NAMES", "SOURCES", "generate_toy", "load_coco", "load_gqa", "load_jsonl"]

SOURCES: tuple[str, ...] = ("gqa", "coco", "jsonl", "toy")
"""Source names accepted by ``--source``, in the order ``--help`` lists them."""
