#!/usr/bin/env bash
# Set up, then run the whole test suite (one torch thread: 2-core CI machines).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
