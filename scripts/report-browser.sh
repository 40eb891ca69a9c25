#!/usr/bin/env bash
# Chromium from the system packages, for the test that renders reports/index.html headless
# (tests/test_report.py skips, saying why, when no Chromium is found). Optional: nothing else needs it.
set -euo pipefail
for exe in chromium chromium-browser google-chrome; do
    command -v "$exe" >/dev/null 2>&1 && exit 0
done
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "mirpipe: installing chromium (system package) for the report's browser test" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
    sudo -n apt-get install -y -q --no-install-recommends chromium >/dev/null \
        || { sudo -n apt-get update -q >/dev/null && sudo -n apt-get install -y -q --no-install-recommends chromium >/dev/null; }
else
    echo "mirpipe: no chromium; install it with your package manager (Debian/Ubuntu: apt-get install chromium)" >&2
    exit 1
fi
