#!/usr/bin/env bash
# Set up, then serve the built-in model (127.0.0.1:8000, SQLite and ./data unless
# IMAGEGATE_HOST / IMAGEGATE_PORT / IMAGEGATE_DATA_DIR / ... say otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/imagegate serve "$@"
