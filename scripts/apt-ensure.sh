#!/usr/bin/env bash
# Sourced by scripts/{postgres,redis,chromium}.sh: `apt_ensure NAME PACKAGE HAVE WHAT` installs
# Debian's PACKAGE unless the command HAVE already succeeds. It starts nothing (a package that
# would start a system service is kept from it by a temporary policy-rc.d): the tests start
# throwaway servers of their own and stop them. Where it cannot install (not root, no apt-get,
# no network) it says so loudly on stderr and returns 0: the tests needing it skip with why.

apt_skip() {  # NAME WHAT REASON
  echo "!!!!! scripts/$1.sh: $2 is NOT installed and could not be: $3 -- its tests will be SKIPPED !!!!!" >&2
}

apt_ensure() {  # NAME PACKAGE HAVE WHAT
  local name=$1 package=$2 have=$3 what=$4
  "$have" && return 0
  [ "$EUID" = 0 ] || { apt_skip "$name" "$what" "not root (as root: apt-get install $package)"; return 0; }
  command -v apt-get >/dev/null 2>&1 || { apt_skip "$name" "$what" "no apt-get on this machine"; return 0; }
  echo "scripts/$name.sh: installing Debian's $package package for the tests" >&2
  local log policy=/usr/sbin/policy-rc.d own_policy=0
  log=$(mktemp) || { apt_skip "$name" "$what" "mktemp failed"; return 0; }
  # The package may start a system-wide service: a policy-rc.d that refuses (101) keeps it
  # stopped, unless the machine already has a policy of its own.
  if [ ! -e "$policy" ] && printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"; then
    own_policy=1
    trap "rm -f '$policy'" EXIT
  fi
  local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
                 -o DPkg::Lock::Timeout=300 "$package")
  if ! "${install[@]}" >"$log" 2>&1; then
    # A fresh machine's package lists may be empty or stale: update them once and retry.
    apt-get update -q -o DPkg::Lock::Timeout=300 >>"$log" 2>&1 && "${install[@]}" >>"$log" 2>&1
  fi
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; trap - EXIT; fi
  if ! "$have"; then
    local why
    # apt's last error, and its first failed download (no network?)
    why=$( (grep -E '^E: ' "$log" | tail -n 1; grep -m 1 -E '^(W|E): Failed to fetch' "$log") | paste -sd ';')
    rm -f "$log"
    apt_skip "$name" "$what" "apt-get install $package failed${why:+ ($why)}"
    return 0
  fi
  rm -f "$log"
  echo "scripts/$name.sh: installed $package" >&2
}
