#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with collab and its test tools; Debian tools the tests use
# (tmux, iproute2, tesseract-ocr) when we are root and they are missing. Re-runs pip only when
# pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.collab-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v -i warning || true
  .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v -i "warning\|location" || true
  .venv/bin/python -c "import collab_tui, typer, zeroconf, cryptography, cv2, textual" 
  echo "$want" > "$stamp"
fi
# One apt-get for whatever is missing; a failure is tolerated (the tests that need the tool skip).
missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v ip >/dev/null || missing+=(iproute2)
command -v tesseract >/dev/null || missing+=(tesseract-ocr tesseract-ocr-eng)  # the ocr job type
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)  # HTML report tests
if [ "$(id -u)" = 0 ] && [ "${#missing[@]}" -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "setup: could not install ${missing[*]}; the tests that need them will skip" >&2
fi
