#!/usr/bin/env bash
# Redis for the test suite (rate-limit counters with IMAGEGATE_REDIS_URL). `ensure`: where no
# redis-server is installed, install Debian's package. It starts nothing: the tests start a
# throwaway server of their own (tests/redis_support.py) and stop it. Where it cannot install
# (not root, no apt-get, no network) it says so loudly on stderr and exits 0: the Redis tests
# then skip with the reason.
set -uo pipefail

skip() {
  echo "!!!!! scripts/redis.sh: redis-server is NOT installed and could not be: $* -- the Redis tests will be SKIPPED !!!!!" >&2
  exit 0
}

ensure() {
  command -v redis-server >/dev/null 2>&1 && return 0
  [ "$EUID" = 0 ] || skip "not root (as root: apt-get install redis-server)"
  command -v apt-get >/dev/null 2>&1 || skip "no apt-get on this machine"
  echo "scripts/redis.sh: installing Debian's redis-server package for the tests" >&2
  local log policy=/usr/sbin/policy-rc.d own_policy=0
  log=$(mktemp) || skip "mktemp failed"
  # The package would start a system-wide server: a policy-rc.d that refuses (101) keeps it
  # stopped, unless the machine already has a policy of its own.
  if [ ! -e "$policy" ] && printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"; then
    own_policy=1
    trap "rm -f '$policy'" EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  local install=(apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 redis-server)
  if ! "${install[@]}" >"$log" 2>&1; then
    apt-get update -q -o DPkg::Lock::Timeout=300 >>"$log" 2>&1 && "${install[@]}" >>"$log" 2>&1
  fi
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; trap - EXIT; fi
  if ! command -v redis-server >/dev/null 2>&1; then
    local why
    why=$( (grep -E '^E: ' "$log" | tail -n 1; grep -m 1 -E '^(W|E): Failed to fetch' "$log") | paste -sd ';')
    rm -f "$log"
    skip "apt-get install redis-server failed${why:+ ($why)}"
  fi
  rm -f "$log"
}

case "${1:-}" in
  ensure) ensure ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
