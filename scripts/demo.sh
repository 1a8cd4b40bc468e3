#!/usr/bin/env bash
# The main job on the embedded default: runs the toy-world workflow in a headless ComfyUI (installed on first use with
# comfy-cli, or the one named by COMFYUI_PATH / COMFYUI_GIT_URL) and prints the image paths. The launcher needs only
# Python's standard library; ComfyUI gets its own venv. Arguments go to scripts/run_toy_world.py (--workflow PATH,
# --seeds N, --port N, --keep-running, --timeout S); relative paths are taken from the current directory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
exec "${L2S_PYTHON:-python3}" "$root/scripts/run_toy_world.py" "$@"
