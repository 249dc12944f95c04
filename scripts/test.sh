#!/usr/bin/env bash
# Set everything up, then run the whole test suite (every waiting test has a timeout).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=300 "$@"
