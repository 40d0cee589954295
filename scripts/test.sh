#!/usr/bin/env bash
# Set up, then run the whole test suite (one torch thread: 2-core CI machines).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
bash scripts/postgres.sh ensure  # the PostgreSQL server the tests start (or a loud line why not)
bash scripts/redis.sh ensure  # likewise Redis, for the rate-limit counters
bash scripts/chromium.sh ensure  # the browser the playground's tests drive (or a loud line why not)
# Lint (ruff: the whole tree) and type-check (mypy, strict for src/) first: a finding fails
# the run before the slow tests start. Both are configured in pyproject.toml.
.venv/bin/ruff check .
.venv/bin/mypy
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
