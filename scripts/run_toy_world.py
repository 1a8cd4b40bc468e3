"""Run a workflow (default: the toy world) in a real, headless ComfyUI and print where the images are.

This is the README's first command (``bash scripts/demo.sh`` runs it). It owns the whole way from a bare machine to
images on disk, in four steps; every step is reused by the next run.

1. **Find or install ComfyUI.** One route, chosen from the environment:

   * ``COMFYUI_PATH`` names an existing ComfyUI checkout (the folder holding ``main.py``): it is used as it is and the
     launcher writes nothing into it (see step 3).
   * else ``COMFYUI_GIT_URL`` names a ComfyUI git repository, a URL or a local path/mirror (for machines that reach
     no git host): it is cloned once into ``<workspace>/ComfyUI``.
   * else comfy-cli installs ComfyUI into ``<workspace>/ComfyUI``: ``pip install comfy-cli`` into the workspace venv,
     then ``comfy --skip-prompt --workspace <workspace>/ComfyUI install --cpu --skip-manager`` (``--restore`` when the
     folder is already there). This needs github.com and PyPI; comfy-cli picks the CPU build of torch and also
     records the workspace in its own user config.

   The workspace is ``COMFYUI_WORKSPACE``, default ``.comfyui/`` in this repo (git-ignored).

2. **Pick the Python that runs ComfyUI.** ``COMFYUI_PYTHON`` (an interpreter that already has ComfyUI's
   requirements; nothing is installed into it); else, for ``COMFYUI_PATH``, the checkout's own ``.venv/`` or
   ``venv/``; else the workspace venv ``<workspace>/venv``, created with the interpreter running this script.
   Into that venv ComfyUI's ``requirements.txt`` is installed once (comfy-cli does it on its route; a stamp file
   records which ``requirements.txt`` was installed, so a changed checkout is reinstalled). torch and torchvision
   are left to pip (and the usual ``PIP_INDEX_URL`` / ``PIP_EXTRA_INDEX_URL``) and are installed only when the venv
   cannot import them, so a venv prepared with the right torch build is kept; torchaudio is optional for ComfyUI
   (audio models only) and a failure to install it is only a warning. ``requests`` is added: ComfyUI's frontend
   manager imports it without listing it (older transformers pulled it in).

3. **Wire the pack in without touching the checkout.** ComfyUI runs with ``--base-directory <workspace>/base``, so
   ``custom_nodes/``, ``input/``, ``output/``, ``user/`` and ``temp/`` live there: ``custom_nodes/learn_to_steer`` is a
   symlink to this repo (an entry of that name that points elsewhere stops the run: nothing of the user's is
   removed), the checkout's own custom node packs are not loaded, and its ``models/`` folders stay visible through
   ``<workspace>/base/extra_model_paths.yaml`` (for ``--workflow`` graphs that need model files). The database goes to
   ``<workspace>/base/user/comfyui.db``.

4. **Run.** ``main.py --cpu --listen 127.0.0.1 --port <free port> --disable-auto-launch --disable-api-nodes`` with
   ComfyUI's output in ``<workspace>/comfyui.log``; wait until ``/object_info`` answers; ``POST /prompt`` the API-format
   workflow; poll ``/history/<id>``; print the absolute paths of the saved images and the wall time; stop the server,
   also on errors, Ctrl-C, SIGTERM and SIGHUP (on Linux the server also gets SIGTERM if this process is killed).
   With ``--seeds N`` (default 4 for the toy-world workflow, 1 for others) the workflow runs once per seed 0..N-1:
   every ``seed`` / ``noise_seed`` input of the graph is set to that seed.

5. **Report** (the toy-world workflow): ``python -m training.toy.demo`` with ComfyUI's Python judges each seed's
   plain and steered image (the colour-geometry judge of the benchmark), prints what it read
   ("seed 0: plain: below - wrong; steered: above - right") and saves one grid image, every panel enlarged to
   256 px or more, in the output folder.

Other environment variables: ``COMFYUI_PYTHONPATH`` (``PYTHONPATH`` of the server, e.g. a torchvision stub; the
caller's ``PYTHONPATH`` is never passed on because this repo's ``nodes/`` would shadow ComfyUI's ``nodes.py``),
``L2S_COMFY_THREADS`` (torch/OpenMP threads of the server).

Only the standard library is used; ComfyUI (``comfy``) is never imported here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

if __package__:  # imported as scripts.run_toy_world (the tests)
    from .comfy_server import ComfyProcess, ComfyServerError, output_files, port_is_free, server_environment
else:  # run as a file: python scripts/run_toy_world.py
    from comfy_server import ComfyProcess, ComfyServerError, output_files, port_is_free, server_environment

logger = logging.getLogger("l2s.run_toy_world")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "l2s_toy_world.api.json"
DEFAULT_TOY_SEEDS = 4
SEED_INPUTS = ("seed", "noise_seed")
PLAIN_PREFIX = "l2s_toy_unsteered"
STEERED_PREFIX = "l2s_toy_steered"
GRID_NAME = "l2s_toy_demo_grid.png"
REPORT_TIMEOUT_S = 300.0
DEFAULT_WORKSPACE_NAME = ".comfyui"
PACK_LINK_NAME = "learn_to_steer"
STARTUP_TIMEOUT_S = 300.0
DEFAULT_TIMEOUT_S = 900.0
LOG_TAIL_LINES = 40

ROUTE_PATH = "COMFYUI_PATH"
ROUTE_GIT = "COMFYUI_GIT_URL"
ROUTE_COMFY_CLI = "comfy-cli"

TORCH_PACKAGES = ("torch", "torchvision")
OPTIONAL_PACKAGES = ("torchaudio",)
# Imported by ComfyUI's app/frontend_management.py but missing from its requirements.txt (0.3.6x).
EXTRA_PACKAGES = ("requests",)
STAMP_NAME = ".l2s-comfyui-requirements"

# Model folders of the ComfyUI checkout made visible to the server that runs in our base directory.
CHECKOUT_MODEL_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("models/checkpoints",),
    "configs": ("models/configs",),
    "loras": ("models/loras",),
    "vae": ("models/vae",),
    "text_encoders": ("models/text_encoders", "models/clip"),
    "diffusion_models": ("models/diffusion_models", "models/unet"),
    "clip_vision": ("models/clip_vision",),
    "style_models": ("models/style_models",),
    "embeddings": ("models/embeddings",),
    "vae_approx": ("models/vae_approx",),
    "controlnet": ("models/controlnet", "models/t2i_adapter"),
    "upscale_models": ("models/upscale_models",),
    "l2s_classifiers": ("models/l2s_classifiers",),
    "l2s_toy_worlds": ("models/l2s_toy_worlds",),
}

NO_GIT_HOST_HINT = (
    "Without access to github.com and PyPI, use an existing ComfyUI instead: set COMFYUI_PATH to a ComfyUI checkout "
    "(the folder holding main.py) and COMFYUI_PYTHON to the Python that runs it, or set COMFYUI_GIT_URL to a git URL "
    "or local path/mirror of the ComfyUI repository (optionally with COMFYUI_PYTHON)."
)


ENVIRONMENT_HELP = """environment:
  COMFYUI_PATH       an existing ComfyUI checkout (the folder holding main.py), used as it is
  COMFYUI_PYTHON     the Python that runs ComfyUI, with its requirements installed (default: the checkout's
                     .venv/ or venv/, else <workspace>/venv, created and filled on first use)
  COMFYUI_GIT_URL    without COMFYUI_PATH: git URL or local path/mirror of ComfyUI, cloned into <workspace>/ComfyUI
  COMFYUI_WORKSPACE  the launcher's folder: clone, venv, base/ (custom_nodes, output/ with the images), logs
                     (default: .comfyui/ in this repo)
  L2S_COMFY_THREADS  torch threads of the ComfyUI process
