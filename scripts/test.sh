#!/usr/bin/env bash
# Run the test suite: sets up .venv on first use (CPU torch), then pytest. Extra arguments go to pytest.
# Integration tests against a real ComfyUI run only when COMFYUI_PATH names a ComfyUI checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv dev,train
exec .venv/bin/python -m pytest "$@"
