"""Where ComfyUI comes from and which Python runs it, chosen from the environment variables (no side effects).

One route, in this order: ``COMFYUI_PATH`` (an existing checkout, used as it is), ``COMFYUI_GIT_URL`` (cloned once
into the workspace), else comfy-cli (installs into the workspace). The Python is ``COMFYUI_PYTHON``, else the
checkout's own ``.venv/`` or ``venv/`` (``COMFYUI_PATH`` only), else the workspace venv.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devtools import REPO_ROOT
from devtools.launcher.errors import LauncherError

DEFAULT_WORKSPACE_NAME = ".comfyui"

ROUTE_PATH = "COMFYUI_PATH"
ROUTE_GIT = "COMFYUI_GIT_URL"
ROUTE_COMFY_CLI = "comfy-cli"


@dataclass(frozen=True)
class Plan:
    """Where ComfyUI comes from and which Python runs it.

    Attributes:
        route: ``"COMFYUI_PATH"``, ``"COMFYUI_GIT_URL"`` or ``"comfy-cli"``.
        comfy_path: The ComfyUI checkout (for the install routes: where it is or will be, ``<workspace>/ComfyUI``).
        workspace: Folder of the launcher's own files (clone, venv, base directory, logs).
        git_source: What ``git clone`` gets on the ``COMFYUI_GIT_URL`` route, else None.
        python: The interpreter that runs ComfyUI, or None for the workspace venv (created when missing).
        python_origin: Where ``python`` comes from, for messages.
    """

    route: str
    comfy_path: Path
    workspace: Path
    git_source: str | None
    python: str | None
    python_origin: str

    @property
    def venv(self) -> Path:
        """The workspace venv (used when ``python`` is None, and by comfy-cli)."""
        return self.workspace / "venv"

    @property
    def base_dir(self) -> Path:
        """ComfyUI's ``--base-directory``."""
        return self.workspace / "base"

    @property
    def log_path(self) -> Path:
        """ComfyUI's stdout/stderr of the last run."""
        return self.workspace / "comfyui.log"

    @property
    def install_log(self) -> Path:
        """Output of git, pip and comfy-cli."""
        return self.workspace / "install.log"


def env_value(env: Mapping[str, str], name: str) -> str:
    """The value of ``name`` in ``env``, stripped; unset and blank are both ``""``."""
    return env.get(name, "").strip()


def venv_python(venv: Path) -> Path:
    """The interpreter of a venv (POSIX or Windows layout)."""
    windows = venv / "Scripts" / "python.exe"
    return windows if windows.exists() else venv / "bin" / "python"


def _checkout_python(comfy_path: Path) -> Path | None:
    for name in (".venv", "venv"):
        python = venv_python(comfy_path / name)
        if python.is_file():
            return python
    return None


def resolve_plan(env: Mapping[str, str], repo_root: Path = REPO_ROOT) -> Plan:
    """Choose the install route and the Python from the environment variables (no side effects).

    Raises:
        LauncherError: If ``COMFYUI_PATH`` holds no ``main.py`` or ``COMFYUI_PYTHON`` is not an interpreter.
    """
    workspace_value = env_value(env, "COMFYUI_WORKSPACE")
    workspace = Path(workspace_value).expanduser().resolve() if workspace_value else repo_root / DEFAULT_WORKSPACE_NAME

    python: str | None = None
    python_origin = f"the workspace venv {workspace / 'venv'}"
    python_value = env_value(env, "COMFYUI_PYTHON")
    if python_value:
        found = shutil.which(str(Path(python_value).expanduser()))
        if found is None:
            raise LauncherError(
                f"COMFYUI_PYTHON={python_value} is not an executable Python: set it to the interpreter that runs "
                "ComfyUI (e.g. /path/to/ComfyUI/.venv/bin/python), or unset it to use a venv of this launcher"
            )
        python, python_origin = found, f"COMFYUI_PYTHON={python_value}"

    path_value = env_value(env, "COMFYUI_PATH")
    if path_value:
        comfy_path = Path(path_value).expanduser().resolve()
        if not (comfy_path / "main.py").is_file():
            raise LauncherError(
                f"COMFYUI_PATH={path_value} holds no main.py: point it at a ComfyUI checkout (the folder holding "
                "main.py), or unset it to let this launcher install ComfyUI into "
                f"{workspace / 'ComfyUI'} (COMFYUI_GIT_URL or comfy-cli)"
            )
        if python is None:
            checkout_python = _checkout_python(comfy_path)
            if checkout_python is not None:
                python, python_origin = str(checkout_python), f"the checkout's venv {checkout_python.parent.parent}"
        return Plan(ROUTE_PATH, comfy_path, workspace, None, python, python_origin)

    git_value = env_value(env, "COMFYUI_GIT_URL")
    if git_value:
        local = Path(git_value).expanduser()
        source = str(local.resolve()) if local.exists() else git_value
        return Plan(ROUTE_GIT, workspace / "ComfyUI", workspace, source, python, python_origin)

    return Plan(ROUTE_COMFY_CLI, workspace / "ComfyUI", workspace, None, python, python_origin)