Without COMFYUI_PATH and COMFYUI_GIT_URL, comfy-cli installs ComfyUI (needs github.com and PyPI)."""


class LauncherError(RuntimeError):
    """A step of the launcher failed; the message says what was wrong and how to fix it."""


class _Terminated(BaseException):
    """Raised by the SIGTERM/SIGHUP handler so that the server is stopped on the way out."""


# --------------------------------------------------------------------------------------------------------- plan


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


def _env_value(env: Mapping[str, str], name: str) -> str:
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
    workspace_value = _env_value(env, "COMFYUI_WORKSPACE")
    workspace = Path(workspace_value).expanduser().resolve() if workspace_value else repo_root / DEFAULT_WORKSPACE_NAME

    python: str | None = None
    python_origin = f"the workspace venv {workspace / 'venv'}"
    python_value = _env_value(env, "COMFYUI_PYTHON")
    if python_value:
        found = shutil.which(str(Path(python_value).expanduser()))
        if found is None:
            raise LauncherError(
                f"COMFYUI_PYTHON={python_value} is not an executable Python: set it to the interpreter that runs "
                "ComfyUI (e.g. /path/to/ComfyUI/.venv/bin/python), or unset it to use a venv of this launcher"
            )
        python, python_origin = found, f"COMFYUI_PYTHON={python_value}"

    path_value = _env_value(env, "COMFYUI_PATH")
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

    git_value = _env_value(env, "COMFYUI_GIT_URL")
    if git_value:
        local = Path(git_value).expanduser()
        source = str(local.resolve()) if local.exists() else git_value
        return Plan(ROUTE_GIT, workspace / "ComfyUI", workspace, source, python, python_origin)

    return Plan(ROUTE_COMFY_CLI, workspace / "ComfyUI", workspace, None, python, python_origin)


# ------------------------------------------------------------------------------------------------ subprocesses


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def run_logged(command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> int:
    """Run a command, copy its output to stderr and append it to ``log_path``; return the exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        try:
            process = subprocess.Popen(
                list(command),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if env is None else dict(env),
                text=True,
                errors="replace",
            )
        except OSError as exc:
            log.write(f"could not start: {exc}\n")
            return 127
        assert process.stdout is not None
        try:
            for line in process.stdout:
                sys.stderr.write(line)
                log.write(line)
            return process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()


