"""Steps 1 and 2 of the launcher: a ComfyUI checkout and a Python that has its requirements.

The checkout comes from the plan's route: ``COMFYUI_PATH`` as it is, a ``git clone`` of ``COMFYUI_GIT_URL``, or
comfy-cli (``comfy --skip-prompt --workspace <workspace>/ComfyUI install --cpu --skip-manager``). Without
``COMFYUI_PYTHON`` (or the checkout's own venv) the workspace venv is created with the interpreter running the
launcher and filled once with ComfyUI's requirements (see :mod:`devtools.launcher.requirements`). Everything
git, pip and comfy-cli print goes to the workspace's ``install.log`` too.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from devtools.launcher.errors import LauncherError
from devtools.launcher.plan import ROUTE_COMFY_CLI, ROUTE_GIT, Plan, venv_python
from devtools.launcher.processes import importable, log_tail, run_logged
from devtools.launcher.requirements import (
    EXTRA_PACKAGES,
    OPTIONAL_PACKAGES,
    TORCH_PACKAGES,
    split_requirements,
    stamp_is_current,
    write_stamp,
)

logger = logging.getLogger(__name__)

NO_GIT_HOST_HINT = (
    "Without access to github.com and PyPI, use an existing ComfyUI instead: set COMFYUI_PATH to a ComfyUI checkout "
    "(the folder holding main.py) and COMFYUI_PYTHON to the Python that runs it, or set COMFYUI_GIT_URL to a git URL "
    "or local path/mirror of the ComfyUI repository (optionally with COMFYUI_PYTHON)."
)


def clone_comfyui(source: str, target: Path, log_path: Path) -> None:
    """``git clone`` ComfyUI from ``source`` into ``target`` (a missing or empty folder).

    Raises:
        LauncherError: If git is missing, the target holds something else, the clone fails, or the clone holds no
            ``main.py``.
    """
    if target.exists() and any(target.iterdir()):
        raise LauncherError(
            f"{target} exists but holds no main.py (an interrupted install?): remove it, or set COMFYUI_WORKSPACE "
            "to another folder"
        )
    git = shutil.which("git")
    if git is None:
        raise LauncherError("git is not installed: install git, or set COMFYUI_PATH to an existing ComfyUI checkout")
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("cloning ComfyUI from %s into %s", source, target)
    code = run_logged([git, "clone", "--", source, str(target)], log_path)
    if code != 0:
        raise LauncherError(
            f"git clone of COMFYUI_GIT_URL={source} into {target} failed (exit {code}):\n{log_tail(log_path, 10)}\n"
            "Check the URL or path (it must be a ComfyUI git repository), or set COMFYUI_PATH to an existing "
            f"ComfyUI checkout. Log: {log_path}"
        )
    if not (target / "main.py").is_file():
        raise LauncherError(
            f"the clone of {source} in {target} holds no main.py: COMFYUI_GIT_URL must name the ComfyUI repository "
            "(remove the clone before the next try)"
        )


def create_venv(venv: Path, log_path: Path) -> str:
    """Create ``venv`` with the interpreter running this script (unless it exists); return its Python."""
    python = venv_python(venv)
    if not python.is_file():
        logger.info("creating the venv %s", venv)
        code = run_logged([sys.executable, "-m", "venv", str(venv)], log_path)
        if code != 0 or not venv_python(venv).is_file():
            raise LauncherError(
                f"could not create the venv {venv} with {sys.executable} (exit {code}): on Debian/Ubuntu install "
                f"python3-venv, or set COMFYUI_PYTHON to a Python that has ComfyUI's requirements. Log: {log_path}"
            )
        python = venv_python(venv)
    return str(python)


def _pip(python: str, args: Sequence[str], log_path: Path) -> int:
    return run_logged([python, "-m", "pip", "install", "--progress-bar", "off", *args], log_path)


def install_requirements(venv: Path, comfy_path: Path, log_path: Path) -> str:
    """Install ComfyUI's ``requirements.txt`` into the workspace venv once; return the venv's Python."""
    if stamp_is_current(venv, comfy_path):
        return str(venv_python(venv))
    python = create_venv(venv, log_path)
    requirements = comfy_path / "requirements.txt"
    if not requirements.is_file():
        raise LauncherError(f"{comfy_path} has no requirements.txt: is it a ComfyUI checkout?")
    rest, family = split_requirements(requirements.read_text(encoding="utf-8"))
    missing_torch = [family.get(name, name) for name in TORCH_PACKAGES if not importable(python, name)]
    if missing_torch:
        logger.info("installing %s into %s (pip chooses the build)", " ".join(missing_torch), venv)
        code = _pip(python, missing_torch, log_path)
        if code != 0:
            raise LauncherError(
                f"pip could not install {' '.join(missing_torch)} into {venv} (exit {code}). Install the torch build "
                f"for this machine into that venv yourself ({venv_python(venv)} -m pip install torch torchvision), "
                f"or set COMFYUI_PYTHON to a Python that has ComfyUI's requirements. Log: {log_path}"
            )
        for name in OPTIONAL_PACKAGES:
            if name in family and not importable(python, name):
                if _pip(python, [family[name]], log_path) != 0:
                    logger.warning(
                        "could not install %s: ComfyUI's audio nodes will be missing (not needed here)", name
                    )
    filtered = venv / "comfyui-requirements.txt"
    filtered.write_text("\n".join([*rest, *EXTRA_PACKAGES]) + "\n", encoding="utf-8")
    logger.info("installing ComfyUI's requirements into %s", venv)
    code = _pip(python, ["-r", str(filtered)], log_path)
    if code != 0:
        raise LauncherError(
            f"pip could not install ComfyUI's requirements ({requirements}) into {venv} (exit {code}); see the pip "
            f"output above. Fix the cause, or set COMFYUI_PYTHON to a Python that has them. Log: {log_path}"
        )
    write_stamp(venv, comfy_path)
    return python


def find_main_py(folder: Path) -> Path | None:
    """The ComfyUI checkout at ``folder`` or, as older comfy-cli versions install, ``folder/ComfyUI``."""
    for candidate in (folder, folder / "ComfyUI"):
        if (candidate / "main.py").is_file():
            return candidate
    return None


def comfy_cli_install_command(comfy: str, comfy_path: Path, restore: bool, python_given: bool) -> list[str]:
    """The comfy-cli command that installs ComfyUI (CPU, without ComfyUI-Manager) into ``comfy_path``."""
    command = [comfy, "--skip-prompt", "--workspace", str(comfy_path), "install", "--cpu", "--skip-manager"]
    if restore:
        command.append("--restore")
    if python_given:  # COMFYUI_PYTHON already has the requirements: only clone
        command += ["--skip-torch-or-directml", "--skip-requirement"]
    return command


def install_with_comfy_cli(plan: Plan) -> tuple[Path, str]:
    """Install ComfyUI with comfy-cli (from github.com and PyPI) into ``plan.comfy_path``; return (checkout, python)."""
    existing = find_main_py(plan.comfy_path)
    if existing is not None and (plan.python is not None or stamp_is_current(plan.venv, existing)):
        return existing, plan.python or str(venv_python(plan.venv))
    log_path = plan.install_log
    venv_py = create_venv(plan.venv, log_path)
    comfy = venv_python(plan.venv).parent / ("comfy.exe" if os.name == "nt" else "comfy")
    if not comfy.is_file():
        logger.info("installing comfy-cli into %s", plan.venv)
        code = _pip(venv_py, ["comfy-cli"], log_path)
        if code != 0:
            raise LauncherError(
                f"pip could not install comfy-cli into {plan.venv} (exit {code}). {NO_GIT_HOST_HINT} Log: {log_path}"
            )
    command = comfy_cli_install_command(
        comfy=str(comfy), comfy_path=plan.comfy_path, restore=existing is not None, python_given=plan.python is not None
    )
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(plan.venv)  # comfy-cli installs into the active venv: ours
    env.pop("CONDA_PREFIX", None)
    env["PATH"] = f"{comfy.parent}{os.pathsep}{env.get('PATH', '')}"
    logger.info("installing ComfyUI with comfy-cli into %s", plan.comfy_path)
    code = run_logged(command, log_path, env=env)
    checkout = find_main_py(plan.comfy_path)
    if code != 0 or checkout is None:
        raise LauncherError(
            f"comfy-cli could not install ComfyUI into {plan.comfy_path} (exit {code}; command: {' '.join(command)}). "
            f"{NO_GIT_HOST_HINT} Log: {log_path}"
        )
    if plan.python is not None:
        return checkout, plan.python
    for name in EXTRA_PACKAGES:
        if not importable(venv_py, name) and _pip(venv_py, [name], log_path) != 0:
            raise LauncherError(f"pip could not install {name} into {plan.venv}. Log: {log_path}")
    write_stamp(plan.venv, checkout)
    return checkout, venv_py


def ensure_comfyui(plan: Plan) -> tuple[Path, str]:
    """Make sure the ComfyUI checkout and a Python with its requirements exist; return (checkout, python)."""
    plan.workspace.mkdir(parents=True, exist_ok=True)
    if plan.route == ROUTE_COMFY_CLI:
        return install_with_comfy_cli(plan)
    if plan.route == ROUTE_GIT and find_main_py(plan.comfy_path) is None:
        assert plan.git_source is not None
        clone_comfyui(plan.git_source, plan.comfy_path, plan.install_log)
    checkout = plan.comfy_path
    if plan.python is not None:
        return checkout, plan.python
    return checkout, install_requirements(plan.venv, checkout, plan.install_log)
