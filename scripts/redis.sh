#!/usr/bin/env bash
# Redis for the test suite (rate-limit counters with IMAGEGATE_REDIS_URL). `ensure`: where no
# redis-server is installed, install Debian's package (scripts/apt-ensure.sh). The tests start
# a throwaway server of their own (tests/redis_support.py) and stop it; where it cannot be
# installed they skip with the reason.
set -uo pipefail
. "$(dirname "$0")/apt-ensure.sh"

have_redis() { command -v redis-server >/dev/null 2>&1; }

case "${1:-}" in
  ensure) apt_ensure redis redis-server have_redis Redis ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
