#!/usr/bin/env bash
# Set up, then serve the built-in model on 127.0.0.1:8000 with SQLite and ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/imagegate serve --host "${IMAGEGATE_HOST:-127.0.0.1}" --port "${IMAGEGATE_PORT:-8000}" \
  --data-dir "${IMAGEGATE_DATA_DIR:-data}" "$@"
