#!/usr/bin/env bash
# The main job on the embedded default: sets up .venv on first use, then runs the CPU demonstration.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv dev
exec .venv/bin/python scripts/core_demo.py "$@"