def _importable(python: str, module: str) -> bool:
    """Whether ``python`` imports ``module`` in the environment the server gets (no caller ``PYTHONPATH``)."""
    result = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, stdin=subprocess.DEVNULL, env=server_environment()
    )
    return result.returncode == 0


# ---------------------------------------------------------------------------------------------- install steps


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
            f"git clone of COMFYUI_GIT_URL={source} into {target} failed (exit {code}):\n{_tail(log_path, 10)}\n"
            "Check the URL or path (it must be a ComfyUI git repository), or set COMFYUI_PATH to an existing "
            f"ComfyUI checkout. Log: {log_path}"
        )
    if not (target / "main.py").is_file():
        raise LauncherError(
            f"the clone of {source} in {target} holds no main.py: COMFYUI_GIT_URL must name the ComfyUI repository "
            "(remove the clone before the next try)"
        )


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


def _stamp_is_current(venv: Path, comfy_path: Path) -> bool:
    stamp = venv / STAMP_NAME
    return (
        venv_python(venv).is_file() and stamp.exists() and stamp.read_text().strip() == _requirements_stamp(comfy_path)
    )


def _write_stamp(venv: Path, comfy_path: Path) -> None:
    (venv / STAMP_NAME).write_text(_requirements_stamp(comfy_path) + "\n")


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
    if _stamp_is_current(venv, comfy_path):
        return str(venv_python(venv))
    python = create_venv(venv, log_path)
    requirements = comfy_path / "requirements.txt"
    if not requirements.is_file():
        raise LauncherError(f"{comfy_path} has no requirements.txt: is it a ComfyUI checkout?")
    rest, family = split_requirements(requirements.read_text(encoding="utf-8"))
    missing_torch = [family.get(name, name) for name in TORCH_PACKAGES if not _importable(python, name)]
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
            if name in family and not _importable(python, name):
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
    _write_stamp(venv, comfy_path)
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
    if existing is not None and (plan.python is not None or _stamp_is_current(plan.venv, existing)):
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
        if not _importable(venv_py, name) and _pip(venv_py, [name], log_path) != 0:
            raise LauncherError(f"pip could not install {name} into {plan.venv}. Log: {log_path}")
    _write_stamp(plan.venv, checkout)
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


# ------------------------------------------------------------------------------------------- base directory


