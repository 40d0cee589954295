#!/usr/bin/env bash
# Chromium for the playground's browser tests (tests/test_playground.py drives it with
# Playwright for Python, pointed at this executable: Playwright's own browser download cannot
# run here). `ensure`: where no Debian chromium is installed, install the `chromium` package
# (scripts/apt-ensure.sh); where it cannot, the browser tests skip and pytest's summary says why.
set -uo pipefail
. "$(dirname "$0")/apt-ensure.sh"

have_chromium() {
  [ -n "${CHROMIUM:-}" ] && [ -x "$CHROMIUM" ] && return 0
  [ -x /usr/lib/chromium/chromium ] || [ -x /usr/bin/chromium ]
}

case "${1:-}" in
  ensure) apt_ensure chromium chromium have_chromium Chromium ;;
  *) echo "usage: $0 ensure" >&2; exit 2 ;;
esac
