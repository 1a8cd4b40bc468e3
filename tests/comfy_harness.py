"""Run a real, headless ComfyUI server for the integration tests and talk to it over its HTTP API.

This module owns the test side of the real-ComfyUI integration: where ComfyUI is (``COMFYUI_PATH``) and which Python
runs it (``COMFYUI_PYTHON``), a throw-away base directory wired to this repo and to the test-only node pack
(``tests/comfy_test_pack``), the server process (start, wait until ready, stop), and the few API calls the tests need
(queue a prompt and wait for its history entry, read an execution or validation error, read saved latents).

Only the standard library is used for HTTP (urllib), so the test environment needs neither ``requests`` nor
``websocket-client``; torch and safetensors are imported lazily by :meth:`ComfyServer.read_latent`.

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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_PACK_DIR = Path(__file__).resolve().parent / "comfy_test_pack"

PACK_LINK_NAME = "learn_to_steer"
TEST_PACK_LINK_NAME = "l2s_test_pack"
CLASSIFIER_FOLDER_KEY = "l2s_classifiers"

STARTUP_TIMEOUT_S = 120.0
PROMPT_TIMEOUT_S = 300.0
LOG_TAIL_CHARS = 6000


class ComfyServerError(RuntimeError):
    """The ComfyUI server failed to start, rejected a prompt, or a prompt failed or timed out.

    Attributes:
        body: The server's JSON error body (``/prompt`` rejection) or the ``execution_error`` message data, when
            there is one.
    """

    def __init__(self, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = body


def comfyui_path() -> Path | None:
    """Return the ComfyUI checkout named by ``COMFYUI_PATH``, or None when the variable is unset or empty."""
    value = os.environ.get("COMFYUI_PATH", "").strip()
    return Path(value).expanduser().resolve() if value else None


def comfyui_python() -> str:
    """Return the interpreter that runs ComfyUI: ``COMFYUI_PYTHON``, else the current interpreter."""
    value = os.environ.get("COMFYUI_PYTHON", "").strip()
    return value or sys.executable


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _format_api_error(body: dict[str, Any]) -> str:
    """Flatten the JSON body of a rejected ``POST /prompt`` into readable lines."""
    lines: list[str] = []
    error = body.get("error")
    if isinstance(error, dict):
        lines.append(f"{error.get('type', 'error')}: {error.get('message', '')}".strip())
        details = error.get("details")
        if details:
            lines.append(str(details))
    elif error:
        lines.append(str(error))
    for node_id, node_error in (body.get("node_errors") or {}).items():
        class_type = node_error.get("class_type", "?")
        for err in node_error.get("errors", []):
            lines.append(f"node {node_id} ({class_type}): {err.get('message', '')}: {err.get('details', '')}")
    return "\n".join(lines) if lines else json.dumps(body)


def _execution_error(entry: dict[str, Any]) -> dict[str, Any] | None:
    """Return the ``execution_error`` message data of a history entry, or None."""
    for message in entry.get("status", {}).get("messages", []):
        if isinstance(message, (list, tuple)) and len(message) == 2 and message[0] == "execution_error":
            return dict(message[1])
    return None


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
        if threads is None:
            threads = int(os.environ.get("L2S_COMFY_THREADS", "1"))
        self.threads = threads
        self.startup_timeout = startup_timeout
        self.keep_dir = keep_dir or bool(os.environ.get("L2S_KEEP_COMFY_DIR"))
        self.base_dir: Path | None = None
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

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
        (base / "extra_model_paths.yaml").write_text(
            "l2s_tests:\n"
            f"  base_path: {json.dumps(str(base))}\n"
            "  custom_nodes: custom_nodes\n"
            f"  {CLASSIFIER_FOLDER_KEY}: models/{CLASSIFIER_FOLDER_KEY}\n",
            encoding="utf-8",
        )
        return base

    def _command(self, base: Path) -> list[str]:
        return [
            self.python,
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
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
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the repo root must not be importable: nodes/ would shadow ComfyUI's nodes.py
        server_pythonpath = os.environ.get("COMFYUI_PYTHONPATH", "").strip()
        if server_pythonpath:
            env["PYTHONPATH"] = server_pythonpath
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["OMP_NUM_THREADS"] = str(self.threads)
        env["MKL_NUM_THREADS"] = str(self.threads)
        return env

    def start(self) -> ComfyServer:
        """Create the base directory, launch ``main.py`` and wait until ``/object_info`` answers.

        Returns:
            self.

        Raises:
            ComfyServerError: If the process exits or does not answer within ``startup_timeout`` (the message
                carries the tail of the server log).
        """
        if self.process is not None:
            raise ComfyServerError("the server is already running")
        self.base_dir = self._prepare_base_dir()
        self.port = free_port()
        self._log_file = open(self.log_path, "wb")  # closed in stop()
        self.process = subprocess.Popen(
            self._command(self.base_dir),
            cwd=self.comfy_path,
            env=self._environment(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ComfyServerError(
                    f"ComfyUI exited with code {code} during startup.\n--- server log tail ---\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/object_info", timeout=10) as response:
                    if response.status == 200:
                        json.loads(response.read())
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        raise ComfyServerError(
            f"ComfyUI did not answer /object_info within {self.startup_timeout:.0f} s.\n"
            f"--- server log tail ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout`` s) and remove the base directory."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=timeout)
            self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
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

    def _request(self, method: str, route: str, payload: Any = None, timeout: float = 60.0) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            self.url + route, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """Return ``GET /object_info`` (all node schemas), or one node's schema when ``node_class`` is given."""
        route = "/object_info" if node_class is None else f"/object_info/{node_class}"
        return self._request("GET", route)

    def queue_prompt(self, prompt: dict[str, Any]) -> str:
        """``POST /prompt`` and return the prompt id.

        Raises:
            ComfyServerError: On HTTP 400; the message is the server's validation error, flattened.
        """
        payload = {"prompt": prompt, "client_id": f"l2s-tests-{uuid.uuid4().hex[:8]}"}
        try:
            reply = self._request("POST", "/prompt", payload)
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode("utf-8", errors="replace")
            try:
                body = json.loads(raw)
                text = _format_api_error(body)
            except json.JSONDecodeError:
                body, text = None, raw
            raise ComfyServerError(f"ComfyUI rejected the prompt (HTTP {exc.code}):\n{text}", body=body) from exc
        return str(reply["prompt_id"])

    def wait(self, prompt_id: str, timeout: float = PROMPT_TIMEOUT_S) -> dict[str, Any]:
        """Poll ``/history/{prompt_id}`` until the prompt finished (successfully or not) and return the entry.

        Raises:
            ComfyServerError: If the server died or the prompt did not finish within ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ComfyServerError(f"ComfyUI is not running.\n--- server log tail ---\n{self.log_tail()}")
            history = self._request("GET", f"/history/{prompt_id}")
            entry = (history or {}).get(prompt_id)
            if entry is not None:
                status = entry.get("status", {})
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    return entry
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        raise ComfyServerError(
            f"prompt {prompt_id} did not finish within {timeout:.0f} s.\n--- server log tail ---\n{self.log_tail()}"
        )

    def submit(self, prompt: dict[str, Any], timeout: float = PROMPT_TIMEOUT_S) -> dict[str, Any]:
        """Queue an API-format prompt, wait for it and return its history entry.

        Raises:
            ComfyServerError: If the prompt is rejected, fails while executing (the message carries the exception
                and the node), or times out.
        """
        prompt_id = self.queue_prompt(prompt)
        entry = self.wait(prompt_id, timeout=timeout)
        if entry.get("status", {}).get("status_str") != "success":
            error = _execution_error(entry) or {}
            raise ComfyServerError(
                f"prompt {prompt_id} failed in node {error.get('node_id')} ({error.get('node_type')}): "
                f"{error.get('exception_type')}: {error.get('exception_message')}\n"
                + "".join(error.get("traceback") or []),
                body=error,
            )
        return entry

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
        error = _execution_error(entry)
        if error is None:
            raise ComfyServerError(f"prompt {prompt_id} was expected to fail but finished with {entry.get('status')}")
        return str(error.get("exception_message", ""))

    # --------------------------------------------------------------------------------------------- outputs

    def output_files(self, entry: dict[str, Any], kind: str = "images") -> list[Path]:
        """Paths of the files a history entry lists under ``kind`` (``"images"``, ``"latents"``, ...)."""
        files: list[Path] = []
        for node_output in entry.get("outputs", {}).values():
            for item in node_output.get(kind, []):
                folder = self.output_dir if item.get("type", "output") == "output" else self._require_base() / "temp"
                files.append(folder / item.get("subfolder", "") / item["filename"])
        return files

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
