"""What ComfyUI's log says went wrong: a module its Python lacks, or this pack failing to import."""

from __future__ import annotations

import re

from devtools.launcher.base_dir import PACK_LINK_NAME
from devtools.launcher.requirements import OPTIONAL_PACKAGES


def missing_module(log_text: str) -> str | None:
    """The last module ComfyUI's log says it could not find, ignoring optional ones (torchaudio); or None."""
    names = re.findall(r"ModuleNotFoundError: No module named '([^']+)'", log_text)
    names = [name for name in names if name.split(".")[0] not in OPTIONAL_PACKAGES]
    return names[-1] if names else None


def pack_import_errors(log_text: str) -> list[str]:
    """Lines of ComfyUI's log that report this pack failing to import (with the traceback lines before them)."""
    lines = log_text.splitlines()
    found: list[str] = []
    for index, line in enumerate(lines):
        if PACK_LINK_NAME in line and ("IMPORT FAILED" in line or "Cannot import" in line):
            found += lines[max(0, index - 8) : index + 1]
    return found
