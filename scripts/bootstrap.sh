#!/usr/bin/env bash
# Create (or reuse) .venv with imagegate installed. On machines without CUDA, torch
# 2.13.0's CPU wheel is installed first so the dependency range never pulls CUDA builds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q "torch>=2.4,<3"
  else
    .venv/bin/python -m pip install -q torch==2.13.0
  fi
fi
stamp=.venv/.imagegate-installed${EXTRAS:+-$EXTRAS}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
fi
