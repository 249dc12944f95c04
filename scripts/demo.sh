#!/usr/bin/env bash
# Set everything up, then run the local multi-node demo (a virtual LAN of network namespaces as root, else loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/collab demo "$@"
