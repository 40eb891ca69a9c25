#!/usr/bin/env bash
# System packages mirpipe needs beyond PyPI. Installs them with apt when it can,
# otherwise stops with a message naming the package.
#   rubberband-cli : the 'rubberband' program behind the rubberband pitch-shift backend
set -euo pipefail

missing=()
command -v rubberband >/dev/null 2>&1 || missing+=(rubberband-cli)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "mirpipe: installing system packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
    echo "mirpipe: installing system packages with sudo: ${missing[*]}" >&2
    sudo -n apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "mirpipe: missing system package(s): ${missing[*]}" >&2
    echo "mirpipe: install them with your package manager (Debian/Ubuntu: apt-get install ${missing[*]}; conda: conda install -c conda-forge rubberband)" >&2
    exit 1
fi
