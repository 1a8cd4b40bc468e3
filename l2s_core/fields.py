"""Typed checks for the fields of checkpoint metadata, with messages that name the file and the field.

This module owns one rule: a value read from a file is checked for its type and range before anything uses it, and a
wrong value fails with ``"<file>: <field> must be <what is expected>, found <value> (<type>)"`` instead of a raw
``int()``/``.get()`` error. :mod:`.checkpoint` (our metadata and the official ``.pth`` dicts) and
:meth:`.classifier.ClassifierConfig.from_official` (the architecture config) use it.

Integers must be real integers (``bool`` and ``float`` are refused, even ``50.0``): JSON and pickle both keep the
type, so a float or a string in an integer field means the file was written wrongly.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "as_index",
    "describe_value",
    "field_error",
    "require_int",
    "require_int_list",
    "require_mapping",
    "require_number",
    "require_str",
]

_MAX_REPR = 80


def as_index(value: object, what: str) -> int:
    """Return an argument as a Python int, rejecting bools, floats and other non-integers with a clear message.

    For arguments of a function call (not file fields): the message starts with ``what``, e.g. "The step index".
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got the bool {value!r}.")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r} ({type(value).__name__}).") from None


def field_error(where: str, field: str, expected: str, value: Any) -> ValueError:
    """The error for a wrong field: ``"<where>: <field> must be <expected>, found <value> (<type>)."``.

    A plain :class:`ValueError` (no subclass), so that a UI showing the exception type shows just "ValueError".
    """
    prefix = f"{where}: " if where else ""
    return ValueError(f"{prefix}{field} must be {expected}, found {describe_value(value)}.")


def describe_value(value: Any) -> str:
    """``repr`` of a found value with its type name, shortened for long values (e.g. ``'many' (str)``)."""
    text = repr(value)
    if len(text) > _MAX_REPR:
        text = text[: _MAX_REPR - 3] + "..."
    return f"{text} ({type(value).__name__})"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def require_int(value: Any, field: str, where: str = "", *, minimum: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer ``>= minimum``.

    Args:
        value: the value read from the file.
        field: the field's name for the message, e.g. ``"channels"`` or ``"config.extractor.nhead"``.
        where: the file name, prefixed to the message ("" for none).
        minimum: smallest accepted value, or None for no bound.

    Raises:
        ValueError: not an integer, or below ``minimum``.
    """
    if minimum is None:
        expected = "an integer"
    elif minimum == 1:
        expected = "a positive integer"
    elif minimum == 0:
        expected = "an integer >= 0"
    else:
        expected = f"an integer >= {minimum}"
    if not _is_int(value) or (minimum is not None and int(value) < minimum):
        raise field_error(where, field, expected, value)
    return int(value)


def require_number(value: Any, field: str, where: str = "", *, minimum: float | None = None) -> float:
    """Return ``value`` as a ``float`` if it is a real number (int or float, not bool) ``>= minimum``.

    Raises:
        ValueError: not a number, not finite, or below ``minimum``.
    """
    expected = "a finite number" if minimum is None else f"a finite number >= {minimum}"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise field_error(where, field, expected, value)
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")) or (minimum is not None and number < minimum):
        raise field_error(where, field, expected, value)
    return number


def require_str(value: Any, field: str, where: str = "", *, choices: Sequence[str] = ()) -> str:
    """Return ``value`` if it is a non-empty string (and one of ``choices`` when given).

    Raises:
        ValueError: not a string, empty, or not among ``choices``.
    """
    if choices:
        expected = "one of " + ", ".join(repr(c) for c in choices)
        if not isinstance(value, str) or value not in choices:
            raise field_error(where, field, expected, value)
        return value
    if not isinstance(value, str) or not value.strip():
        raise field_error(where, field, "a non-empty string", value)
    return value


def require_mapping(
    value: Any, field: str, where: str = "", *, expected: str = "a dict (JSON object)"
) -> Mapping[Any, Any]:
    """Return ``value`` if it is a mapping.

    Raises:
        ValueError: not a mapping; ``expected`` describes what should be there.
    """
    if not isinstance(value, Mapping):
        raise field_error(where, field, expected, value)
    return value


def require_int_list(value: Any, field: str, where: str = "", *, minimum: int | None = None) -> tuple[int, ...]:
    """Return a non-empty list or tuple of integers (each ``>= minimum``) as a tuple.

    Raises:
        ValueError: not a list/tuple, empty, or an entry that is not such an integer (the entry is named).
    """
    bound = "" if minimum is None else f" >= {minimum}"
    expected = f"a non-empty list of integers{bound}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise field_error(where, field, expected, value)
    for index, item in enumerate(value):
        if not _is_int(item) or (minimum is not None and int(item) < minimum):
            raise field_error(where, f"{field}[{index}]", f"an integer{bound} ({field} is {expected})", item)
    return tuple(int(item) for item in value)
