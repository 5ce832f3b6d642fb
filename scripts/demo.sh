#!/usr/bin/env bash
# The main job on a fresh machine: set up, then run `h2l demo` on the shipped data (extra args pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec "${H2L_VENV:-.venv}/bin/h2l" demo "$@"
