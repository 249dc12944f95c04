#!/usr/bin/env bash
# Set everything up, then run every benchmark and print the figures (loopback only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m bench "$@"
