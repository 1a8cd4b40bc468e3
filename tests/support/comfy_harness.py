"""Run a real, headless ComfyUI server for the integration tests and talk to it over its HTTP API.

This module owns the test side of the real-ComfyUI integration: where ComfyUI is (``COMFYUI_PATH``) and which Python
runs it (``COMFYUI_PYTHON``), a throw-away base directory wired to this repo and to the test-only node pack
(``tests/comfy_test_pack``), the server process (start, wait until ready, stop), and the few API calls the tests need
(queue a prompt and wait for its history entry, read an execution or validation error, read saved latents).

The process and the HTTP calls come from :mod:`devtools.comfy_server` (standard library only, shared with the demo
launcher :mod:`devtools.launcher`), so the test environment needs neither ``requests`` nor ``websocket-client``;
torch and safetensors are imported lazily by :meth:`ComfyServer.read_latent`.

The server is started with ``cwd=COMFYUI_PATH`` and WITHOUT the caller's ``PYTHONPATH``: this repo's ``nodes/``
package would shadow ComfyUI's top-level ``nodes.py`` if the repo root were importable in the server process. Set
``COMFYUI_PYTHONPATH`` to give the server an explicit ``PYTHONPATH`` (e.g. a torchvision stub) when it needs one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from devtools.comfy_server import (
    LOG_TAIL_CHARS,
    PROMPT_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
    ComfyProcess,
    ComfyServerError,
    execution_error,
    free_port,
    output_files,
    server_environment,
)

__all__ = [
    "CLASSIFIER_FOLDER_KEY",
    "PACK_LINK_NAME",
    "ComfyServer",
    "ComfyServerError",
    "comfyui_path",
    "comfyui_python",
    "free_port",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_PACK_DIR = Path(__file__).resolve().parents[1] / "comfy_test_pack"

PACK_LINK_NAME = "learn_to_steer"
TEST_PACK_LINK_NAME = "l2s_test_pack"
CLASSIFIER_FOLDER_KEY = "l2s_classifiers"


def comfyui_path() -> Path | None:
    """Return the ComfyUI checkout named by ``COMFYUI_PATH``, or None when the variable is unset or empty."""
    value = os.environ.get("COMFYUI_PATH", "").strip()
    return Path(value).expanduser().resolve() if value else None


def comfyui_python() -> str:
    """Return the interpreter that runs ComfyUI: ``COMFYUI_PYTHON``, else the current interpreter."""
    value = os.environ.get("COMFYUI_PYTHON", "").strip()
    return value or sys.executable


class ComfyServer:
    """A headless ComfyUI server in a temporary base directory, with this repo and the test pack installed.

    Use as a context manager (``with ComfyServer() as server: ...``) or call :meth:`start` / :meth:`stop`.

    Layout of the base directory: ``custom_nodes/learn_to_steer`` -> repo root, ``custom_nodes/l2s_test_pack`` ->
    ``tests/comfy_test_pack`` (symlinks), ``models/l2s_classifiers/``, ``input/``, ``output/``, ``user/``, ``temp/``,
    ``extra_model_paths.yaml`` (registers ``custom_nodes`` and ``l2s_classifiers``) and ``comfyui.log``.

    Args:
        comfy_path: ComfyUI checkout; default :func:`comfyui_path`.
        python: Interpreter; default :func:`comfyui_python`.
        extra_args: More ``main.py`` arguments (e.g. ``["--cache-none"]``).
        custom_nodes: More node-pack folders to install (linked into ``custom_nodes`` under their own names), e.g. a
            checkout of a third-party pack a test needs.
        cpu: Pass ``--cpu`` (the default). False lets ComfyUI pick its GPU, which flags such as ``--lowvram`` need
            (ComfyUI refuses them together with ``--cpu``).
        threads: Torch/OpenMP threads of the server process (``OMP_NUM_THREADS``). The default 1 keeps tiny-model
            runs fast on shared machines and makes results independent of the core count (CPU reductions differ in
            the last bits between thread counts). ``L2S_COMFY_THREADS`` overrides the default.
        startup_timeout: Seconds to wait for ``/object_info``.
        keep_dir: Keep the base directory after :meth:`stop` (also when ``L2S_KEEP_COMFY_DIR`` is set).
    """

    def __init__(
        self,
        comfy_path: str | os.PathLike[str] | None = None,
        python: str | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        custom_nodes: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...] = (),
        cpu: bool = True,
        threads: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        keep_dir: bool = False,
    ) -> None:
        path = Path(comfy_path).expanduser().resolve() if comfy_path is not None else comfyui_path()
        if path is None:
            raise ValueError("COMFYUI_PATH is not set: set it to a ComfyUI checkout (the folder holding main.py)")
        if not (path / "main.py").is_file():
            raise ValueError(f"COMFYUI_PATH={path} holds no main.py: point it at a ComfyUI checkout")
        self.comfy_path = path
        self.python = python or comfyui_python()
        self.extra_args = list(extra_args)
        self.custom_nodes = [Path(p).expanduser().resolve() for p in custom_nodes]
        self.cpu = cpu
        if threads is None:
            threads = int(os.environ.get("L2S_COMFY_THREADS", "1"))
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.keep_dir = keep_dir or bool(os.environ.get("L2S_KEEP_COMFY_DIR"))
        self.base_dir: Path | None = None
        self.port: int | None = None
        self._server: ComfyProcess | None = None

    # ----------------------------------------------------------------------------------------------- paths

    def _require_base(self) -> Path:
        if self.base_dir is None:
            raise ComfyServerError("the server has not been started: call start() or use it as a context manager")
        return self.base_dir

    @property
    def url(self) -> str:
        """Base URL of the running server (loopback only)."""
        if self.port is None:
            raise ComfyServerError("the server has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def classifier_dir(self) -> Path:
        """Folder registered as ``l2s_classifiers``: put classifier files here before using them in a prompt."""
        return self._require_base() / "models" / CLASSIFIER_FOLDER_KEY

    @property
    def output_dir(self) -> Path:
        """The server's output directory."""
        return self._require_base() / "output"

    @property
    def input_dir(self) -> Path:
        """The server's input directory."""
        return self._require_base() / "input"

    @property
    def log_path(self) -> Path:
        """File holding the server's stdout and stderr."""
        return self._require_base() / "comfyui.log"

    # ------------------------------------------------------------------------------------------- lifecycle

    def _prepare_base_dir(self) -> Path:
        base = Path(tempfile.mkdtemp(prefix="l2s-comfy-"))
        for sub in ("custom_nodes", f"models/{CLASSIFIER_FOLDER_KEY}", "input", "output", "user", "temp"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "custom_nodes" / PACK_LINK_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
        (base / "custom_nodes" / TEST_PACK_LINK_NAME).symlink_to(TEST_PACK_DIR, target_is_directory=True)
        for pack in self.custom_nodes:
            (base / "custom_nodes" / pack.name).symlink_to(pack, target_is_directory=True)
        (base / "extra_model_paths.yaml").write_text(
            "l2s_tests:\n"
            f"  base_path: {json.dumps(str(base))}\n"
            "  custom_nodes: custom_nodes\n"
            f"  {CLASSIFIER_FOLDER_KEY}: models/{CLASSIFIER_FOLDER_KEY}\n",
            encoding="utf-8",
        )
        return base

    def _arguments(self, base: Path) -> list[str]:
        return [
            *(["--cpu"] if self.cpu else []),
            "--base-directory",
            str(base),
            "--extra-model-paths-config",
            str(base / "extra_model_paths.yaml"),
            "--output-directory",
            str(base / "output"),
            "--input-directory",
            str(base / "input"),
            "--user-directory",
            str(base / "user"),
            "--temp-directory",
            str(base),
            "--database-url",
            f"sqlite:///{base / 'user' / 'comfyui.db'}",
            "--disable-auto-launch",
            "--disable-api-nodes",
            *self.extra_args,
        ]

    def _environment(self) -> dict[str, str]:
        env = server_environment(threads=self.threads)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    @property
    def process(self) -> Any:
        """The server's ``subprocess.Popen``, or None when it is not running."""
        return None if self._server is None else self._server.process

    def _require_server(self) -> ComfyProcess:
        if self._server is None:
            raise ComfyServerError("the server has not been started: call start() or use it as a context manager")
        return self._server

    def start(self) -> ComfyServer:
        """Create the base directory, launch ``main.py`` and wait until ``/object_info`` answers.

        Returns:
            self.

        Raises:
            ComfyServerError: If the process exits or does not answer within ``startup_timeout`` (the message
                carries the tail of the server log).
        """
        if self._server is not None:
            raise ComfyServerError("the server is already running")
        self.base_dir = self._prepare_base_dir()
        self.port = free_port()
        self._server = ComfyProcess(
            comfy_path=self.comfy_path,
            python=self.python,
            args=self._arguments(self.base_dir),
            env=self._environment(),
            log_path=self.log_path,
            port=self.port,
            startup_timeout=self.startup_timeout,
        )
        try:
            self._server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout`` s) and remove the base directory."""
        if self._server is not None:
            self._server.stop(timeout=timeout)
            self._server = None
        if self.base_dir is not None and not self.keep_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------- log

    def log_text(self) -> str:
        """Return everything the server has written to stdout/stderr so far."""
        if self.base_dir is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """Return the last ``chars`` characters of the server log."""
        return self.log_text()[-chars:]

    # ------------------------------------------------------------------------------------------------- API

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """Return ``GET /object_info`` (all node schemas), or one node's schema when ``node_class`` is given."""
        return self._require_server().object_info(node_class)

    def queue_prompt(self, prompt: dict[str, Any]) -> str:
        """``POST /prompt`` and return the prompt id.

        Raises:
            ComfyServerError: On HTTP 400; the message is the server's validation error, flattened.
        """
        return self._require_server().queue_prompt(prompt, client_prefix="l2s-tests")

    def post_prompt(self, prompt: dict[str, Any]) -> dict[str, Any]:
        """``POST /prompt`` and return ComfyUI's reply (``prompt_id`` and the ``node_errors`` of outputs not run)."""
        return self._require_server().post_prompt(prompt, client_prefix="l2s-tests")

    def wait(self, prompt_id: str, timeout: float = PROMPT_TIMEOUT_S) -> dict[str, Any]:
        """Poll ``/history/{prompt_id}`` until the prompt finished (successfully or not) and return the entry.

        Raises:
            ComfyServerError: If the server died or the prompt did not finish within ``timeout`` s.
        """
        if self._server is None:
            raise ComfyServerError(f"ComfyUI is not running.\n--- server log tail ---\n{self.log_tail()}")
        return self._server.wait(prompt_id, timeout=timeout)

    def submit(self, prompt: dict[str, Any], timeout: float = PROMPT_TIMEOUT_S) -> dict[str, Any]:
        """Queue an API-format prompt, wait for it and return its history entry.

        Raises:
            ComfyServerError: If the prompt is rejected, fails while executing (the message carries the exception
                and the node), or times out.
        """
        return self._require_server().submit(prompt, timeout=timeout, client_prefix="l2s-tests")

    def run_error(self, prompt: dict[str, Any], timeout: float = PROMPT_TIMEOUT_S) -> str:
        """Run a prompt that is expected to fail and return the error text.

        Returns:
            The validation error (HTTP 400 from ``/prompt``) or the ``exception_message`` of the execution error.

        Raises:
            ComfyServerError: If the prompt succeeds.
        """
        try:
            prompt_id = self.queue_prompt(prompt)
        except ComfyServerError as exc:
            return str(exc)
        entry = self.wait(prompt_id, timeout=timeout)
        error = execution_error(entry)
        if error is None:
            raise ComfyServerError(f"prompt {prompt_id} was expected to fail but finished with {entry.get('status')}")
        return str(error.get("exception_message", ""))

    # --------------------------------------------------------------------------------------------- outputs

    def output_files(self, entry: dict[str, Any], kind: str = "images") -> list[Path]:
        """Paths of the files a history entry lists under ``kind`` (``"images"``, ``"latents"``, ...)."""
        base = self._require_base()
        return output_files(entry, {"output": self.output_dir, "temp": base / "temp", "input": self.input_dir}, kind)

    def latent_path(self, filename_prefix: str) -> Path:
        """Newest ``.latent`` file SaveLatent wrote for a prefix (``"x"`` means ``output/latents/x_*.latent``).

        Raises:
            FileNotFoundError: If there is none.
        """
        prefix = filename_prefix if "/" in filename_prefix else f"latents/{filename_prefix}"
        folder = self.output_dir / Path(prefix).parent
        stem = Path(prefix).name
        pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_\.latent$")
        found = [(int(m.group(1)), p) for p in folder.glob("*.latent") if (m := pattern.match(p.name))]
        if not found:
            raise FileNotFoundError(f"no {stem}_*.latent in {folder}: did the prompt include SaveLatent '{prefix}'?")
        return max(found)[1]

    def read_latent(self, filename_prefix: str) -> dict[str, Any]:
        """Read the newest SaveLatent file of a prefix into ``{name: torch.Tensor}`` (``latent_tensor`` etc.)."""
        from safetensors.torch import load_file

        return load_file(str(self.latent_path(filename_prefix)))
