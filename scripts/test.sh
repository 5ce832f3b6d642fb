#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up, check the import layers (lint-imports), then pytest (which also builds and tests
# runtimes/rust with cargo and runtimes/go with go against a bundle made in the same run).
# Extra args pass to pytest, e.g. scripts/test.sh -m "not slow" or -m reliability.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV=${H2L_VENV:-.venv}
export PATH="$(cd "$VENV/bin" && pwd):$PATH"
"$VENV/bin/lint-imports"   # the layers contract in pyproject.toml ([tool.importlinter])
exec "$VENV/bin/python" -m pytest "$@"
