"""Reading an official ``.pth`` file safely, and saying why a file was refused.

This module owns the one place where a pickle from outside is read: ``torch.load(weights_only=True)``, never the
unrestricted unpickler. When torch refuses a file, the reason is told in plain words:

* the pickle references a global that is not plain data (``posix.system``, ``builtins.print``, a class of some
  package): the file **needs arbitrary code execution to unpickle** and is refused as dangerous, with the global
  named. torch words this differently across versions ("Unsupported global: GLOBAL x was not an allowed global",
  "Trying to load unsupported GLOBAL x whose module m is blocked", "Trying to call reduce for unrecognized function
  x", ...); those wordings are recognised, and when a future wording is not, the pickle's opcodes are listed
  with :mod:`pickletools` (which only parses, never executes) and every global outside the plain-data set is named;
* an empty file, a truncated or damaged archive, or a file that is not a torch checkpoint at all: it says so.

Nothing here imports ComfyUI; :mod:`.checkpoint` calls :func:`load_torch_file`.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["load_torch_file", "refusal_message", "unsafe_globals"]

#: Messages of torch's weights-only unpickler that mean "this pickle wants to run or build something that is not
#: plain data", with the group that names it. Older and newer torch versions word the same refusal differently.
_REFUSAL_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"Unsupported global: GLOBAL (\S+)"),
    re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked"),
    re.compile(r"Trying to call reduce for unrecognized function (.+?)(?: which belongs to|\n|$)"),
    re.compile(r"Can only create new object for nn\.Parameter or classes allowlisted .*? but got (.+?)(?:\n|$)"),
    re.compile(r"Can only build Tensor, Parameter, OrderedDict or types allowlisted .*? but got (.+?)(?:\n|$)"),
    re.compile(r"Unsupported class (\S+)"),
)

#: Globals a plain classifier checkpoint (dicts, lists, numbers, strings, tensors) may reference.
_PLAIN_GLOBALS = frozenset(
    (
        "collections.OrderedDict",
        "collections.Counter",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch._tensor._rebuild_from_type_v2",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.set",
        "builtins.complex",
    )
)
_PLAIN_GLOBAL_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"torch\._utils\._rebuild_[a-z0-9_]+"),
    re.compile(r"torch\.(?:cuda\.)?[A-Z][A-Za-z0-9]*(?:Storage|Tensor)"),
)
_STRING_OPS = frozenset(
    ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING")
)
_MAX_PICKLE_BYTES = 64 << 20  # a classifier's pickle is a few kB; larger entries are not scanned
_UNRESOLVED = "<a global whose name is computed at load time>"


def _is_plain_global(name: str) -> bool:
    if name in _PLAIN_GLOBALS or any(p.fullmatch(name) for p in _PLAIN_GLOBAL_PATTERNS):
        return True
    module, _, attr = name.rpartition(".")
    if module == "torch" and attr.isidentifier():
        return isinstance(getattr(torch, attr, None), (torch.dtype, torch.qscheme))  # torch.float32, ...
    return False


def _pickle_streams(path: Path) -> list[bytes]:
    """The pickle bytes of a checkpoint: ``*.pkl`` members of a zip archive, else the whole (legacy) file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [
                archive.read(info)
                for info in archive.infolist()
                if info.filename.endswith(".pkl") and info.file_size <= _MAX_PICKLE_BYTES
            ]
    if path.stat().st_size > _MAX_PICKLE_BYTES:
        with path.open("rb") as fh:
            return [fh.read(_MAX_PICKLE_BYTES)]
    return [path.read_bytes()]


def _globals_in(data: bytes) -> tuple[list[str], bool]:
    """Every global a pickle stream references, parsed with :mod:`pickletools` (nothing is executed).

    A legacy torch file is several pickles in a row followed by raw storage bytes: parsing goes on pickle after
    pickle and stops at the first byte that is not an opcode.

    Returns:
        The globals (``module.name``) in order, and whether the data ended in the middle of a pickle (truncated).
    """
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        pushed: list[Any] = []  # values the last opcodes pushed (strings, memo reads), for STACK_GLOBAL
        memo: dict[int, Any] = {}
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                    pushed.append(None)
                elif name in _STRING_OPS:
                    pushed.append(arg)
                elif name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                    key = len(memo) if name == "MEMOIZE" else int(arg)
                    memo[key] = pushed[-1] if pushed else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(int(arg)))
                elif name == "STACK_GLOBAL":
                    module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                    ok = isinstance(module, str) and isinstance(attr, str)
                    found.append(f"{module}.{attr}" if ok else _UNRESOLVED)
                    pushed.append(None)
                else:
                    pushed.append(None)
                del pushed[:-2]
        except Exception:  # boundary: raw storage bytes after the pickles, or the data ran out mid-pickle
            return found, stream.tell() >= len(data)
    return found, False


