"""Run the install steps' commands (git, pip, comfy-cli): output copied to stderr and appended to the install log."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from devtools.comfy_server import server_environment

LOG_TAIL_LINES = 40


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (empty when there is none)."""
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


def importable(python: str, module: str) -> bool:
    """Whether ``python`` imports ``module`` in the environment the server gets (no caller ``PYTHONPATH``)."""
    result = subprocess.run(
        [python, "-c", f"import {module}"], capture_output=True, stdin=subprocess.DEVNULL, env=server_environment()
    )
    return result.returncode == 0
