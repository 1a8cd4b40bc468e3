# Sourced by the scripts in this folder: make sure .venv exists and holds what the project needs.
# Torch is installed only when the venv has none; L2S_TORCH overrides the requirement (default: the CPU build
# torch==2.13.0). Reinstalls the project's extras whenever pyproject.toml changes.
ensure_venv() {
  local python=${PYTHON:-python3}
  local extras=${1:-dev}
  if [ ! -x .venv/bin/python ]; then
    echo "[l2s] creating .venv with $python" >&2
    "$python" -m venv .venv
  fi
  if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    echo "[l2s] installing ${L2S_TORCH:-torch==2.13.0}" >&2
    .venv/bin/pip install -q "${L2S_TORCH:-torch==2.13.0}"
  fi
  local stamp=".venv/.l2s-installed-$extras"
  local want
  want=$(sha256sum pyproject.toml | cut -c1-16)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[l2s] installing the project with extras [$extras]" >&2
    .venv/bin/pip install -q -e ".[$extras]"
    echo "$want" > "$stamp"
  fi
}