def _scan(path: Path) -> tuple[list[str], bool]:
    """Non-plain globals of the file's pickles (in order, without repeats) and whether a pickle is truncated."""
    names: list[str] = []
    truncated = False
    try:
        streams = _pickle_streams(path)
    except (OSError, zipfile.BadZipFile, RuntimeError) as exc:
        logger.debug("Could not scan %s for pickle globals: %s", path, exc)
        return names, False
    for data in streams:
        found, cut = _globals_in(data)
        truncated = truncated or cut
        names.extend(n for n in found if not _is_plain_global(n) and n not in names)
    return names, truncated


def unsafe_globals(path: str | Path) -> list[str]:
    """Globals referenced by the pickles in ``path`` that are not plain data, in order, without repeats.

    Only parses the pickle opcodes (:func:`pickletools.genops`); nothing is unpickled or executed. Returns [] when
    the file cannot be parsed at all.
    """
    return _scan(Path(path))[0]


def _refused_names(torch_message: str) -> list[str]:
    for pattern in _REFUSAL_PATTERNS:
        found = pattern.search(torch_message)
        if found:
            return [found.group(1).strip().rstrip(".")]
    return []


def refusal_message(fname: str, torch_message: str, path: str | Path | None = None) -> str:
    """Explain why ``torch.load(weights_only=True)`` refused a file, without relaying torch's advice to retry unsafely.

    Args:
        fname: the file name for the message.
        torch_message: ``str()`` of torch's ``UnpicklingError``.
        path: the file, scanned for non-plain globals when torch's wording is not recognised.

    Returns:
        "<fname> needs arbitrary code execution to unpickle; refusing (...)" when the pickle references anything
        that is not plain data, else a message saying the file could not be read (nothing in it was executed).
    """
    names = _refused_names(torch_message)
    if path is not None:
        scanned, truncated = _scan(Path(path))
        if names and truncated and not scanned:
            # torch read a global name cut off by the end of the file (e.g. "torch.FloatSt"): damaged, not dangerous
            return _read_failure(fname, EOFError())
        names = names or scanned
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return (
            f"{fname} needs arbitrary code execution to unpickle; refusing. It is potentially dangerous: it "
            f"references {shown}, and only plain dicts, lists, numbers, strings and tensors are accepted. Nothing in "
            "it was executed. Only if you trust its source, re-save it elsewhere as such a plain dict and convert "
            "that with `python -m l2s_core.convert`."
        )
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", torch_message)
    return (
        f"{fname}: could not read as a torch checkpoint with weights_only=True "
        f"({detail.group(1).strip() if detail else 'unsupported pickle content'}); expected an official "
        "Learn-to-Steer .pth dict. The file is damaged or not a classifier checkpoint; nothing in it was executed."
    )


def _read_failure(fname: str, exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        reason = "the file ends too early (truncated)"
    elif isinstance(exc, RuntimeError) and "zip archive" in str(exc):
        reason = "its zip archive is damaged or truncated"
    else:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
    return (
        f"{fname}: could not read as a torch checkpoint ({reason}); expected an official Learn-to-Steer .pth dict. "
        "Download or copy the file again; nothing in it was executed."
    )


def load_torch_file(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with every failure explained.

    Raises:
        ValueError: the file is empty, needs code execution to unpickle (refused as dangerous), is truncated or
            damaged, or is not a torch checkpoint. The message names the file; nothing in it is ever executed.
    """
    p = Path(path)
    fname = p.name
    if p.stat().st_size == 0:
        raise ValueError(
            f"{fname}: empty file (0 bytes); expected an official Learn-to-Steer .pth checkpoint. The download or "
            "copy did not finish: copy the file again."
        )
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(refusal_message(fname, str(exc), p)) from None
    except Exception as exc:  # boundary: any other read failure becomes a clear ValueError
        names = unsafe_globals(p)  # a refusal torch reported with another exception type is still a refusal
        if names:
            raise ValueError(refusal_message(fname, "", p)) from None
        raise ValueError(_read_failure(fname, exc)) from exc
