"""Drive a headless ComfyUI server process over its HTTP API, with the standard library only.

This module owns what the demo launcher (:mod:`devtools.launcher`) and the integration-test harness
(``tests/support/comfy_harness.py``) share: the server process (launch ``main.py`` with given arguments, wait until
``/object_info`` answers, stop it), the few API calls (``POST /prompt``, ``GET /history/{id}``, ``GET /object_info``)
and the reading of ComfyUI's answers (validation errors, execution errors, the files a history entry lists).
Where the server's folders live and which arguments it gets are the callers' business.

It never imports ComfyUI (``comfy``) and needs neither ``requests`` nor ``websocket-client``. On Linux the server
process is started with a parent-death signal, so it is terminated even when the process that started it is killed
without running its cleanup (no orphaned servers holding ports).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0
PROMPT_TIMEOUT_S = 300.0
LOG_TAIL_CHARS = 6000
_PR_SET_PDEATHSIG = 1


class ComfyServerError(RuntimeError):
    """The ComfyUI server failed to start, rejected a prompt, or a prompt failed or timed out.

    Attributes:
        body: The server's JSON error body (``/prompt`` rejection) or the ``execution_error`` message data, when
            there is one.
    """

    def __init__(self, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = body


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 right now (as ComfyUI binds it: with ``SO_REUSEADDR``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def format_api_error(body: dict[str, Any]) -> str:
    """Flatten the JSON body of a rejected ``POST /prompt`` (``error`` + ``node_errors``) into readable lines."""
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


def execution_error(entry: dict[str, Any]) -> dict[str, Any] | None:
    """Return the ``execution_error`` message data of a ``/history`` entry, or None."""
    for message in entry.get("status", {}).get("messages", []):
        if isinstance(message, (list, tuple)) and len(message) == 2 and message[0] == "execution_error":
            return dict(message[1])
    return None


def format_execution_error(prompt_id: str, error: dict[str, Any]) -> str:
    """One readable message for a failed prompt: node, exception and ComfyUI's traceback."""
    return (
        f"prompt {prompt_id} failed in node {error.get('node_id')} ({error.get('node_type')}): "
        f"{error.get('exception_type')}: {error.get('exception_message')}\n" + "".join(error.get("traceback") or [])
    )


