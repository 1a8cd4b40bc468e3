"""Reading JSON and JSONL for the training folders and sources: whole files, lines and typed fields, with located
error messages.

Every error names the file (and, through ``where``, the entry and field) so that a bad annotation can be fixed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def read_json(path: Path, what: str) -> object:
    """Load the JSON file ``path``; ``what`` names the file's role in error messages ("COCO instances file").

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not valid JSON; the message gives the line and the parser's complaint.
    """
    if not path.is_file():
        raise FileNotFoundError(f"The {what} {str(path)!r} does not exist.")
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"The {what} {str(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None


def as_number(value: object, where: str) -> float:
    """``value`` as a float; ``where`` locates the field in error messages ("file, image 'x', field 'w'").

    Raises:
        ValueError: ``value`` is missing (None), a bool, or not an int/float.
    """
    if value is None:
        raise ValueError(f"{where}: missing (expected a number).")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {value!r}.")
    return float(value)


def as_image_size(value: object, where: str) -> tuple[int, int] | None:
    """``value`` (``[width, height]`` or None) as ``(width, height)`` or None; ``where`` locates the field.

    Raises:
        ValueError: ``value`` is neither None nor a list of two positive integers.
    """
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise ValueError(f"{where}: expected [width, height] (two positive integers), got {value!r}.")
    return (int(value[0]), int(value[1]))


def iter_jsonl_lines(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yield ``(line number, where, object)`` for every non-blank line of a JSONL file; ``where`` is "<file> line <n>".

    Raises:
        ValueError: a line is not valid JSON or not a JSON object (the message names the file and line).
    """
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg}).") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
            yield lineno, where, obj


def iter_jsonl_objects(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, object)`` for every non-blank line of a JSONL file (:func:`iter_jsonl_lines`)."""
    for _, where, obj in iter_jsonl_lines(path):
        yield where, obj