def link_pack(custom_nodes: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Symlink ``custom_nodes/learn_to_steer`` to this repo (once).

    Raises:
        LauncherError: If an entry of that name exists and is not a link to this repo (it is left alone).
    """
    link = custom_nodes / PACK_LINK_NAME
    if link.is_symlink():
        if link.resolve() == repo_root.resolve():
            return link
        raise LauncherError(
            f"{link} links to {os.readlink(link)}, another copy of the pack, not this repo ({repo_root}): remove "
            "that link, or set COMFYUI_WORKSPACE to another folder"
        )
    if link.exists():
        raise LauncherError(
            f"{link} already holds a different pack of the same name (not a link to {repo_root}): move it away, or "
            "set COMFYUI_WORKSPACE to another folder"
        )
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link.symlink_to(repo_root.resolve(), target_is_directory=True)
    return link


def extra_model_paths_yaml(comfy_path: Path) -> str:
    """``extra_model_paths.yaml`` text that registers the model folders of the ComfyUI checkout."""
    lines = ["l2s_checkout_models:", f"  base_path: {json.dumps(str(comfy_path))}"]
    for key, folders in CHECKOUT_MODEL_FOLDERS.items():
        lines.append(f"  {key}: |")
        lines += [f"    {folder}" for folder in folders]
    return "\n".join(lines) + "\n"


def prepare_base_dir(base: Path, comfy_path: Path, repo_root: Path = REPO_ROOT) -> Path:
    """Lay out ComfyUI's base directory: the pack link, the folders and ``extra_model_paths.yaml``."""
    for sub in ("custom_nodes", "input", "output", "user", "models"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link_pack(base / "custom_nodes", repo_root)
    (base / "extra_model_paths.yaml").write_text(extra_model_paths_yaml(comfy_path), encoding="utf-8")
    return base


def server_arguments(base: Path) -> list[str]:
    """``main.py`` arguments after ``--listen``/``--port``: CPU, our base directory, no browser, no API nodes."""
    return [
        "--cpu",
        "--base-directory",
        str(base),
        "--extra-model-paths-config",
        str(base / "extra_model_paths.yaml"),
        "--database-url",
        f"sqlite:///{base / 'user' / 'comfyui.db'}",
        "--disable-auto-launch",
        "--disable-api-nodes",
    ]


# ------------------------------------------------------------------------------------------------- workflow


def load_workflow(path: Path) -> dict[str, Any]:
    """Read an API-format workflow (``{node_id: {"class_type", "inputs"}}``).

    Raises:
        LauncherError: If the file is missing, not JSON, or a UI-format workflow.
    """
    if not path.is_file():
        hint = (
            " (the toy-world workflow is not in this checkout yet: pass --workflow PATH)"
            if path == DEFAULT_WORKFLOW
            else ""
        )
        raise LauncherError(f"workflow {path} does not exist{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LauncherError(f"workflow {path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        raise LauncherError(
            f"workflow {path} is in ComfyUI's UI format; this launcher needs the API format (ComfyUI: Export (API)), "
            "like the files in example_workflows/api/"
        )
    if not isinstance(data, dict) or not data:
        raise LauncherError(f"workflow {path} is not an API-format workflow (a JSON object of nodes)")
    for node_id, node in data.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs", {}), dict):
            raise LauncherError(
                f"workflow {path}: node {node_id!r} is not an API-format node ({{'class_type': ..., 'inputs': {{...}}}})"
            )
    return data


def image_paths(entry: dict[str, Any], base: Path) -> tuple[list[Path], int]:
    """The saved images a ``/history`` entry lists, as absolute paths, and the number of preview images.

    SaveImage files (type ``output``) are in ``base/output``; PreviewImage files (type ``temp``) are not reported:
    ComfyUI empties its temp folder when it starts and when it stops.
    """
    folders = {"output": base / "output", "temp": base / "temp", "input": base / "input"}
    saved: list[Path] = []
    previews = 0
    for node_output in (entry.get("outputs") or {}).values():
        for item in node_output.get("images") or []:
            if (item.get("type") or "output") == "output":
                saved += output_files({"outputs": {"0": {"images": [item]}}}, folders, "images")
            else:
                previews += 1
    return [path.resolve() for path in saved], previews


def with_seed(prompt: dict[str, Any], seed: int) -> tuple[dict[str, Any], int]:
    """A copy of ``prompt`` with every integer ``seed`` / ``noise_seed`` input set to ``seed``, and how many were set."""
    copy = json.loads(json.dumps(prompt))
    count = 0
    for node in copy.values():
        inputs = node.get("inputs", {})
        for name in SEED_INPUTS:
            if isinstance(inputs.get(name), int) and not isinstance(inputs.get(name), bool):
                inputs[name] = seed
                count += 1
    return copy, count


def toy_demo_prompt(prompt: dict[str, Any]) -> str | None:
    """The text of the toy demo's Spatial Prompt Encode, when ``prompt`` is the toy-world demo graph, else None.

    The demo graph loads a toy world and saves its plain and steered images under the demo's file prefixes.
    """
    classes = {node.get("class_type") for node in prompt.values()}
    prefixes = {node.get("inputs", {}).get("filename_prefix") for node in prompt.values()
                if node.get("class_type") == "SaveImage"}
    if "L2S_LoadToyWorld" not in classes or not {PLAIN_PREFIX, STEERED_PREFIX} <= prefixes:
        return None
    texts = [node["inputs"].get("text") for node in prompt.values() if node.get("class_type") == "L2S_SpatialPromptEncode"]
    return texts[0] if texts and isinstance(texts[0], str) else None


def demo_pair(images: Sequence[Path]) -> tuple[Path, Path] | None:
    """The (plain, steered) images of one demo run, told apart by their file prefixes; None when one is missing."""
    plain = [p for p in images if p.name.startswith(PLAIN_PREFIX + "_")]
    steered = [p for p in images if p.name.startswith(STEERED_PREFIX + "_")]
    return (plain[0], steered[0]) if plain and steered else None


def demo_report_command(python: str, text: str, pairs: Sequence[tuple[int, Path, Path]], out: Path) -> list[str]:
    """The ``python -m training.toy.demo`` call that judges the pairs and writes the grid."""
    command = [python, "-m", "training.toy.demo", "--prompt", text, "--out", str(out)]
    for seed, plain, steered in pairs:
        command += ["--pair", str(seed), str(plain), str(steered)]
    return command


def run_demo_report(python: str, text: str, pairs: Sequence[tuple[int, Path, Path]], out: Path) -> str:
    """Run the report with ComfyUI's Python (numpy, Pillow) from this repo; return what it printed.

    Raises:
        LauncherError: the report failed.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        done = subprocess.run(demo_report_command(python, text, pairs, out), cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=REPORT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LauncherError(f"the demo report could not run with {python}: {exc}") from exc
    if done.returncode != 0:
        raise LauncherError(f"the demo report failed ({python} -m training.toy.demo):\n{done.stderr.strip()}")
    return done.stdout


def pack_import_errors(log_text: str) -> list[str]:
    """Lines of ComfyUI's log that report this pack failing to import (with the traceback lines before them)."""
    lines = log_text.splitlines()
    found: list[str] = []
    for index, line in enumerate(lines):
        if PACK_LINK_NAME in line and ("IMPORT FAILED" in line or "Cannot import" in line):
            found += lines[max(0, index - 8) : index + 1]
    return found


# ------------------------------------------------------------------------------------------------------ run


def missing_module(log_text: str) -> str | None:
    """The last module ComfyUI's log says it could not find, ignoring optional ones (torchaudio); or None."""
    names = re.findall(r"ModuleNotFoundError: No module named '([^']+)'", log_text)
    names = [name for name in names if name.split(".")[0] not in OPTIONAL_PACKAGES]
    return names[-1] if names else None


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(signum)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Install/find ComfyUI, run the workflow, print the images; return the exit code."""
    t0 = time.monotonic()
    workflow_path = Path(args.workflow).expanduser().resolve()
    prompt = load_workflow(workflow_path)
    if args.seeds is not None and args.seeds < 0:
        raise LauncherError(f"--seeds must be 0 or more, got {args.seeds}")
    if args.port and not port_is_free(args.port):
        raise LauncherError(f"port {args.port} on 127.0.0.1 is in use: pick another with --port, or leave it out")

    plan = resolve_plan(env)
    logger.info("ComfyUI route: %s; workspace %s", plan.route, plan.workspace)
    comfy_path, python = ensure_comfyui(plan)
    base = prepare_base_dir(plan.base_dir, comfy_path)
    logger.info("ComfyUI %s, Python %s", comfy_path, python)
    t_setup = time.monotonic()

    threads = _env_value(env, "L2S_COMFY_THREADS")
    server = ComfyProcess(
        comfy_path=comfy_path,
        python=python,
        args=server_arguments(base),
        env=server_environment(threads=int(threads) if threads else None),
        log_path=plan.log_path,
        port=args.port or None,
        startup_timeout=STARTUP_TIMEOUT_S,
    )
    try:
        logger.info("starting ComfyUI (log: %s)", plan.log_path)
        try:
            server.start()
        except ComfyServerError as exc:
            module = missing_module(server.log_text())
            if module is not None:
                raise LauncherError(
                    f"ComfyUI could not start: {python} ({plan.python_origin}) has no module {module!r}. Install "
                    f"ComfyUI's requirements into it ({python} -m pip install -r {comfy_path / 'requirements.txt'}) "
                    "or set COMFYUI_PYTHON to the Python that runs your ComfyUI"
                ) from exc
            raise
        t_started = time.monotonic()
        demo_text = toy_demo_prompt(prompt)
        seeds = args.seeds if args.seeds is not None else (DEFAULT_TOY_SEEDS if demo_text is not None else 0)
        runs = [(seed, *with_seed(prompt, seed)) for seed in range(seeds)] if seeds else [(None, prompt, 0)]
        if seeds and not any(count for _, _, count in runs):
            raise LauncherError(f"--seeds {seeds}: the workflow {workflow_path} has no seed or noise_seed input to set")
        images: list[Path] = []
        pairs: list[tuple[int, Path, Path]] = []
        for seed, graph, _ in runs:
            label = "" if seed is None else f" with seed {seed}"
            logger.info("ComfyUI is up at %s; running %s%s", server.url, workflow_path, label)
            try:
                entry = server.submit(graph, timeout=args.timeout, client_prefix="l2s-demo")
            except ComfyServerError as exc:
                import_errors = pack_import_errors(server.log_text())
                hint = ("\nThe pack failed to import:\n" + "\n".join(import_errors)) if import_errors else ""
                raise LauncherError(f"the workflow {workflow_path} failed{label}:\n{exc}{hint}") from exc
            saved, previews = image_paths(entry, base)
            if not saved:
                raise LauncherError(
                    f"the workflow {workflow_path} finished but saved no images ({previews} preview image(s); it needs "
                    "a SaveImage node)"
                )
            missing = [path for path in saved if not path.is_file()]
            if missing:
                raise LauncherError(f"ComfyUI reported images that are not on disk: {', '.join(map(str, missing))}")
            images += saved
            pair = demo_pair(saved)
            if seed is not None and pair is not None:
                pairs.append((seed, *pair))
        t_done = time.monotonic()
        print(f"Saved {len(images)} image(s) in {base / 'output'}:")
        for path in images:
            print(path)
        if demo_text is not None and pairs:
            print(f"What the judge reads in each panel of \"{demo_text}\":")
            print(run_demo_report(python, demo_text, pairs, base / "output" / GRID_NAME), end="")
        print(
            f"Wall time {t_done - t0:.1f} s (setup {t_setup - t0:.1f} s, ComfyUI startup {t_started - t_setup:.1f} s, "
            f"workflow {t_done - t_started:.1f} s for {len(runs)} run(s))"
        )
        sys.stdout.flush()
        if args.keep_running:
            print(f"ComfyUI keeps running at {server.url} (Ctrl-C stops it); log: {plan.log_path}", flush=True)
            assert server.process is not None
            server.process.wait()
            raise LauncherError(f"ComfyUI stopped by itself. Log: {plan.log_path}")
        return 0
    except (LauncherError, ComfyServerError) as exc:
        raise LauncherError(f"{exc}\nComfyUI log: {plan.log_path}") from exc
    finally:
        server.stop()


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=(
            "Run a workflow (default: the Learn-to-Steer toy world) in a headless ComfyUI on the CPU and print the "
            "paths of the saved images. ComfyUI is installed on first use unless COMFYUI_PATH names one."
        ),
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workflow",
        default=str(DEFAULT_WORKFLOW),
        help="API-format workflow JSON (default: example_workflows/api/l2s_toy_world.api.json)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"run the workflow once per seed 0..N-1, setting every seed input (default {DEFAULT_TOY_SEEDS} for the "
        "toy-world workflow, which then also saves a judged grid; 0 for others: run as saved)",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)")
    parser.add_argument(
        "--keep-running", action="store_true", help="leave ComfyUI running after the workflow until Ctrl-C"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds the workflow may run (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[l2s] %(message)s", stream=sys.stderr)
    signums = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {signum: signal.signal(signum, _raise_on_signal) for signum in signums}
    try:
        return run(args, os.environ)
    except LauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: ComfyUI stopped", file=sys.stderr)
        return 130
    except _Terminated as exc:
        print(f"terminated by signal {exc.args[0]}: ComfyUI stopped", file=sys.stderr)
        return 128 + int(exc.args[0])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