def output_files(entry: dict[str, Any], folders: Mapping[str, Path], kind: str = "images") -> list[Path]:
    """Paths of the files a ``/history`` entry lists under ``kind`` (``"images"``, ``"latents"``, ...).

    Each listed item is ``{"filename", "subfolder", "type"}``; ``type`` (``"output"`` when absent) picks the folder.

    Args:
        entry: One ``/history/{id}`` entry.
        folders: The server's folders by type: ``{"output": ..., "temp": ..., "input": ...}``.
        kind: Output key of the nodes.

    Raises:
        ComfyServerError: If an item has a type that ``folders`` does not name.
    """
    files: list[Path] = []
    for node_output in (entry.get("outputs") or {}).values():
        for item in node_output.get(kind) or []:
            folder_type = item.get("type") or "output"
            if folder_type not in folders:
                raise ComfyServerError(f"history lists {item.get('filename')!r} in an unknown folder {folder_type!r}")
            files.append(Path(folders[folder_type]) / item.get("subfolder", "") / item["filename"])
    return files


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ComfyProcess:
    """One ComfyUI ``main.py`` process on 127.0.0.1 and the API calls made to it.

    Args:
        comfy_path: ComfyUI checkout (the folder holding ``main.py``); the process runs there.
        python: Interpreter that runs ComfyUI.
        args: ``main.py`` arguments after ``--port PORT`` (folders, ``--cpu``, ...); ``--listen 127.0.0.1`` and
            ``--port`` are always given.
        env: Environment of the process.
        log_path: File that receives the process's stdout and stderr (overwritten).
        port: TCP port; None picks a free one.
        startup_timeout: Seconds to wait for ``/object_info`` after the launch.
    """

    def __init__(
        self,
        comfy_path: Path,
        python: str,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.comfy_path = Path(comfy_path)
        self.python = python
        self.args = list(args)
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.port = port
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server (loopback only)."""
        if self.port is None:
            raise ComfyServerError("the server has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        """The full command line of the server process."""
        return [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), *self.args]

    # ------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> ComfyProcess:
        """Launch ``main.py`` and wait until ``/object_info`` answers.

        Raises:
            ComfyServerError: If the process exits or does not answer within ``startup_timeout`` (the message
                carries the tail of the server log).
        """
        if self.process is not None:
            raise ComfyServerError("the server is already running")
        if self.port is None:
            self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")  # closed in stop()
        preexec: Callable[[], None] | None = _die_with_parent if sys.platform.startswith("linux") else None
        self.process = subprocess.Popen(
            self.command,
            cwd=self.comfy_path,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=preexec,  # only a prctl call: safe between fork and exec
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

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout`` s); safe to call more than once."""
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

    def __enter__(self) -> ComfyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------- log

    def log_text(self) -> str:
        """Everything the server has written to stdout/stderr so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the server log."""
        return self.log_text()[-chars:]

    # ------------------------------------------------------------------------------------------------- API

    def request(self, method: str, route: str, payload: Any = None, timeout: float = 60.0) -> Any:
        """One JSON request to the server; returns the decoded body (None when empty)."""
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            self.url + route, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """``GET /object_info`` (all node schemas), or one node's schema when ``node_class`` is given."""
        route = "/object_info" if node_class is None else f"/object_info/{node_class}"
        return self.request("GET", route)

    def queue_prompt(self, prompt: dict[str, Any], client_prefix: str = "l2s") -> str:
        """``POST /prompt`` an API-format prompt and return its id.

        Raises:
            ComfyServerError: On HTTP 400; the message is the server's validation error, flattened.
        """
        return str(self.post_prompt(prompt, client_prefix)["prompt_id"])

    def post_prompt(self, prompt: dict[str, Any], client_prefix: str = "l2s") -> dict[str, Any]:
        """``POST /prompt`` an API-format prompt and return ComfyUI's reply (``prompt_id``, ``node_errors``, ...).

        ComfyUI queues a prompt when at least one of its outputs validates; the others are listed in
        ``node_errors`` and do not run.

        Raises:
            ComfyServerError: On HTTP 400 (no output validates); the message is the server's error, flattened.
        """
        payload = {"prompt": prompt, "client_id": f"{client_prefix}-{uuid.uuid4().hex[:8]}"}
        try:
            reply = self.request("POST", "/prompt", payload)
        except urllib.error.HTTPError as exc:
            raw = exc.read().decode("utf-8", errors="replace")
            try:
                body = json.loads(raw)
                text = format_api_error(body)
            except json.JSONDecodeError:
                body, text = None, raw
            raise ComfyServerError(f"ComfyUI rejected the prompt (HTTP {exc.code}):\n{text}", body=body) from exc
        return dict(reply)

    def wait(self, prompt_id: str, timeout: float = PROMPT_TIMEOUT_S) -> dict[str, Any]:
        """Poll ``/history/{prompt_id}`` until the prompt finished (successfully or not) and return the entry.

        Raises:
            ComfyServerError: If the server died or the prompt did not finish within ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if not self.running:
                raise ComfyServerError(f"ComfyUI is not running.\n--- server log tail ---\n{self.log_tail()}")
            history = self.request("GET", f"/history/{prompt_id}")
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

    def submit(
        self, prompt: dict[str, Any], timeout: float = PROMPT_TIMEOUT_S, client_prefix: str = "l2s"
    ) -> dict[str, Any]:
        """Queue an API-format prompt, wait for it and return its history entry.

        Raises:
            ComfyServerError: If the prompt is rejected, fails while executing (the message carries the exception,
                the node and ComfyUI's traceback), or times out.
        """
        prompt_id = self.queue_prompt(prompt, client_prefix=client_prefix)
        entry = self.wait(prompt_id, timeout=timeout)
        if entry.get("status", {}).get("status_str") != "success":
            error = execution_error(entry) or {}
            raise ComfyServerError(format_execution_error(prompt_id, error), body=error)
        return entry


def server_environment(threads: int | None = None) -> dict[str, str]:
    """Environment for a ComfyUI process started from this repo.

    The caller's ``PYTHONPATH`` is dropped: this repo's ``nodes/`` package would shadow ComfyUI's top-level
    ``nodes.py`` if the repo root were importable in the server. ``COMFYUI_PYTHONPATH`` gives the server an explicit
    ``PYTHONPATH`` instead (e.g. a torchvision stub). ``threads`` sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``.
    """
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    server_pythonpath = os.environ.get("COMFYUI_PYTHONPATH", "").strip()
    if server_pythonpath:
        env["PYTHONPATH"] = server_pythonpath
    env["PYTHONUNBUFFERED"] = "1"
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    return env
