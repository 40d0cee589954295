#!/usr/bin/env bash
# PostgreSQL for the test suite. `ensure`: where no server is installed (no initdb in $PG_BIN,
# /usr/lib/postgresql/*/bin or PATH), install Debian's `postgresql` package. It starts nothing:
# the tests start a throwaway server of their own (tests/pg_support.py) and stop it. Where it
# cannot install (not root, no apt-get, no network) it says so loudly on stderr and exits 0:
# the PostgreSQL tests then skip, and pytest's summary repeats why.
set -uo pipefail

have_initdb() {
  if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then return 0; fi
  local f
  for f in /usr/lib/postgresql/*/bin/initdb; do
    [ -x "$f" ] && return 0
  done
  command -v initdb >/dev/null 2>&1
}

skip() {
  echo "!!!!! scripts/postgres.sh: PostgreSQL is NOT installed and could not be: $* -- the PostgreSQL tests will be SKIPPED !!!!!" >&2
  exit 0
}

ensure() {
  have_initdb && return 0
  [ "$EUID" = 0 ] || skip "not root (as root: apt-get install postgresql)"
  command -v apt-get >/dev/null 2>&1 || skip "no apt-get on this machine"
  echo "scripts/postgres.sh: installing Debian's postgresql package for the tests" >&2
  local log policy=/usr/sbin/policy-rc.d own_policy=0
  log=$(mktemp) || skip "mktemp failed"
  # The package would start its own `main` cluster: a policy-rc.d that refuses (101) keeps it
  # stopped, unless the machine already has a policy of its own.
  if [ ! -e "$policy" ] && printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"; then
    own_policy=1
    trap "rm -f '$policy'" EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  local install=(apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 postgresql)
  if ! "${install[@]}" >"$log" 2>&1; then
    # A fresh machine's package lists may be empty or stale: update them once and retry.
    apt-get update -q -o DPkg::Lock::Timeout=300 >>"$log" 2>&1 && "${install[@]}" >>"$log" 2>&1
  fi
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; trap - EXIT; fi
  if ! have_initdb; then
    local why
    # apt's last error, and its first failed download (no network?)
    why=$( (grep -E '^E: ' "$log" | tail -n 1; grep -m 1 -E '^(W|E): Failed to fetch' "$log") | paste -sd ';')
    rm -f "$log"
    skip "apt-get install postgresql failed${why:+ ($why)}"
  fi
  rm -f "$log"
  echo "scripts/postgres.sh: installed: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tr '\n' ' ')" >&2
}

case "${1:-}" in
  ensure) ensure ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
