#!/usr/bin/env bash
# README command 1: install portscope into .venv and run the main job, `portscope ls`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
exec .venv/bin/portscope ls "$@"
