#!/usr/bin/env bash
# PostgreSQL for the test suite. `ensure`: where no server is installed (no initdb in $PG_BIN,
# /usr/lib/postgresql/*/bin or PATH), install Debian's `postgresql` package (scripts/apt-ensure.sh).
# The tests start a throwaway server of their own (tests/pg_support.py) and stop it; where it
# cannot be installed they skip, and pytest's summary repeats why.
set -uo pipefail
. "$(dirname "$0")/apt-ensure.sh"

have_initdb() {
  if [ -n "${PG_BIN:-}" ] && [ -x "$PG_BIN/initdb" ]; then return 0; fi
  local f
  for f in /usr/lib/postgresql/*/bin/initdb; do
    [ -x "$f" ] && return 0
  done
  command -v initdb >/dev/null 2>&1
}

case "${1:-}" in
  ensure) apt_ensure postgres postgresql have_initdb PostgreSQL ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
