#!/usr/bin/env bash
# Rebuild src/imagegate/mini/lexicon.json from its sources (training/mini/lexicon_build.py):
# WordNet 3.0 from Debian's wordnet-base and the English word lists of wamerican and wbritish (installed
# here if missing), and the colour tables in matplotlib's wheel (downloaded, not installed). The output is
# committed; serving needs none of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/dict/american-english ] || \
   [ ! -f /usr/share/dict/british-english ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q wordnet-base wamerican wbritish
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "matplotlib==3.11.2"
.venv/bin/python -m training.mini.lexicon_build --wordnet /usr/share/wordnet \
  --words /usr/share/dict/american-english /usr/share/dict/british-english \
  --matplotlib-wheel "$tmp"/matplotlib-*.whl --out src/imagegate/mini/lexicon.json
