#!/usr/bin/env bash
# README command 2: install everything the tests need (Debian and Python packages), then lint,
# type-check and run the whole suite. With CI=true a skipped test is a failure (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null; then scripts/apt-test-deps.sh; fi
scripts/venv.sh test
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
.venv/bin/mypy
exec .venv/bin/pytest "$@"
