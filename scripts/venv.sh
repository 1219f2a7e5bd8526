#!/usr/bin/env bash
# Create .venv and install portscope into it (editable), with the extras named in $1 (e.g. "test").
# Only Python 3.11+, apt and pip are assumed; Debian's python3 needs python3-venv for `-m venv`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "portscope needs Python 3.11 or newer")'
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        rm -rf .venv
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            ver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${ver}-venv" \
                || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
            "$PYTHON" -m venv .venv
        else
            echo "cannot create a virtual environment: install python3-venv (as root: apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi
extras=${1:-}
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# Skip pip when pyproject.toml has not changed since the last install: keeps repeated runs fast.
stamp=".venv/.installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
    touch "$stamp"
fi
