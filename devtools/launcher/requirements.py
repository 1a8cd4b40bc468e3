"""ComfyUI's ``requirements.txt``: the torch family told apart from the rest, and the stamp a filled venv carries.

torch and torchvision are installed only when the venv cannot import them (pip picks the build), torchaudio is
optional, and ``requests`` is added because ComfyUI's frontend manager imports it without listing it. The stamp
records which ``requirements.txt`` (by hash and checkout path) a venv was filled from, so a changed checkout is
installed again.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from devtools.launcher.plan import venv_python

TORCH_PACKAGES = ("torch", "torchvision")
OPTIONAL_PACKAGES = ("torchaudio",)
# Imported by ComfyUI's app/frontend_management.py but missing from its requirements.txt (0.3.6x).
EXTRA_PACKAGES = ("requests",)
STAMP_NAME = ".l2s-comfyui-requirements"


def requirement_name(line: str) -> str | None:
    """The normalized project name of a ``requirements.txt`` line, or None for comments, blanks and options."""
    text = line.split("#", 1)[0].strip()
    if not text or text.startswith("-"):
        return None
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", text)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else None


def split_requirements(text: str) -> tuple[list[str], dict[str, str]]:
    """Split ComfyUI's ``requirements.txt`` into the ordinary lines and the torch-family lines by name.

    Returns:
        (lines without torch/torchvision/torchaudio, {name: line} of those three).
    """
    torch_family = set(TORCH_PACKAGES) | set(OPTIONAL_PACKAGES)
    rest: list[str] = []
    family: dict[str, str] = {}
    for line in text.splitlines():
        name = requirement_name(line)
        if name in torch_family:
            family[name] = line.split("#", 1)[0].strip()
        elif name is not None:
            rest.append(line.strip())
    return rest, family


def _requirements_stamp(comfy_path: Path) -> str:
    requirements = comfy_path / "requirements.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16] if requirements.exists() else "none"
    return f"{digest} {comfy_path}"


def stamp_is_current(venv: Path, comfy_path: Path) -> bool:
    """Whether ``venv`` has a Python and was filled from the current ``requirements.txt`` of ``comfy_path``."""
    stamp = venv / STAMP_NAME
    return (
        venv_python(venv).is_file() and stamp.exists() and stamp.read_text().strip() == _requirements_stamp(comfy_path)
    )


def write_stamp(venv: Path, comfy_path: Path) -> None:
    """Record in ``venv`` that it holds the requirements of ``comfy_path`` as they are now."""
    (venv / STAMP_NAME).write_text(_requirements_stamp(comfy_path) + "\n")
