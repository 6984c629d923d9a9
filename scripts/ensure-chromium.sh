#!/usr/bin/env bash
# Make sure a Chromium is there for PNG charts (kaleido) and the report-page browser test.
# Idempotent: does nothing when one is found. As root on Debian/Ubuntu it installs Debian's
# `chromium` package with apt-get; otherwise it says what to do and exits 0, because UDB
# still runs without it (the index of each job then says PNG charts were skipped and why).
# Usage: scripts/ensure-chromium.sh [--require]   (--require: exit 1 when none can be had)
set -euo pipefail

require=0
[ "${1:-}" = "--require" ] && require=1

for candidate in "${UDB_CHROMIUM_PATH:-}" "${BROWSER_PATH:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
        echo "chromium: $candidate"
        exit 0
    fi
done
if command -v chromium >/dev/null 2>&1; then
    echo "chromium: $(command -v chromium)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium: installing Debian's chromium package (apt-get)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
    if [ -x /usr/bin/chromium ]; then
        echo "chromium: /usr/bin/chromium"
        exit 0
    fi
    echo "chromium: apt-get finished but /usr/bin/chromium is missing" >&2
else
    echo "chromium: not found, and this script can only install it as root with apt-get." >&2
    echo "chromium: install it yourself (Debian/Ubuntu: sudo apt-get install chromium) or point" >&2
    echo "chromium: UDB_CHROMIUM_PATH (or BROWSER_PATH) at a Chromium or Chrome binary." >&2
    echo "chromium: without it UDB still runs; PNG charts are skipped and each job's index says why." >&2
fi
exit "$require"
