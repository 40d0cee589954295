#!/usr/bin/env bash
# Chromium for the playground's browser tests (tests/test_playground.py drives it with
# Playwright for Python, pointed at this executable: Playwright's own browser download cannot
# run here). `ensure`: where no Debian chromium is installed, install the `chromium` package.
# Where it cannot install (not root, no apt-get, no network) it says so loudly on stderr and
# exits 0: the browser tests then skip, and pytest's summary repeats why.
set -uo pipefail

have_chromium() {
  [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ] && return 0
  [ -x /usr/lib/chromium/chromium ] || [ -x /usr/bin/chromium ]
}

skip() {
  echo "!!!!! scripts/chromium.sh: Chromium is NOT installed and could not be: $* -- the playground's browser tests will be SKIPPED !!!!!" >&2
  exit 0
}

ensure() {
  have_chromium && return 0
  [ "$EUID" = 0 ] || skip "not root (as root: apt-get install chromium)"
  command -v apt-get >/dev/null 2>&1 || skip "no apt-get on this machine"
  echo "scripts/chromium.sh: installing Debian's chromium package for the tests" >&2
  local log
  log=$(mktemp) || skip "mktemp failed"
  export DEBIAN_FRONTEND=noninteractive
  local install=(apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 chromium)
  if ! "${install[@]}" >"$log" 2>&1; then
    # A fresh machine's package lists may be empty or stale: update them once and retry.
    apt-get update -q -o DPkg::Lock::Timeout=300 >>"$log" 2>&1 && "${install[@]}" >>"$log" 2>&1
  fi
  if ! have_chromium; then
    local why
    why=$( (grep -E '^E: ' "$log" | tail -n 1; grep -m 1 -E '^(W|E): Failed to fetch' "$log") | paste -sd ';')
    rm -f "$log"
    skip "apt-get install chromium failed${why:+ ($why)}"
  fi
  rm -f "$log"
  echo "scripts/chromium.sh: installed $(/usr/lib/chromium/chromium --version 2>/dev/null)" >&2
}

case "${1:-}" in
  ensure) ensure ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
