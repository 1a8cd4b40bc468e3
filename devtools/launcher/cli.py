"""The launcher's command line: run the steps in order, print the images and the wall time, stop the server.

``main.py --cpu --listen 127.0.0.1 --port <free port> --disable-auto-launch --disable-api-nodes`` runs with
ComfyUI's output in ``<workspace>/comfyui.log``; the workflow is queued once per seed and its ``/history`` entry
polled; the server is stopped also on errors, Ctrl-C, SIGTERM and SIGHUP (on Linux it also gets SIGTERM if this
process is killed). What is printed on stdout is the command's output; progress goes through logging to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from devtools.comfy_server import ComfyProcess, ComfyServerError, port_is_free, server_environment
from devtools.launcher.base_dir import prepare_base_dir, server_arguments
from devtools.launcher.errors import LauncherError
from devtools.launcher.install import ensure_comfyui
from devtools.launcher.plan import env_value, resolve_plan
from devtools.launcher.server_log import missing_module, pack_import_errors
from devtools.launcher.toy_demo import (
    DEFAULT_TOY_SEEDS,
    GRID_NAME,
    demo_pair,
    run_demo_report,
    toy_demo_prompt,
    toy_demo_world,
)
from devtools.launcher.workflow import DEFAULT_WORKFLOW, image_paths, load_workflow, with_seed

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 300.0
DEFAULT_TIMEOUT_S = 900.0


ENVIRONMENT_HELP = """environment:
  COMFYUI_PATH       an existing ComfyUI checkout (the folder holding main.py), used as it is
  COMFYUI_PYTHON     the Python that runs ComfyUI, with its requirements installed (default: the checkout's
                     .venv/ or venv/, else <workspace>/venv, created and filled on first use)
  COMFYUI_GIT_URL    without COMFYUI_PATH: git URL or local path/mirror of ComfyUI, cloned into <workspace>/ComfyUI
  COMFYUI_WORKSPACE  the launcher's folder: clone, venv, base/ (custom_nodes, output/ with the images), logs
                     (default: .comfyui/ in this repo)
  L2S_COMFY_THREADS  torch threads of the ComfyUI process
Without COMFYUI_PATH and COMFYUI_GIT_URL, comfy-cli installs ComfyUI (needs github.com and PyPI)."""


class _Terminated(BaseException):
    """Raised by the SIGTERM/SIGHUP handler so that the server is stopped on the way out."""


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

    threads = env_value(env, "L2S_COMFY_THREADS")
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
            print(run_demo_report(python, demo_text, pairs, base / "output" / GRID_NAME, toy_demo_world(prompt)), end="")
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
