#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up, lint (scripts/lint.sh: ruff, mypy, the import layers, clippy,
# gofmt, go vet), then pytest (which also builds and tests runtimes/rust with cargo and runtimes/go with go against
# a bundle made in the same run).
# Extra args pass to pytest, e.g. scripts/test.sh -m "not slow" or -m reliability.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV=${H2L_VENV:-.venv}
export PATH="$(cd "$VENV/bin" && pwd):$PATH"
scripts/lint.sh   # ruff, mypy, lint-imports (pyproject.toml), clippy, gofmt, go vet; fails naming the tool
exec "$VENV/bin/python" -m pytest "$@"
