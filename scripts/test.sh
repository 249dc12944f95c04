#!/usr/bin/env bash
# Set everything up, then check style and types and run the whole test suite (every waiting test has a timeout).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check collab_tui tests bench scripts
.venv/bin/ruff format --check collab_tui tests bench scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=300 "$@"
